"""The corruption catalogue against per-image NumPy references of ImageNet-C / CIFAR-10-C.

Deterministic corruptions must match the reference pixel for pixel at every level anchor.
Random ones are checked twice: with failfirst's own draws handed to the reference (a replay
of the same random numbers, so the formula must match exactly), and with independent draws
(mean, std and fraction of changed pixels must match in distribution). Where failfirst
deviates from a published level on purpose (see each module), the deviation itself is
checked. 32x32 images use the CIFAR-10-C tables, 96x96 the ImageNet-C ones.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

import failfirst.perturbations as P
import reference_corruptions as R
from failfirst.perturbations.corruptions import _common, noise
from failfirst.perturbations.draws import SampleRNG

SMALL, LARGE = (32, 32), (96, 96)
LEVELS = (1, 2, 3, 4, 5)
CATALOGUE = {
    "noise": ["gaussian_noise_c", "shot_noise", "impulse_noise", "speckle_noise"],
    "blur": ["defocus_blur", "glass_blur", "motion_blur", "zoom_blur", "gaussian_blur"],
    "weather": ["snow", "frost", "fog", "brightness", "spatter"],
    "digital": ["contrast", "elastic_transform", "pixelate", "jpeg_compression", "saturate"],
    "geometric": ["rotation", "translation"],
}
ALL = [name for names in CATALOGUE.values() for name in names]


def images(n: int, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Natural-ish NCHW float64 images: smooth colour fields, flat discs with edges, grain."""
    g = np.random.default_rng(seed)
    h, w = size
    coarse = torch.from_numpy(g.random((n, 3, 4, 4)))
    out = torch.nn.functional.interpolate(coarse, size=size, mode="bicubic", align_corners=False).numpy()
    yy, xx = np.mgrid[:h, :w]
    for i in range(n):
        for _ in range(5):
            cy, cx, r = g.uniform(0, h), g.uniform(0, w), g.uniform(2, max(h, w) / 3)
            out[i][:, (yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = g.uniform(0, 1, (3, 1))
    return np.clip(out + g.normal(0, 0.02, out.shape), 0, 1)


def reference(name, x, level, rng_for, **kw) -> np.ndarray:
    """The reference, one image at a time, back in NCHW."""
    return np.stack([getattr(R, name)(img.transpose(1, 2, 0), level, rng_for(i), **kw).transpose(2, 0, 1)
                     for i, img in enumerate(x)])


def draws(name: str, seed: int, i: int) -> SampleRNG:
    """The SampleRNG failfirst uses for row i (sample id i) of a batch."""
    return SampleRNG(seed, name, [i])


class Replay:
    """Stands in for numpy's Generator and hands the reference failfirst's own draws, in order."""

    def __init__(self, normal=(), uniform=(), random=(), integers=()):
        self.queues = {"normal": list(normal), "uniform": list(uniform), "random": list(random),
                       "integers": list(integers)}

    def normal(self, loc=0.0, scale=1.0, size=None):
        return loc + scale * self.queues["normal"].pop(0)

    def uniform(self, low=0.0, high=1.0, size=None):
        return low + (high - low) * self.queues["uniform"].pop(0)

    def random(self, size=None):
        return self.queues["random"].pop(0)

    def integers(self, low, high=None, size=None):
        return self.queues["integers"].pop(0)


def hwc(t: torch.Tensor) -> np.ndarray:
    return t.numpy().transpose(1, 2, 0).astype(np.float64)


# ---------------------------------------------------------------- the catalogue itself

def test_the_catalogue_is_registered_with_families_and_descriptions():
    for family, names in CATALOGUE.items():
        for name in names:
            p = P.get(name)
            assert p.domain == "vision" and p.family == family
            assert p.description and "\n" not in p.description
    assert P.get("gaussian_noise").describe()["sigma"] == (0.0, 0.5)     # the seed's stays as it was


def test_provenance_names_the_table_a_batch_shape_uses():
    assert P.get("fog").describe((8, 3, 32, 32))["table"] == "CIFAR-10-C"
    assert P.get("fog").describe((8, 3, 64, 48))["table"] == "CIFAR-10-C"
    big = P.get("fog").describe((8, 3, 224, 224))
    assert big["table"] == "ImageNet-C" and big["strength"] == (1.5, 2, 2.5, 2.5, 3)
    assert P.get("shot_noise").describe((1, 1, 65, 10))["photons"] == (60, 25, 12, 5, 3)
    both = P.get("jpeg_compression").describe()
    assert both["CIFAR-10-C"]["quality"] == (80, 65, 58, 50, 40) and "ImageNet-C" in both
    for name in ("glass_blur", "frost", "saturate", "elastic_transform", "fog", "snow", "rotation"):
        assert "deviation" in P.get(name).describe((1, 3, 32, 32)), name


def test_segments_put_the_five_levels_on_exact_anchors():
    assert [_common.segment(s) for s in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)] == \
        [(0, 0.0), (1, 0.0), (2, 0.0), (3, 0.0), (4, 0.0), (5, 0.0)]
    lower, weight = _common.segment(0.5)
    assert lower == 2 and weight == pytest.approx(0.5)


# ---------------------------------------------------------------- deterministic: pixel for pixel

DETERMINISTIC = {"defocus_blur": LEVELS, "zoom_blur": LEVELS, "gaussian_blur": LEVELS, "brightness": LEVELS,
                 "contrast": LEVELS, "pixelate": LEVELS, "jpeg_compression": LEVELS,
                 "saturate": (3, 4, 5)}   # saturate levels 1-2 deviate on purpose (see below)


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["cifar", "imagenet"])
@pytest.mark.parametrize("name", sorted(DETERMINISTIC))
def test_deterministic_corruptions_match_the_reference_at_every_level(name, size):
    x = images(2, size, seed=1)
    for level in DETERMINISTIC[name]:
        ours = P.get(name)(x, level / 5, seed=0)
        expected = reference(name, x, level, lambda i: None)
        # Pixelate's reference is Pillow's float32 resize.
        np.testing.assert_allclose(ours, expected, atol=2e-7 if name == "pixelate" else 1e-9,
                                   err_msg=f"{name} level {level}")


