"""Built-in and file datasets -> checked arrays, labels, class names and layout."""

from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, NamedTuple, Union

import numpy as np

from failfirst.errors import DataError, unknown_name

Split = Literal["train", "test"]
Layout = Literal["NCHW", "NHWC", "NT", "NTC"]
Domain = Literal["vision", "timeseries"]
DatasetSpec = Union[str, "os.PathLike[str]"]

_SPLITS = ("train", "test")
_VISION_LAYOUTS = ("NCHW", "NHWC")
_SERIES_LAYOUTS = ("NT", "NTC")
# Values this far outside [0, 1] are float rounding (e.g. float64 -> float32), not bad data.
_RANGE_TOLERANCE = 1e-6

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
CIFAR_FOLDER = "cifar-10-batches-py"


@dataclass(frozen=True, eq=False)
class Dataset:
    """A checked dataset: float32 inputs in the user's layout, integer labels, class names.

    Shape:
        X: (N, C, H, W) or (N, H, W, C) for vision, values in [0, 1];
        (N, T) or (N, T, C) for time series. y and sample_ids: (N,).

    Attributes:
        X: Inputs, float32.
        y: Labels, int64 class indices into `classes`.
        classes: Class names; `classes[y[i]]` names the label of row i.
        domain: "vision" (4-D X) or "timeseries" (2-D or 3-D X).
        layout: "NCHW"/"NHWC" for vision, "NT"/"NTC" for time series.
        name: The built-in name or the file name.
        description: One line: source, split, how many samples, shape, classes.
        fingerprint: sha256 hex over X, y and classes; equal data gives equal fingerprints.
        sample_ids: Index of each row in the source split, so reports point to the original.
    """

    X: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...]
    domain: Domain
    layout: str
    name: str
    description: str
    fingerprint: str
    sample_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


class _Raw(NamedTuple):
    """What a loader hands back before the shared checks: arrays as stored."""

    X: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...] | None
    source: str  # for messages and the description, e.g. "digits test split" or a path
    layout: str | None = None  # the layout the loader knows X is in (built-ins)


class _Builtin(NamedTuple):
    load: Callable[[str, Path], _Raw]
    description: str


# --------------------------------------------------------------------------- folders


def user_cache_root() -> Path:
    """The user's cache folder for failfirst: $XDG_CACHE_HOME/failfirst or ~/.cache/failfirst."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "failfirst"


def default_data_dir() -> Path:
    """Where built-in datasets that need files (cifar10) are looked for.

    Returns:
        $FAILFIRST_DATA if set, else the user cache folder's `data` (~/.cache/failfirst/data,
        honouring XDG_CACHE_HOME).
    """
    env = os.environ.get("FAILFIRST_DATA")
    return Path(env).expanduser() if env else user_cache_root() / "data"


# --------------------------------------------------------------------------- built-ins


def _load_digits(split: str, data_dir: Path) -> _Raw:
    # Bundled with scikit-learn: real handwritten digits, no download.
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    # A fixed split, independent of the user's seed, so the demo model never trains on the
    # samples a sweep evaluates.
    X_train, X_test, y_train, y_test = train_test_split(
        digits.images, digits.target, test_size=0.3, stratify=digits.target, random_state=0
    )
    X, y = (X_train, y_train) if split == "train" else (X_test, y_test)
    X = (X.astype(np.float32) / 16.0)[:, None, :, :]
    return _Raw(X, y, tuple(str(i) for i in range(10)), f"digits {split} split", "NCHW")


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles only what the official CIFAR-10 batches hold: dicts, lists, bytes, arrays."""

    _ALLOWED = {"_reconstruct", "ndarray", "dtype", "scalar", "_frombuffer"}

    def find_class(self, module: str, name: str):
        if module.split(".")[0] == "numpy" and name in self._ALLOWED:
            return super().find_class(module, name)
        if (module, name) == ("_codecs", "encode"):
            return super().find_class(module, name)
        raise DataError(
            f"refusing to unpickle {module}.{name}: CIFAR-10 batches hold only dicts, lists "
            "and numpy arrays"
        )


def _read_cifar_pickle(path: Path) -> dict:
    if not path.is_file():
        raise DataError(
            f"CIFAR-10 file {path} is missing; re-extract cifar-10-python.tar.gz from {CIFAR_URL}"
        )
    with open(path, "rb") as f:
        try:
            # The official files are Python 2 pickles: encoding="bytes" keeps keys as bytes.
            obj = _CifarUnpickler(f, encoding="bytes").load()
        except DataError:
            raise
        except Exception as exc:  # truncated or foreign file
            raise DataError(f"expected a CIFAR-10 python batch in {path}; found {exc!r}") from exc
    if not isinstance(obj, dict):
        raise DataError(f"expected a pickled dict in {path}; found {type(obj).__name__}")
    return obj


