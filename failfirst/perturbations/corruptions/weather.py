"""ImageNet-C weather corruptions: snow, frost, fog, brightness and spatter."""

from __future__ import annotations

import math

import torch

from failfirst.perturbations.corruptions import _color, _ops, _spatter, _textures
from failfirst.perturbations.corruptions._common import (
    at, colour, corruption, dissolve_levels, envelope, envelope_lerp, luma, pick, segment, table_name)
from failfirst.perturbations.draws import SampleRNG

# Level tables (ImageNet-C levels 1..5 at severity 0.2 .. 1.0): make_cifar_c.py and
# make_imagenet_c.py, one row per level, columns as named.
SNOW = {"CIFAR-10-C": {"columns": ("loc", "scale", "zoom", "threshold", "radius", "sigma", "keep"),
                       "levels": ((0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
                                  (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9), (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
                                  (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8))},
        "ImageNet-C": {"columns": ("loc", "scale", "zoom", "threshold", "radius", "sigma", "keep"),
                       "levels": ((0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
                                  (0.55, 0.3, 4, 0.9, 12, 8, 0.7), (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
                                  (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55))}}
FROST = {"CIFAR-10-C": {"keep": (1, 1, 0.9, 0.85, 0.75), "frost": (0.2, 0.3, 0.4, 0.4, 0.45),
                        "crystal_scale": 0.2},
         "ImageNet-C": {"keep": (1, 0.8, 0.7, 0.65, 0.6), "frost": (0.4, 0.6, 0.7, 0.7, 0.75),
                        "crystal_scale": 1.0}}
# Fog's published levels also change the fractal's decay (its roughness), which reshapes the
# haze without strengthening it, so with the same draws a level can change an image less
# than the one below. Used: one decay per table, the median of the published ones, so that
# every pixel's change grows with the strength alone; strengths as published.
FOG = {"CIFAR-10-C": {"strength": (0.2, 0.5, 0.75, 1, 1.5), "decay": 2.5,
                      "published_decay": (3, 3, 2.5, 2, 1.75)},
       "ImageNet-C": {"strength": (1.5, 2, 2.5, 2.5, 3), "decay": 1.7,
                      "published_decay": (2, 2, 1.7, 1.5, 1.4)}}
BRIGHTNESS = {"CIFAR-10-C": {"value_shift": (0.05, 0.1, 0.15, 0.2, 0.3)},
              "ImageNet-C": {"value_shift": (0.1, 0.2, 0.3, 0.4, 0.5)}}
SPATTER = {"CIFAR-10-C": {"columns": ("loc", "scale", "sigma", "threshold", "intensity", "mud"),
                          "levels": ((0.62, 0.1, 0.7, 0.7, 0.5, 0), (0.65, 0.1, 0.8, 0.7, 0.5, 0),
                                     (0.65, 0.3, 1, 0.69, 0.5, 0), (0.65, 0.1, 0.7, 0.69, 0.6, 1),
                                     (0.65, 0.1, 0.5, 0.68, 0.6, 1))},
           "ImageNet-C": {"columns": ("loc", "scale", "sigma", "threshold", "intensity", "mud"),
                          "levels": ((0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0),
                                     (0.65, 0.3, 2, 0.68, 0.5, 0), (0.65, 0.3, 1, 0.65, 1.5, 1),
                                     (0.67, 0.4, 1, 0.65, 1.5, 1))}}
WATER_RGB = (175 / 255, 238 / 255, 238 / 255)    # pale turquoise
MUD_RGB = (63 / 255, 42 / 255, 20 / 255)         # mud brown


# ---------------------------------------------------------------- snow

@corruption("weather", SNOW, between_levels="outputs of neighbouring levels blended linearly",
            deviation="snow accumulates: a level keeps the flakes of the levels below it (per-pixel maximum), "
                      "since ImageNet-C's level 3 changes an image less than its level 2",
            description="Snow: zoomed, thresholded noise streaked along a random angle, over a whitened image.")
def snow(x: torch.Tensor, severity: float, rng: SampleRNG) -> torch.Tensor:
    levels = pick(SNOW, x)["levels"]
    lower, weight = segment(severity)
    # Snow only brightens, so the running maximum over levels is a per-pixel monotone path.
    accumulated = [x]
    brightened = torch.maximum(x, luma(x) * 1.5 + 0.5)     # the same at every level
    for row in levels[:lower + (1 if weight else 0)]:
        accumulated.append(torch.maximum(accumulated[-1], _snow_level(x, brightened, row, rng)))
    if weight == 0.0:
        return accumulated[lower]
    return torch.lerp(accumulated[lower], accumulated[lower + 1], weight)


def _snow_level(x: torch.Tensor, brightened: torch.Tensor, row: tuple[float, ...],
                rng: SampleRNG) -> torch.Tensor:
    keep = row[-1]
    flakes = rng.derived(("snow", row, *x.shape[-2:], x.dtype), lambda: _snow_flakes(x, row, rng))
    whitened = keep * x + (1 - keep) * brightened
    return (whitened + flakes + flakes.flip(-2, -1)).clamp(0.0, 1.0)


def _snow_flakes(x: torch.Tensor, row: tuple[float, ...], rng: SampleRNG) -> torch.Tensor:
    """One level's snow layer (N, 1, H, W): zoomed, thresholded noise streaked along a drawn angle."""
    loc, scale, zoom, threshold, radius, sigma, _ = row
    _, _, h, w = x.shape
    layer = loc + scale * rng.normal("flakes", (1, h, w)).to(x)
    # clipped_zoom keeps the whole stretched crop; the streaks are drawn on it, then cropped.
    tall, wide = (int(round(math.ceil(s / zoom) * zoom)) for s in (h, w))
    layer = _ops.separable(layer, _ops.zoom_matrix(h, zoom, tall), _ops.zoom_matrix(w, zoom, wide))
    layer = torch.where(layer < threshold, 0.0, layer).clamp(0.0, 1.0)
    angle = -135.0 + 90.0 * rng.uniform("angle").to(torch.float64)
    return _ops.motion_blur(layer, radius, sigma, angle)[..., :h, :w]


# ---------------------------------------------------------------- frost

@corruption("weather", FROST, texture="a random crop of one of five fixed procedural ice-crystal sheets "
                                      "(ImageNet-C crops one of five photos)",
            deviation="each level is the image moved towards level 5 by frost / frost_5: frost amounts as "
                      "published, dimming in proportion (published dimming lowers the change at levels 4-5)",
            description="Frost: the image dimmed and overlaid with a seeded crop of a procedural ice-crystal sheet.")
def frost(x: torch.Tensor, severity: float, rng: SampleRNG) -> torch.Tensor:
    table = pick(FROST, x)
    keep, amount = table["keep"][-1], table["frost"][-1]
    layer = rng.derived(("frost", *x.shape[1:], x.dtype), lambda: _frost_layer(x, table["crystal_scale"], rng))
    # keep * x + frost * layer is not ordered by how much it changes x (the dimming offsets
    # the added frost); moving along the straight line to level 5 is, for every pixel.
    share = at(severity, 0.0, [f / amount for f in table["frost"]])
    level_5 = layer.mul(amount).add_(x, alpha=keep).clamp_(0.0, 1.0)
    return torch.lerp(x, level_5, share)


def _frost_layer(x: torch.Tensor, scale: float, rng: SampleRNG) -> torch.Tensor:
    layer = _textures.frost_crops(rng, x.shape[-2], x.shape[-1], scale).to(x)
    return layer if x.shape[1] == 3 else luma(layer).repeat(1, x.shape[1], 1, 1)


# ---------------------------------------------------------------- fog

@corruption("weather", FOG, between_levels="strength interpolated",
            deviation="one fractal decay per table (2.5 CIFAR-10-C, 1.7 ImageNet-C), the published levels' median",
            description="Fog: a plasma fractal (diamond-square) haze added, then contrast rescaled.")
def fog(x: torch.Tensor, severity: float, rng: SampleRNG) -> torch.Tensor:
    table = pick(FOG, x)
    strength = at(severity, 0.0, table["strength"])
    decay = table["decay"]
    h, w = x.shape[-2:]
    size = _textures.next_power_of_two(max(h, w))
    haze = rng.derived(("fog", size, decay, h, w, x.dtype),
                       lambda: _textures.plasma_fractal(rng, size, decay)[:, None, :h, :w].to(x))
    peak = x.amax(dim=(1, 2, 3), keepdim=True)
    return (x + strength * haze) * peak / (peak + strength)


# ---------------------------------------------------------------- brightness

@corruption("weather", BRIGHTNESS,
            description="Brightness: HSV value raised (grey images: every channel raised).")
def brightness(x: torch.Tensor, severity: float, rng: SampleRNG) -> torch.Tensor:
    shift = at(severity, 0.0, pick(BRIGHTNESS, x)["value_shift"])
    if x.shape[1] == 3:
        return _color.add_value(x, shift)
    return (x + shift).clamp(0.0, 1.0)


# ---------------------------------------------------------------- spatter

@corruption("weather", SPATTER, between_levels="outputs blended linearly; water to mud pixel by pixel",
            distance="exact Euclidean (OpenCV approximates it with a 5x5 mask)",
            deviation="CIFAR-10-C levels 4-5 keep the level-3 water where it changed a pixel more than the mud "
                      "(published CIFAR-10-C mud changes an image less than its level-3 water)",
            description="Spatter: water drops (levels 1-3) or mud blobs (levels 4-5) over the image.")
def spatter(x: torch.Tensor, severity: float, rng: SampleRNG) -> torch.Tensor:
    levels = pick(SPATTER, x)["levels"]
    small = table_name(x.shape) == "CIFAR-10-C"
    lower, weight = segment(severity)
    outputs: dict[int, torch.Tensor] = {0: x}

    def level(i: int) -> torch.Tensor:
        if i not in outputs:
            own = _spatter_level(x, levels[i - 1], rng)
            outputs[i] = envelope(x, level(i - 1), own) if small and levels[i - 1][5] else own
        return outputs[i]

    if weight == 0.0:
        return level(lower)
    mud_starts = lower >= 1 and levels[lower][5] and not levels[lower - 1][5]
    if small and lower >= 3:
        return envelope_lerp(x, level(lower), level(lower + 1), weight)
    if mud_starts:
        return dissolve_levels(x, severity, level)
    return torch.lerp(level(lower), level(lower + 1), weight)


def _spatter_level(x: torch.Tensor, row: tuple[float, ...], rng: SampleRNG) -> torch.Tensor:
    intensity, mud = row[4:]
    m = rng.derived(("spatter", row, *x.shape[-2:], x.dtype), lambda: _spatter_mask(x.shape[-2:], row, rng).to(x))
    channels = x.shape[1]
    if mud:
        return (x * (1 - m) + colour(MUD_RGB, channels, x) * m).clamp(0.0, 1.0)
    return (x + intensity * m * colour(WATER_RGB, channels, x)).clamp(0.0, 1.0)


def _spatter_mask(size: tuple[int, int], row: tuple[float, ...], rng: SampleRNG) -> torch.Tensor:
    """One level's water intensity or mud coverage (N, 1, H, W), float64."""
    loc, scale, sigma, threshold, intensity, mud = row
    liquid = _spatter.liquid_layer(rng.normal("liquid", (1, *size)), loc, scale, sigma, threshold)
    return _spatter.mud_mask(liquid, threshold, intensity) if mud else _spatter.water_mask(liquid)

