"""The seed's four vision perturbations: noise, occlusion, blur and downsampling."""

from __future__ import annotations

import torch

from failfirst.perturbations.draws import SampleRNG
from failfirst.perturbations.kernels import down_up, gaussian_blur, octave_blend
from failfirst.perturbations.registry import interp, register

# Severity tables: values at evenly spaced severities from 0 to 1, interpolated between.
NOISE_SIGMA = (0.0, 0.5)            # std of additive noise, in [0, 1] pixel units
BLUR_SIGMA = (0.0, 0.1)             # blur std as a fraction of the image's shorter side
DOWNSAMPLE_OCTAVES = (0.0, 3.0)     # halvings of the resolution (1/8 at severity 1)


@register("vision", family="noise", params={"sigma": NOISE_SIGMA})
def gaussian_noise(x: torch.Tensor, severity: float, rng: SampleRNG) -> torch.Tensor:
    """Additive Gaussian noise; its std grows linearly to 0.5 at severity 1."""
    return x + interp(severity, NOISE_SIGMA) * rng.normal("noise", x.shape[1:]).to(x)


@register("vision", family="occlusion", params={"area_fraction": (0.0, 1.0), "fill": 0.0})
def random_occlusion(x: torch.Tensor, severity: float, rng: SampleRNG) -> torch.Tensor:
    """A black rectangle at a random place whose area is `severity` of the image (all at 1)."""
    _, _, h, w = x.shape
    centre = rng.uniform("centre", (2,)).to(x)          # where the box grows from, per axis
    aspect = 0.25 + 0.5 * rng.uniform("aspect", ()).to(x)
    # Side fractions severity**a and severity**(1-a) multiply to `severity`; each grows with
    # severity and the box grows around a fixed anchor, so boxes are nested across levels.
    side_h = severity ** aspect
    side_w = severity ** (1.0 - aspect)
    top = centre[:, 0] * (1.0 - side_h)
    left = centre[:, 1] * (1.0 - side_w)
    rows = (torch.arange(h, device=x.device, dtype=x.dtype) + 0.5) / h
    cols = (torch.arange(w, device=x.device, dtype=x.dtype) + 0.5) / w
    inside_h = (rows[None] >= top[:, None]) & (rows[None] <= (top + side_h)[:, None])
    inside_w = (cols[None] >= left[:, None]) & (cols[None] <= (left + side_w)[:, None])
    mask = inside_h[:, :, None] & inside_w[:, None, :]
    return x.masked_fill(mask[:, None], 0.0)


@register("vision", family="blur", params={"sigma_fraction": BLUR_SIGMA})
def blur(x: torch.Tensor, severity: float, rng: SampleRNG) -> torch.Tensor:
    """Gaussian blur; its std grows to a tenth of the image's shorter side at severity 1."""
    sigma = interp(severity, BLUR_SIGMA) * min(x.shape[-2:])
    return gaussian_blur(x, sigma)


@register("vision", family="digital", params={"octaves": DOWNSAMPLE_OCTAVES})
def resolution_downsample(x: torch.Tensor, severity: float, rng: SampleRNG) -> torch.Tensor:
    """Downsample (area average) then upsample (bilinear) back; 1/8 resolution at severity 1."""
    return octave_blend(x, interp(severity, DOWNSAMPLE_OCTAVES), down_up)
