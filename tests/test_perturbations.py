"""The perturbation contract, checked for every registered perturbation, plus each one's meaning."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import failfirst.perturbations as P
from failfirst.errors import InputError
from failfirst.perturbations.draws import SampleRNG

SEVERITIES = np.linspace(0.0, 1.0, 21)


def smooth_images(n=6, c=3, h=16, w=12, seed=0) -> np.ndarray:
    """Natural-ish images: low-frequency colour fields, float32 in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, c, 4, 4, generator=g)
    return F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1).numpy()


def series(n=6, t=64, c=3, seed=0) -> np.ndarray:
    """Noisy sines whose rows differ in scale and offset, so batch statistics would show."""
    rng = np.random.default_rng(seed)
    steps = np.linspace(0, 4 * np.pi, t)[None, :, None]
    base = np.sin(steps * rng.uniform(0.5, 2, (n, 1, c))) + 0.1 * rng.standard_normal((n, t, c))
    return (base * rng.uniform(0.5, 10, (n, 1, 1)) + rng.uniform(-5, 5, (n, 1, 1))).astype(np.float32)


def batch_for(name: str, **kw) -> np.ndarray:
    return smooth_images(**kw) if P.get(name).domain == "vision" else series(**kw)


def uses_randomness(name: str, x: np.ndarray) -> bool:
    """Whether the perturbation draws from its rng (then seeds must matter)."""
    p = P.get(name)
    rng = SampleRNG(0, name, np.arange(len(x)))
    p.apply(P.to_canonical(torch.from_numpy(x), p.domain), 1.0, rng)
    return bool(rng._cache)


ALL = P.names()


def test_registry_holds_the_seeds_eight():
    assert P.names("vision")[:4] == ["gaussian_noise", "random_occlusion", "blur", "resolution_downsample"]
    assert P.names("timeseries")[:4] == ["ts_gaussian_noise", "temporal_dropout", "mean_shift", "variance_shift"]
    assert [n for n, _ in P.get_perturbations("vision")] == P.names("vision")
    assert all(fn is P.get(n) for n, fn in P.get_perturbations("timeseries"))


def test_unknown_names_list_the_choices():
    with pytest.raises(ValueError, match="gaussian_noise") as err:
        P.get("gausian_noise")
    assert "blur" in str(err.value)
    with pytest.raises(ValueError, match="vision"):
        P.get_perturbations("audio")
    with pytest.raises(ValueError):
        P.names("audio")


def test_register_adds_a_user_perturbation_and_warns_on_duplicates():
    try:
        @P.register("vision", family="digital")
        def invert_for_test(x, severity, rng):
            """Blend towards the negative image."""
            return x + severity * (1 - 2 * x)

        assert "invert_for_test" in P.names("vision")
        assert P.get("invert_for_test").description == "Blend towards the negative image."
        out = invert_for_test(np.full((1, 1, 2, 2), 0.25, np.float32), 1.0)
        np.testing.assert_allclose(out, 0.75)
        with pytest.warns(UserWarning, match="registered twice"):
            P.register("vision", name="invert_for_test")(lambda x, s, rng: x)
    finally:
        P.registry._REGISTRY.pop("invert_for_test", None)


