"""The seed's four time-series perturbations, scaled by each series' own statistics."""

from __future__ import annotations

import torch

from failfirst.perturbations.draws import SampleRNG
from failfirst.perturbations.registry import interp, register

# Severity tables: values at evenly spaced severities from 0 to 1, interpolated between.
NOISE_STD_RATIO = (0.0, 1.0)     # noise std in units of the series' own std (per channel)
DROPOUT_FRACTION = (0.0, 1.0)    # fraction of time steps zeroed
SHIFT_STDS = (0.0, 2.0)          # mean shift in units of the series' own std
VARIANCE_GAIN = (1.0, 3.0)       # factor applied to deviations from the series' mean


def series_std(x: torch.Tensor) -> torch.Tensor:
    """Std over time of each series and channel, (N, 1, C): per sample, never per batch."""
    return x.std(dim=1, keepdim=True, unbiased=False)


@register("timeseries", family="noise", params={"std_ratio": NOISE_STD_RATIO})
def ts_gaussian_noise(x: torch.Tensor, severity: float, rng: SampleRNG) -> torch.Tensor:
    """Additive Gaussian noise whose std is up to 1x the series' own std."""
    noise = rng.normal("noise", x.shape[1:]).to(x)
    return x + interp(severity, NOISE_STD_RATIO) * series_std(x) * noise


@register("timeseries", family="dropout", params={"fraction": DROPOUT_FRACTION, "fill": 0.0})
def temporal_dropout(x: torch.Tensor, severity: float, rng: SampleRNG) -> torch.Tensor:
    """Zero out a random `severity` fraction of time steps (all channels of a step together)."""
    # One uniform per step, shared across severities: a step dropped at one level stays dropped.
    dropped = rng.uniform("steps", (x.shape[1],)).to(x.device) < interp(severity, DROPOUT_FRACTION)
    return x.masked_fill(dropped[:, :, None], 0.0)


@register("timeseries", family="drift", params={"shift_stds": SHIFT_STDS})
def mean_shift(x: torch.Tensor, severity: float, rng: SampleRNG) -> torch.Tensor:
    """Shift the series' mean up or down (random sign per series) by up to 2 of its stds."""
    sign = rng.sign("direction", (1, x.shape[2])).to(x)
    return x + interp(severity, SHIFT_STDS) * series_std(x) * sign


@register("timeseries", family="drift", params={"gain": VARIANCE_GAIN})
def variance_shift(x: torch.Tensor, severity: float, rng: SampleRNG) -> torch.Tensor:
    """Scale deviations from the series' mean, up to 3x its std at severity 1."""
    mean = x.mean(dim=1, keepdim=True)
    return mean + (x - mean) * interp(severity, VARIANCE_GAIN)
