"""Shared machinery of the corruption catalogue: table choice, severity anchors, registration."""

from __future__ import annotations

from typing import Any, Callable, Literal, Mapping, Sequence

import torch

from failfirst.perturbations.registry import Perturbation, interp, register

TableName = Literal["CIFAR-10-C", "ImageNet-C"]
Family = Literal["noise", "blur", "weather", "digital", "geometric"]
Tables = Mapping[str, Mapping[str, Any]]

# Images whose longer side is at most this use the CIFAR-10-C tables (made for 32x32);
# larger ones the ImageNet-C tables (made for 224x224).
SMALL_MAX_SIDE = 64
LEVELS = 5          # ImageNet-C's levels 1..5 sit at severities 0.2, 0.4, 0.6, 0.8, 1.0
GOLDEN = (5 ** 0.5 - 1) / 2   # k * GOLDEN mod 1 spreads any run of k evenly over [0, 1)


def table_name(shape: Sequence[int]) -> TableName:
    """Which published table applies to a canonical (..., H, W) shape."""
    return "CIFAR-10-C" if max(shape[-2:]) <= SMALL_MAX_SIDE else "ImageNet-C"


def pick(tables: Tables, x: torch.Tensor) -> Mapping[str, Any]:
    """The table (a dict of columns) for the batch `x`."""
    return tables[table_name(x.shape)]


def at(severity: float, identity: float, levels: Sequence[float]) -> float:
    """A parameter at `severity`: `identity` at 0, the five level values at 0.2 .. 1.0, linear between."""
    return interp(severity, (identity, *levels))


def segment(severity: float) -> tuple[int, float]:
    """(lower level, weight of the upper level) for a severity in [0, 1]; level 0 is the identity.

    On a level the weight is 0, so severity 1 is (5, 0.0) and needs no level above it.

    Example:
        >>> segment(0.5)
        (2, 0.5)
    """
    position = severity * LEVELS
    nearest = round(position)
    if abs(position - nearest) < 1e-9:  # 0.6 * 5 must land exactly on level 3
        position = float(nearest)
    lower = min(int(position), LEVELS)
    return lower, position - lower


def dissolve_levels(x: torch.Tensor, severity: float, level: Callable[[int], torch.Tensor]) -> torch.Tensor:
    """Move between levels pixel by pixel, each pixel switching at its own severity.

    From the identity to level 1 the output fades in linearly (`level(0)` is `x`). Between
    two later levels a linear blend would let their changes cancel (two JPEG or pixelation
    grids average out, water brightens where mud darkens), so each pixel instead switches
    from the lower level's value to the upper one's. The switching order is deterministic:
    pixels ranked by how much more the upper level changes them take the golden-ratio
    sequence as switch points, so every stretch of severity switches an even sample of
    them and the mean change moves almost exactly linearly between the levels. A pixel
    switched at one severity stays switched at higher ones.
    """
    lower, weight = segment(severity)
    if lower == 0:
        return torch.lerp(x, level(1), weight) if weight else x
    if weight == 0.0:
        return level(lower)
    low, high = level(lower), level(lower + 1)
    gain = ((high - x).abs() - (low - x).abs()).sum(dim=1).flatten(1)          # (N, HW)
    order = torch.argsort(gain, dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order).scatter_(1, order, torch.arange(order.shape[1], device=x.device)
                                             .expand_as(order).contiguous())
    switch_at = torch.remainder((ranks.to(torch.float64) + 0.5) * GOLDEN, 1.0)
    switched = (switch_at < weight).view(x.shape[0], 1, *x.shape[2:])
    return torch.where(switched, high, low)


def envelope(x: torch.Tensor, base: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """Per pixel value, `new` or `base`, whichever is further from `x` (ties go to `new`)."""
    return torch.where((new - x).abs() >= (base - x).abs(), new, base)


def envelope_lerp(x: torch.Tensor, base: torch.Tensor, top: torch.Tensor, weight: float) -> torch.Tensor:
    """From `base` towards `top` (which changes every pixel at least as much), never changing less.

    Where the straight line would pass closer to `x` than `base` is, the pixel holds `base`
    until the line is as far out again, so every pixel's change is non-decreasing in `weight`.
    """
    moving = torch.lerp(base, top, weight)
    return torch.where((moving - x).abs() >= (base - x).abs(), moving, base)


def corruption(family: Family, tables: Tables, *, name: str | None = None,
               description: str | None = None, **extra: Any) -> Callable[..., Perturbation]:
    """Register a vision corruption whose provenance names the table used for a batch shape.

    `tables` maps "CIFAR-10-C" and "ImageNet-C" to their parameter columns; `extra` holds
    notes recorded with either table (a deviation from the reference, say).
    """
    def params(shape: tuple[int, ...]) -> dict[str, Any]:
        if len(shape) >= 2:
            chosen = table_name(shape)
            return {"table": chosen, **tables[chosen], **extra}
        return {"table": f"CIFAR-10-C up to {SMALL_MAX_SIDE}x{SMALL_MAX_SIDE}, ImageNet-C above",
                **{key: dict(value) for key, value in tables.items()}, **extra}

    return register("vision", family=family, name=name, description=description, params=params)


def luma(x: torch.Tensor) -> torch.Tensor:
    """Grey level (N, 1, H, W): ITU-R 601 weights for RGB, the channel mean otherwise."""
    if x.shape[1] == 3:
        weights = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device)
        return (x * weights.view(1, 3, 1, 1)).sum(dim=1, keepdim=True)
    return x.mean(dim=1, keepdim=True)


def colour(rgb: Sequence[float], channels: int, like: torch.Tensor) -> torch.Tensor:
    """An RGB colour as a (1, C, 1, 1) tensor; other channel counts get its grey level."""
    if channels == 3:
        values = list(rgb)
    else:
        values = [0.2989 * rgb[0] + 0.5870 * rgb[1] + 0.1140 * rgb[2]] * channels
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(1, channels, 1, 1)
