"""Batched image operators the corruptions share: border modes, filters, shifts and resampling."""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Literal

import torch
from scipy.fft import next_fast_len

# Border modes, named as scipy.ndimage names them: "nearest" repeats the edge (OpenCV
# REPLICATE), "reflect" mirrors about the edge (d c b a | a b c d), "mirror" about the edge
# pixel (d c b | a b c d, OpenCV REFLECT_101).
Mode = Literal["nearest", "reflect", "mirror"]


def source_index(index: torch.Tensor, size: int, mode: Mode) -> torch.Tensor:
    """Where positions `index` (any integers) read from on a line of `size` under `mode`."""
    if mode == "nearest" or size == 1:
        return index.clamp(0, size - 1)
    if mode == "reflect":
        folded = index.remainder(2 * size)
        return torch.where(folded >= size, 2 * size - 1 - folded, folded)
    period = 2 * size - 2
    folded = index.remainder(period)
    return torch.where(folded >= size, period - folded, folded)


@lru_cache(maxsize=256)
def _band(size: int, taps: tuple[float, ...], mode: Mode) -> torch.Tensor:
    radius = len(taps) // 2
    offsets = torch.arange(len(taps)) - radius
    cols = source_index(torch.arange(size)[:, None] + offsets[None, :], size, mode)
    weights = torch.tensor(taps, dtype=torch.float64).expand(size, -1).contiguous()
    return torch.zeros(size, size, dtype=torch.float64).scatter_add_(1, cols, weights)


def band_matrix(size: int, taps: torch.Tensor | tuple[float, ...], mode: Mode) -> torch.Tensor:
    """The (size, size) float64 matrix that correlates a line with odd-length `taps`.

    Taps past the ends land where `mode` sends them, so a kernel may outgrow the line.
    """
    values = tuple(float(v) for v in (taps.tolist() if isinstance(taps, torch.Tensor) else taps))
    return _band(size, values, mode)


