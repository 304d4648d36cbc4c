"""Per-image NumPy reimplementations of the ImageNet-C / CIFAR-10-C corruption formulas.

Written from the published descriptions (Hendrycks' make_cifar_c.py / make_imagenet_c.py and
bethgelab's imagecorruptions), independently of failfirst: own tables, own code, NumPy,
SciPy and Pillow only, one image at a time, randomness from a numpy Generator. Used by
tests/test_corruptions.py (faithfulness) and benchmarks/corruptions.py (the baseline).

Every function takes an (H, W, C) float64 image in [0, 1], an ImageNet-C level 1..5 and a
numpy Generator, and returns an (H, W, C) float64 image in [0, 1]. Images up to 64x64 use
the CIFAR-10-C tables, larger ones the ImageNet-C tables, as failfirst does.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image
from scipy import ndimage

CIFAR, IMAGENET = "CIFAR-10-C", "ImageNet-C"


def table(x: np.ndarray) -> str:
    return CIFAR if max(x.shape[:2]) <= 64 else IMAGENET


def _gaussian(x: np.ndarray, sigma, truncate: float = 4.0, mode: str = "nearest") -> np.ndarray:
    """skimage.filters.gaussian: per channel (channel axis not blurred), nearest borders."""
    sig = (sigma, sigma, 0) if x.ndim == 3 and np.isscalar(sigma) else sigma
    return ndimage.gaussian_filter(x, sig, mode=mode, truncate=truncate)


# ---------------------------------------------------------------- noise

def gaussian_noise_c(x, level, rng):
    c = {CIFAR: [0.04, 0.06, .08, .09, .10], IMAGENET: [.08, .12, 0.18, 0.26, 0.38]}[table(x)][level - 1]
    return np.clip(x + rng.normal(size=x.shape, scale=c), 0, 1)


def shot_noise(x, level, rng):
    c = {CIFAR: [500, 250, 100, 75, 50], IMAGENET: [60, 25, 12, 5, 3]}[table(x)][level - 1]
    return np.clip(rng.poisson(x * c) / float(c), 0, 1)


def impulse_noise(x, level, rng):
    c = {CIFAR: [.01, .02, .03, .05, .07], IMAGENET: [.03, .06, .09, 0.17, 0.27]}[table(x)][level - 1]
    # skimage.util.random_noise(mode="s&p", amount=c): each value flipped with probability
    # c, to 1 or 0 with equal odds.
    out = x.copy()
    flipped = rng.random(x.shape) <= c
    salted = rng.random(x.shape) <= 0.5
    out[flipped & salted] = 1.0
    out[flipped & ~salted] = 0.0
    return out


def speckle_noise(x, level, rng):
    c = {CIFAR: [.06, .1, .12, .16, .2], IMAGENET: [.15, .2, 0.35, 0.45, 0.6]}[table(x)][level - 1]
    return np.clip(x + x * rng.normal(size=x.shape, scale=c), 0, 1)


# ---------------------------------------------------------------- blur

def gaussian_blur(x, level, rng):
    c = {CIFAR: [.4, .6, 0.7, .8, 1], IMAGENET: [1, 2, 3, 4, 6]}[table(x)][level - 1]
    return np.clip(_gaussian(x, c), 0, 1)


def glass_blur(x, level, rng):
    sigma, delta, iterations = {
        CIFAR: [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)],
        IMAGENET: [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)]}[table(x)][level - 1]
    img = np.uint8(_gaussian(x, sigma) * 255)
    h, w = img.shape[:2]
    for _ in range(iterations):          # the reference's sequential local swaps
        for row in range(h - delta, delta, -1):
            for col in range(w - delta, delta, -1):
                dx, dy = rng.integers(-delta, delta, size=(2,))
                r2, c2 = row + dy, col + dx
                # As published: on an RGB array this tuple "swap" copies img[r2, c2] into img[row, col].
                img[row, col], img[r2, c2] = img[r2, c2], img[row, col]
    return np.clip(_gaussian(img / 255.0, sigma), 0, 1)


def disk(radius, alias_blur):
    """ImageNet-C's anti-aliased disk; OpenCV's GaussianBlur written out (REFLECT_101)."""
    if radius <= 8:
        grid, ksize = np.arange(-8, 8 + 1), 3
    else:
        grid, ksize = np.arange(-radius, radius + 1), 5
    xx, yy = np.meshgrid(grid, grid)
    kernel = np.array((xx ** 2 + yy ** 2) <= radius ** 2, dtype=np.float64)
    kernel /= kernel.sum()
    t = np.arange(ksize) - (ksize - 1) / 2
    g = np.exp(-t ** 2 / (2 * alias_blur ** 2))
    g /= g.sum()
    kernel = ndimage.correlate1d(kernel, g, axis=0, mode="mirror")
    return ndimage.correlate1d(kernel, g, axis=1, mode="mirror")


def defocus_blur(x, level, rng):
    radius, alias = {CIFAR: [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],
                     IMAGENET: [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)]}[table(x)][level - 1]
    kernel = disk(radius, alias)
    out = np.stack([ndimage.correlate(x[..., c], kernel, mode="mirror") for c in range(x.shape[2])], -1)
    return np.clip(out, 0, 1)


def _shift(image, dx, dy):
    """imagecorruptions' shift: roll, then repeat the edge over the wrapped part."""
    if dx < 0:
        shifted = np.roll(image, shift=image.shape[1] + dx, axis=1)
        shifted[:, dx:] = shifted[:, dx - 1:dx]
    elif dx > 0:
        shifted = np.roll(image, shift=dx, axis=1)
        shifted[:, :dx] = shifted[:, dx:dx + 1]
    else:
        shifted = image
    if dy < 0:
        shifted = np.roll(shifted, shift=image.shape[0] + dy, axis=0)
        shifted[dy:, :] = shifted[dy - 1:dy, :]
    elif dy > 0:
        shifted = np.roll(shifted, shift=dy, axis=0)
        shifted[:dy, :] = shifted[dy:dy + 1, :]
    return shifted


