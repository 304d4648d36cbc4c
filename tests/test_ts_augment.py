"""What each time-series augmentation does; the registry-wide contract is in test_perturbations."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import torch

import failfirst.perturbations as P
from failfirst.perturbations.draws import SampleRNG
from failfirst.perturbations.ts_augment import quantize_levels

FAMILIES = {
    "time_warp": "warp", "magnitude_warp": "warp", "drift": "drift", "trend": "drift",
    "spike_noise": "noise", "block_dropout": "dropout", "quantize": "digital",
    "smoothing": "blur", "time_shift": "shift", "scaling": "scale",
    "channel_dropout": "dropout", "low_resolution": "digital",
}


def series(n=6, t=64, c=3, seed=0) -> np.ndarray:
    """Noisy sines whose rows and channels differ in scale and offset."""
    rng = np.random.default_rng(seed)
    steps = np.linspace(0, 4 * np.pi, t)[None, :, None]
    base = np.sin(steps * rng.uniform(0.5, 2, (n, 1, c))) + 0.1 * rng.standard_normal((n, t, c))
    return base * rng.uniform(0.5, 10, (n, 1, c)) + rng.uniform(-5, 5, (n, 1, c))


def ramps(n=6, t=64, c=3, seed=0) -> np.ndarray:
    """Strictly increasing series (distinct values), so a moved or held value shows."""
    rng = np.random.default_rng(seed)
    return np.arange(t)[None, :, None] * rng.uniform(1, 3, (n, 1, c)) + rng.uniform(1, 5, (n, 1, c))


def apply(name, x, severity, seed=0, **kw):
    return P.get(name)(x, severity, seed=seed, **kw)


def test_every_augmentation_is_registered_with_its_family_and_a_description():
    assert set(FAMILIES) <= set(P.names("timeseries"))
    for name, family in FAMILIES.items():
        p = P.get(name)
        assert p.domain == "timeseries" and p.family == family
        assert p.description and "\n" not in p.description
        assert p.describe()["family"] == family


@pytest.mark.parametrize("name", sorted(FAMILIES))
@pytest.mark.parametrize("shape", [(4, 50), (4, 50, 1), (4, 50, 3), (3, 1), (3, 2, 2), (3, 5)])
def test_works_on_univariate_multivariate_and_very_short_series(name, shape):
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    out = apply(name, x, 1.0)
    assert out.shape == x.shape and np.isfinite(out).all()
    # spike_noise hits 5 % of cells: only on 100+ cells is "at least one spike" near certain
    if shape[1] >= 5 and (name != "spike_noise" or np.prod(shape) >= 100):
        assert not np.array_equal(out, x)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_draws_survive_reuse_across_severities(name):
    """The engine applies one SampleRNG at every severity; cached draws must stay untouched."""
    x = torch.from_numpy(series(c=2))
    shared = SampleRNG(3, name, np.arange(len(x)))
    p = P.get(name)
    for s in (0.3, 0.7):
        p.apply(x, s, shared)
    torch.testing.assert_close(p.apply(x, 1.0, shared),
                               p.apply(x, 1.0, SampleRNG(3, name, np.arange(len(x)))))


def test_time_warp_is_a_smooth_monotone_map_that_keeps_the_ends():
    t = np.arange(64.0)
    x = np.stack([t, 3 * t + 2], -1)[None].repeat(40, 0)       # two channels, one clock
    half, full = apply("time_warp", x, 0.5), apply("time_warp", x, 1.0)
    clock = full[..., 0]
    np.testing.assert_allclose(full[..., 1], 3 * clock + 2, rtol=1e-9)  # channels warp together
    np.testing.assert_allclose(full[:, [0, -1]], x[:, [0, -1]])
    speed = np.diff(clock, axis=1)
    assert (speed > 0).all()
    assert (speed.max(1) / speed.min(1)).max() <= 3.0 + 1e-6        # tsaug's max_speed_ratio
    assert (speed.max(1) / speed.min(1)).mean() > 1.5
    # The same draws at every severity: larger displacements, the same direction.
    moved_half, moved_full = half[..., 0] - t, clock - t
    assert np.abs(moved_full).sum() > 1.5 * np.abs(moved_half).sum()
    big = np.abs(moved_half) > 0.5
    assert (np.sign(moved_half[big]) == np.sign(moved_full[big])).all()


def test_magnitude_warp_multiplies_by_a_smooth_positive_curve_per_channel():
    x = np.ones((8, 200, 2))
    half, full = apply("magnitude_warp", x, 0.5), apply("magnitude_warp", x, 1.0)
    assert (full > 0).all()
    np.testing.assert_allclose(np.log(full), 2 * np.log(half), rtol=1e-6, atol=1e-9)
    assert np.abs(np.diff(full, 2, axis=1)).max() < 0.01 * np.abs(full - 1).max()  # smooth
    assert not np.allclose(full[..., 0], full[..., 1])
    z = series()
    np.testing.assert_allclose(apply("magnitude_warp", z, 0.7) / z,
                               apply("magnitude_warp", np.ones_like(z), 0.7), rtol=1e-9)


def test_drift_is_a_random_walk_from_zero_scaled_by_the_series_std():
    x = series(n=200, t=101)
    walk = apply("drift", x, 1.0) - x
    std = x.std(axis=1, keepdims=True)
    np.testing.assert_allclose(walk[:, 0], 0.0, atol=1e-9)
    np.testing.assert_allclose(apply("drift", x, 0.5) - x, walk / 2, rtol=1e-6, atol=1e-9)
    steps = np.diff(walk / std, axis=1)                           # independent normal steps
    assert steps.std() == pytest.approx(2 / np.sqrt(100), rel=0.03)
    assert abs(np.corrcoef(steps[:, 1:].ravel(), steps[:, :-1].ravel())[0, 1]) < 0.03
    assert (walk[:, -1] / std[:, 0]).std() == pytest.approx(2.0, rel=0.1)
    scaled = apply("drift", 10 * x + 7, 1.0) - (10 * x + 7)
    np.testing.assert_allclose(scaled, 10 * walk, rtol=1e-5, atol=1e-6)


def test_trend_is_linear_and_rises_two_stds_with_a_random_sign_per_channel():
    x = series(n=50)
    added = apply("trend", x, 1.0) - x
    std = x.std(axis=1)
    np.testing.assert_allclose(np.diff(added, 2, axis=1), 0.0, atol=1e-9)
    np.testing.assert_allclose(added[:, 0], 0.0, atol=1e-9)
    np.testing.assert_allclose(np.abs(added[:, -1]), 2 * std, rtol=1e-9)
    assert 0.3 < (added[:, -1] > 0).mean() < 0.7
    np.testing.assert_allclose(apply("trend", x, 0.25) - x, added / 4, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(apply("trend", 10 * x, 1.0) - 10 * x, 10 * added, rtol=1e-9)


def test_spike_positions_are_nested_and_spikes_grow_with_severity():
    x = series(n=100)
    std = x.std(axis=1, keepdims=True)
    previous_hit, previous_size = np.zeros(x.shape, bool), np.zeros(x.shape)
    for s in np.linspace(0.1, 1.0, 10):
        spikes = (apply("spike_noise", x, s) - x) / std
        hit = spikes != 0
        assert not (previous_hit & ~hit).any(), f"spikes at {s} do not contain the lower ones"
        assert (np.abs(spikes[previous_hit]) > np.abs(previous_size[previous_hit])).all()
        assert (np.sign(spikes[previous_hit]) == np.sign(previous_size[previous_hit])).all()
        previous_hit, previous_size = hit, spikes
    assert hit.mean() == pytest.approx(0.05, abs=0.01)
    heights = np.abs(spikes[hit])
    assert heights.min() >= 3 - 1e-9 and heights.max() < 6
    assert 0.4 < (spikes[hit] > 0).mean() < 0.6


def _missing(x, out):
    """Steps where any channel changed: with strictly increasing x, exactly the dropped ones."""
    return (out != x).any(axis=-1)


def test_block_dropout_is_nested_contiguous_and_carries_the_last_value():
    x = ramps(n=40)
    t = x.shape[1]
    previous = np.zeros(x.shape[:2], bool)
    for s in np.linspace(0.1, 1.0, 10):
        out = apply("block_dropout", x, s)
        missing = _missing(x, out)
        assert ((out != x).all(-1) == missing).all(), "all channels drop together"
        assert not (previous & ~missing).any(), f"gaps at {s} do not contain the lower ones"
        previous = missing
    assert not missing[:, 0].any()
    for row in range(len(x)):
        for quarter in np.split(np.arange(t), 4):              # one contiguous run per quarter
            gap = quarter[missing[row, quarter]]
            assert len(gap) and np.array_equal(gap, np.arange(gap[0], gap[-1] + 1))
            np.testing.assert_array_equal(out[row, gap], x[row, [gap[0] - 1] * len(gap)])
    assert missing.mean() == pytest.approx(0.8 * 0.75, abs=0.08)


def test_quantize_has_at_most_the_levels_on_each_series_own_range():
    x = series(n=8, t=500)
    assert [quantize_levels(s) for s in (0.01, 0.5, 1.0)] == [256, 2 ** 5, 2]
    for s in (0.1, 0.5, 0.8, 1.0):
        levels = quantize_levels(s)
        out = apply("quantize", x, s)
        low, high = x.min(axis=1, keepdims=True), x.max(axis=1, keepdims=True)
        width = (high - low) / levels
        for row in out.transpose(0, 2, 1).reshape(-1, 500):        # each series, each channel
            assert len(np.unique(row)) <= levels
        grid = (out - low) / width - 0.5                        # level indices 0 .. L-1
        np.testing.assert_allclose(grid, np.round(grid), atol=1e-6)
        assert (np.abs(out - x) <= width / 2 + 1e-9).all()
    flat = np.full((1, 20, 2), 3.0)
    np.testing.assert_array_equal(apply("quantize", flat, 1.0), flat)
    two = apply("quantize", x, 1.0)
    np.testing.assert_array_equal(two[:4], apply("quantize", x[:4], 1.0))


def test_smoothing_is_a_gaussian_of_a_sixteenth_of_the_length_and_removes_high_frequencies():
    x = series(n=4, t=64)
    expected = scipy.ndimage.gaussian_filter1d(x, 4.0, axis=1, mode="nearest", truncate=3.0)
    np.testing.assert_allclose(apply("smoothing", x, 1.0), expected, rtol=1e-6, atol=1e-9)
    rng = np.random.default_rng(0)
    noisy = rng.standard_normal((4, 256, 2))
    high = lambda y: (np.abs(np.fft.rfft(y, axis=1))[:, 32:] ** 2).sum()  # noqa: E731
    energy = [high(apply("smoothing", noisy, s)) for s in (0.02, 0.05, 0.1, 0.2)]
    assert energy[0] < high(noisy) and np.all(np.diff(energy) < 0)
    flat = np.full((2, 30), 1.5)
    np.testing.assert_allclose(apply("smoothing", flat, 1.0), flat)


def _shift_of(seed, n, t, severity):
    """The circular shift each row gets, read off where an impulse at step 0 moved to."""
    impulse = np.zeros((n, t))
    impulse[:, 0] = 1.0
    out = apply("time_shift", impulse, severity, seed=seed)
    assert np.allclose(out.sum(1), 1.0) and (np.count_nonzero(out, axis=1) <= 2).all()
    rows = np.arange(n)
    left = np.argmax((out > 0) & (np.roll(out, 1, axis=1) == 0), axis=1)  # first of the pair
    shift = left + out[rows, (left + 1) % t]
    return np.where(shift > t / 2, shift - t, shift)


def test_time_shift_is_a_circular_roll_of_all_channels_together():
    n, t = 50, 80
    x = series(n=n, t=t)
    for s in (0.3, 1.0):
        shift = _shift_of(4, n, t, s)
        assert (np.abs(shift) >= 0.5 * 0.1 * t * s - 1e-6).all()
        assert (np.abs(shift) < 0.1 * t * s + 1e-6).all()
        out = apply("time_shift", x, s, seed=4)
        for row, d in zip(range(n), shift):
            k, f = int(np.floor(d)), d - np.floor(d)
            rolled = (1 - f) * np.roll(x[row], k, axis=0) + f * np.roll(x[row], k + 1, axis=0)
            np.testing.assert_allclose(out[row], rolled, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(_shift_of(4, n, t, 0.5), _shift_of(4, n, t, 1.0) / 2, atol=1e-6)
    assert 0.3 < (shift > 0).mean() < 0.7


def test_time_shift_by_a_whole_number_of_steps_is_exactly_a_roll():
    t = 80
    full = _shift_of(0, 10, t, 1.0)
    x = series(n=10, t=t, c=2)
    for row, d in enumerate(full):
        k = int(np.trunc(d))                                   # a severity that shifts by k
        out = apply("time_shift", x[row:row + 1], k / d, seed=0, sample_ids=[row])
        np.testing.assert_allclose(out[0], np.roll(x[row], k, axis=0), rtol=1e-9, atol=1e-9)


def test_scaling_multiplies_each_channel_by_a_factor_away_from_one():
    x = series(n=50)
    full = apply("scaling", x, 1.0) / x
    np.testing.assert_allclose(full, np.broadcast_to(full[:, :1], full.shape), rtol=1e-9)
    octaves = np.abs(np.log2(full[:, 0]))
    assert octaves.min() >= 0.5 - 1e-9 and octaves.max() < 1.0
    assert 0.3 < (full[:, 0] > 1).mean() < 0.7
    np.testing.assert_allclose(apply("scaling", x, 0.5) / x, np.sqrt(full), rtol=1e-9)


def test_channel_dropout_zeroes_whole_channels_nested_and_a_lone_channel_too():
    x = series(n=200, c=4) + 20                                     # no zeros of its own
    previous = np.zeros((200, 4), bool)
    for s in (0.2, 0.5, 0.8, 1.0):
        out = apply("channel_dropout", x, s)
        zeroed = (out == 0).all(axis=1)
        assert ((out == x) | (out == 0)).all() and ((out == 0).any(axis=1) == zeroed).all()
        assert not (previous & ~zeroed).any()
        assert zeroed.mean() == pytest.approx(s, abs=0.05)
        previous = zeroed
    lone = apply("channel_dropout", x[..., 0], 0.5)
    gone = (lone == 0).all(axis=1)
    assert 0.35 < gone.mean() < 0.65 and (lone[~gone] == x[~gone, :, 0]).all()


def _down_up(x, factor):
    """Reference: block means, then linear interpolation at the coarse samples' centres."""
    n, t, c = x.shape
    low = x.reshape(n, t // factor, factor, c).mean(2)
    centres = (np.arange(t // factor) + 0.5) * factor - 0.5
    return np.stack([[np.interp(np.arange(t), centres, low[i, :, j]) for j in range(c)]
                     for i in range(n)]).transpose(0, 2, 1)


def test_low_resolution_at_one_is_the_eightfold_down_up_and_blends_between_octaves():
    x = series(n=3, t=64)
    np.testing.assert_allclose(apply("low_resolution", x, 1.0), _down_up(x, 8), atol=1e-9)
    np.testing.assert_allclose(apply("low_resolution", x, 1 / 3), _down_up(x, 2), atol=1e-9)
    np.testing.assert_allclose(apply("low_resolution", x, 0.5),
                               (_down_up(x, 2) + _down_up(x, 4)) / 2, atol=1e-9)
    np.testing.assert_allclose(apply("low_resolution", x, 1 / 6), (x + _down_up(x, 2)) / 2,
                               atol=1e-9)