def separable(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Apply a (H, H) matrix down the rows and a (W, W) one along the columns of every channel.

    Shape:
        x (N, C, H, W); returns (N, C, H, W).
    """
    return rows.to(x) @ x @ cols.to(x).T


def gaussian_taps(sigma: float, truncate: float = 4.0) -> tuple[float, ...]:
    """scipy.ndimage's Gaussian: radius int(truncate * sigma + 0.5), normalised; (1.0,) if sigma is 0."""
    radius = int(truncate * sigma + 0.5)
    if sigma <= 0 or radius == 0:
        return (1.0,)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return tuple((k / k.sum()).tolist())


def gaussian_filter(x: torch.Tensor, sigma: float, *, truncate: float = 4.0,
                    mode: Mode = "nearest") -> torch.Tensor:
    """Gaussian blur of each channel as scipy.ndimage.gaussian_filter (and skimage's gaussian).

    Shape:
        x (N, C, H, W); returns (N, C, H, W).
    """
    taps = gaussian_taps(sigma, truncate)
    if len(taps) == 1:
        return x
    h, w = x.shape[-2:]
    return separable(x, band_matrix(h, taps, mode), band_matrix(w, taps, mode))


def box_filter(x: torch.Tensor, size: int = 3, mode: Mode = "mirror") -> torch.Tensor:
    """Mean over a size x size window (OpenCV's `blur`, REFLECT_101 borders by default)."""
    taps = (1.0 / size,) * size
    h, w = x.shape[-2:]
    return separable(x, band_matrix(h, taps, mode), band_matrix(w, taps, mode))


def correlate2d(x: torch.Tensor, kernel: torch.Tensor, mode: Mode) -> torch.Tensor:
    """Correlate every channel with one odd-sized 2-D kernel (OpenCV's filter2D).

    The kernel is split into rank-one terms (its SVD, terms under 1e-12 of the largest
    dropped), each applied as two banded matrix products: disks and 3x3 filters have rank
    1 to 7, and banded products run several times faster than a single-channel conv2d.
    On images above FFT_ABOVE pixels a kernel of rank 2 or more is applied through the FFT
    instead (a band matrix there is mostly zeros): 2-5x faster at 224x224, equal to 1e-15.

    Shape:
        x (N, C, H, W); kernel (kh, kw); returns (N, C, H, W).
    """
    h, w = x.shape[-2:]
    terms = _rank_one_terms(kernel.detach().to("cpu", torch.float64).numpy().tobytes(), tuple(kernel.shape))
    if h * w > FFT_ABOVE and len(terms) > 1:
        return _fft_correlate2d(x, kernel, mode)
    out = None
    for rows, cols in terms:
        term = separable(x, band_matrix(h, rows, mode), band_matrix(w, cols, mode))
        out = term if out is None else out + term
    return x * 0.0 if out is None else out


FFT_ABOVE = 64 * 64


def _fft_correlate2d(x: torch.Tensor, kernel: torch.Tensor, mode: Mode) -> torch.Tensor:
    """`correlate2d` by the FFT: the image padded as `mode` reads past its edges, multiplied
    by the kernel's conjugate spectrum, cropped. The padded size is FFT-friendly and leaves
    room for the kernel, so the circular product never wraps into the kept pixels."""
    h, w = x.shape[-2:]
    kh, kw = kernel.shape
    size = (next_fast_len(h + kh - 1, real=True), next_fast_len(w + kw - 1, real=True))
    rows = source_index(torch.arange(-(kh // 2), size[0] - kh // 2), h, mode).to(x.device)
    cols = source_index(torch.arange(-(kw // 2), size[1] - kw // 2), w, mode).to(x.device)
    padded = x.index_select(-2, rows).index_select(-1, cols)
    taps = torch.zeros(size, dtype=x.dtype, device=x.device)
    taps[:kh, :kw] = kernel.to(x)
    spectrum = torch.fft.rfft2(padded) * torch.fft.rfft2(taps).conj()
    return torch.fft.irfft2(spectrum, s=size)[..., :h, :w]


@lru_cache(maxsize=64)
def _rank_one_terms(data: bytes, shape: tuple[int, int]) -> tuple[tuple[tuple[float, ...], tuple[float, ...]], ...]:
    kernel = torch.frombuffer(bytearray(data), dtype=torch.float64).reshape(shape)
    u, s, vh = torch.linalg.svd(kernel)
    keep = s > 1e-12 * s[0] if len(s) and s[0] > 0 else torch.zeros_like(s, dtype=torch.bool)
    return tuple((tuple((u[:, i] * s[i]).tolist()), tuple(vh[i].tolist()))
                 for i in range(len(s)) if keep[i])


def motion_taps(radius: float, sigma: float) -> torch.Tensor:
    """One-sided Gaussian weights of imagecorruptions' motion blur, normalised over 2r + 1 taps.

    A fractional radius gives the last tap a fractional weight, so weights move continuously
    with the radius; an integer radius gives exactly the reference's 2r + 1 taps.
    """
    if sigma <= 0:
        return torch.ones(1, dtype=torch.float64)
    width = 2.0 * radius + 1.0
    i = torch.arange(math.ceil(width), dtype=torch.float64)
    weights = torch.exp(-(i ** 2) / (2 * sigma ** 2)) * (width - i).clamp(0.0, 1.0)
    return weights / weights.sum()


def motion_blur(x: torch.Tensor, radius: float, sigma: float, angle_deg: torch.Tensor) -> torch.Tensor:
    """imagecorruptions' motion blur: a weighted sum of copies shifted along each sample's angle.

    Tap i reads the pixel at offset (ceil(i sin a - 0.5), ceil(i cos a - 0.5)) with edges
    repeated; taps whose offset leaves the image are dropped without renormalising, as the
    reference's loop stops there.

    Shape:
        x (N, C, H, W); angle_deg (N,); returns (N, C, H, W).
    """
    weights = motion_taps(radius, sigma)
    n, c, h, w = x.shape
    theta = torch.deg2rad(angle_deg.to("cpu", torch.float64))
    i = torch.arange(len(weights), dtype=torch.float64)
    dy = torch.ceil(i[None, :] * torch.sin(theta)[:, None] - 0.5).long()          # (N, T)
    dx = torch.ceil(i[None, :] * torch.cos(theta)[:, None] - 0.5).long()
    # The reference stops at the first tap that leaves the image.
    inside = ((dy.abs() < h) & (dx.abs() < w)).cumprod(dim=1).bool()
    gains = weights[None, :] * inside                                              # (N, T)
    if h * w > SLICE_SHIFTS_ABOVE:
        return _shift_sum_by_slices(x, dy, dx, gains)
    # Taps past the reference's stop have no gain; reading at offset 0 keeps the padding small.
    dy, dx = torch.where(inside, dy, 0), torch.where(inside, dx, 0)
    # In an edge-padded copy every tap is one flat offset per sample (no clamping per pixel),
    # so each tap's gather index is a broadcast add: several times cheaper than clamped
    # (N, T, H, W) indices, with the same gathers and sums in the same order.
    pad_y, pad_x = int(dy.abs().max()), int(dx.abs().max())
    padded = torch.nn.functional.pad(x, (pad_x, pad_x, pad_y, pad_y), mode="replicate") \
        if pad_x or pad_y else x
    wide = w + 2 * pad_x
    flat = padded.reshape(n, c, -1)
    base = ((torch.arange(h)[:, None] + pad_y) * wide + torch.arange(w)[None, :] + pad_x).reshape(1, -1)
    offsets = dy * wide + dx                                                       # (N, T)
    gains = gains.to(x.device, x.dtype)
    out = torch.zeros(n, c, h * w, dtype=x.dtype, device=x.device)
    for k in range(len(weights)):
        if not bool(inside[:, k].any()):
            continue
        if bool((offsets[:, k] == offsets[0, k]).all()):
            # One shift for the whole batch (always tap 0): a slice, no gather.
            top, left = pad_y + int(dy[0, k]), pad_x + int(dx[0, k])
            shifted = padded[..., top:top + h, left:left + w].reshape(n, c, h * w)
        else:
            index = (base + offsets[:, k, None]).to(x.device)                      # (N, HW)
            shifted = flat.gather(2, index[:, None].expand(n, c, h * w))
        out.addcmul_(shifted, gains[:, k, None, None])
    return out.reshape(n, c, h, w)


# Above this many pixels, per-image slices of an edge-padded copy beat building gather
# indices for every tap (whose cost grows with the image while the slice count does not).
SLICE_SHIFTS_ABOVE = 64 * 64


def _shift_sum_by_slices(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor,
                         gains: torch.Tensor) -> torch.Tensor:
    """Sum over taps of gains[n, k] * x[n] shifted by (dy, dx)[n, k], edges repeated."""
    n, c, h, w = x.shape
    pad_y, pad_x = int(dy.abs().max()), int(dx.abs().max())
    padded = torch.nn.functional.pad(x, (pad_x, pad_x, pad_y, pad_y), mode="replicate") \
        if pad_x or pad_y else x
    out = torch.zeros_like(x)
    for sample in range(n):
        for k in torch.nonzero(gains[sample]).flatten().tolist():
            top, left = pad_y + int(dy[sample, k]), pad_x + int(dx[sample, k])
            out[sample].add_(padded[sample, :, top:top + h, left:left + w], alpha=float(gains[sample, k]))
    return out


def zoom_matrix(size: int, zoom: float, out_rows: int | None = None) -> torch.Tensor:
    """Rows of scipy.ndimage.zoom(order=1) applied to the centre crop, as imagecorruptions crops.

    The centre ceil(size / zoom) pixels are stretched to round(crop * zoom) pixels with
    corner-aligned linear interpolation; the first `out_rows` (default `size`) are kept.

    Shape:
        returns (out_rows, size) float64.
    """
    crop = math.ceil(size / zoom)
    top = (size - crop) // 2
    stretched = int(round(crop * zoom))
    out_rows = size if out_rows is None else out_rows
    o = torch.arange(out_rows, dtype=torch.float64)
    scale = (crop - 1) / (stretched - 1) if stretched > 1 else 0.0
    pos = (o * scale).clamp(0, crop - 1)
    low = pos.floor().long().clamp(max=crop - 1)
    high = (low + 1).clamp(max=crop - 1)
    frac = pos - low
    matrix = torch.zeros(out_rows, size, dtype=torch.float64)
    matrix.scatter_add_(1, (top + low)[:, None], (1 - frac)[:, None])
    matrix.scatter_add_(1, (top + high)[:, None], frac[:, None])
    # Rows past the stretched crop read nothing: scipy's output simply ends there.
    matrix[o >= stretched] = 0.0
    return matrix