def motion_kernel_blur(x, radius, sigma, angle):
    """imagecorruptions' _motion_blur: 2r + 1 one-sided Gaussian taps along `angle` degrees."""
    width = radius * 2 + 1
    k = np.exp(-np.arange(width) ** 2 / (2 * sigma ** 2)) / (np.sqrt(2 * np.pi) * sigma)
    k /= k.sum()
    point = (width * np.sin(np.deg2rad(angle)), width * np.cos(np.deg2rad(angle)))
    hypot = math.hypot(point[0], point[1])
    blurred = np.zeros_like(x, dtype=np.float64)
    for i in range(width):
        dy = -math.ceil(((i * point[0]) / hypot) - 0.5)
        dx = -math.ceil(((i * point[1]) / hypot) - 0.5)
        if np.abs(dy) >= x.shape[0] or np.abs(dx) >= x.shape[1]:
            break
        blurred = blurred + k[i] * _shift(x, dx, dy)
    return blurred


def motion_blur(x, level, rng, angle=None):
    radius, sigma = {CIFAR: [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)],
                     IMAGENET: [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)]}[table(x)][level - 1]
    angle = rng.uniform(-45, 45) if angle is None else angle
    return np.clip(motion_kernel_blur(x, radius, sigma, angle), 0, 1)


def clipped_zoom(img, zoom):
    """imagecorruptions' clipped_zoom: centre crop, scipy zoom (order 1); not cropped back."""
    ch0 = int(np.ceil(img.shape[0] / float(zoom)))
    top0 = (img.shape[0] - ch0) // 2
    ch1 = int(np.ceil(img.shape[1] / float(zoom)))
    top1 = (img.shape[1] - ch1) // 2
    return ndimage.zoom(img[top0:top0 + ch0, top1:top1 + ch1], (zoom, zoom, 1), order=1)