def _load_cifar10(split: str, data_dir: Path) -> _Raw:
    folder = Path(data_dir) / CIFAR_FOLDER
    if not folder.is_dir():
        raise DataError(
            f"CIFAR-10 not found: expected the folder {folder}; download cifar-10-python.tar.gz "
            f"from {CIFAR_URL} and extract it into {Path(data_dir)} so that {folder} exists "
            "(or set FAILFIRST_DATA to the folder holding it)"
        )
    names = ["test_batch"] if split == "test" else [f"data_batch_{i}" for i in range(1, 6)]
    xs, ys = [], []
    for name in names:
        batch = _read_cifar_pickle(folder / name)
        if b"data" not in batch or b"labels" not in batch:
            raise DataError(
                f"expected keys b'data' and b'labels' in {folder / name}; found {sorted(batch)}"
            )
        data = np.asarray(batch[b"data"])
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise DataError(
                f"expected data of shape (N, 3072) in {folder / name}; found {data.shape}"
            )
        xs.append(data.reshape(-1, 3, 32, 32))  # stored as 1024 red, then green, then blue
        ys.append(np.asarray(batch[b"labels"]))
    meta = _read_cifar_pickle(folder / "batches.meta")
    classes = tuple(
        n.decode() if isinstance(n, bytes) else str(n) for n in meta.get(b"label_names", [])
    )
    # uint8 stays uint8 here: the shared checks scale it to [0, 1] after subsetting.
    X, y = np.concatenate(xs), np.concatenate(ys)
    return _Raw(X, y, classes or None, f"cifar10 {split} split", "NCHW")


SYNTHETIC_CLASSES = ("2_cycles", "3.5_cycles", "5_cycles", "6.5_cycles")
SYNTHETIC_LENGTH = 128
_SYNTHETIC_SIZES = {"train": 2000, "test": 1000}
# Different generator seeds per split: the test series never appear in training.
_SYNTHETIC_SEEDS = {"train": 1001, "test": 2002}


