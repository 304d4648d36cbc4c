"""Per-sample random draws keyed by (seed, perturbation, stream, sample id), shared across severities.

Every draw is a pure function of its key and position: the word at `counter` of a row is
SplitMix64's output function applied to `row_key + (counter + 1) * GOLDEN_GAMMA`, where
`row_key` mixes (seed, name, kind, stream) with the sample id. A whole batch is therefore
drawn with a handful of vectorised NumPy operations, with no generator to key per row, and
a row's numbers cannot depend on the batch it came in. Normals use the ziggurat method
(Marsaglia and Tsang 2000, as NumPy does) with one private word stream per element, so its
rare rejections never shift another element's draws. All but about 1 normal in 4000 (the
tail) are an integer times a table constant, so no vector width, thread count or chunking
changes a bit of them; they are made on the host, so GPU runs see the same numbers.
"""

from __future__ import annotations

import hashlib
import math
from typing import Callable, Sequence

import numpy as np
import torch

from failfirst.errors import InputError

GOLDEN_GAMMA = np.uint64(0x9E3779B97F4A7C15)    # SplitMix64's increment, 2**64 / golden ratio
MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
MIX_2 = np.uint64(0x94D049BB133111EB)
STEP_BITS = 24      # an element's j-th position owns counters j << STEP_BITS onwards
CHUNK_WORDS = 1 << 15
DERIVED_BUDGET = 256 << 20   # bytes of layers built from draws that one SampleRNG keeps


def stable_key(*parts: object) -> int:
    """A 64-bit integer from its parts, equal in every process (unlike the salted `hash()`)."""
    text = "\0".join(str(p) for p in parts)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's output function, in place on a uint64 array: a bijection with full avalanche."""
    shifted = np.empty_like(z)
    for shift, multiplier in ((30, MIX_1), (27, MIX_2), (31, None)):
        np.right_shift(z, np.uint64(shift), out=shifted)
        z ^= shifted
        if multiplier is not None:
            z *= multiplier
    return z


def words(keys: np.ndarray, counters: np.ndarray) -> np.ndarray:
    """64 random bits for each (row key, counter) pair, broadcast together."""
    with np.errstate(over="ignore"):
        steps = (counters.astype(np.uint64) + np.uint64(1)) * GOLDEN_GAMMA
        return mix64(np.add(keys, steps, dtype=np.uint64))


def row_keys(stream_key: int, sample_ids: np.ndarray) -> np.ndarray:
    """One 64-bit key per sample id for a stream; distinct ids give unrelated keys."""
    with np.errstate(over="ignore"):
        spread = mix64(sample_ids.astype(np.uint64) * GOLDEN_GAMMA)
    return mix64(spread ^ np.uint64(stream_key))


def halves(bits: np.ndarray) -> np.ndarray:
    """Each word as two 32-bit values, low half first on every platform.

    Shape:
        bits (..., K) uint64; returns (..., 2K) uint32.
    """
    return np.ascontiguousarray(bits, dtype="<u8").view("<u4")


def uniform_f32(bits: np.ndarray) -> np.ndarray:
    """Float32 uniforms in [0, 1), exact multiples of 2**-24, from the top 24 bits of uint32 values."""
    top = (bits >> np.uint32(8)).view(np.int32)
    return top.astype(np.float32) * np.float32(2.0 ** -24)


def uniform_f64(bits: np.ndarray) -> np.ndarray:
    """One float64 uniform in [0, 1) per word (its top 53 bits)."""
    return (bits >> np.uint64(11)).view(np.int64).astype(np.float64) * 2.0 ** -53


# ---------------------------------------------------------------- ziggurat normals

ZIGGURAT_R = 3.6541528853610088      # where the 256-layer ziggurat's base strip meets the tail
ZIGGURAT_AREA = 4.92867323399e-3     # each layer's area
ZIGGURAT_BITS = 23                   # bits of a 32-bit value that place a point within its layer


def _ziggurat_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Marsaglia and Tsang's tables for 256 layers: acceptance bounds, widths, heights."""
    f = lambda x: math.exp(-0.5 * x * x)  # noqa: E731 - the unnormalised density
    scale = 2.0 ** ZIGGURAT_BITS
    k, w, y = np.zeros(256, np.uint32), np.zeros(256), np.zeros(256)
    q = ZIGGURAT_AREA / f(ZIGGURAT_R)
    k[0], w[0], y[0] = int(ZIGGURAT_R / q * scale), q / scale, 1.0
    w[255], y[255] = ZIGGURAT_R / scale, f(ZIGGURAT_R)
    outer = x = ZIGGURAT_R
    for i in range(254, 0, -1):
        x = math.sqrt(-2.0 * math.log(ZIGGURAT_AREA / x + f(x)))
        k[i + 1], w[i], y[i] = int(x / outer * scale), x / scale, f(x)
        outer = x
    return k, w.astype(np.float32), y