def zoom_blur(x, level, rng):
    zooms = {CIFAR: [np.arange(1, 1.06, 0.01), np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01),
                     np.arange(1, 1.21, 0.01), np.arange(1, 1.26, 0.01)],
             IMAGENET: [np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01), np.arange(1, 1.21, 0.02),
                        np.arange(1, 1.26, 0.02), np.arange(1, 1.31, 0.03)]}[table(x)][level - 1]
    out = np.zeros_like(x)
    for z in zooms:
        out += clipped_zoom(x, z)[:x.shape[0], :x.shape[1]]
    return np.clip((x + out) / (len(zooms) + 1), 0, 1)


# ---------------------------------------------------------------- weather

def _grey(x):
    return x @ np.array([0.299, 0.587, 0.114]) if x.shape[2] == 3 else x.mean(axis=2)


def snow(x, level, rng):
    loc, scale, zoom, thr, radius, sigma, keep = {
        CIFAR: [(0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
                (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9), (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
                (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)],
        IMAGENET: [(0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
                   (0.55, 0.3, 4, 0.9, 12, 8, 0.7), (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
                   (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)]}[table(x)][level - 1]
    layer = rng.normal(size=x.shape[:2], loc=loc, scale=scale)
    layer = clipped_zoom(layer[..., None], zoom)[..., 0]
    layer[layer < thr] = 0
    layer = np.clip(layer, 0, 1)
    layer = motion_kernel_blur(layer, radius, sigma, rng.uniform(-135, -45))
    layer = (np.round(layer * 255).astype(np.uint8) / 255.0)[:x.shape[0], :x.shape[1], None]
    x = keep * x + (1 - keep) * np.maximum(x, _grey(x)[..., None] * 1.5 + 0.5)
    return np.clip(x + layer + np.rot90(layer, k=2), 0, 1)


def frost(x, level, rng, texture):
    """The blend of the reference; `texture` (H, W, C) in [0, 1] stands in for the photo crop."""
    keep, amount = {CIFAR: [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)],
                    IMAGENET: [(1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)]}[table(x)][level - 1]
    return np.clip(keep * x + amount * texture, 0, 1)


def plasma_fractal(rng, mapsize=256, wibbledecay=3.0):
    """The diamond-square height map of the reference, in [0, 1]."""
    maparray = np.empty((mapsize, mapsize), dtype=np.float64)
    maparray[0, 0] = 0
    stepsize = mapsize
    wibble = 100.0

    def wibbledmean(array):
        return array / 4 + wibble * rng.uniform(-wibble, wibble, array.shape)

    while stepsize >= 2:
        half = stepsize // 2
        cornerref = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        squareaccum = cornerref + np.roll(cornerref, shift=-1, axis=0)
        squareaccum += np.roll(squareaccum, shift=-1, axis=1)
        maparray[half:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(squareaccum)
        drgrid = maparray[half:mapsize:stepsize, half:mapsize:stepsize]
        ulgrid = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        ltsum = drgrid + np.roll(drgrid, 1, axis=0) + ulgrid + np.roll(ulgrid, -1, axis=1)
        maparray[0:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(ltsum)
        ttsum = drgrid + np.roll(drgrid, 1, axis=1) + ulgrid + np.roll(ulgrid, -1, axis=0)
        maparray[half:mapsize:stepsize, 0:mapsize:stepsize] = wibbledmean(ttsum)
        stepsize //= 2
        wibble /= wibbledecay
    maparray -= maparray.min()
    return maparray / maparray.max()


def fog(x, level, rng):
    strength, decay = {CIFAR: [(.2, 3), (.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)],
                       IMAGENET: [(1.5, 2), (2., 2), (2.5, 1.7), (2.5, 1.5), (3., 1.4)]}[table(x)][level - 1]
    mapsize = 1 if max(x.shape[:2]) <= 1 else 2 ** (max(x.shape[:2]) - 1).bit_length()
    peak = x.max()
    out = x + strength * plasma_fractal(rng, mapsize, decay)[:x.shape[0], :x.shape[1]][..., None]
    return np.clip(out * peak / (peak + strength), 0, 1)


def rgb2hsv(rgb):
    """skimage.color.rgb2hsv."""
    v = rgb.max(-1)
    delta = np.ptp(rgb, -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = delta / v
    s[delta == 0] = 0
    h = np.zeros_like(v)
    with np.errstate(invalid="ignore", divide="ignore"):
        idx = rgb[..., 0] == v
        h[idx] = (rgb[idx, 1] - rgb[idx, 2]) / delta[idx]
        idx = rgb[..., 1] == v
        h[idx] = 2.0 + (rgb[idx, 2] - rgb[idx, 0]) / delta[idx]
        idx = rgb[..., 2] == v
        h[idx] = 4.0 + (rgb[idx, 0] - rgb[idx, 1]) / delta[idx]
    h = (h / 6.0) % 1.0
    h[delta == 0] = 0
    return np.stack([h, s, v], -1)


def hsv2rgb(hsv):
    """skimage.color.hsv2rgb."""
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    hi = np.floor(h * 6)
    f = h * 6 - hi
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    hi = hi.astype(int) % 6
    choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = np.zeros(hsv.shape)
    for k, (r, g, b) in enumerate(choices):
        m = hi == k
        out[m] = np.stack([r[m], g[m], b[m]], -1)
    return out


def brightness(x, level, rng):
    c = {CIFAR: [.05, .1, .15, .2, .3], IMAGENET: [.1, .2, .3, .4, .5]}[table(x)][level - 1]
    if x.shape[2] != 3:
        return np.clip(x + c, 0, 1)
    hsv = rgb2hsv(x)
    hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
    return np.clip(hsv2rgb(hsv), 0, 1)


# Spatter's OpenCV steps in NumPy: Canny, distance to edges, equalizeHist, filter2D.

def canny(img, low, high):
    """OpenCV Canny (aperture 3, L1 gradient) on an 8-bit grey image given as floats."""
    gx = ndimage.correlate(img, np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], float), mode="nearest")
    gy = ndimage.correlate(img, np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], float), mode="nearest")
    mag = np.abs(gx) + np.abs(gy)
    pad = np.pad(mag, 1)
    h, w = mag.shape
    nb = {(dy, dx): pad[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] for dy in (-1, 0, 1) for dx in (-1, 0, 1)}
    ax, ay = np.abs(gx), np.abs(gy)
    tg22 = ax * (13573 / 2 ** 15)
    horiz = ay < tg22
    vert = ~horiz & (ay > tg22 + 2 * ax)
    diag_same = (gx * gy) >= 0
    keep = np.where(horiz, (mag > nb[0, -1]) & (mag >= nb[0, 1]),
                    np.where(vert, (mag > nb[-1, 0]) & (mag >= nb[1, 0]),
                             np.where(diag_same, (mag > nb[-1, -1]) & (mag > nb[1, 1]),
                                      (mag > nb[-1, 1]) & (mag > nb[1, -1]))))
    candidates = keep & (mag > low)
    labels, count = ndimage.label(candidates, structure=np.ones((3, 3)))
    strong = np.unique(labels[candidates & (mag > high)])
    return np.isin(labels, strong[strong > 0])


def equalize_hist(img):
    """OpenCV equalizeHist on integer values 0..255."""
    values = img.astype(np.int64).ravel()
    hist = np.bincount(values, minlength=256)
    first = int(np.nonzero(hist)[0][0])
    total = values.size
    if hist[first] == total:
        return np.full(img.shape, float(first))
    scale = np.float32(255.0 / (total - hist[first]))
    lut = np.round((np.cumsum(hist) - hist[first]).astype(np.float32) * scale)
    return np.clip(lut, 0, 255)[values].reshape(img.shape).astype(np.float64)


def spatter(x, level, rng):
    loc, scale, sigma, thr, intensity, mud = {
        CIFAR: [(0.62, 0.1, 0.7, 0.7, 0.5, 0), (0.65, 0.1, 0.8, 0.7, 0.5, 0), (0.65, 0.3, 1, 0.69, 0.5, 0),
                (0.65, 0.1, 0.7, 0.69, 0.6, 1), (0.65, 0.1, 0.5, 0.68, 0.6, 1)],
        IMAGENET: [(0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0), (0.65, 0.3, 2, 0.68, 0.5, 0),
                   (0.65, 0.3, 1, 0.65, 1.5, 1), (0.67, 0.4, 1, 0.65, 1.5, 1)]}[table(x)][level - 1]
    liquid = _gaussian(rng.normal(size=x.shape[:2], loc=loc, scale=scale), sigma)
    liquid[liquid < thr] = 0
    if x.shape[2] == 3:
        water, brown = np.array([175, 238, 238]) / 255.0, np.array([63, 42, 20]) / 255.0
    else:
        grey = np.array([0.2989, 0.5870, 0.1140])
        water = np.full(x.shape[2], np.array([175, 238, 238]) / 255.0 @ grey)
        brown = np.full(x.shape[2], np.array([63, 42, 20]) / 255.0 @ grey)
    if not mud:
        level8 = np.floor(np.clip(liquid * 255, 0, 255))
        edges = canny(level8, 50, 150)
        if edges.any():
            dist = ndimage.distance_transform_edt(~edges)
        else:
            dist = np.full(edges.shape, 20.0)
        dist = np.minimum(dist, 20)
        dist = np.floor(ndimage.uniform_filter(dist, 3, mode="mirror") + 1e-9)
        dist = equalize_hist(dist)
        emboss = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], float)
        dist = np.clip(ndimage.correlate(dist, emboss, mode="mirror"), 0, 255)
        dist = np.round(ndimage.uniform_filter(dist, 3, mode="mirror"))
        m = level8 * dist
        m = m / m.max() if m.max() > 0 else m
        return np.clip(x + intensity * m[..., None] * water, 0, 1)
    m = _gaussian((liquid > thr).astype(np.float64), intensity)
    m[m < 0.8] = 0
    return np.clip(x * (1 - m[..., None]) + brown * m[..., None], 0, 1)


