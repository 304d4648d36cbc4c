"""Time-series augmentations in the manner of tsaug and tsai, as seeded perturbations."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from failfirst.perturbations.draws import SampleRNG
from failfirst.perturbations.kernels import down_up, gaussian_kernel1d, octave_blend
from failfirst.perturbations.timeseries import series_std
from failfirst.perturbations.registry import interp, register

# Severity tables: values at evenly spaced severities from 0 to 1, interpolated between.
WARP_SPEED_RATIO = (1.0, 3.0)     # time_warp: fastest / slowest local speed (tsaug's ratio)
WARP_KNOTS = 5                    # time_warp: speed knots along the series
MAGNITUDE_SIGMA = (0.0, 0.4)      # magnitude_warp: std of the log gain curve's knots
MAGNITUDE_KNOTS = 6               # magnitude_warp: gain knots along the series
DRIFT_STDS = (0.0, 2.0)           # drift: random walk's end-point std, in the series' stds
TREND_STDS = (0.0, 2.0)           # trend: rise from first to last step, in the series' stds
SPIKE_FRACTION = (0.0, 0.05)      # spike_noise: fraction of (step, channel) cells hit
SPIKE_STDS = (0.0, 3.0)           # spike_noise: spike height, times U[1, 2), in the series' stds
BLOCK_FRACTION = (0.0, 0.8)       # block_dropout: share of each slot's tail that goes missing
BLOCK_SLOTS = 4                   # block_dropout: one missing segment per quarter of the series
QUANTIZE_BITS = (8.0, 1.0)        # quantize: bits per series (256 levels down to 2)
SMOOTH_SIGMA = (0.0, 1.0 / 16)    # smoothing: Gaussian std as a fraction of the length
SHIFT_FRACTION = (0.0, 0.1)       # time_shift: largest circular shift as a fraction of the length
SCALE_OCTAVES = (0.0, 1.0)        # scaling: |log2 factor| up to this, times U[0.5, 1)
CHANNEL_DROP = (0.0, 1.0)         # channel_dropout: chance each channel is zeroed
RESOLUTION_OCTAVES = (0.0, 3.0)   # low_resolution: 1/2**octaves of the time resolution


def _smooth_curve(knots: torch.Tensor, length: int) -> torch.Tensor:
    """Cubic (Keys) interpolation of evenly spaced knots to `length` steps, ends on the knots.

    Shape:
        knots (N, K, C); returns (N, length, C).
    """
    n, k, c = knots.shape
    rows = knots.permute(0, 2, 1).reshape(n * c, 1, 1, k)
    curve = F.interpolate(rows, size=(1, length), mode="bicubic", align_corners=True)
    return curve.reshape(n, c, length).permute(0, 2, 1)


def _take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Each series' steps at `index`, all channels alike.

    Shape:
        x (N, T, C); index (N, T') integer; returns (N, T', C).
    """
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[2]))


