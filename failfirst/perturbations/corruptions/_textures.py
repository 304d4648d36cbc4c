"""Seeded procedural textures: ImageNet-C's plasma fractal (fog) and an ice-crystal layer (frost)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from failfirst.perturbations.corruptions import _ops
from failfirst.perturbations.draws import SampleRNG


def next_power_of_two(n: int) -> int:
    """The smallest power of two >= n (the plasma map's side, as imagecorruptions sizes it)."""
    return 1 if n <= 1 else 2 ** (n - 1).bit_length()


def plasma_fractal(rng: SampleRNG, mapsize: int, decay: float) -> torch.Tensor:
    """ImageNet-C's diamond-square height map for every sample, normalised to [0, 1].

    The same steps as the reference (a corner at 0, squares then diamonds per level, noise
    of amplitude wibble**2 with wibble = 100 / decay**level, wrap-around neighbours), batched
    over samples. The uniforms of each level are drawn once per sample, so changing `decay`
    reshapes one fractal instead of drawing a new one.

    Shape:
        returns (N, mapsize, mapsize) float64 on the rng's device.
    """
    n = len(rng)
    field = torch.zeros(n, mapsize, mapsize, dtype=torch.float64, device=rng.device)
    # One draw for every level: level k (k = 0, 1, ...) uses the next 3 * 4**k uniforms.
    sizes = [4 ** k for k in range(max(0, mapsize.bit_length() - 1))]
    uniforms = rng.uniform("plasma", (3 * sum(sizes),)).to(field)
    step, wibble, start = mapsize, 100.0, 0
    while step >= 2:
        half, cells = step // 2, mapsize // step
        block = uniforms[:, start:start + 3 * cells * cells].reshape(n, 3, cells, cells)
        start += 3 * cells * cells
        noise = wibble * wibble * (2 * block - 1)
        corners = field[:, ::step, ::step]
        squares = corners + corners.roll(-1, 1)
        squares = squares + squares.roll(-1, 2)
        field[:, half::step, half::step] = squares / 4 + noise[:, 0]
        centres = field[:, half::step, half::step]
        corners = field[:, ::step, ::step]
        left = centres + centres.roll(1, 1) + corners + corners.roll(-1, 2)
        field[:, ::step, half::step] = left / 4 + noise[:, 1]
        top = centres + centres.roll(1, 2) + corners + corners.roll(-1, 1)
        field[:, half::step, ::step] = top / 4 + noise[:, 2]
        step, wibble = half, wibble / decay
    field -= field.amin(dim=(1, 2), keepdim=True)
    return field / field.amax(dim=(1, 2), keepdim=True).clamp(min=1e-300)


# Ice tint and brightness of the frost layer, matched to the five photos ImageNet-C draws
# from (mean RGB 0.57, 0.66, 0.70; per-photo grey mean 0.46-0.81, spread 0.06-0.17).
FROST_TINT = (0.82, 0.95, 1.0)
FROST_LEVEL = (0.50, 0.82)
STREAK_DIRECTIONS = 3


def frost_texture(rng: SampleRNG, height: int, width: int, scale: float) -> torch.Tensor:
    """A seeded frost layer: a mottled ice sheet crossed by crystal streaks in a few directions.

    Stands in for ImageNet-C's frost photographs (which failfirst does not ship): a cloudy
    base from bicubic-upsampled noise, plus fine grain smeared along three random directions
    per sample into needle-like crystals, tinted pale blue. `scale` is the photo scale the
    reference used: 1 for ImageNet-C, 0.2 for CIFAR-10-C (finer crystals).

    Shape:
        returns (N, 3, H, W) in [0, 1], float32, on the rng's device.
    """
    n = len(rng)
    cells = max(2, round(height / (56 * scale)) + 1), max(2, round(width / (56 * scale)) + 1)
    # One uniform draw: the cloud's coarse grid, the streak directions, the brightness.
    u = rng.uniform("frost", (cells[0] * cells[1] + STREAK_DIRECTIONS + 1,))
    cloud = F.interpolate(u[:, :cells[0] * cells[1]].reshape(n, 1, *cells), size=(height, width),
                          mode="bicubic", align_corners=True)
    grain = rng.normal("frost_grain", (1, height, width))
    angles = 180.0 * u[:, -STREAK_DIRECTIONS - 1:-1]
    radius = max(1.0, 6.0 * scale)
    streaks = torch.zeros_like(grain)
    for k in range(STREAK_DIRECTIONS):
        streaks = torch.maximum(streaks, _ops.motion_blur(grain, radius, radius, angles[:, k]).abs())
    streaks = streaks / streaks.flatten(1).std(dim=1, correction=0).clamp(min=1e-6).view(n, 1, 1, 1)
    low, high = FROST_LEVEL
    level = low + (high - low) * u[:, -1].view(n, 1, 1, 1)
    grey = level + 0.18 * (cloud - 0.5) + 0.07 * (streaks - streaks.mean(dim=(2, 3), keepdim=True))
    tint = torch.tensor(FROST_TINT, dtype=grey.dtype).view(1, 3, 1, 1)
    return (grey * tint.to(grey.device)).clamp(0.0, 1.0)


# ImageNet-C draws each image's frost as a random crop of one of five photographs; failfirst
# draws it from as many procedural sheets, built once per image size and process. The sheets
# are fixed (like the photos); the seed picks the sheet and the crop.
FROST_SHEETS = 5
SHEET_MARGIN = 32


@lru_cache(maxsize=8)
def frost_sheets(height: int, width: int, scale: float) -> torch.Tensor:
    """The five fixed frost sheets for (height, width) images: twice the size plus a margin.

    Shape:
        returns (FROST_SHEETS, 3, 2 * height + SHEET_MARGIN, 2 * width + SHEET_MARGIN), float32, CPU.
    """
    sheets = SampleRNG(0, "frost_sheets", np.arange(FROST_SHEETS))
    return frost_texture(sheets, 2 * height + SHEET_MARGIN, 2 * width + SHEET_MARGIN, scale)


def frost_crops(rng: SampleRNG, height: int, width: int, scale: float) -> torch.Tensor:
    """Each sample's frost layer: a (height, width) crop of a sheet, both drawn per sample.

    Shape:
        returns (N, 3, height, width), float32, on the rng's device.
    """
    bank = frost_sheets(height, width, scale).to(rng.device)
    u = rng.uniform("frost_crop", (3,)).to(torch.float64)
    rows, cols = bank.shape[-2] - height + 1, bank.shape[-1] - width + 1
    sheet = (u[:, 0] * FROST_SHEETS).long().clamp(max=FROST_SHEETS - 1)
    top = (u[:, 1] * rows).long().clamp(max=rows - 1)
    left = (u[:, 2] * cols).long().clamp(max=cols - 1)
    # One flat gather: each sample's crop is the sheet's (3, H, W) window at its own offset.
    sheet_size, row_size = bank[0].numel(), bank.shape[-1]
    window = _window_offsets(3, height, width, bank.shape[-2], row_size, str(rng.device))
    start = sheet * sheet_size + top * row_size + left
    return bank.reshape(-1)[start.view(-1, 1) + window].view(-1, 3, height, width)


@lru_cache(maxsize=8)
def _window_offsets(channels: int, height: int, width: int, rows: int, cols: int, device: str) -> torch.Tensor:
    """Flat offsets of a (channels, height, width) window's pixels within a (channels, rows, cols) sheet."""
    c, y, x = torch.meshgrid(torch.arange(channels), torch.arange(height), torch.arange(width), indexing="ij")
    return ((c * rows + y) * cols + x).reshape(1, -1).to(device)