# ---------------------------------------------------------------- digital

def contrast(x, level, rng):
    c = {CIFAR: [.75, .5, .4, .3, 0.15], IMAGENET: [0.4, .3, .2, .1, .05]}[table(x)][level - 1]
    means = np.mean(x, axis=(0, 1), keepdims=True)
    return np.clip((x - means) * c + means, 0, 1)


def saturate(x, level, rng):
    gain, offset = {CIFAR: [(0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)],
                    IMAGENET: [(0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)]}[table(x)][level - 1]
    if x.shape[2] != 3:
        return x.copy()
    hsv = rgb2hsv(x)
    hsv[..., 1] = np.clip(hsv[..., 1] * gain + offset, 0, 1)
    return np.clip(hsv2rgb(hsv), 0, 1)


def pixelate(x, level, rng):
    c = {CIFAR: [0.95, 0.9, 0.85, 0.75, 0.65], IMAGENET: [0.6, 0.5, 0.4, 0.3, 0.25]}[table(x)][level - 1]
    h, w = x.shape[:2]
    out = np.empty_like(x)
    for k in range(x.shape[2]):      # Pillow's float mode, one channel at a time
        plane = Image.fromarray(x[..., k].astype(np.float32), mode="F")
        plane = plane.resize((int(w * c), int(h * c)), Image.BOX).resize((w, h), Image.BOX)
        out[..., k] = np.asarray(plane)
    return np.clip(out, 0, 1)