def test_saturate_levels_1_and_2_oversaturate_on_the_way_to_level_3():
    x = images(2, SMALL, seed=2)
    grey = x.mean(axis=1, keepdims=True)
    spread = [np.abs(P.get("saturate")(x, s, seed=0) - grey).mean() for s in (0.0, 0.2, 0.4, 0.6)]
    assert spread == sorted(spread) and spread[1] > spread[0]    # moving away from grey throughout
    one_channel = images(1, SMALL)[:, :1]
    np.testing.assert_array_equal(P.get("saturate")(one_channel, 1.0), one_channel)


# ---------------------------------------------------------------- random: the same draws, exactly

def _check_replay(name, x, seed, level, replays, atol, **kw):
    ours = P.get(name)(x, level / 5, seed=seed, sample_ids=np.arange(len(x)))
    expected = reference(name, x, level, lambda i: replays[i], **kw)
    np.testing.assert_allclose(ours, expected, atol=atol, err_msg=f"{name} level {level}")


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["cifar", "imagenet"])
@pytest.mark.parametrize("name", ["gaussian_noise_c", "speckle_noise"])
def test_gaussian_and_speckle_noise_are_the_reference_formula_on_the_same_draws(name, size):
    x = images(2, size, seed=3)
    for level in LEVELS:
        replays = [Replay(normal=[hwc(draws(name, 7, i).normal("noise", x.shape[1:])[0])]) for i in range(2)]
        _check_replay(name, x, 7, level, replays, atol=1e-6)


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["cifar", "imagenet"])
def test_impulse_noise_is_the_reference_formula_on_the_same_draws(size):
    x = images(2, size, seed=4)
    for level in LEVELS:
        u = [draws("impulse_noise", 7, i).uniform("impulse", (2, *x.shape[1:]))[0] for i in range(2)]
        replays = [Replay(random=[hwc(u[i][0]), hwc(u[i][1])]) for i in range(2)]
        _check_replay("impulse_noise", x, 7, level, replays, atol=0)


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["cifar", "imagenet"])
def test_motion_blur_is_imagecorruptions_kernel_at_the_drawn_angle(size):
    x = images(2, size, seed=5)
    for level in LEVELS:
        replays = [Replay(uniform=[draws("motion_blur", 3, i).uniform("angle")[0].item()]) for i in range(2)]
        _check_replay("motion_blur", x, 3, level, replays, atol=1e-6)


def _glass_replay(x, seed, i, sigma_delta_iterations, most_passes):
    """The reference's randint(-d, d) pairs in its own scan order, from failfirst's uniforms."""
    _, delta, iterations = sigma_delta_iterations
    h, w = x.shape[-2:]
    pairs = []
    passes = draws("glass_blur", seed, i).uniform("shuffle", (most_passes, 2, h, w))[0].double()
    for it in range(iterations):
        u = passes[it]
        step = torch.floor(delta * (2 * u - 1)).long().clamp(-delta, delta - 1).numpy()
        for row in range(h - delta, delta, -1):
            for col in range(w - delta, delta, -1):
                pairs.append(np.array([step[1, row, col], step[0, row, col]]))   # (dx, dy)
    return Replay(integers=pairs)


