"""ImageNet-C digital corruptions: contrast, elastic transform, pixelate, JPEG and saturate."""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from failfirst.perturbations.corruptions import _color, _ops
from failfirst.perturbations.corruptions._common import (
    at, corruption, dissolve_levels, pick, table_name)
from failfirst.perturbations.draws import SampleRNG

# Level tables (ImageNet-C levels 1..5 at severity 0.2 .. 1.0): make_cifar_c.py, make_imagenet_c.py.
CONTRAST = {"CIFAR-10-C": {"factor": (0.75, 0.5, 0.4, 0.3, 0.15)},
            "ImageNet-C": {"factor": (0.4, 0.3, 0.2, 0.1, 0.05)}}
PIXELATE = {"CIFAR-10-C": {"scale": (0.95, 0.9, 0.85, 0.75, 0.65)},
            "ImageNet-C": {"scale": (0.6, 0.5, 0.4, 0.3, 0.25)}}
JPEG = {"CIFAR-10-C": {"quality": (80, 65, 58, 50, 40)},
        "ImageNet-C": {"quality": (25, 18, 15, 10, 7)}}
# Published saturate levels 1-2 desaturate (x0.3, x0.1) and levels 3-5 oversaturate: no
# monotone path joins them, so levels 1-2 are replaced by steps from the identity to level 3.
SATURATE_PUBLISHED = {"CIFAR-10-C": ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)),
                      "ImageNet-C": ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2))}
SATURATE = {"CIFAR-10-C": {"gain": (1 + 1 / 6, 1 + 2 / 6, 1.5, 2, 2.5), "offset": (0, 0, 0, 0.1, 0.2),
                           "published": SATURATE_PUBLISHED["CIFAR-10-C"]},
            "ImageNet-C": {"gain": (1 + 1 / 3, 1 + 2 / 3, 2, 5, 20), "offset": (0, 0, 0, 0.1, 0.2),
                           "published": SATURATE_PUBLISHED["ImageNet-C"]}}
# Elastic as published is not ordered by how much it moves pixels: make_cifar_c.py trades a
# shrinking random affine for a growing local warp (RMS displacement about 1.5, 1.3, 1.1,
# 1.0, 0.8 px over levels 1-5) and make_imagenet_c.py's levels 1-2 move pixels by tens of
# pixels, levels 3-5 by one or two. Used: CIFAR-10-C is make_cifar_c.py's level 5 (affine
# 0.96 px, alpha 3.2, sigma 0.96 px) scaled by 0.2 .. 1.0 over the levels; ImageNet-C is
# imagecorruptions' version (alpha = 250 * level, sigma 1% of each side, noise of +-0.5% of
# the height, no affine), whose levels only scale one displacement field.
ELASTIC_PUBLISHED = {"CIFAR-10-C": ((0, 0, 2.56), (1.6, 6.4, 2.24), (2.56, 1.92, 1.92), (3.2, 1.28, 1.6),
                                    (3.2, 0.96, 0.96)),
                     "ImageNet-C": ((488, 170.8, 24.4), (488, 19.52, 48.8), (12.2, 2.44, 4.88),
                                    (17.08, 2.44, 4.88), (29.28, 2.44, 4.88))}
ELASTIC = {"CIFAR-10-C": {"alpha": (0.64, 1.28, 1.92, 2.56, 3.2), "sigma": 0.96,
                          "affine": (0.192, 0.384, 0.576, 0.768, 0.96),
                          "published_alpha_sigma_affine": ELASTIC_PUBLISHED["CIFAR-10-C"]},
           "ImageNet-C": {"alpha": (12.5, 16.25, 21.25, 25, 30), "sigma_fraction": 0.01,
                          "noise_fraction": 0.005,
                          "published_alpha_sigma_affine": ELASTIC_PUBLISHED["ImageNet-C"]}}

FLOAT32_FIELD_MAX_PIXELS = 64 * 64   # elastic fields of images up to this size are smoothed in float32


# ---------------------------------------------------------------- contrast

@corruption("digital", CONTRAST,
            description="Contrast: each channel pulled towards its own mean by a shrinking factor.")
def contrast(x: torch.Tensor, severity: float, rng: SampleRNG) -> torch.Tensor:
    factor = at(severity, 1.0, pick(CONTRAST, x)["factor"])
    return torch.lerp(x.mean(dim=(2, 3), keepdim=True), x, factor)     # mean + factor * (x - mean)


# ---------------------------------------------------------------- saturate

@corruption("digital", SATURATE,
            deviation="levels 1-2 oversaturate on the way to level 3 (published: x0.3, x0.1)",
            description="Saturate: HSV saturation scaled up (grey images are left unchanged).")
def saturate(x: torch.Tensor, severity: float, rng: SampleRNG) -> torch.Tensor:
    table = pick(SATURATE, x)
    if x.shape[1] != 3:
        return x.clone()
    return _color.scale_saturation(x, at(severity, 1.0, table["gain"]), at(severity, 0.0, table["offset"]))