def _sample_at(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of each series at fractional time `positions` in [0, T-1].

    Shape:
        x (N, T, C); positions (N, T') of the same float dtype; returns (N, T', C).
    """
    t = x.shape[1]
    left = positions.floor().clamp(0, max(t - 2, 0)).long()
    frac = (positions - left).unsqueeze(-1)
    right = (left + 1).clamp(max=t - 1)
    return torch.lerp(_take(x, left), _take(x, right), frac)


@register("timeseries", family="warp",
          params={"speed_ratio": WARP_SPEED_RATIO, "knots": WARP_KNOTS})
def time_warp(x: torch.Tensor, severity: float, rng: SampleRNG) -> torch.Tensor:
    """Smooth random monotone time distortion; local speeds differ up to 3x at severity 1."""
    t = x.shape[1]
    if t < 2:
        return x.clone()
    # A smooth log-speed curve in [-1, 1] (all channels together), fixed across severities;
    # severity only scales it, so ends stay put and the warp stays monotone.
    knots = rng.uniform("speed", (WARP_KNOTS, 1)).to(x) * 2 - 1
    log_ratio = math.log(interp(severity, WARP_SPEED_RATIO)) / 2
    speed = torch.exp(log_ratio * _smooth_curve(knots, t).clamp(-1, 1))[..., 0]
    steps = (speed[:, 1:] + speed[:, :-1]) / 2
    clock = torch.cat([torch.zeros_like(speed[:, :1]), steps.cumsum(1)], dim=1)
    return _sample_at(x, clock / clock[:, -1:] * (t - 1))


@register("timeseries", family="warp",
          params={"sigma": MAGNITUDE_SIGMA, "knots": MAGNITUDE_KNOTS})
def magnitude_warp(x: torch.Tensor, severity: float, rng: SampleRNG) -> torch.Tensor:
    """Multiply the raw values by a smooth random gain curve around 1, per channel."""
    knots = rng.normal("gain", (MAGNITUDE_KNOTS, x.shape[2])).to(x)
    # exp keeps the gain positive, and |exp(s*c) - 1| grows with s for every step.
    return x * torch.exp(interp(severity, MAGNITUDE_SIGMA) * _smooth_curve(knots, x.shape[1]))


@register("timeseries", family="drift", params={"end_stds": DRIFT_STDS})
def drift(x: torch.Tensor, severity: float, rng: SampleRNG) -> torch.Tensor:
    """Add a random-walk baseline from 0, ending about 2 of the series' stds away at severity 1."""
    t = x.shape[1]
    steps = rng.normal("walk", (t - 1, x.shape[2])).to(x)
    # The walk starts at 0, so the first value stays; its end has std 1 before scaling.
    walk = torch.cat([torch.zeros_like(x[:, :1]), steps.cumsum(1)], 1) / math.sqrt(max(t - 1, 1))
    return x + interp(severity, DRIFT_STDS) * series_std(x) * walk


@register("timeseries", family="drift", params={"rise_stds": TREND_STDS})
def trend(x: torch.Tensor, severity: float, rng: SampleRNG) -> torch.Tensor:
    """Add a linear trend from 0 to +-2 of the series' stds (random sign per channel)."""
    sign = rng.sign("direction", (1, x.shape[2])).to(x)
    ramp = torch.linspace(0.0, 1.0, x.shape[1], dtype=x.dtype, device=x.device)[None, :, None]
    return x + interp(severity, TREND_STDS) * series_std(x) * sign * ramp


@register("timeseries", family="noise",
          params={"fraction": SPIKE_FRACTION, "height_stds": SPIKE_STDS})
def spike_noise(x: torch.Tensor, severity: float, rng: SampleRNG) -> torch.Tensor:
    """Impulses on up to 5% of steps per channel, 3-6 of the series' stds high, random sign."""
    shape = x.shape[1:]
    # One draw per cell: a cell spiked at one severity stays spiked, and taller, above it.
    hit = rng.uniform("where", shape).to(x.device) < interp(severity, SPIKE_FRACTION)
    height = (1 + rng.uniform("height", shape).to(x)) * rng.sign("sign", shape).to(x)
    return x + hit * height * interp(severity, SPIKE_STDS) * series_std(x)


@register("timeseries", family="dropout",
          params={"slot_fraction": BLOCK_FRACTION, "slots": BLOCK_SLOTS, "fill": "last value"})
def block_dropout(x: torch.Tensor, severity: float, rng: SampleRNG) -> torch.Tensor:
    """Contiguous gaps (one per quarter, all channels at once) holding the last value seen."""
    t = x.shape[1]
    steps = torch.arange(t, device=x.device, dtype=torch.float64)
    # Each quarter of the series holds one segment: it starts in the quarter's first half and
    # grows to the right with severity, never leaving its quarter. So segments never merge,
    # each keeps the value before its start, and the missing set is nested across severities.
    slot_len = t / BLOCK_SLOTS
    slot = (steps / slot_len).floor().clamp(max=BLOCK_SLOTS - 1)
    u = rng.uniform("start", (BLOCK_SLOTS,)).to(device=x.device, dtype=torch.float64)
    start = (torch.arange(BLOCK_SLOTS, device=x.device) + u / 2) * slot_len     # (N, slots)
    begin = start[:, slot.long()]                                                # (N, T)
    length = interp(severity, BLOCK_FRACTION) * ((slot + 1) * slot_len - begin)
    missing = (steps > begin) & (steps <= begin + length)
    source = torch.where(missing, begin.floor(), steps).long()
    return _take(x, source)


def quantize_levels(severity: float) -> int:
    """Levels per series at `severity`: 2**bits, bits stepping down from 8 to 1."""
    # Whole bits only: each step merges pairs of cells, so the error roughly doubles and the
    # distortion never dips, where an arbitrary level count would wobble between neighbours.
    return 2 ** math.ceil(interp(severity, QUANTIZE_BITS) - 1e-9)


@register("timeseries", family="digital", params={"bits": QUANTIZE_BITS})
def quantize(x: torch.Tensor, severity: float, rng: SampleRNG) -> torch.Tensor:
    """Round to 2**bits evenly spaced levels over each series' own range (256 down to 2)."""
    levels = quantize_levels(severity)
    low, high = x.amin(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)
    width = (high - low) / levels
    safe = torch.where(width > 0, width, torch.ones_like(width))
    cell = ((x - low) / safe).floor().clamp(0, levels - 1)
    # Mid-rise levels (cell centres); a constant series has nothing to quantize.
    return torch.where(width > 0, low + (cell + 0.5) * safe, x)


@register("timeseries", family="blur", params={"sigma_fraction": SMOOTH_SIGMA})
def smoothing(x: torch.Tensor, severity: float, rng: SampleRNG) -> torch.Tensor:
    """Gaussian low-pass along time, std up to 1/16 of the length; edges replicated."""
    n, t, c = x.shape
    kernel = gaussian_kernel1d(interp(severity, SMOOTH_SIGMA) * t, dtype=x.dtype, device=x.device)
    radius = len(kernel) // 2
    rows = x.permute(0, 2, 1).reshape(n * c, 1, t)
    out = F.conv1d(F.pad(rows, (radius, radius), mode="replicate"), kernel.view(1, 1, -1))
    return out.reshape(n, c, t).permute(0, 2, 1)


@register("timeseries", family="shift", params={"max_fraction": SHIFT_FRACTION, "mode": "circular"})
def time_shift(x: torch.Tensor, severity: float, rng: SampleRNG) -> torch.Tensor:
    """Circular shift by up to 10% of the length (amount U[0.5, 1) of that, direction random)."""
    t = x.shape[1]
    # The amount varies per series as well as the direction, so two seeds rarely coincide.
    amount = (0.5 + rng.uniform("amount", ()) / 2).to(device=x.device, dtype=torch.float64)
    shift = amount * interp(severity, SHIFT_FRACTION) * t * rng.sign("direction", ()).to(amount)
    # Fractional shifts interpolate between neighbouring whole rolls: continuous in severity.
    steps = torch.arange(t, device=x.device, dtype=torch.float64)
    source = torch.remainder(steps[None, :] - shift[:, None], t)                  # (N, T)
    left = source.floor()
    frac = (source - left).to(x).unsqueeze(-1)
    return torch.lerp(_take(x, left.long() % t), _take(x, (left.long() + 1) % t), frac)


@register("timeseries", family="scale", params={"octaves": SCALE_OCTAVES})
def scaling(x: torch.Tensor, severity: float, rng: SampleRNG) -> torch.Tensor:
    """Multiply each channel's raw values by a random factor, 2**+-[0.5, 1) at severity 1."""
    shape = (1, x.shape[2])
    exponent = (0.5 + rng.uniform("size", shape).to(x) / 2) * rng.sign("direction", shape).to(x)
    return x * torch.exp2(interp(severity, SCALE_OCTAVES) * exponent)


@register("timeseries", family="dropout", params={"probability": CHANNEL_DROP, "fill": 0.0})
def channel_dropout(x: torch.Tensor, severity: float, rng: SampleRNG) -> torch.Tensor:
    """Zero whole channels, each with chance `severity` (so a lone channel too); all at 1."""
    # One draw per channel: a channel zeroed at one severity stays zeroed above it.
    dropped = rng.uniform("channels", (x.shape[2],)).to(x.device) < interp(severity, CHANNEL_DROP)
    return x.masked_fill(dropped[:, None, :], 0.0)


@register("timeseries", family="digital", params={"octaves": RESOLUTION_OCTAVES})
def low_resolution(x: torch.Tensor, severity: float, rng: SampleRNG) -> torch.Tensor:
    """Average down then linearly up-sample along time; 1/8 of the resolution at severity 1."""
    # As resolution_downsample does for images: blend between whole octaves, so distortion
    # is continuous and monotone where whole sizes would jump between neighbours.
    # down_up resamples the last dim: time, with channels moved in front of it.
    rows = x.permute(0, 2, 1)
    return octave_blend(rows, interp(severity, RESOLUTION_OCTAVES), down_up).permute(0, 2, 1)
