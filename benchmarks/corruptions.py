"""Corruption throughput: failfirst batched against the per-image NumPy reference and imagecorruptions.

Run: `python benchmarks/corruptions.py` (about 2 minutes on 2 cores). Writes
benchmarks/corruptions.md.

Side by side in one run, on the same images (natural-ish 32x32 and 224x224 RGB), for every
corruption of the catalogue:
- failfirst, one level: `fn(batch, 0.6, seed=...)` on a batch (256 at 32x32, 16 at 224x224),
  fresh random draws, numpy in and out, as a user calls it;
- failfirst, a sweep: the engine's way, `apply` at the five anchors with one SampleRNG, so
  the draws are made once per image and shared by the levels; counted per image-level;
- the reference: tests/reference_corruptions.py, the published formulas in NumPy/SciPy/
  Pillow, one image at a time, level 3 (its cost is the same at every level);
- imagecorruptions (bethgelab, the package most people use), level 3, one uint8 image at a
  time, where it still runs; it does not import on current setuptools (no pkg_resources),
  so a two-line stand-in for `pkg_resources.resource_filename` is installed first.
Speedups are failfirst's images per second over the reference's.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import types
import warnings
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

import failfirst.perturbations as P  # noqa: E402
import reference_corruptions as R  # noqa: E402
from failfirst.perturbations import SampleRNG, to_canonical  # noqa: E402

NAMES = [n for n in P.names("vision") if P.get(n).family in ("noise", "blur", "weather", "digital", "geometric")
         and n in R.REFERENCES or n in ("rotation", "translation")]
# The reference stand-ins for the two geometric shifts: scipy resampling at level 3's size.
GEOMETRIC = {"rotation": lambda x, level, rng: R.rotation(x, 45.0 * level / 5),
             "translation": lambda x, level, rng: R.translation(x, 0.25 * level / 5 * x.shape[0], 0.0)}
SIZES = {"32x32": dict(size=32, batch=256, reference_images=24),
         "224x224": dict(size=224, batch=16, reference_images=2)}
ANCHORS = (0.2, 0.4, 0.6, 0.8, 1.0)
LEVEL = 3


def images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Natural-ish NCHW float32 images: smooth colour fields, flat discs, a little grain."""
    g = np.random.default_rng(seed)
    coarse = torch.from_numpy(g.random((n, 3, 4, 4)))
    out = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).numpy()
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        for _ in range(5):
            cy, cx, r = g.uniform(0, size, 2).tolist() + [g.uniform(2, size / 3)]
            out[i][:, (yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = g.uniform(0, 1, (3, 1))
    return np.clip(out + g.normal(0, 0.02, out.shape), 0, 1).astype(np.float32)


def timed(fn, budget: float, max_runs: int = 50) -> float:
    """Seconds per run: one warm-up, then runs until `budget` seconds have passed; the fastest.

    The fastest run is the cost without interference from other work on a shared machine.
    """
    fn()
    times: list[float] = []
    while not times or (sum(times) < budget and len(times) < max_runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.min(times))


def ours_one_level(name: str, x: np.ndarray, budget: float) -> float:
    calls = iter(range(10 ** 6))
    return len(x) / timed(lambda: P.get(name)(x, LEVEL / 5, seed=next(calls)), budget)


def ours_sweep(name: str, x: np.ndarray, budget: float) -> float:
    batch = to_canonical(torch.from_numpy(x), "vision")
    p = P.get(name)
    calls = iter(range(10 ** 6))

    def sweep():
        rng = SampleRNG(next(calls), name, np.arange(len(x)))
        for s in ANCHORS:
            p.apply(batch, s, rng)

    return len(x) * len(ANCHORS) / timed(sweep, budget)


def reference_rate(name: str, x: np.ndarray, budget: float) -> float:
    fn = GEOMETRIC.get(name) or R.REFERENCES[name]
    hwc = [img.transpose(1, 2, 0).astype(np.float64) for img in x]
    rng = np.random.default_rng(0)
    if name == "frost":   # the reference's photo held in memory (not read per image): crop, then blend
        h, w, c = hwc[0].shape
        photo = rng.random((2 * h + 32, 2 * w + 32, c))

        def crop():
            top, left = rng.integers(0, h + 33), rng.integers(0, w + 33)
            return photo[top:top + h, left:left + w]
        return len(hwc) / timed(lambda: [fn(img, LEVEL, rng, texture=crop()) for img in hwc], budget, 5)
    return len(hwc) / timed(lambda: [fn(img, LEVEL, rng) for img in hwc], budget, 5)


def load_imagecorruptions():
    """imagecorruptions, importable again with a stand-in for the removed pkg_resources."""
    if "pkg_resources" not in sys.modules:
        try:
            import pkg_resources  # noqa: F401
        except ImportError:
            shim = types.ModuleType("pkg_resources")
            shim.resource_filename = lambda module, path: os.path.join(
                os.path.dirname(sys.modules[module].__file__), path)
            sys.modules["pkg_resources"] = shim
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import imagecorruptions
        return imagecorruptions, getattr(imagecorruptions, "__version__", "")
    except Exception as err:  # noqa: BLE001 - any failure means "does not run here"
        return None, f"does not import: {type(err).__name__}: {err}"


def imagecorruptions_rate(module, name: str, x: np.ndarray, budget: float) -> float | str:
    if module is None or name not in module.get_corruption_names("all"):
        return "-"
    pixels = [np.rint(img.transpose(1, 2, 0) * 255).astype(np.uint8) for img in x]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return len(pixels) / timed(lambda: [module.corrupt(img, corruption_name=name, severity=LEVEL)
                                                for img in pixels], budget, 5)
    except Exception as err:  # noqa: BLE001
        return f"fails: {type(err).__name__}"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"numpy {np.__version__}, Python {platform.python_version()}, {platform.system()}")


def fmt(value) -> str:
    if isinstance(value, str):
        return value
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def ratio(a, b) -> str:
    return f"{a / b:.1f}x" if isinstance(a, float) and isinstance(b, float) else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=0.6, help="seconds of timing per measurement")
    parser.add_argument("--rounds", type=int, default=2, help="passes over everything; the best is kept")
    parser.add_argument("--only", nargs="*", help="corruption names (default: all)")
    parser.add_argument("--out", default=str(HERE / "corruptions.md"))
    args = parser.parse_args()
    names = args.only or NAMES
    module, version = load_imagecorruptions()
    rows: dict[str, dict[str, list]] = {}
    started = time.perf_counter()
    # Two rounds, keeping each cell's best: a burst of other work on a shared machine then
    # has to hit the same cell twice to show.
    for _ in range(args.rounds):
        for label, cfg in SIZES.items():
            x = images(cfg["batch"], cfg["size"])
            for name in names:
                ref_x = x[:cfg["reference_images"]]
                cell = [ours_one_level(name, x, args.budget), ours_sweep(name, x, args.budget),
                        reference_rate(name, ref_x, args.budget),
                        imagecorruptions_rate(module, name, ref_x, args.budget)]
                best = rows.setdefault(name, {}).setdefault(label, cell)
                rows[name][label] = [max(a, b) if isinstance(a, float) and isinstance(b, float) else a
                                     for a, b in zip(best, cell)]
                one, sweep, ref, ic = rows[name][label]
                print(f"{label:8s} {name:18s} ours {fmt(one):>8s}/s  sweep {fmt(sweep):>8s}/s  "
                      f"reference {fmt(ref):>8s}/s  imagecorruptions {fmt(ic):>8s}/s  "
                      f"x{one / ref:.1f} (sweep x{sweep / ref:.1f})", flush=True)
    elapsed = time.perf_counter() - started
    Path(args.out).write_text(report(rows, module is not None, version, elapsed))
    print(f"wrote {args.out} in {elapsed:.0f} s")