@pytest.mark.parametrize("name", ALL)
class TestContract:
    def test_numpy_in_numpy_out_same_shape_and_dtype(self, name):
        for dtype in (np.float32, np.float64):
            x = batch_for(name).astype(dtype)
            out = P.get(name)(x, 0.5, seed=1)
            assert isinstance(out, np.ndarray) and out.dtype == dtype and out.shape == x.shape
            assert np.isfinite(out).all()

    def test_torch_in_torch_out_same_dtype_and_device(self, name):
        for dtype in (torch.float32, torch.float64, torch.float16):
            x = torch.from_numpy(batch_for(name)).to(dtype)
            out = P.get(name)(x, 0.5, seed=1)
            assert isinstance(out, torch.Tensor)
            assert out.dtype == dtype and out.device == x.device and out.shape == x.shape
        x = batch_for(name)
        np.testing.assert_allclose(P.get(name)(torch.from_numpy(x), 0.5, seed=1).numpy(),
                                   P.get(name)(x, 0.5, seed=1), rtol=1e-6, atol=1e-6)

    def test_severity_zero_is_the_identity_bit_for_bit(self, name):
        x = batch_for(name)
        out = P.get(name)(x, 0.0, seed=1)
        assert out is not x and np.array_equal(out, x)
        t = torch.from_numpy(x)
        assert torch.equal(P.get(name)(t, 0, seed=1), t)

    def test_distortion_never_decreases_and_severity_one_is_harshest(self, name):
        x = batch_for(name)
        dist = [np.abs(P.get(name)(x, s, seed=3) - x).mean() for s in SEVERITIES]
        assert np.all(np.diff(dist) >= -1e-6 * max(dist)), np.round(dist, 5)
        assert dist[-1] > 0 and dist[-1] == pytest.approx(max(dist))

    def test_batch_split_and_order_give_the_same_rows(self, name):
        x = batch_for(name, n=8)
        ids = np.array([10, 3, 7, 0, 99, 5, 42, 1])
        whole = P.get(name)(x, 0.7, seed=5, sample_ids=ids)
        parts = np.concatenate([P.get(name)(x[:3], 0.7, seed=5, sample_ids=ids[:3]),
                                P.get(name)(x[3:], 0.7, seed=5, sample_ids=ids[3:])])
        np.testing.assert_allclose(whole, parts, rtol=1e-6, atol=1e-6)
        perm = np.random.default_rng(0).permutation(8)
        shuffled = P.get(name)(x[perm], 0.7, seed=5, sample_ids=ids[perm])
        np.testing.assert_allclose(shuffled, whole[perm], rtol=1e-6, atol=1e-6)

    def test_one_rng_shared_by_severities_in_any_order_equals_a_call_per_severity(self, name):
        # What the engine does: one rng per batch, every severity; memoised draws and layers
        # built from them (rng.derived) must never carry one severity's state into another.
        p, x = P.get(name), batch_for(name)
        canonical = P.to_canonical(torch.from_numpy(x), p.domain)
        shared = SampleRNG(4, name, np.arange(len(x)))
        for severity in (1.0, 0.3, 0.6, 0.05, 0.6):
            fresh = p.apply(canonical, severity, SampleRNG(4, name, np.arange(len(x))))
            torch.testing.assert_close(p.apply(canonical, severity, shared), fresh, rtol=0, atol=0)

    def test_default_sample_ids_are_row_numbers(self, name):
        x = batch_for(name)
        np.testing.assert_array_equal(P.get(name)(x, 0.6, seed=2),
                                      P.get(name)(x, 0.6, seed=2, sample_ids=np.arange(len(x))))

    def test_same_seed_same_draws_other_seed_other_draws(self, name):
        x = batch_for(name)
        f = P.get(name)
        np.testing.assert_array_equal(f(x, 0.6, seed=11), f(x, 0.6, seed=11))
        if uses_randomness(name, x):
            assert not np.array_equal(f(x, 0.6, seed=11), f(x, 0.6, seed=12))
            # Unseeded calls draw afresh; 40 rows, so even a perturbation that draws just one
            # sign per row (rotation) repeats itself with odds of 2**-40, not 2**-6.
            many = batch_for(name, n=40)
            assert not np.array_equal(f(many, 0.6, seed=None), f(many, 0.6, seed=None))

    def test_no_global_rng_state_is_touched(self, name):
        x = batch_for(name)
        np_state, torch_state = np.random.get_state()[1].copy(), torch.get_rng_state().clone()
        P.get(name)(x, 0.8, seed=1)
        P.get(name)(x, 0.8)
        assert np.array_equal(np.random.get_state()[1], np_state)
        assert torch.equal(torch.get_rng_state(), torch_state)

    def test_domain_specific_layouts(self, name):
        f = P.get(name)
        if f.domain == "vision":
            x = smooth_images()
            out = f(x, 0.5, seed=4)
            assert out.min() >= 0.0 and out.max() <= 1.0
            nhwc = f(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), 0.5, seed=4, layout="NHWC")
            np.testing.assert_allclose(nhwc, out.transpose(0, 2, 3, 1), rtol=1e-6, atol=1e-6)
            gray = smooth_images(c=1)
            assert f(gray, 0.5, seed=4).shape == gray.shape
        else:
            x = series(c=1)
            flat = f(x[..., 0], 0.5, seed=4)
            assert flat.shape == x.shape[:2]
            np.testing.assert_allclose(flat, f(x, 0.5, seed=4)[..., 0], rtol=1e-6, atol=1e-6)

    def test_bad_input_is_refused_with_an_input_error(self, name):
        f = P.get(name)
        x = batch_for(name)
        for bad in (-0.1, 1.5, "high", None):
            with pytest.raises(InputError, match="severity"):
                f(x, bad)
        with pytest.raises(InputError, match="shape"):
            f(np.zeros((2, 3, 4, 5, 6), np.float32), 0.5)
        with pytest.raises(InputError, match="floating"):
            f((x * 100).astype(np.int64), 0.5)
        with pytest.raises(InputError, match="seed"):
            f(x, 0.5, seed=-1)
        with pytest.raises(InputError, match="sample_ids"):
            f(x, 0.5, sample_ids=[0])


