"""ImageNet-C's spatter layers, batched: water drops (edges, distances, emboss) and mud blobs."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from failfirst.perturbations.corruptions import _ops

DISTANCE_CAP = 20            # the reference truncates the edge distance at 20 pixels
EMBOSS = ((-2.0, -1.0, 0.0), (-1.0, 1.0, 1.0), (0.0, 1.0, 2.0))
SOBEL_X = ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0))
TAN_22_5 = 13573 / 2 ** 15   # OpenCV Canny's fixed-point tan(22.5 deg)


def liquid_layer(normal: torch.Tensor, loc: float, scale: float, sigma: float,
                 threshold: float) -> torch.Tensor:
    """Smoothed Gaussian field with everything under `threshold` set to 0. (N, 1, H, W) float64."""
    field = _ops.gaussian_filter(loc + scale * normal.to(torch.float64), sigma)
    return torch.where(field < threshold, 0.0, field)


def water_mask(liquid: torch.Tensor) -> torch.Tensor:
    """The reference's water intensity m, normalised to max 1 per image. (N, 1, H, W) float64.

    As make_imagenet_c.py: 8-bit liquid -> Canny(50, 150) -> distance to the nearest edge,
    truncated at 20 -> 3x3 mean (to 8 bits) -> histogram equalisation -> emboss -> 3x3 mean
    -> times the 8-bit liquid. The distance is exact Euclidean where OpenCV's DIST_L2 with
    a 5x5 mask approximates it (within about 2%).
    """
    level = torch.floor((liquid * 255).clamp(0, 255))
    edges = canny(level, 50.0, 150.0)
    dist = edge_distance(edges, DISTANCE_CAP)
    # + 1e-9: a 3x3 mean of equal values must not fall just under them before truncation.
    dist = torch.floor(_ops.box_filter(dist) + 1e-9)
    dist = equalize_hist(dist)
    dist = torch.round(_ops.correlate2d(dist, torch.tensor(EMBOSS, dtype=dist.dtype), "mirror")).clamp(0, 255)
    dist = torch.round(_ops.box_filter(dist))
    m = level * dist
    peak = m.amax(dim=(1, 2, 3), keepdim=True)
    return torch.where(peak > 0, m / peak.clamp(min=1e-300), 0.0)


def mud_mask(liquid: torch.Tensor, threshold: float, sigma: float) -> torch.Tensor:
    """The reference's mud coverage: blurred blob mask, zero under 0.8. (N, 1, H, W) float64."""
    m = _ops.gaussian_filter((liquid > threshold).to(torch.float64), sigma)
    return torch.where(m < 0.8, 0.0, m)