ZIG_K, ZIG_W, ZIG_Y = _ziggurat_tables()


def row_chunks(rows: int, per_row: int) -> list[slice]:
    """Slices of a few rows each, so that a chunk's integer temporaries stay in cache.

    Drawing a 256-image batch of 32x32 RGB values chunk by chunk is about three times
    faster than all at once.
    """
    step = max(1, CHUNK_WORDS // max(1, per_row))
    return [slice(start, start + step) for start in range(0, rows, step)]


def standard_uniform(keys: np.ndarray, count: int) -> np.ndarray:
    """`count` float32 uniforms in [0, 1) per row key, two per word; shape (N, count)."""
    out = np.empty((len(keys), count), np.float32)
    counters = np.arange((count + 1) // 2, dtype=np.uint64)[None, :]
    for rows in row_chunks(len(keys), count):
        out[rows] = uniform_f32(halves(words(keys[rows, None], counters))[:, :count])
    return out


def standard_normal(keys: np.ndarray, count: int) -> np.ndarray:
    """`count` float32 standard normals per row key, shape (N, count).

    Element j first reads half j % 2 of the word at counter (j // 2) << STEP_BITS (one word,
    two normals), which places a point in one of 256 layers, accepted at once 99 % of the
    time; a rejected element reads further words at its own counters (j << STEP_BITS) + 1, 2, ...
    """
    out = np.empty((len(keys), count), np.float32)
    inner = np.empty((len(keys), count), bool)
    pairs = np.arange((count + 1) // 2, dtype=np.uint64) << np.uint64(STEP_BITS)
    for rows in row_chunks(len(keys), count):
        out[rows], inner[rows], _ = _in_layer(halves(words(keys[rows, None], pairs[None, :]))[:, :count])
    redo = np.flatnonzero(~inner)
    if redo.size:
        rows, cols = np.divmod(redo, count)
        first = halves(words(keys[rows], pairs[cols // 2])[:, None])[np.arange(redo.size), cols % 2]
        counters = cols.astype(np.uint64) << np.uint64(STEP_BITS)
        out.reshape(-1)[redo] = _outside_layer(keys[rows], counters, first)
    return out


def _in_layer(h: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The signed point each 32-bit value places, whether it lies in its layer's inner
    rectangle, and the layer."""
    layer = (h & np.uint32(0xFF)).astype(np.intp)
    within = h >> np.uint32(9)
    x = within.view(np.int32).astype(np.float32)
    # take(mode="wrap") skips the bounds check of plain indexing: twice as fast, same values.
    x *= np.take(ZIG_W, layer, mode="wrap")
    # Bit 8 is the sign: moved to bit 31, the float's sign bit.
    x.view(np.uint32)[...] |= (h & np.uint32(0x100)) << np.uint32(23)
    return x, within < np.take(ZIG_K, layer, mode="wrap"), layer


def _outside_layer(keys: np.ndarray, counters: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Finish the elements whose point (from the 32-bit `h`) fell outside the inner rectangle.

    A point in a layer's wedge is kept if a uniform height falls under the density; one in
    the base strip is replaced by a tail draw of its sign; a rejected point starts over
    with the next word of its element. `counters` are each element's last used counter.
    """
    out = np.empty(len(keys), np.float32)
    pending = np.arange(len(keys))
    while pending.size:
        value, inner, layer = _in_layer(h)
        done = inner.copy()
        wedge = np.flatnonzero(~inner & (layer > 0))
        if wedge.size:
            i = layer[wedge]
            counters[wedge] += np.uint64(1)
            u = uniform_f64(words(keys[wedge], counters[wedge]))
            density = np.exp(-0.5 * value[wedge].astype(np.float64) ** 2)
            done[wedge] = (ZIG_Y[i - 1] - ZIG_Y[i]) * u + ZIG_Y[i] < density
        tail = np.flatnonzero(~inner & (layer == 0))
        if tail.size:
            beyond, counters[tail] = _ziggurat_tail(keys[tail], counters[tail])
            value[tail] = np.where(value[tail] < 0, -beyond, beyond)
            done[tail] = True
        out[pending[done]] = value[done]
        pending, keys, counters = pending[~done], keys[~done], counters[~done]
        counters += np.uint64(1)
        h = halves(words(keys, counters)[:, None])[:, 0]
    return out


def _ziggurat_tail(keys: np.ndarray, counters: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Marsaglia's exact sampler of |normal| beyond ZIGGURAT_R (about 1 draw in 4000), float32."""
    x = np.empty(len(keys), np.float32)
    pending = np.arange(len(keys))
    counters = counters.copy()
    while pending.size:
        pair = words(keys[pending, None], counters[pending, None] + np.arange(1, 3, dtype=np.uint64))
        counters[pending] += np.uint64(2)
        u = uniform_f64(pair)
        xx = -np.log1p(-u[:, 0]) / ZIGGURAT_R
        yy = -np.log1p(-u[:, 1])
        ok = yy + yy > xx * xx
        x[pending[ok]] = ZIGGURAT_R + xx[ok]
        pending = pending[~ok]
    return x, counters


class SampleRNG:
    """Random draws for a batch where each row depends only on (seed, name, stream, sample id).

    A row never depends on the batch it arrived in, the device or the order of calls, and
    draws are memoised, so applying one perturbation at several severities with the same
    `SampleRNG` reuses the same numbers (common random numbers: nested masks, smooth curves).
    Draws are counter-based (see the module docstring), made on the host with NumPy and
    moved to `device`, so CPU and GPU runs see identical noise. The global NumPy and torch
    RNGs are never touched.

    Args:
        seed: non-negative integer, or None for fresh OS entropy (draws then differ per call).
        name: the perturbation's registry name.
        sample_ids: one integer id per row of the batch.
        device: where the drawn tensors live.

    Example:
        >>> rng = SampleRNG(42, "gaussian_noise", [0, 1, 2])
        >>> rng.normal("noise", (4,)).shape
        torch.Size([3, 4])
    """

    def __init__(self, seed: int | None, name: str, sample_ids: Sequence[int], device="cpu"):
        if seed is None:
            seed = int(np.random.SeedSequence().entropy)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise InputError(f"seed must be a non-negative integer or None, got {seed!r}")
        self.seed = int(seed)
        self.name = name
        self.sample_ids = np.asarray(sample_ids, dtype=np.int64).reshape(-1)
        if (self.sample_ids < 0).any():
            raise InputError("sample_ids must be non-negative integers")
        self.device = torch.device(device)
        self._cache: dict[tuple, torch.Tensor] = {}
        self._derived_bytes = 0

    def __len__(self) -> int:
        return len(self.sample_ids)

    def keys(self, kind: str, stream: str) -> np.ndarray:
        """The per-row 64-bit keys of a stream of one kind of draw."""
        return row_keys(stable_key(self.seed, self.name, stream, kind), self.sample_ids)

    def _memo(self, kind: str, stream: str, shape: tuple[int, ...], draw) -> torch.Tensor:
        shape = tuple(int(s) for s in shape)
        cache_key = (kind, stream, shape)
        if cache_key not in self._cache:
            block = draw(self.keys(kind, stream), math.prod(shape)).reshape(len(self), *shape)
            self._cache[cache_key] = torch.from_numpy(block).to(self.device)
        return self._cache[cache_key]

    def derived(self, key: tuple, build: Callable[[], torch.Tensor]) -> torch.Tensor:
        """A tensor built from this rng's draws alone, built once and reused at every severity.

        For the costly layers a corruption makes from its draws (snow's streaked flakes,
        spatter's drop masks): a sweep applies a perturbation at many severities with one
        rng, and each level then builds its layer once instead of once per severity that
        needs it. `build` must not read the batch being perturbed; `key` names everything
        else it depends on (level, shape, dtype). Layers are kept up to DERIVED_BUDGET bytes
        per rng (large images in large batches are rebuilt rather than held).
        """
        key = ("derived", *key)
        if key in self._cache:
            return self._cache[key]
        value = build()
        size = value.element_size() * value.numel()
        if self._derived_bytes + size <= DERIVED_BUDGET:
            self._cache[key] = value
            self._derived_bytes += size
        return value

    def uniform(self, stream: str, shape: tuple[int, ...] = ()) -> torch.Tensor:
        """Uniform [0, 1) float32 draws of shape (N, *shape)."""
        return self._memo("uniform", stream, shape, standard_uniform)

    def normal(self, stream: str, shape: tuple[int, ...] = ()) -> torch.Tensor:
        """Standard normal float32 draws of shape (N, *shape)."""
        return self._memo("normal", stream, shape,
                          standard_normal)

    def sign(self, stream: str, shape: tuple[int, ...] = ()) -> torch.Tensor:
        """Random +1/-1 float32 draws of shape (N, *shape)."""
        return torch.where(self.uniform(stream, shape) < 0.5, -1.0, 1.0)