def changed(name, x, severity, seed=9):
    return P.get(name)(x, severity, seed=seed) != x


@pytest.mark.parametrize("name", ["random_occlusion", "temporal_dropout"])
def test_masks_are_nested_across_severities(name):
    x = batch_for(name) + 0.01  # no zero pixels, so a masked value always shows
    previous = changed(name, x, 0.05)
    for s in np.linspace(0.1, 1.0, 10):
        current = changed(name, x, s)
        assert not (previous & ~current).any(), f"mask at {s} does not contain the lower one"
        previous = current
    assert current.all(), "severity 1 masks everything"


def test_occlusion_covers_about_severity_of_the_area():
    x = np.ones((64, 1, 32, 32), np.float32)
    for s in (0.1, 0.3, 0.6):
        frac = (P.get("random_occlusion")(x, s, seed=1) == 0).mean()
        assert frac == pytest.approx(s, abs=0.06)


def test_gaussian_noise_std_grows_with_severity():
    x = np.full((32, 3, 16, 16), 0.5, np.float32)
    out = P.get("gaussian_noise")(x, 0.4, seed=0)
    assert (out - x).std() == pytest.approx(0.2, rel=0.03)   # 0.4 * 0.5, barely clipped
    assert abs((out - x).mean()) < 0.01


def test_blur_is_a_gaussian_of_a_tenth_of_the_side_at_severity_one():
    x = np.zeros((1, 1, 41, 41), np.float32)
    x[0, 0, 20, 20] = 1.0
    out = P.get("blur")(x, 1.0)[0, 0]
    profile = out[20] / out[20].max()
    sigma = 4.1
    expected = np.exp(-0.5 * (np.arange(-3, 4) / sigma) ** 2)
    np.testing.assert_allclose(profile[17:24], expected, rtol=1e-3)


def test_downsample_at_one_is_an_eighth_of_the_resolution():
    x = smooth_images(n=2, h=32, w=32)
    low = F.avg_pool2d(torch.from_numpy(x), 8)
    expected = F.interpolate(low, size=(32, 32), mode="bilinear", align_corners=False).numpy()
    np.testing.assert_allclose(P.get("resolution_downsample")(x, 1.0), np.clip(expected, 0, 1),
                               atol=1e-6)


def test_ts_noise_scales_with_each_series_own_std():
    x = series(n=2, c=1)
    x[1] = x[0] * 10
    noise = P.get("ts_gaussian_noise")(x, 1.0, seed=0, sample_ids=[0, 0]) - x
    np.testing.assert_allclose(noise[1], noise[0] * 10, rtol=1e-4, atol=1e-4)
    assert noise[0].std() == pytest.approx(x[0].std(), rel=0.3)


def test_mean_shift_and_variance_shift_use_the_series_statistics():
    x = series(n=4)
    std = x.std(axis=1)
    shifted = P.get("mean_shift")(x, 0.5, seed=0)
    np.testing.assert_allclose(np.abs(shifted.mean(axis=1) - x.mean(axis=1)), std, rtol=1e-4)
    scaled = P.get("variance_shift")(x, 0.5, seed=0)
    np.testing.assert_allclose(scaled.std(axis=1), 2 * std, rtol=1e-4)
    np.testing.assert_allclose(scaled.mean(axis=1), x.mean(axis=1), rtol=1e-4, atol=1e-4)