# ---------------------------------------------------------------- pixelate

@corruption("digital", PIXELATE, between_levels="pixel by pixel from one level to the next",
            description="Pixelate: box-downsampled to a fraction of the size, box-upsampled back (PIL).")
def pixelate(x: torch.Tensor, severity: float, rng: SampleRNG) -> torch.Tensor:
    scales = pick(PIXELATE, x)["scale"]
    h, w = x.shape[-2:]

    def level(i: int) -> torch.Tensor:
        if i == 0:
            return x
        # int(size * scale) as the reference; at least one pixel, which Pillow needs too.
        (down_h, up_h), (down_w, up_w) = (_box_down_up(size, max(1, int(size * scales[i - 1])))
                                          for size in (h, w))
        if h * w <= 64 * 64:   # small: one product with the whole down-and-up matrix is fastest
            return _ops.separable(x, up_h @ down_h, up_w @ down_w)
        small = _ops.separable(x, down_h, down_w)
        # Box upsampling picks one source pixel per output pixel: an index, not a product.
        return small.index_select(-2, up_h.argmax(dim=1).to(x.device)) \
            .index_select(-1, up_w.argmax(dim=1).to(x.device))

    return dissolve_levels(x, severity, level)


@lru_cache(maxsize=64)
def _box_down_up(size: int, small: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pillow's BOX resize matrices to `small` and back to `size`.

    Upsampling, Pillow's box window holds exactly one source pixel: each row of the second
    matrix is one-hot.
    """
    return pil_box_matrix(size, small), pil_box_matrix(small, size)


@lru_cache(maxsize=64)
def pil_box_matrix(in_size: int, out_size: int) -> torch.Tensor:
    """Pillow's BOX resampling from `in_size` to `out_size` samples as an (out, in) matrix.

    Same window and weights as Pillow's precompute_coeffs with its box filter: an input
    sample counts fully when its centre lies in the output pixel's footprint.
    """
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    matrix = torch.zeros(out_size, in_size, dtype=torch.float64)
    for out in range(out_size):
        centre = (out + 0.5) * scale
        lo = max(int(centre - support + 0.5), 0)
        hi = min(int(centre + support + 0.5), in_size)
        for i in range(lo, hi):
            arg = (i - centre + 0.5) / filterscale
            if -0.5 < arg <= 0.5:
                matrix[out, i] = 1.0
        total = matrix[out].sum()
        if total > 0:
            matrix[out] /= total
    return matrix


# ---------------------------------------------------------------- JPEG

@corruption("digital", JPEG, codec="Pillow JPEG, 8-bit, per image",
            between_levels="pixel by pixel from one level to the next",
            description="JPEG compression: real Pillow JPEG encode/decode at the table's quality.")
def jpeg_compression(x: torch.Tensor, severity: float, rng: SampleRNG) -> torch.Tensor:
    qualities = pick(JPEG, x)["quality"]

    def level(i: int) -> torch.Tensor:
        return jpeg_roundtrip(x, qualities[i - 1]) if i else x

    return dissolve_levels(x, severity, level)


def jpeg_roundtrip(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Every image through Pillow's JPEG encoder and decoder at `quality` (on the CPU).

    RGB images are encoded as RGB (4:2:0 chroma, Pillow's default), one-channel images as
    greyscale, any other channel count one channel at a time.

    Shape:
        x (N, C, H, W) in [0, 1]; returns the same shape, dtype and device.
    """
    pixels = torch.round(x.detach().clamp(0, 1) * 255).to("cpu", torch.uint8)
    out = np.empty(pixels.shape, dtype=np.uint8)
    if pixels.shape[1] == 3:
        channels_last = pixels.permute(0, 2, 3, 1).contiguous().numpy()
        for i, image in enumerate(channels_last):
            out[i] = _encode_decode(image, quality).transpose(2, 0, 1)
    else:
        for i, image in enumerate(pixels.numpy()):
            for c, plane in enumerate(image):
                out[i, c] = _encode_decode(plane, quality)
    return torch.from_numpy(out).to(x.device, x.dtype) / 255.0


def _encode_decode(array: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    return np.asarray(Image.open(buffer))


# ---------------------------------------------------------------- elastic transform

@corruption("digital", ELASTIC,
            deviation="CIFAR-10-C: make_cifar_c.py level 5 scaled by severity; ImageNet-C: imagecorruptions' "
                      "version (the published levels are not ordered by displacement)",
            description="Elastic transform: a smooth random displacement field (plus a small affine on small images).")
def elastic_transform(x: torch.Tensor, severity: float, rng: SampleRNG) -> torch.Tensor:
    if table_name(x.shape) == "CIFAR-10-C":
        table = ELASTIC["CIFAR-10-C"]
        warped = _affine_warp(x, at(severity, 0.0, table["affine"]), rng)
        sigma = table["sigma"]
        return _displace(warped, at(severity, 0.0, table["alpha"]), (sigma, sigma), 1.0, rng)
    table = ELASTIC["ImageNet-C"]
    h, w = x.shape[-2:]
    sigmas = (table["sigma_fraction"] * h, table["sigma_fraction"] * w)
    return _displace(x, at(severity, 0.0, table["alpha"]), sigmas, table["noise_fraction"] * h, rng)


def _affine_warp(x: torch.Tensor, amount: float, rng: SampleRNG) -> torch.Tensor:
    """make_cifar_c.py's random affine: three points moved by uniform(-amount, amount) pixels.

    OpenCV's warpAffine maps the points to their moved places, reading the source through
    the inverse map, bilinear, REFLECT_101 borders.
    """
    if amount == 0.0:
        return x
    n, _, h, w = x.shape
    # As the reference: the centre is (H // 2, W // 2) taken as an (x, y) point.
    cx, cy = float(h // 2), float(w // 2)
    s = float(min(h, w) // 3)
    src = torch.tensor([[cx + s, cy + s], [cx + s, cy - s], [cx - s, cy - s]], dtype=torch.float64)
    moved = src + amount * (2 * rng.uniform("affine", (3, 2)).to("cpu", torch.float64) - 1)
    ones = torch.ones(3, 1, dtype=torch.float64)
    # Solve [moved | 1] A = src for the inverse map (destination -> source), per sample.
    inverse = torch.linalg.solve(torch.cat([moved, ones.expand(n, 3, 1)], dim=2), src.expand(n, 3, 2))
    # The source is affine in (col, row): per image, a column table plus a row table, so the
    # grid is one broadcast add per coordinate (no (N, HW, 3) product and stack).
    cols = torch.arange(w, dtype=torch.float64)
    rows = torch.arange(h, dtype=torch.float64)
    grid = torch.empty(n, h, w, 2, dtype=x.dtype)
    for axis, size in ((0, w), (1, h)):
        scale, shift = (2.0 / (size - 1), 1.0) if size > 1 else (0.0, 0.0)   # corner-aligned [-1, 1]
        along_cols = cols[None, :] * (inverse[:, 0, axis, None] * scale)                       # (N, W)
        along_rows = rows[None, :] * (inverse[:, 1, axis, None] * scale) \
            + (inverse[:, 2, axis, None] * scale - shift)                                      # (N, H)
        grid[..., axis] = along_cols.to(x.dtype)[:, None, :] + along_rows.to(x.dtype)[:, :, None]
    return F.grid_sample(x, grid.to(x.device), mode="bilinear", padding_mode="reflection", align_corners=True)


def _displace(x: torch.Tensor, alpha: float, sigmas: tuple[float, float], spread: float,
              rng: SampleRNG) -> torch.Tensor:
    """Read x at (row + dy, col + dx), fields = alpha * gaussian(uniform(-spread, spread), sigma).

    Gaussian with reflected borders truncated at 3 sigma, then bilinear sampling with
    reflected borders: scipy's map_coordinates(order=1, mode="reflect") as the reference.
    """
    if alpha == 0.0:
        return x
    n, _, h, w = x.shape
    # Small images smooth and place in the batch's precision: float32 costs a third of float64
    # and moves outputs by about 1e-6 at 32x32 (1e-5 at 224x224, where float64 is kept).
    precision = x.dtype if h * w <= FLOAT32_FIELD_MAX_PIXELS else torch.float64
    smooth = rng.derived(("elastic", h, w, sigmas, spread, precision),
                         lambda: _smooth_field(rng, h, w, sigmas, spread, precision, x.device))
    # Pixel-centred normalised coordinates, (2 (col + alpha dx) + 1) / W - 1, written
    # straight into the grid (no stack of planes).
    grid = torch.empty(n, h, w, 2, dtype=x.dtype, device=x.device)
    for axis, size, line in ((0, w, (1, w)), (1, h, (h, 1))):
        centres = (2 * torch.arange(size, device=x.device, dtype=precision) + 1) / size - 1
        grid[..., axis] = smooth[:, axis] * (2 * alpha / size) + centres.view(line)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _smooth_field(rng: SampleRNG, h: int, w: int, sigmas: tuple[float, float], spread: float,
                  precision: torch.dtype, device: torch.device) -> torch.Tensor:
    """Uniform(-spread, spread) noise smoothed by a Gaussian, reflected borders: (N, 2, H, W), dx then dy."""
    uniform = rng.uniform("displacement", (2, h, w)).to(device, precision)
    noise = uniform.mul(2 * spread).sub_(spread)
    rows = _ops.band_matrix(h, _ops.gaussian_taps(sigmas[0], 3.0), "reflect").to(noise)
    cols = _ops.band_matrix(w, _ops.gaussian_taps(sigmas[1], 3.0), "reflect").to(noise)
    return rows @ noise @ cols.T

