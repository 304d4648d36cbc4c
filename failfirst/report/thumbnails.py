"""Small pictures of inputs for the site: image thumbnails, differences, series plots (Pillow)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

MIN_SIDE = 32
"""Images smaller than this (8x8 digits) are enlarged by a whole factor with nearest
neighbour, so their pixels stay sharp squares instead of a blur."""
MAX_SIDE = 128
"""Larger images are shrunk (box filter) to fit: the site holds thumbnails, not full inputs."""
PLOT_SIZE = (240, 64)
"""Width and height of a series plot per channel, in pixels."""
MAX_PLOT_CHANNELS = 3
"""Series with more channels show the first three."""
CLEAN_COLOR = (150, 150, 150)


def _to_pixels(image: np.ndarray) -> Image.Image:
    """A (C, H, W) image in [0, 1] as a greyscale or RGB Pillow image.

    One channel is greyscale and three are RGB; any other count (2, 4, hyperspectral) shows
    the first channel in greyscale, since there is no faithful colour mapping for it.
    """
    image = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0)
    pixels = np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
    if pixels.shape[0] == 3:
        return Image.fromarray(np.ascontiguousarray(pixels.transpose(1, 2, 0)), mode="RGB")
    return Image.fromarray(np.ascontiguousarray(pixels[0]), mode="L")


def _resize(picture: Image.Image) -> Image.Image:
    w, h = picture.size
    if min(w, h) < MIN_SIDE:
        factor = math.ceil(MIN_SIDE / min(w, h))
        return picture.resize((w * factor, h * factor), Image.Resampling.NEAREST)
    if max(w, h) > MAX_SIDE:
        scale = MAX_SIDE / max(w, h)
        return picture.resize((max(1, round(w * scale)), max(1, round(h * scale))),
                              Image.Resampling.BOX)
    return picture


def image_thumbnail(image: np.ndarray) -> Image.Image:
    """A thumbnail of one image.

    Shape:
        image (C, H, W), values in [0, 1].
    """
    return _resize(_to_pixels(image))


def difference_thumbnail(clean: np.ndarray, perturbed: np.ndarray) -> tuple[Image.Image, float]:
    """The absolute difference, averaged over channels and stretched so its maximum is white.

    Returns:
        The greyscale thumbnail and the stretch factor applied (1.0 means not stretched; a
        difference of zero stays black).

    Shape:
        clean, perturbed (C, H, W).
    """
    diff = np.abs(np.asarray(perturbed, np.float64) - np.asarray(clean, np.float64)).mean(axis=0)
    diff = np.nan_to_num(diff, nan=0.0)
    peak = float(diff.max())
    gain = 1.0 / peak if peak > 1e-6 else 1.0
    return _resize(_to_pixels((diff * gain)[None])), gain


def _hex(color: str) -> tuple[int, int, int]:
    color = color.lstrip("#")
    return tuple(int(color[i:i + 2], 16) for i in (0, 2, 4))  # type: ignore[return-value]


def series_plot(clean: np.ndarray, perturbed: np.ndarray | None = None,
                color: str = "#0072B2") -> Image.Image:
    """A small line plot of a series: the clean one in grey, the perturbed one in `color`.

    Each channel (the first `MAX_PLOT_CHANNELS`) gets its own band; both lines of a band
    share its vertical scale, so a shift or a change of scale shows as such.

    Shape:
        clean, perturbed (T, C).
    """
    clean = np.asarray(clean, np.float64)
    channels = min(clean.shape[1], MAX_PLOT_CHANNELS)
    supersample = 3  # draw large and shrink: Pillow's lines are not anti-aliased
    width, band = PLOT_SIZE[0] * supersample, PLOT_SIZE[1] * supersample
    canvas = Image.new("RGB", (width, band * channels), "white")
    draw = ImageDraw.Draw(canvas)
    pad = 3 * supersample
    for c in range(channels):
        lines = [(clean[:, c], CLEAN_COLOR)]
        if perturbed is not None:
            lines.append((np.asarray(perturbed, np.float64)[:, c], _hex(color)))
        finite = np.concatenate([v[np.isfinite(v)] for v, _ in lines])
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        if hi - lo < 1e-12:
            lo, hi = lo - 1.0, hi + 1.0
        top = c * band
        if c:
            draw.line([(0, top), (width, top)], fill=(225, 225, 225), width=supersample)
        for values, fill in lines:
            t = np.linspace(pad, width - pad, len(values))
            v = np.nan_to_num(values, nan=lo)
            y = top + band - pad - (v - lo) / (hi - lo) * (band - 2 * pad)
            points = list(zip(t.tolist(), y.tolist(), strict=True))
            if len(points) == 1:
                points = points * 2
            draw.line(points, fill=fill, width=2 * supersample, joint="curve")
    small = canvas.resize((PLOT_SIZE[0], PLOT_SIZE[1] * channels), Image.Resampling.LANCZOS)
    # A few dozen shades hold two anti-aliased lines; a palette PNG is a third of the size.
    return small.quantize(colors=48, dither=Image.Dither.NONE)


def save_png(picture: Image.Image, path: Path) -> Path:
    """Write an optimised PNG and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    path.write_bytes(buffer.getvalue())
    return path