def canny(image: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """OpenCV's Canny on 8-bit values: 3x3 Sobel (replicated borders), L1 magnitude,
    non-maximum suppression in four directions, hysteresis with 8-connectivity.

    Shape:
        image (N, 1, H, W) holding 0..255; returns a bool edge map of the same shape.
    """
    sobel = torch.tensor(SOBEL_X, dtype=image.dtype)
    # Integer kernels on integer images: round away the float error of the separable
    # products, so that ties in the comparisons below break as OpenCV's integers do.
    gx = torch.round(_ops.correlate2d(image, sobel, "nearest"))
    gy = torch.round(_ops.correlate2d(image, sobel.T.contiguous(), "nearest"))
    mag = gx.abs() + gy.abs()
    padded = F.pad(mag, (1, 1, 1, 1))          # OpenCV compares with 0 outside the image
    h, w = mag.shape[-2:]

    def at(dy: int, dx: int) -> torch.Tensor:
        return padded[..., 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]

    ax, ay = gx.abs(), gy.abs()
    tg22 = ax * TAN_22_5
    horizontal = ay < tg22
    vertical = ~horizontal & (ay > tg22 + 2 * ax)
    same_sign = (gx * gy) >= 0
    keep_h = (mag > at(0, -1)) & (mag >= at(0, 1))
    keep_v = (mag > at(-1, 0)) & (mag >= at(1, 0))
    keep_d = torch.where(same_sign, (mag > at(-1, -1)) & (mag > at(1, 1)),
                         (mag > at(-1, 1)) & (mag > at(1, -1)))
    peak = torch.where(horizontal, keep_h, torch.where(vertical, keep_v, keep_d)) & (mag > low)
    edges = peak & (mag > high)
    while True:
        grown = peak & dilate3x3(edges)
        if torch.equal(grown, edges):
            return edges
        edges = grown


def dilate3x3(mask: torch.Tensor) -> torch.Tensor:
    """A bool mask grown by one pixel in all 8 directions (3x3 max filter, nothing outside).

    Shifted ORs of the bool mask: about 20x faster on CPU than max_pool2d on small images.

    Shape:
        mask (..., H, W) bool; returns the same shape.
    """
    h, w = mask.shape[-2:]
    padded = F.pad(mask, (1, 1, 1, 1))
    rows = padded[..., :, 0:w] | padded[..., :, 1:w + 1] | padded[..., :, 2:w + 2]
    return rows[..., 0:h, :] | rows[..., 1:h + 1, :] | rows[..., 2:h + 2, :]


def edge_distance(edges: torch.Tensor, cap: int) -> torch.Tensor:
    """Euclidean distance to the nearest edge pixel, truncated at `cap` (cap where none is near).

    Separable: the distance along each row first, then the minimum over nearby rows of
    row distance squared plus row offset squared.

    Shape:
        edges (N, 1, H, W) bool; returns float64 of the same shape.
    """
    far = float(cap + 1)
    h, w = edges.shape[-2:]
    # Every value below is a small integer, exact in float32 (half the memory traffic of
    # float64); only the final square root is taken in float64.
    exact = torch.float32
    # Distance along the row to the nearest edge on either side: the column minus the last
    # edge column at or before it (a running maximum), and the mirror of that.
    col = torch.arange(w, dtype=exact, device=edges.device)
    none = -float(2 * w + cap)
    left = col - torch.where(edges, col, none).cummax(dim=-1).values
    mirrored = w - 1 - col
    right = mirrored - torch.where(edges, mirrored, none).flip(-1).cummax(dim=-1).values.flip(-1)
    along = torch.minimum(left, right)
    along = torch.where(along <= cap, along, far)
    squared = along * along
    padded = F.pad(squared, (0, 0, cap, cap), value=far ** 2)
    best = squared.clone()
    nearer = torch.empty_like(best)
    for dy in range(1, min(cap, h - 1) + 1):
        torch.minimum(padded[..., cap - dy:cap - dy + h, :], padded[..., cap + dy:cap + dy + h, :], out=nearer)
        torch.minimum(best, nearer.add_(dy * dy), out=best)
    return best.to(torch.float64).sqrt().clamp(max=float(cap))


def equalize_hist(image: torch.Tensor) -> torch.Tensor:
    """OpenCV's equalizeHist per image on integer values 0..255 (as float).

    Shape:
        image (N, 1, H, W); returns the same shape.
    """
    n = image.shape[0]
    flat = image.reshape(n, -1).long().clamp(0, 255)
    hist = torch.zeros(n, 256, dtype=torch.float64, device=image.device)
    hist.scatter_add_(1, flat, torch.ones_like(flat, dtype=torch.float64))
    total = flat.shape[1]
    first = (hist > 0).to(torch.int64).argmax(dim=1, keepdim=True)
    first_count = hist.gather(1, first)
    scale = (255.0 / (total - first_count).clamp(min=1)).to(torch.float32)
    lut = torch.round((hist.cumsum(1) - first_count).to(torch.float32) * scale).clamp(0, 255)
    flat_image = first_count == total          # a constant image keeps its value
    lut = torch.where(flat_image, first.to(lut.dtype).expand_as(lut), lut)
    return lut.to(image.dtype).gather(1, flat).reshape(image.shape)