@pytest.mark.parametrize("size,levels", [(SMALL, (2, 4)), (LARGE, (1, 3))], ids=["cifar", "imagenet"])
def test_glass_blur_follows_the_references_sequential_copies(size, levels):
    # The levels whose published parameters failfirst keeps; the reference rounds the
    # blurred image to 8 bits before shuffling, hence the tolerance.
    x = images(2, size, seed=6)
    table = "CIFAR-10-C" if size == SMALL else "ImageNet-C"
    from failfirst.perturbations.corruptions.blur import GLASS, GLASS_PUBLISHED
    most = max(GLASS[table]["iterations"])
    for level in levels:
        replays = [_glass_replay(x, 9, i, GLASS_PUBLISHED[table][level - 1], most) for i in range(2)]
        _check_replay("glass_blur", x, 9, level, replays, atol=1.5 / 255)


def test_glass_blur_deviations_keep_the_shuffle_and_hold_sigma_or_passes():
    from failfirst.perturbations.corruptions.blur import GLASS
    assert GLASS["CIFAR-10-C"]["sigma"] == (0.25,) * 5
    assert GLASS["ImageNet-C"]["iterations"] == (2, 2, 3, 3, 3)
    x = images(2, SMALL, seed=6)
    # CIFAR-10-C levels 1-3 share one shuffle and, with sigma held, are one image.
    np.testing.assert_array_equal(P.get("glass_blur")(x, 0.2, seed=1), P.get("glass_blur")(x, 0.6, seed=1))


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["cifar", "imagenet"])
def test_spatter_is_the_reference_pipeline_on_the_same_liquid(size):
    # Canny, distance, equalisation and emboss, batched; the reference is NumPy/SciPy.
    x = images(2, size, seed=7)
    h, w = size
    small = size == SMALL

    def replays():
        return [Replay(normal=[draws("spatter", 5, i).normal("liquid", (1, h, w))[0, 0].double().numpy()])
                for i in range(2)]

    for level in (1, 2, 3) if small else LEVELS:
        _check_replay("spatter", x, 5, level, replays(), atol=1e-6)
    if small:  # CIFAR-10-C mud keeps the level-3 water where the water changed a pixel more
        water = reference("spatter", x, 3, lambda i: replays()[i])
        for level in (4, 5):
            mud = reference("spatter", x, level, lambda i: replays()[i])
            water = np.where(np.abs(mud - x) >= np.abs(water - x), mud, water)
            np.testing.assert_allclose(P.get("spatter")(x, level / 5, seed=5), water, atol=1e-6)


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["cifar", "imagenet"])
def test_fog_is_the_reference_plasma_fractal_on_the_same_draws(size):
    # Level 3's published decay is the one failfirst holds for every level.
    x = images(2, size, seed=8)
    mapsize = 32 if size == SMALL else 128

    def replay(i):
        levels = mapsize.bit_length() - 1
        flat = draws("fog", 4, i).uniform("plasma", (3 * sum(4 ** k for k in range(levels)),))[0].double().numpy()
        uniforms, start = [], 0
        for k in range(levels):   # three blocks per level: squares, then the two diamond sets
            block = flat[start:start + 3 * 4 ** k].reshape(3, 2 ** k, 2 ** k)
            uniforms += [block[0], block[1], block[2]]
            start += 3 * 4 ** k
        return Replay(uniform=uniforms)

    _check_replay("fog", x, 4, 3, [replay(i) for i in range(2)], atol=1e-6)


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["cifar", "imagenet"])
def test_snow_level_1_is_the_reference_on_the_same_draws(size):
    # Higher levels accumulate the flakes below them; the reference rounds its flake
    # layer to 8 bits (twice added: the layer and its 180-degree turn).
    x = images(2, size, seed=9)
    replays = [Replay(normal=[draws("snow", 2, i).normal("flakes", (1, *size))[0, 0].double().numpy()],
                      uniform=[draws("snow", 2, i).uniform("angle")[0].item()]) for i in range(2)]
    _check_replay("snow", x, 2, 1, replays, atol=1.01 / 255)


def test_snow_accumulates_the_flakes_of_lower_levels():
    x = images(2, SMALL, seed=9)
    outs = [P.get("snow")(x, s, seed=2) for s in (0.2, 0.4, 0.6, 0.8, 1.0)]
    assert all((b >= a).all() for a, b in zip(outs, outs[1:]))
    assert all((o >= x - 1e-12).all() for o in outs)      # snow only ever brightens