DEVIATIONS = """\
## Deviations from the published levels

The contract says distortion (mean absolute change) never decreases with severity. Where the
published levels are not ordered that way, failfirst departs from them, and says so in each
perturbation's provenance (`describe()["deviation"]`):

- **saturate**: published levels 1-2 desaturate (x0.3, x0.1) and levels 3-5 oversaturate; no
  monotone path joins them. Levels 3-5 exact; levels 1-2 oversaturate on the way to level 3.
- **glass_blur**: CIFAR-10-C blur sigma held at 0.25 (published 0.05, 0.25, 0.4, 0.25, 0.4: the
  extra blur undoes more of the shuffle than it adds); ImageNet-C shuffle passes 2, 2, 3, 3, 3
  (published 2, 1, 3, 2, 2). No 8-bit rounding between the blurs. The shuffle itself is the
  reference's sequential copy chains (its tuple "swap" copies on RGB arrays), reproduced
  exactly by pointer jumping.
- **frost**: seeded crops of five fixed procedural ice-crystal sheets, built once per image
  size, instead of the photographs (none are shipped). Published dimming offsets the added frost (levels 4-5 change an image less than
  level 3), so each level is the image moved towards level 5 by frost / frost_5: frost amounts
  as published, dimming in proportion.
- **fog**: one fractal roughness (decay) per table, the median of the published ones (2.5
  CIFAR-10-C, 1.7 ImageNet-C); strengths as published.
- **snow**: flakes accumulate (a level keeps the flakes of the levels below it): ImageNet-C's
  level 3 changes an image less than its level 2.
- **spatter**: CIFAR-10-C levels 4-5 (mud) keep the level-3 water where it changed a pixel more
  (published CIFAR-10-C mud changes an image less than its water).
- **elastic_transform**: the published levels are not ordered by displacement (make_cifar_c.py
  trades a shrinking affine for a growing local warp; make_imagenet_c.py's levels 1-2 move
  pixels by tens of pixels, 3-5 by one or two). CIFAR-10-C: make_cifar_c.py's level 5 scaled by
  severity; ImageNet-C: imagecorruptions' version (alpha grows, one displacement field).
- **rotation / translation** (Ovadia et al. 2019 use up to 180 degrees and half the image): up
  to 45 degrees and a quarter of the image, where the change still grows with the angle or
  shift; further out it plateaus and dips (at 90 degrees pixels realign).
- Between levels, parameters are interpolated where the corruption is continuous in them;
  otherwise outputs are blended (changes of one sign) or each pixel switches from one level to
  the next at its own severity (pixelate, JPEG, zoom and glass blur, water to mud), because a
  blend of two JPEG or pixelation grids averages their errors away.
- pixelate keeps the published sizes, int(side * scale); at 32x32 levels 2 and 3 are 28 and 27
  pixels, which on some images change them by the same amount in either order.
"""