def jpeg_compression(x, level, rng):
    q = {CIFAR: [80, 65, 58, 50, 40], IMAGENET: [25, 18, 15, 10, 7]}[table(x)][level - 1]
    pixels = np.rint(np.clip(x, 0, 1) * 255).astype(np.uint8)
    planes = [pixels] if x.shape[2] == 3 else [pixels[..., k] for k in range(x.shape[2])]
    decoded = []
    for plane in planes:
        buffer = io.BytesIO()
        Image.fromarray(plane).save(buffer, "JPEG", quality=q)
        decoded.append(np.asarray(Image.open(io.BytesIO(buffer.getvalue()))))
    out = decoded[0] if x.shape[2] == 3 else np.stack(decoded, -1)
    return out / 255.0


def elastic_transform(x, level, rng):
    """make_cifar_c.py's elastic (affine + displacement) up to 64x64, imagecorruptions' above."""
    h, w = x.shape[:2]
    if table(x) == CIFAR:
        alpha, sigma, affine = [(32 * 0, 32 * 0, 32 * 0.08), (32 * 0.05, 32 * 0.2, 32 * 0.07),
                                (32 * 0.08, 32 * 0.06, 32 * 0.06), (32 * 0.1, 32 * 0.04, 32 * 0.05),
                                (32 * 0.1, 32 * 0.03, 32 * 0.03)][level - 1]
        x = affine_warp(x, rng.uniform(-affine, affine, size=(3, 2)))
        spread = 1.0
        sigmas = (sigma, sigma)
    else:
        alpha = [250 * 0.05, 250 * 0.065, 250 * 0.085, 250 * 0.1, 250 * 0.12][level - 1]
        sigmas = (0.01 * h, 0.01 * w)
        spread = 0.005 * h
    dx = _gaussian(rng.uniform(-spread, spread, size=(h, w)), sigmas, truncate=3, mode="reflect") * alpha
    dy = _gaussian(rng.uniform(-spread, spread, size=(h, w)), sigmas, truncate=3, mode="reflect") * alpha
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    out = np.stack([ndimage.map_coordinates(x[..., k], (rows + dy, cols + dx), order=1, mode="reflect")
                    for k in range(x.shape[2])], -1)
    return np.clip(out, 0, 1)