@pytest.mark.parametrize("size,levels", [(SMALL, (5,)), (LARGE, LEVELS)], ids=["cifar", "imagenet"])
def test_elastic_transform_is_the_reference_displacement_on_the_same_draws(size, levels):
    # ImageNet-C: imagecorruptions' version at every level; CIFAR-10-C: make_cifar_c.py's
    # level 5 (affine then displacement), which lower levels scale down.
    x = images(2, size, seed=10)
    h, w = size
    for level in levels:
        replays = []
        for i in range(2):
            rng = draws("elastic_transform", 6, i)
            fields = rng.uniform("displacement", (2, h, w))[0].double().numpy()
            affine = [rng.uniform("affine", (3, 2))[0].double().numpy()] if size == SMALL else []
            replays.append(Replay(uniform=affine + [fields[0], fields[1]]))
        _check_replay("elastic_transform", x, 6, level, replays, atol=2e-5)


def test_frost_level_5_is_the_reference_blend_of_the_frost_layer():
    x = images(3, SMALL, seed=11)
    layer = P.get("frost")(np.zeros_like(x), 1.0, seed=3) / 0.45        # 0.75 * 0 + 0.45 * layer
    expected = np.stack([R.frost(img.transpose(1, 2, 0), 5, None, texture=tex.transpose(1, 2, 0)).transpose(2, 0, 1)
                         for img, tex in zip(x, layer)])
    np.testing.assert_allclose(P.get("frost")(x, 1.0, seed=3), expected, atol=1e-6)
    # Lower levels sit on the straight line to level 5, at frost amount / 0.45.
    np.testing.assert_allclose(P.get("frost")(x, 0.4, seed=3), x + (expected - x) * 0.3 / 0.45, atol=1e-6)


def test_frost_layer_is_a_crop_of_one_of_five_fixed_sheets_as_the_photos_were():
    from failfirst.perturbations.corruptions import _textures

    rng = SampleRNG(3, "frost", np.arange(40))
    crops = _textures.frost_crops(rng, 32, 28, 0.2)
    sheets = _textures.frost_sheets(32, 28, 0.2)
    assert sheets.shape == (5, 3, 96, 88)
    used = set()
    for crop in crops:
        # candidates: where the crop's corner value sits in a sheet; one must hold the whole crop
        found = [(k, t, l) for k, t, l in torch.nonzero(sheets[:, 0] == crop[0, 0, 0]).tolist()
                 if torch.equal(crop, sheets[k, :, t:t + 32, l:l + 28])]
        assert found, "every layer is a window of a sheet"
        used.add(found[0][0])
    assert len(used) >= 4   # the seed picks the sheet too


def test_frost_layer_looks_like_the_photos_it_replaces():
    layer = P.get("frost")(np.zeros((16, 3, 96, 96)), 1.0, seed=0) / 0.75
    means = layer.mean(axis=(0, 2, 3))
    assert np.all(np.diff(means) > 0), "pale blue: red < green < blue"
    assert 0.45 < layer.mean() < 0.8                  # the photos' grey means are 0.46-0.81
    spread = layer.mean(axis=1).std(axis=(1, 2))
    assert np.all((spread > 0.02) & (spread < 0.2))   # within-photo spread 0.06-0.17


@pytest.mark.parametrize("size", [(20, 16), LARGE])
def test_rotation_and_translation_are_scipy_resampling_at_the_drawn_direction(size):
    x = images(2, size, seed=12)
    h, w = size
    for severity in (0.3, 1.0):
        out = P.get("rotation")(x, severity, seed=1)
        for i in range(2):
            sign = draws("rotation", 1, i).sign("direction")[0].item()
            expected = R.rotation(x[i].transpose(1, 2, 0), -sign * 45.0 * severity).transpose(2, 0, 1)
            kept = out[i] != 0           # swept-out corners are filled
            np.testing.assert_allclose(out[i][kept], expected[kept], atol=1e-9)
            assert (expected[~kept] < 0.5).mean() > 0.5 or (~kept).sum() == 0
        out = P.get("translation")(x, severity, seed=1)
        for i in range(2):
            heading = 2 * np.pi * draws("translation", 1, i).uniform("direction")[0].item()
            dy, dx = 0.25 * severity * h * np.sin(heading), 0.25 * severity * w * np.cos(heading)
            expected = R.translation(x[i].transpose(1, 2, 0), dy, dx).transpose(2, 0, 1)
            np.testing.assert_allclose(out[i], expected, atol=1e-9)


# ---------------------------------------------------------------- random: independent draws, in distribution

