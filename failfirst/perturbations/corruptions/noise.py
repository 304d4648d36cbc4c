"""ImageNet-C noise corruptions: Gaussian, shot (Poisson), impulse (salt and pepper) and speckle."""

from __future__ import annotations

import math

import torch

from failfirst.perturbations.corruptions._common import at, corruption, pick
from failfirst.perturbations.draws import SampleRNG

# Level tables (ImageNet-C levels 1..5 at severity 0.2 .. 1.0), from Hendrycks' make_cifar_c.py
# and make_imagenet_c.py (the ImageNet-C ones are also bethgelab imagecorruptions').
GAUSSIAN = {"CIFAR-10-C": {"sigma": (0.04, 0.06, 0.08, 0.09, 0.10)},
            "ImageNet-C": {"sigma": (0.08, 0.12, 0.18, 0.26, 0.38)}}
SHOT = {"CIFAR-10-C": {"photons": (500, 250, 100, 75, 50)},
        "ImageNet-C": {"photons": (60, 25, 12, 5, 3)}}
IMPULSE = {"CIFAR-10-C": {"amount": (0.01, 0.02, 0.03, 0.05, 0.07)},
           "ImageNet-C": {"amount": (0.03, 0.06, 0.09, 0.17, 0.27)}}
SPECKLE = {"CIFAR-10-C": {"sigma": (0.06, 0.1, 0.12, 0.16, 0.2)},
           "ImageNet-C": {"sigma": (0.15, 0.2, 0.35, 0.45, 0.6)}}

EXACT_POISSON_BELOW = 4.0   # rate under which the Poisson quantile is found by exact search


@corruption("noise", GAUSSIAN, name="gaussian_noise_c",
            description="ImageNet-C Gaussian noise: additive, std from the CIFAR-10-C/ImageNet-C table.")
def gaussian_noise_c(x: torch.Tensor, severity: float, rng: SampleRNG) -> torch.Tensor:
    sigma = at(severity, 0.0, pick(GAUSSIAN, x)["sigma"])
    return x + sigma * rng.normal("noise", x.shape[1:]).to(x)


@corruption("noise", SHOT, interpolated="1/sqrt(photons)",
            description="Shot noise: Poisson photon counts, fewer photons per pixel as severity grows.")
def shot_noise(x: torch.Tensor, severity: float, rng: SampleRNG) -> torch.Tensor:
    # The noise std is sqrt(x / photons): interpolate 1/sqrt(photons) so it grows linearly
    # from 0 (infinitely many photons, the identity) through the table's levels.
    scale = at(severity, 0.0, [1 / math.sqrt(c) for c in pick(SHOT, x)["photons"]])
    photons = 1.0 / scale ** 2
    counts = poisson_quantile(rng.normal("counts", x.shape[1:]).to(x), x.clamp(min=0.0) * photons)
    return counts / photons


def poisson_quantile(z: torch.Tensor, rate: torch.Tensor) -> torch.Tensor:
    """The Poisson(rate) quantile at the standard-normal quantile z, elementwise (counts in rate's dtype).

    A fixed z per pixel (probability Phi(z)) turns Poisson sampling into a monotone function
    of the rate, so draws are shared across severities. Below `EXACT_POISSON_BELOW` the CDF
    is searched exactly (in float64); above, a second-order Cornish-Fisher expansion in z is
    within one count of the exact quantile for 98-99.5% of draws, with mean and std within 0.5%.
    """
    z, rate = (t.contiguous() for t in torch.broadcast_tensors(z.to(rate.dtype), rate))
    root = rate.sqrt()
    # rate + root z + (z^2 - 1) / 6 + (z^3 - 7 z) / (72 root), accumulated in place
    counts = torch.addcmul(rate, root, z)
    z2 = z * z
    counts.add_(z2 - 1, alpha=1 / 6)
    counts.addcdiv_(z2.sub_(7).mul_(z), root.clamp_(min=1e-12), value=1 / 72)
    counts = counts.add_(0.5).floor_().clamp_(min=0.0)
    small = torch.nonzero(rate.reshape(-1) < EXACT_POISSON_BELOW).squeeze(1)
    if small.numel():
        exact = _poisson_search(torch.special.ndtr(z.reshape(-1)[small].double()), rate.reshape(-1)[small].double())
        counts.view(-1)[small] = exact.to(counts.dtype)
    return counts


def _poisson_search(u: torch.Tensor, rate: torch.Tensor) -> torch.Tensor:
    """Smallest k with CDF(k; rate) >= u, by walking the CDF (small rates only)."""
    term = torch.exp(-rate)
    cdf = term.clone()
    k = torch.zeros_like(rate)
    for j in range(1, 64):
        above = u > cdf
        if not bool(above.any()):
            break
        k += above
        term = term * rate / j
        cdf = cdf + term
    return k


@corruption("noise", IMPULSE,
            description="Impulse noise: a growing fraction of channel values set to 0 or 1 (salt and pepper).")
def impulse_noise(x: torch.Tensor, severity: float, rng: SampleRNG) -> torch.Tensor:
    amount = at(severity, 0.0, pick(IMPULSE, x)["amount"])
    # A value hit at one severity stays hit, with the same salt or pepper, at every higher one.
    u = rng.uniform("impulse", (2, *x.shape[1:])).to(x.device)        # where, then which
    hit = u[:, 0] < amount
    salt = (u[:, 1] < 0.5).to(x.dtype)
    return torch.where(hit, salt, x)


@corruption("noise", SPECKLE,
            description="Speckle noise: multiplicative Gaussian noise x + x * sigma * z.")
def speckle_noise(x: torch.Tensor, severity: float, rng: SampleRNG) -> torch.Tensor:
    sigma = at(severity, 0.0, pick(SPECKLE, x)["sigma"])
    return x + x * sigma * rng.normal("noise", x.shape[1:]).to(x)