def affine_warp(x, offsets):
    """cv2.getAffineTransform + warpAffine (bilinear, REFLECT_101) for make_cifar_c's three points."""
    h, w = x.shape[:2]
    centre = np.array([h // 2, w // 2], dtype=np.float64)
    size = min(h, w) // 3
    src = np.array([centre + size, [centre[0] + size, centre[1] - size], centre - size])
    dst = src + offsets
    # dst = A @ [src, 1]; warpAffine reads the source at A^-1 (dst), points as (x=col, y=row).
    forward = np.linalg.solve(np.c_[src, np.ones(3)], dst).T          # (2, 3)
    inverse = np.linalg.inv(np.r_[forward, [[0, 0, 1]]])[:2]
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    src_x = inverse[0, 0] * cols + inverse[0, 1] * rows + inverse[0, 2]
    src_y = inverse[1, 0] * cols + inverse[1, 1] * rows + inverse[1, 2]
    return np.stack([ndimage.map_coordinates(x[..., k], (src_y, src_x), order=1, mode="mirror")
                     for k in range(x.shape[2])], -1)


# ---------------------------------------------------------------- geometric (Ovadia et al. 2019)

def rotation(x, degrees):
    """Rotation about the centre by `degrees` (counter-clockwise on screen), bilinear, zero outside."""
    return ndimage.rotate(x, degrees, axes=(1, 0), reshape=False, order=1, mode="grid-constant", cval=0.0)


def translation(x, dy, dx):
    """Shift by (dy, dx) pixels, bilinear, zero outside."""
    return ndimage.shift(x, (dy, dx, 0), order=1, mode="grid-constant", cval=0.0)


REFERENCES = {
    "gaussian_noise_c": gaussian_noise_c, "shot_noise": shot_noise, "impulse_noise": impulse_noise,
    "speckle_noise": speckle_noise, "defocus_blur": defocus_blur, "glass_blur": glass_blur,
    "motion_blur": motion_blur, "zoom_blur": zoom_blur, "gaussian_blur": gaussian_blur,
    "snow": snow, "frost": frost, "fog": fog, "brightness": brightness, "spatter": spatter,
    "contrast": contrast, "elastic_transform": elastic_transform, "pixelate": pixelate,
    "jpeg_compression": jpeg_compression, "saturate": saturate,
}