NOTES = """\
## Reading the numbers

- The machine is shared (2 cores) and other work was running; each cell is the fastest of
  repeated runs over two passes, and ratios between runs of this script still vary by about a
  factor of 1.5.
- Random corruptions are bound by drawing their randomness. failfirst keys every row by
  (seed, name, sample id) so that rows never depend on the batch; its draws are counter-based
  (SplitMix64 words, ziggurat normals) and vectorised over the batch, about 4 ns per normal
  (12 us for the 3072 of a 32x32 RGB image; NumPy's Philox, keyed per row, took 31 us). The
  reference's whole Gaussian noise is one call on NumPy's global stream, about 36 us, so
  20x would need normals ten times cheaper than the fastest CPU generators make them. A sweep
  draws once and reuses the draws at every level (the *sweep* column); on a GPU the arithmetic
  is free. The noise corruptions stay under the goal on a CPU.
- jpeg_compression runs Pillow's encoder and decoder per image, as the reference does (the
  issue asks for the real codec), so it cannot be much faster than the reference.
- frost's reference, with its photograph already in memory, is a crop and a blend (about
  8 us); failfirst's is the same, a crop of one of five procedural sheets built once per
  process, plus a per-sample gather; both are a few passes over the image, so the ratio
  stays near 2x. (imagecorruptions reads a photo from disk per image: 280 images/s.)
- gaussian_blur and motion_blur are at the machine's limit for their form: the blur is two
  banded matrix products (about 50 % of the CPU's peak FLOP rate at 32x32), motion blur one
  gather per tap per image (its angle is drawn per image). snow keeps the flakes of every
  level below the requested one, so one call at level 3 builds three snow layers (a sweep
  builds each level's layer once); spatter is a chain of small filters (Canny, distance,
  histogram equalisation) in float64 to stay exact on 8-bit values.
- imagecorruptions 1.1.2 does not import with current setuptools (no `pkg_resources`); with a
  stand-in, glass_blur and gaussian_blur fail (scikit-image removed `multichannel`), fog fails
  (NumPy 2 removed `np.float_`). It has no CIFAR-10-C tables: at 32x32 it applies the ImageNet-C
  levels.
"""


def report(rows, imported: bool, version: str, elapsed: float) -> str:
    lines = [
        "# Corruption throughput",
        "",
        "Written by `python benchmarks/corruptions.py`; numbers are images per second (higher is",
        "better), measured side by side in one run. See the script's docstring for what each column",
        "times. *ours, 1 level*: a batch at severity 0.6 with fresh draws, through the public call.",
        "*ours, sweep*: the five anchors with draws shared, per image-level (how the engine runs).",
        "*reference*: tests/reference_corruptions.py, per image. *imagecorruptions*: bethgelab's",
        f"package, per uint8 image ({'imported with a stand-in for pkg_resources' if imported else version}).",
        "",
        f"Machine: {machine()}. Total run {elapsed:.0f} s.",
        "",
    ]
    small = {name: by_size["32x32"] for name, by_size in rows.items() if "32x32" in by_size}
    met = [n for n, (one, sweep, ref, _) in small.items() if one / ref >= 20]
    met_sweep = [n for n, (one, sweep, ref, _) in small.items() if one / ref < 20 <= sweep / ref]
    missed = [n for n in small if n not in met and n not in met_sweep]
    lines += ["Goal: at least 20x the reference at 32x32 on a CPU. "
              f"Met in one call: {', '.join(met) or 'none'}. "
              f"Met in a sweep only: {', '.join(met_sweep) or 'none'}. "
              f"Not met: {', '.join(missed) or 'none'} (see below).", ""]
    for label in SIZES:
        lines += [f"## {label}", "",
                  "| corruption | family | ours, 1 level | ours, sweep | reference | imagecorruptions "
                  "| speedup, 1 level | speedup, sweep |",
                  "|---|---|---:|---:|---:|---:|---:|---:|"]
        for name, by_size in rows.items():
            if label not in by_size:
                continue
            one, sweep, ref, ic = by_size[label]
            lines.append(f"| {name} | {P.get(name).family} | {fmt(one)} | {fmt(sweep)} | {fmt(ref)} | {fmt(ic)} "
                         f"| {ratio(one, ref)} | {ratio(sweep, ref)} |")
        lines.append("")
    return "\n".join(lines) + "\n" + NOTES + "\n" + DEVIATIONS


if __name__ == "__main__":
    main()