def synthetic_series(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy sine waves whose class is the number of cycles per window.

    Class k has 2 + 1.5 k cycles per window, jittered by up to +-0.7 cycles, with random
    phase, amplitude in [0.5, 1.5], an offset in [-0.5, 0.5] and Gaussian noise of std
    0.6: neighbouring classes nearly touch, so noise makes a few samples ambiguous.

    Args:
        n: Number of series.
        seed: Generator seed.

    Returns:
        (X, y): float32 series and int64 labels, balanced over the 4 classes.

    Shape:
        X: (n, 128, 1) (layout "NTC"); y: (n,).
    """
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % len(SYNTHETIC_CLASSES))
    cycles = 2.0 + 1.5 * y + rng.uniform(-0.7, 0.7, n)
    phase = rng.uniform(0, 2 * np.pi, n)
    amplitude = rng.uniform(0.5, 1.5, n)
    offset = rng.uniform(-0.5, 0.5, n)
    t = np.arange(SYNTHETIC_LENGTH) / SYNTHETIC_LENGTH
    X = amplitude[:, None] * np.sin(2 * np.pi * cycles[:, None] * t + phase[:, None])
    X += offset[:, None] + rng.normal(0.0, 0.6, X.shape)
    return X[:, :, None].astype(np.float32), y.astype(np.int64)


def _load_synthetic(split: str, data_dir: Path) -> _Raw:
    X, y = synthetic_series(_SYNTHETIC_SIZES[split], _SYNTHETIC_SEEDS[split])
    return _Raw(X, y, SYNTHETIC_CLASSES, f"synthetic {split} split", "NTC")


_BUILTINS: dict[str, _Builtin] = {
    "digits": _Builtin(
        _load_digits, "scikit-learn's handwritten digits, 8x8 grey (N, 1, 8, 8), 10 classes, "
        "1257 train / 540 test, bundled"
    ),
    "cifar10": _Builtin(
        _load_cifar10, "CIFAR-10 32x32 colour (N, 3, 32, 32), 10 classes, 50000 train / 10000 "
        f"test; needs {CIFAR_FOLDER}/ in the data folder (from {CIFAR_URL})"
    ),
    "synthetic": _Builtin(
        _load_synthetic, "noisy sine waves (N, 128, 1) NTC, 4 classes by cycles per window, "
        "2000 train / 1000 test, generated"
    ),
}


def dataset_names() -> list[tuple[str, str]]:
    """The built-in datasets, for `failfirst list`.

    Returns:
        (name, one-line description) pairs, sorted by name.
    """
    return [(name, b.description) for name, b in sorted(_BUILTINS.items())]


# --------------------------------------------------------------------------- files


def _npz_array(archive, key: str, path: Path) -> np.ndarray:
    try:
        return archive[key]
    except ValueError as exc:  # object arrays need pickle, which .npz loading never allows
        raise DataError(
            f"array {key!r} in {path} holds Python objects (loading it would run pickle); "
            "save it as a numeric or string array"
        ) from exc


def _load_npz(path: Path, allow_pickle: bool) -> _Raw:
    # allow_pickle is ignored on purpose: .npz files are always read without pickle.
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise DataError(f"expected a NumPy .npz archive at {path}; found {exc!r}") from exc
    with archive:
        missing = [k for k in ("X", "y") if k not in archive.files]
        if missing:
            raise DataError(
                f"expected arrays 'X' and 'y' in {path}; missing {missing}, found {archive.files}"
            )
        X = _npz_array(archive, "X", path)
        y = _npz_array(archive, "y", path)
        classes = None
        if "classes" in archive.files:
            classes = tuple(str(c) for c in _npz_array(archive, "classes", path).ravel())
    return _Raw(X, y, classes, str(path))


def _load_npy_dict(path: Path, allow_pickle: bool) -> _Raw:
    # Read the header first: only an object array (the seed's pickled dict) needs pickle.
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = {
                (1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0,
            }.get(version)
            shape, _, dtype = read_header(f) if read_header else (None, None, np.dtype(object))
    except Exception as exc:
        raise DataError(f"expected a NumPy .npy file at {path}; found {exc!r}") from exc
    if dtype != np.dtype(object):
        raise DataError(
            f"expected a dict {{'X': ..., 'y': ...}} saved with np.save in {path}; found a "
            f"plain {dtype} array of shape {shape}; save X and y together with np.savez"
        )
    if not allow_pickle:
        raise DataError(
            f"{path} is a pickled dict; loading it runs arbitrary code; pass --allow-pickle if "
            "you trust it, or convert it to .npz"
        )
    try:
        obj = np.load(path, allow_pickle=True)
        obj = obj.item() if obj.shape == () else obj
    except Exception as exc:
        raise DataError(f"could not unpickle {path}: {exc!r}") from exc
    if not isinstance(obj, dict):
        raise DataError(f"expected a dict with 'X' and 'y' in {path}; found {type(obj).__name__}")
    missing = [k for k in ("X", "y") if k not in obj]
    if missing:
        found = sorted(map(str, obj))
        raise DataError(f"expected keys 'X' and 'y' in {path}; missing {missing}, found {found}")
    classes = obj.get("classes")
    classes = tuple(str(c) for c in np.asarray(classes).ravel()) if classes is not None else None
    return _Raw(np.asarray(obj["X"]), np.asarray(obj["y"]), classes, str(path))


_FILE_LOADERS: dict[str, Callable[[Path, bool], _Raw]] = {
    ".npz": _load_npz,
    ".npy": _load_npy_dict,
}


# --------------------------------------------------------------------------- checks


def _check_labels(y: np.ndarray, source: str, n: int) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:
        raise DataError(
            f"expected y of shape (N,) holding class indices in {source}; found shape {y.shape} "
            "(one-hot? use y.argmax(1))"
        )
    y = y.reshape(-1) if y.ndim == 2 else y
    if y.ndim != 1:
        raise DataError(f"expected y of shape (N,) in {source}; found shape {y.shape}")
    if len(y) != n:
        raise DataError(
            f"expected as many labels as samples in {source}; found {n} samples in X and "
            f"{len(y)} labels in y"
        )
    if y.dtype.kind in "iu":
        pass
    elif y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        pass  # whole-number floats, e.g. labels saved from a float array
    else:
        bad = y if y.dtype.kind != "f" else y[~(np.isfinite(y) & (y == np.round(y)))]
        raise DataError(
            f"expected integer class labels in y of {source}; found dtype {y.dtype} "
            f"with values like {bad.ravel()[:3].tolist()}"
        )
    y = y.astype(np.int64)
    if y.min() < 0:
        raise DataError(f"expected class indices >= 0 in y of {source}; found {int(y.min())}")
    return y


def _domain_and_layout(X: np.ndarray, layout: str | None, source: str) -> tuple[Domain, str]:
    if X.ndim == 4:
        if layout is None:
            # Channels are few (grey, RGB, RGBA); a spatial side of 1, 3 or 4 is rare.
            channels_last = X.shape[1] not in (1, 3, 4) and X.shape[-1] in (1, 3, 4)
            layout = "NHWC" if channels_last else "NCHW"
        if layout not in _VISION_LAYOUTS:
            raise DataError(
                f"expected layout NCHW or NHWC for 4-D image data in {source}; found {layout!r}"
            )
        return "vision", layout
    if X.ndim in (2, 3):
        expected = "NT" if X.ndim == 2 else "NTC"
        if layout is not None and layout != expected:
            raise DataError(
                f"expected layout {expected!r} for {X.ndim}-D time series in {source}; "
                f"found {layout!r}"
            )
        return "timeseries", expected
    raise DataError(
        f"expected X with 4 dims (images) or 2-3 dims (time series) in {source}; "
        f"found shape {X.shape}"
    )


def _to_float(X: np.ndarray, domain: Domain, source: str, ids: np.ndarray) -> np.ndarray:
    if X.dtype.kind not in "iufb":
        raise DataError(f"expected numeric X in {source}; found dtype {X.dtype}")
    if X.dtype.kind in "iub":
        if domain == "vision":
            lo, hi = int(X.min()), int(X.max())
            if lo < 0 or hi > 255:
                raise DataError(
                    f"expected integer image values in 0..255 in {source}; found {lo}..{hi}"
                )
            return X.astype(np.float32) / np.float32(255.0)  # uint8 pixels -> [0, 1]
        return X.astype(np.float32)
    bad = ~np.isfinite(X)
    if bad.any():
        per_row = bad.reshape(len(X), -1).any(axis=1)
        first = int(ids[np.argmax(per_row)])
        raise DataError(
            f"expected finite values in X of {source}; found {int(bad.sum())} NaN/inf values, "
            f"the first in sample {first}"
        )
    X = X.astype(np.float32, copy=False)
    if domain == "vision":
        lo, hi = float(X.min()), float(X.max())
        if lo < -_RANGE_TOLERANCE or hi > 1 + _RANGE_TOLERANCE:
            raise DataError(
                f"expected float image values in [0, 1] in {source}; found [{lo:.4g}, {hi:.4g}] "
                "(scale them, e.g. divide uint8 pixels by 255)"
            )
        X = np.clip(X, 0.0, 1.0)
    return X


def _subset(y: np.ndarray, num_samples: int | None, seed: int) -> np.ndarray:
    """Source indices of a seeded, class-stratified subset, sorted.

    Within each class a seeded permutation ranks the samples; sample of rank r in a class of
    size m gets the key (r + 0.5) / m, and the subset takes the smallest keys (random
    tie-break). Each class so gets its proportional share, within one sample, and smaller
    subsets nest inside larger ones.
    """
    n = len(y)
    if num_samples is None or num_samples >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    keys = np.empty(n)
    for label in np.unique(y):
        members = order[y[order] == label]
        keys[members] = (np.arange(len(members)) + 0.5) / len(members)
    taken = np.lexsort((rng.random(n), keys))[:num_samples]
    return np.sort(taken)


def _fingerprint(X: np.ndarray, y: np.ndarray, classes: tuple[str, ...], layout: str) -> str:
    h = hashlib.sha256()
    # Fixed byte order and explicit shape: equal data hashes equally on every machine.
    h.update(repr((X.shape, layout)).encode())
    h.update(np.ascontiguousarray(X, dtype="<f4").tobytes())
    h.update(np.ascontiguousarray(y, dtype="<i8").tobytes())
    h.update("\x00".join(classes).encode())
    return h.hexdigest()


# --------------------------------------------------------------------------- entry point


def _resolve(spec: DatasetSpec, split: str, data_dir: Path, allow_pickle: bool) -> tuple[str, _Raw]:
    try:
        text = os.fspath(spec)
    except TypeError:
        raise DataError(
            "expected a built-in dataset name or a path to a .npz/.npy file; "
            f"found {type(spec).__name__}"
        ) from None
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if text in _BUILTINS:
        return text, _BUILTINS[text].load(split, data_dir)
    path = Path(text).expanduser()
    suffix = path.suffix.lower()
    if suffix in _FILE_LOADERS:
        if not path.is_file():
            raise DataError(f"dataset file {path} not found; expected an existing {suffix} file")
        return path.name, _FILE_LOADERS[suffix](path, allow_pickle)
    if suffix or path.exists():
        error = unknown_name("dataset file extension", suffix or "(none)", _FILE_LOADERS)
        raise DataError(str(error))
    raise DataError(
        str(unknown_name("dataset", text, [*_BUILTINS, "a path to .npz or .npy"]))
    )


def load_dataset(
    spec: DatasetSpec,
    *,
    num_samples: int | None = None,
    seed: int = 42,
    split: Split = "test",
    data_dir: str | os.PathLike[str] | None = None,
    layout: Layout | None = None,
    allow_pickle: bool = False,
) -> Dataset:
    """Load a built-in or file dataset, check it and take a seeded subset.

    Built-ins ("digits", "cifar10", "synthetic") come in NCHW (vision) or NTC (series).
    Files: `.npz` with arrays X, y and optional classes (never unpickled); `.npy` holding a
    dict {"X": X, "y": y} saved with np.save (pickled, so only with `allow_pickle=True`).
    Integer images (uint8 0..255) are scaled to float32 in [0, 1]; float images must
    already lie in [0, 1]. Data stays in the layout it came in.

    Args:
        spec: A built-in name or a path to a .npz / .npy file.
        num_samples: How many samples to keep: a seeded, class-stratified subset sorted by
            source index. None, or more than the split holds, keeps the whole split.
        seed: Seed for the subset.
        split: "test" or "train" for built-ins; files are one split and ignore it.
        data_dir: Folder holding downloaded datasets (cifar10); default `default_data_dir()`.
        layout: For files, the layout X is stored in (overrides inference: shape[1] in
            (1, 3, 4) means NCHW, else shape[-1] in (1, 3, 4) means NHWC, else NCHW).
            For built-in images, "NHWC" delivers them channels-last.
        allow_pickle: Allow the pickled .npy dict format; it runs code from the file.

    Returns:
        The checked Dataset.

    Raises:
        DataError: Unknown name or extension, missing file or keys, wrong shapes, labels
            that are not integers, NaN/inf, images outside [0, 1], or no samples.

    Example:
        >>> ds = load_dataset("digits", num_samples=100)
        >>> ds.X.shape, ds.layout
        ((100, 1, 8, 8), 'NCHW')
    """
    if split not in _SPLITS:
        raise DataError(str(unknown_name("split", str(split), _SPLITS)))
    if layout is not None and layout not in (*_VISION_LAYOUTS, *_SERIES_LAYOUTS):
        layouts = (*_VISION_LAYOUTS, *_SERIES_LAYOUTS)
        raise DataError(str(unknown_name("layout", str(layout), layouts)))
    whole = isinstance(num_samples, (int, np.integer)) and not isinstance(num_samples, bool)
    if num_samples is not None and not (whole and num_samples >= 1):
        raise DataError(
            f"expected num_samples to be a whole number >= 1 or None; found {num_samples!r}"
        )
    data_dir = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()

    name, raw = _resolve(spec, split, data_dir, allow_pickle)
    X = np.asarray(raw.X)
    if X.ndim == 0 or len(X) < 1:
        raise DataError(f"expected at least 1 sample in {raw.source}; found X of shape {X.shape}")
    y = _check_labels(raw.y, raw.source, len(X))

    transpose = False
    if raw.layout is not None:  # built-in: its layout is known; `layout` asks for a delivery
        domain, found = _domain_and_layout(X, raw.layout, raw.source)
        if layout is not None and layout != found:
            if domain == "vision" and layout in _VISION_LAYOUTS:
                transpose = True
            else:
                raise DataError(f"expected layout {found!r} for {name}; found {layout!r}")
        layout_out = layout or found
    else:
        domain, layout_out = _domain_and_layout(X, layout, raw.source)

    classes = raw.classes or tuple(str(i) for i in range(int(y.max()) + 1))
    if int(y.max()) >= len(classes):
        raise DataError(
            f"expected labels below the {len(classes)} class names of {raw.source}; "
            f"found label {int(y.max())}"
        )

    ids = _subset(y, num_samples, seed)
    X = _to_float(X[ids], domain, raw.source, ids)
    if transpose:
        X = np.ascontiguousarray(X.transpose(0, 2, 3, 1))
    y = y[ids]

    total = len(raw.X)
    count = f"{len(ids)} of {total} samples"
    if num_samples is not None and num_samples > total:
        count = f"all {total} samples (asked for {num_samples})"
    description = (
        f"{raw.source}: {count}, {layout_out} {tuple(X.shape[1:])}, {len(classes)} classes"
    )
    return Dataset(
        X=X,
        y=y,
        classes=tuple(classes),
        domain=domain,
        layout=layout_out,
        name=name,
        description=description,
        fingerprint=_fingerprint(X, y, tuple(classes), layout_out),
        sample_ids=ids.astype(np.int64),
    )
