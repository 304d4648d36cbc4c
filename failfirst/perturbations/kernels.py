"""Batched image kernels shared by perturbations: separable convolution and resampling."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gaussian_kernel1d(sigma: float, *, dtype=torch.float32, device="cpu") -> torch.Tensor:
    """A normalised 1-D Gaussian of radius ceil(3 sigma); `[1.]` for sigma <= 0."""
    radius = max(0, math.ceil(3.0 * sigma))
    if sigma <= 0 or radius == 0:
        return torch.ones(1, dtype=dtype, device=device)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64, device=device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).to(dtype)


def separable_conv2d(x: torch.Tensor, kernel_h: torch.Tensor, kernel_w: torch.Tensor) -> torch.Tensor:
    """Convolve every channel of an NCHW batch with `kernel_h` (rows) then `kernel_w` (columns).

    Borders replicate the edge pixels, so kernels may be wider than the image.

    Shape:
        x (N, C, H, W); kernels 1-D of odd length; returns (N, C, H, W).
    """
    n, c, h, w = x.shape
    flat = x.reshape(n * c, 1, h, w)
    rh, rw = len(kernel_h) // 2, len(kernel_w) // 2
    if rh:
        flat = F.conv2d(F.pad(flat, (0, 0, rh, rh), mode="replicate"),
                        kernel_h.to(x).view(1, 1, -1, 1))
    if rw:
        flat = F.conv2d(F.pad(flat, (rw, rw, 0, 0), mode="replicate"),
                        kernel_w.to(x).view(1, 1, 1, -1))
    return flat.reshape(n, c, h, w)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of an NCHW batch with standard deviation `sigma` pixels."""
    k = gaussian_kernel1d(sigma, dtype=x.dtype, device=x.device)
    return separable_conv2d(x, k, k)
