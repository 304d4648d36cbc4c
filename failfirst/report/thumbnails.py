"""Small pictures for the site: image thumbnails, differences, series plots, in sprite sheets."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

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
    # Small images (8x8 digits) keep their size: the page enlarges them with CSS
    # (`image-rendering: pixelated`), so their pixels stay sharp squares at no cost in bytes.
    w, h = picture.size
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
    # A few dozen shades hold two anti-aliased lines, so `save_png` stores the plot (and a
    # sheet of them) as a palette PNG, a third of the size. RGB here: sheets mix plots.
    return small.quantize(colors=48, dither=Image.Dither.NONE).convert("RGB")


def save_png(picture: Image.Image, path: Path) -> Path:
    """Write an optimised PNG (a palette one when 256 colours hold it exactly); return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    _exact_palette(picture).save(buffer, format="PNG", optimize=True)
    path.write_bytes(buffer.getvalue())
    return path


def _exact_palette(picture: Image.Image) -> Image.Image:
    """An RGB picture of at most 256 colours as a palette picture with exactly those colours.

    Lossless, unlike Pillow's quantize (median cut may merge colours): series plots hold a
    few dozen, and one byte a pixel compresses better than three.
    """
    if picture.mode != "RGB":
        return picture
    rgb = np.asarray(picture, dtype=np.uint32)
    keys = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    colours, index = np.unique(keys, return_inverse=True)
    if colours.size > 256:
        return picture
    paletted = Image.fromarray(index.reshape(keys.shape).astype(np.uint8), mode="P")
    table = np.stack([colours >> 16, (colours >> 8) & 255, colours & 255], axis=1)
    paletted.putpalette(table.astype(np.uint8).tobytes())
    return paletted


# -- sprite sheets ----------------------------------------------------------------------------

PAD = 1
"""Each frame of a sheet is framed left and right by a copy of its own edge column: a browser
placing a frame at a fraction of a pixel (a zoomed page) then shows more of the same frame at
its border, never a sliver of its neighbour."""
MAX_SHEET_WIDTH = 8192
"""Pixels; a group with more frames starts another sheet."""


@dataclass(eq=False)
class Sheet:
    """One PNG of frames of one size side by side; `frames` is final once written."""

    src: str
    size: tuple[int, int]
    mode: str
    frames: list[Image.Image] = field(default_factory=list)

    @property
    def cell(self) -> int:
        return self.size[0] + 2 * PAD


@dataclass(frozen=True, eq=False)
class Frame:
    """Where one thumbnail is: the sheet and its position there.

    A page shows it as `<img src="{src}" style="{style}">` with CSS `object-fit: cover`:
    the box has the frame's aspect ratio, so the sheet is scaled to the box's height and
    `object-position` slides frame `index` into view.
    """

    sheet: Sheet
    index: int

    @property
    def src(self) -> str:
        return self.sheet.src

    @property
    def offset(self) -> float:
        """The `object-position` x percentage: frame x0 / (sheet width - frame width)."""
        width, count = self.sheet.size[0], len(self.sheet.frames)
        travel = count * self.sheet.cell - width
        return 100.0 * (self.index * self.sheet.cell + PAD) / travel

    @property
    def style(self) -> str:
        w, h = self.sheet.size
        return f"aspect-ratio:{w}/{h};object-position:{self.offset:.4f}% 0"


class SpriteSheets:
    """Thumbnails packed side by side into a few PNG files instead of one file each.

    A site with hundreds of 32x32 thumbnails otherwise has hundreds of files of about 2 kB,
    each a request and a 4 kB block on disk. Frames are grouped (by perturbation, say) so a
    page loads the sheets of what it shows; each frame is stored once however many cards show
    it (`add` with a `key` seen before returns the same frame). Sheet files are named
    `{group}.{number}.png`.

    Args:
        folder: The sheets' folder relative to the site, used in their `src`.
    """

    def __init__(self, folder: str):
        self.folder = folder
        self.sheets: list[Sheet] = []
        self._open: dict[tuple, Sheet] = {}  # (group, size, mode) -> the sheet being filled
        self._count: dict[str, int] = {}
        self._known: dict[object, Frame] = {}

    def add(self, group: str, picture: Image.Image, key: object = None) -> Frame:
        """Put `picture` into a sheet of `group`; return where it is.

        Args:
            group: A file-name-safe name; sheets of different groups never share a name.
            picture: The thumbnail. Frames of another size or mode go to another sheet.
            key: Identifies the picture: adding a known key again returns the first frame.
        """
        if key is not None and key in self._known:
            return self._known[key]
        slot = (group, picture.size, picture.mode)
        sheet = self._open.get(slot)
        if sheet is None or (len(sheet.frames) + 1) * sheet.cell > MAX_SHEET_WIDTH:
            number = self._count.get(group, 0)
            self._count[group] = number + 1
            sheet = Sheet(f"{self.folder}/{group}.{number}.png", picture.size, picture.mode)
            self.sheets.append(sheet)
            self._open[slot] = sheet
        sheet.frames.append(picture)
        frame = Frame(sheet, len(sheet.frames) - 1)
        if key is not None:
            self._known[key] = frame
        return frame

    def write(self, out: Path) -> list[Path]:
        """Write every sheet under `out`; return their paths."""
        return [save_png(_pack(sheet), out / sheet.src) for sheet in self.sheets]


def _pack(sheet: Sheet) -> Image.Image:
    w, h = sheet.size
    canvas = Image.new(sheet.mode, (sheet.cell * len(sheet.frames), h))
    for i, frame in enumerate(sheet.frames):
        x = i * sheet.cell
        canvas.paste(frame.crop((0, 0, 1, h)).resize((PAD, h)), (x, 0))
        canvas.paste(frame, (x + PAD, 0))
        canvas.paste(frame.crop((w - 1, 0, w, h)).resize((PAD, h)), (x + PAD + w, 0))
    return canvas