IN_DISTRIBUTION = {
    "shot_noise": LEVELS, "gaussian_noise_c": (1, 5), "impulse_noise": (1, 5), "speckle_noise": (1, 5),
    "glass_blur": (4,), "motion_blur": (1, 5), "spatter": (2,), "elastic_transform": (5,), "snow": (1,),
}


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["cifar", "imagenet"])
@pytest.mark.parametrize("name", sorted(IN_DISTRIBUTION))
def test_random_corruptions_match_the_reference_in_distribution(name, size):
    n = 16 if size == SMALL else 4
    x = images(n, size, seed=13)
    levels = IN_DISTRIBUTION[name]
    if name == "glass_blur" and size == LARGE:
        levels = (3,)
    for level in levels:
        ours = P.get(name)(x, level / 5, seed=21)
        theirs = reference(name, x, level, lambda i: np.random.default_rng(1000 + i))
        for stat in (lambda a: a.mean(), lambda a: a.std()):
            assert stat(ours) == pytest.approx(stat(theirs), abs=0.01), f"{name} level {level}"
        changed_ours = (np.abs(ours - x) > 1 / 255).mean()
        changed_theirs = (np.abs(theirs - x) > 1 / 255).mean()
        assert changed_ours == pytest.approx(changed_theirs, abs=0.05), f"{name} level {level}"
        spread_ours, spread_theirs = np.abs(ours - x).mean(), np.abs(theirs - x).mean()
        assert spread_ours == pytest.approx(spread_theirs, rel=0.15, abs=0.002), f"{name} level {level}"


def test_shot_noise_counts_are_poisson():
    rate = torch.tensor([0.05, 0.7, 2.5, 3.99, 4.0, 9.0, 60.0, 400.0], dtype=torch.float64)
    z = torch.randn(20000, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    u = torch.special.ndtr(z)
    counts = noise.poisson_quantile(z, rate.expand(20000, -1)).numpy()
    exact = stats.poisson.ppf(u.numpy(), rate.numpy())
    small = rate.numpy() < noise.EXACT_POISSON_BELOW
    np.testing.assert_array_equal(counts[:, small], exact[:, small])
    assert (counts[:, ~small] != exact[:, ~small]).mean() < 0.02
    assert (np.abs(counts - exact) <= 1).all()
    # The same draws give counts that never fall as the rate grows (by one at most where
    # the exact search hands over to the expansion, between rates 3.99 and 4).
    steps = np.diff(counts, axis=1)
    handover = list(rate.numpy()).index(4.0) - 1
    assert (np.delete(steps, handover, axis=1) >= 0).all() and (steps[:, handover] >= -1).all()


# ---------------------------------------------------------------- the ImageNet-C tables keep the contract too

@pytest.mark.parametrize("name", ALL)
def test_distortion_never_decreases_with_the_imagenet_tables(name):
    x = images(2, (72, 72), seed=14)
    dist = [np.abs(P.get(name)(x, s, seed=5) - x).mean() for s in np.linspace(0, 1, 11)]
    assert np.all(np.diff(dist) >= -1e-6 * max(dist)), np.round(dist, 5)
    assert dist[-1] == pytest.approx(max(dist))


@pytest.mark.parametrize("name", ["pixelate", "jpeg_compression", "zoom_blur", "glass_blur"])
def test_between_levels_pixels_switch_once_and_stay_switched(name):
    x = images(2, SMALL, seed=15)
    low, high = P.get(name)(x, 0.6, seed=2), P.get(name)(x, 0.8, seed=2)
    switched_before = np.zeros(x.shape[-2:], dtype=bool)[None].repeat(2, 0)
    for s in (0.65, 0.7, 0.75):
        out = P.get(name)(x, s, seed=2)
        from_high = np.all(out == high, axis=1) & ~np.all(low == high, axis=1)
        assert np.all((out == low) | (out == high))
        assert not (switched_before & ~from_high).any()
        switched_before = from_high


@pytest.mark.parametrize("name", ALL)
def test_one_channel_and_two_channel_images_are_handled(name):
    for channels in (1, 2):
        x = images(2, SMALL, seed=16)[:, :channels]
        out = P.get(name)(x, 0.7, seed=1)
        assert out.shape == x.shape and np.isfinite(out).all()


def test_jpeg_round_trips_torch_batches_through_the_cpu():
    x = torch.from_numpy(images(2, SMALL, seed=17)).float()
    out = P.get("jpeg_compression")(x, 0.6, seed=0)
    assert out.device == x.device and out.dtype == x.dtype
    expected = reference("jpeg_compression", x.double().numpy(), 3, lambda i: None)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-6)