def test_draws_are_reused_across_severities():
    x = torch.from_numpy(smooth_images())
    rng = SampleRNG(1, "gaussian_noise", np.arange(len(x)))
    f = P.get("gaussian_noise")
    a = f.apply(x, 0.2, rng) - x
    b = f.apply(x, 0.4, rng) - x
    inside = (x > 0.3) & (x < 0.7)  # away from clipping, noise is exactly proportional
    torch.testing.assert_close(b[inside & (a.abs() < 0.1)], 2 * a[inside & (a.abs() < 0.1)],
                               rtol=1e-4, atol=1e-5)


def test_describe_records_family_and_parameters():
    info = P.get("gaussian_noise").describe((2, 3, 32, 32))
    assert info["family"] == "noise" and info["sigma"] == (0.0, 0.5)
    assert P.get("resolution_downsample").describe()["octaves"] == (0.0, 3.0)


def test_draws_are_pinned_so_a_seed_means_the_same_numbers_in_every_version():
    # Changing the generator changes every sweep's numbers: it must be a deliberate change.
    rng = SampleRNG(7, "gaussian_noise", [3, 11])
    np.testing.assert_array_equal(rng.normal("noise", (4,))[1].numpy(), np.array(
        [0.8206387162208557, -0.6432685852050781, 0.43553289771080017, -1.1216843128204346], np.float32))
    np.testing.assert_array_equal(rng.uniform("mask", (4,))[0].numpy(), np.array(
        [0.8449200391769409, 0.6100872159004211, 0.33447951078414917, 0.7811777591705322], np.float32))


def test_each_draw_depends_only_on_its_key_and_position():
    # A rejected ziggurat point reads more words of its own element only, so a longer
    # draw extends a shorter one and rows never see their neighbours' rejections.
    long = SampleRNG(1, "x", [0, 5, 9]).normal("s", (3000,))
    short = SampleRNG(1, "x", [9]).normal("s", (1000,))
    torch.testing.assert_close(long[2, :1000], short[0], rtol=0, atol=0)
    u = SampleRNG(1, "x", [5]).uniform("s", (7,))
    torch.testing.assert_close(SampleRNG(1, "x", [5]).uniform("s", (3,)), u[:, :3], rtol=0, atol=0)
    # Different kinds of draw on one stream name are unrelated.
    assert not torch.equal(SampleRNG(1, "x", [5]).uniform("s", (8,)),
                           SampleRNG(1, "x", [5]).uniform("t", (8,)))


def test_layers_built_from_draws_are_kept_within_a_budget(monkeypatch):
    from failfirst.perturbations import draws

    monkeypatch.setattr(draws, "DERIVED_BUDGET", 100 * 4)
    rng = SampleRNG(0, "x", [0, 1])
    builds = []

    def build(n):
        builds.append(n)
        return torch.zeros(n)

    small = rng.derived(("a",), lambda: build(60))
    assert rng.derived(("a",), lambda: build(60)) is small and builds == [60]    # kept
    rng.derived(("b",), lambda: build(60))
    rng.derived(("b",), lambda: build(60))
    assert builds == [60, 60, 60]        # over the budget: rebuilt each time, not held


def test_draws_have_the_distributions_they_claim():
    from scipy import stats

    rng = SampleRNG(3, "x", np.arange(400))
    z = rng.normal("n", (1000,)).double().numpy()
    assert stats.kstest(z.ravel(), "norm").pvalue > 1e-3
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01
    # The ziggurat's tail beyond 3.65 (its base strip) has the normal's weight.
    assert (np.abs(z) > 3.7).mean() == pytest.approx(2 * stats.norm.sf(3.7), rel=0.3)
    # Independent across rows and neighbouring elements.
    assert abs(np.corrcoef(z[:-1, 0], z[1:, 0])[0, 1]) < 0.2
    assert abs(np.corrcoef(z[:, :-1].ravel(), z[:, 1:].ravel())[0, 1]) < 0.01
    u = rng.uniform("u", (1000,)).double().numpy()
    assert stats.kstest(u.ravel(), "uniform").pvalue > 1e-3 and 0 <= u.min() and u.max() < 1