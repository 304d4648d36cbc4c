"""Geometric shifts after Ovadia et al. (2019): rotation and translation in a random direction."""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F

from failfirst.perturbations.corruptions._common import corruption
from failfirst.perturbations.draws import SampleRNG

# Ovadia et al. (2019) rotate MNIST digits by 0-180 degrees and shift them by up to half the
# image. Past about 60 degrees, or a third of the image, a moved image stops drifting further
# from the original (its content has decorrelated, and at 90 degrees pixels realign), so the
# mean change plateaus and dips. Used: up to 45 degrees and a quarter of the image, where it
# grows steadily; the same for every image size.
ROTATION = {"CIFAR-10-C": {"max_degrees": 45.0}, "ImageNet-C": {"max_degrees": 45.0}}
TRANSLATION = {"CIFAR-10-C": {"max_fraction": 0.25}, "ImageNet-C": {"max_fraction": 0.25}}
GEOMETRIC_SOURCE = "Ovadia et al. 2019 (the same ranges for every image size)"
RANGE_DEVIATION = "range cut from Ovadia's to keep the mean change growing (rotation 180 -> 45 degrees, shift 1/2 -> 1/4)"


@corruption("geometric", ROTATION, source=GEOMETRIC_SOURCE, fill=0.0, deviation=RANGE_DEVIATION,
            swept_fill="a pixel whose source left the image at a smaller angle stays filled",
            description="Rotation about the centre, up to 45 degrees; direction random per image, drawn once.")
def rotation(x: torch.Tensor, severity: float, rng: SampleRNG) -> torch.Tensor:
    sign = rng.sign("direction").to("cpu", torch.float64)
    degrees = severity * ROTATION["ImageNet-C"]["max_degrees"]
    _, _, h, w = x.shape
    # One angle per direction, so the whole batch reads through one of two cached grids.
    grid = _rotation_grids(h, w, degrees).to(x.device, x.dtype)[(sign > 0).long().to(x.device)]
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


# Normalised coordinate far enough outside the image that all four bilinear taps read the
# zero padding: grid_sample then yields exactly 0, as masking the pixel afterwards would.
OUTSIDE = -4.0


@lru_cache(maxsize=8)
def _rotation_grids(h: int, w: int, degrees: float) -> torch.Tensor:
    """grid_sample grids of a rotation by -degrees (index 0) and +degrees (index 1).

    Output pixel p reads the source at R(-angle) p, about the image centre. Corners swept
    out of the image stay black at larger angles (a turning rectangle can cover a pixel
    again), so the filled area only grows with the angle: those pixels read far outside.

    Shape:
        returns (2, H, W, 2) float64.
    """
    rows, cols = _centred_grid(h, w)
    grids = []
    for sign in (-1.0, 1.0):
        angle = math.radians(sign * degrees)
        cos, sin = math.cos(angle), math.sin(angle)
        src_cols = cos * cols[0] + sin * rows[0] + (w - 1) / 2
        src_rows = -sin * cols[0] + cos * rows[0] + (h - 1) / 2
        grid = torch.stack([_normalise(src_cols, w), _normalise(src_rows, h)], dim=-1)
        swept = (_exit_degrees(h, w, int(sign)) <= degrees)[..., None]
        grids.append(torch.where(swept, OUTSIDE, grid))
    return torch.stack(grids)


@lru_cache(maxsize=16)
def _exit_degrees(h: int, w: int, direction: int) -> torch.Tensor:
    """Smallest rotation (degrees, in `direction`) at which each pixel's source leaves the image.

    The source of pixel p at angle phi sits on p's circle about the centre, at polar angle
    alpha - direction * phi; it leaves the image rectangle [-1/2, size - 1/2] the first time
    the circle meets one of its sides. Infinite where the circle stays inside.

    Shape:
        returns (H, W) float64.
    """
    rows, cols = _centred_grid(h, w)
    rows, cols = rows[0], cols[0]
    radius = torch.hypot(rows, cols)
    alpha = torch.atan2(rows, cols)
    half_w, half_h = w / 2, h / 2
    candidates = []
    a = torch.acos((half_w / radius.clamp(min=1e-12)).clamp(max=1.0))
    c = torch.asin((half_h / radius.clamp(min=1e-12)).clamp(max=1.0))
    for boundary, valid in ((a, radius > half_w), (-a, radius > half_w), (math.pi - a, radius > half_w),
                            (math.pi + a, radius > half_w), (c, radius > half_h), (-c, radius > half_h),
                            (math.pi - c, radius > half_h), (c - math.pi, radius > half_h)):
        turn = torch.remainder(direction * (alpha - boundary), 2 * math.pi)
        candidates.append(torch.where(valid & (turn > 0), turn, torch.inf))
    return torch.rad2deg(torch.stack(candidates).amin(dim=0))


@corruption("geometric", TRANSLATION, source=GEOMETRIC_SOURCE, fill=0.0, deviation=RANGE_DEVIATION,
            description="Translation by up to a quarter of the image in a random direction per image, drawn once.")
def translation(x: torch.Tensor, severity: float, rng: SampleRNG) -> torch.Tensor:
    heading = 2 * math.pi * rng.uniform("direction").to("cpu", torch.float64)
    _, _, h, w = x.shape
    reach = severity * TRANSLATION["ImageNet-C"]["max_fraction"]
    dy, dx = reach * h * torch.sin(heading), reach * w * torch.cos(heading)
    # The shift is separable: column coordinates depend on (image, column) only, row
    # coordinates on (image, row) only, so the grid is two broadcasts of small tables
    # (the same values as building it pixel by pixel, at a fraction of the cost).
    cols = _normalise(torch.arange(w, dtype=torch.float64)[None, :] - dx[:, None], w)       # (N, W)
    rows = _normalise(torch.arange(h, dtype=torch.float64)[None, :] - dy[:, None], h)       # (N, H)
    grid = torch.empty(len(heading), h, w, 2, dtype=x.dtype)
    grid[..., 0] = cols.to(x.dtype)[:, None, :]
    grid[..., 1] = rows.to(x.dtype)[:, :, None]
    return F.grid_sample(x, grid.to(x.device), mode="bilinear", padding_mode="zeros", align_corners=True)


def _centred_grid(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    rows = torch.arange(h, dtype=torch.float64)[:, None].expand(h, w) - (h - 1) / 2
    cols = torch.arange(w, dtype=torch.float64)[None, :].expand(h, w) - (w - 1) / 2
    return rows[None], cols[None]


def _normalise(position: torch.Tensor, size: int) -> torch.Tensor:
    return position * (2.0 / (size - 1)) - 1.0 if size > 1 else position * 0.0
