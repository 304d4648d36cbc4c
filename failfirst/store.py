"""The run store: a Zarr directory holding the sweep's schema, inputs, results and done marks.

Layout (Zarr format 2, readable by any Zarr implementation):
    <store>/            results: per-sample `pred`, `confidence`, `p_true`, `sum_sq` over
                        (perturbation, severity, sample), `label` over sample, summaries
                        once finished; provenance and the run's fingerprint in attrs
    <store>/inputs/     the swept inputs and labels, chunked like the tasks, so workers read
                        their batch straight from the store and reports can redraw samples
    <store>/progress/   `done` over (perturbation, batch): a task marks its region done only
                        after writing it, so a resumed run redoes exactly what is missing
    <store>.lock        beside the store, held by the one run writing it
"""

from __future__ import annotations

import json
import os
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import xarray as xr
import zarr

from failfirst.errors import StoreError

ZARR_FORMAT = 2
PER_SAMPLE = {  # name -> (dtype, fill value marking "not written yet", attrs)
    "pred": ("int64", -1, {"long_name": "predicted class", "units": "class index"}),
    "confidence": ("float32", np.nan, {"long_name": "confidence",
                                       "description": "highest predicted probability"}),
    "p_true": ("float32", np.nan, {"long_name": "probability of the true class"}),
    "sum_sq": ("float32", np.nan, {"long_name": "sum of squared probabilities",
                                   "description": "used by the Brier score"}),
}
RESULT_DIMS = ("perturbation", "severity", "sample")


@dataclass(frozen=True)
class Layout:
    """Where each (perturbation, batch) task reads and writes: one chunk per task."""

    n_samples: int
    batch_size: int

    @property
    def n_batches(self) -> int:
        return -(-self.n_samples // self.batch_size)

    def batch(self, b: int) -> slice:
        return slice(b * self.batch_size, min((b + 1) * self.batch_size, self.n_samples))


def create(path: str | os.PathLike, *, perturbations, severities, sample_ids, X, y,
           batch_size: int, attrs: dict, feature_dims: tuple[str, ...]) -> None:
    """Write the schema (empty results, chunked one task per chunk), the inputs and marks.

    Written from this process, chunk by chunk: with an active distributed Client, dask
    would otherwise ship the whole input array through the scheduler to the workers.
    """
    with dask.config.set(scheduler="synchronous"):
        _create(path, perturbations, severities, sample_ids, X, y, batch_size, attrs, feature_dims)


def _create(path, perturbations, severities, sample_ids, X, y, batch_size, attrs, feature_dims):
    n = len(sample_ids)
    grid = Layout(n, batch_size)
    ids, labels = np.asarray(sample_ids, np.int64), np.asarray(y, np.int64)
    shape = (len(perturbations), len(severities), n)
    chunks = (1, len(severities), batch_size)
    results = xr.Dataset(
        {name: (RESULT_DIMS, da.full(shape, fill, dtype=dtype, chunks=chunks), dict(meta))
         for name, (dtype, fill, meta) in PER_SAMPLE.items()},
        coords={"perturbation": list(perturbations),
                "severity": ("severity", np.asarray(severities, np.float64),
                             {"long_name": "severity", "units": "1 (0 = clean, 1 = harshest)"}),
                "sample": ("sample", ids,
                           {"long_name": "sample id", "description": "row of the source data"})},
        attrs=attrs,
    )
    results["label"] = ("sample", labels, {"long_name": "true class"})
    encoding = {name: {"_FillValue": fill} for name, (_, fill, _) in PER_SAMPLE.items()}
    results.chunk({"sample": batch_size}).to_zarr(
        path, mode="w-", compute=False, zarr_format=ZARR_FORMAT, consolidated=False,
        encoding=encoding)
    # compute=False writes only metadata and coordinates; the label is small: write it now.
    zarr.open_group(path, mode="r+", zarr_format=ZARR_FORMAT)["label"][:] = labels
    # The inputs' metadata through xarray, their values batch by batch: handing X itself to
    # xarray/dask made a full copy of it (measured: +1 GB of peak RSS for 100k CIFAR images).
    lazy_input = da.zeros(X.shape, dtype=X.dtype, chunks=(batch_size, *X.shape[1:]))
    inputs = xr.Dataset({"input": (("sample", *feature_dims), lazy_input),
                         "label": ("sample", labels)},
                        coords={"sample": ids})
    inputs.to_zarr(path, group="inputs", mode="w-", compute=False, zarr_format=ZARR_FORMAT,
                   consolidated=False, encoding={"label": {"chunks": (batch_size,)},
                                                 "sample": {"chunks": (batch_size,)}})
    stored = zarr.open_array(Path(path) / "inputs" / "input", mode="r+", zarr_format=ZARR_FORMAT)
    for b in range(grid.n_batches):
        stored[grid.batch(b)] = X[grid.batch(b)]
    progress = zarr.open_group(path, mode="r+", zarr_format=ZARR_FORMAT).create_group("progress")
    done = progress.create_array("done", shape=(len(perturbations), grid.n_batches),
                                 chunks=(1, 1), dtype="bool", fill_value=False)
    done.attrs["_ARRAY_DIMENSIONS"] = ["perturbation", "batch"]


def exists(path: str | os.PathLike) -> bool:
    """Whether `path` already holds a run store."""
    return (Path(path) / ".zgroup").exists()


def read_attrs(path: str | os.PathLike) -> dict:
    return dict(zarr.open_group(path, mode="r", zarr_format=ZARR_FORMAT).attrs)


def update_attrs(path: str | os.PathLike, **attrs) -> None:
    zarr.open_group(path, mode="r+", zarr_format=ZARR_FORMAT).attrs.update(attrs)


def done_marks(path: str | os.PathLike) -> np.ndarray:
    """Boolean (perturbation, batch) array of the regions already written."""
    return zarr.open_array(Path(path) / "progress" / "done", mode="r", zarr_format=ZARR_FORMAT)[:]


class Writer:
    """Opened once per worker: writes one task's region, then marks it done."""

    def __init__(self, path: str | os.PathLike):
        self.group = zarr.open_group(path, mode="r+", zarr_format=ZARR_FORMAT)
        self.arrays = {name: self.group[name] for name in PER_SAMPLE}
        self.done = self.group["progress/done"]

    def write(self, p: int, b: int, region: slice, values: dict[str, np.ndarray]) -> None:
        """Write (severity, sample) blocks of perturbation `p` for batch `b`; mark it done last."""
        for name, array in self.arrays.items():
            array[p, :, region] = values[name]
        self.done[p, b] = True


class Reader:
    """Opened once per worker: reads a batch of inputs and labels from the store."""

    def __init__(self, path: str | os.PathLike):
        group = zarr.open_group(Path(path) / "inputs", mode="r", zarr_format=ZARR_FORMAT)
        self.inputs, self.labels, self.samples = group["input"], group["label"], group["sample"]

    def read(self, region: slice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Inputs, labels and sample ids of the rows in `region`."""
        return self.inputs[region], self.labels[region], self.samples[region]


def open_results(path: str | os.PathLike) -> xr.Dataset:
    """The results dataset (lazy, dask-backed) of a run store."""
    if not exists(path):
        raise StoreError(f"no run store at {str(path)!r}: expected a directory written by failfirst")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # unconsolidated stores warn; both are fine
        # Unmasked, so an unwritten `pred` reads as -1 (an int), not as a float NaN.
        ds = xr.open_zarr(path, zarr_format=ZARR_FORMAT, mask_and_scale=False)
    for variable in ds.variables.values():  # keep the fill value as encoding, not as an attr
        if "_FillValue" in variable.attrs:
            variable.encoding["_FillValue"] = variable.attrs.pop("_FillValue")
    return ds


def open_inputs(path: str | os.PathLike) -> xr.Dataset:
    """The swept inputs and labels of a run store (lazy)."""
    return xr.open_zarr(path, group="inputs", zarr_format=ZARR_FORMAT, consolidated=False)


def write_summaries(path: str | os.PathLike, summaries: xr.Dataset) -> None:
    """Add (or replace) the summary variables; the store's attrs stay as they are."""
    # Coordinates are in the store already; writing them again would clash with their
    # encoding. Appending also replaces the group's attrs, so hand back the stored ones.
    summaries = summaries.drop_vars(list(summaries.coords))
    summaries.attrs = read_attrs(path)
    summaries.to_zarr(path, mode="a", zarr_format=ZARR_FORMAT, consolidated=False)


def consolidate(path: str | os.PathLike) -> None:
    """Gather all metadata into one file so readers open the store with one request."""
    zarr.consolidate_metadata(path, zarr_format=ZARR_FORMAT)


class Lock:
    """An exclusive lock file: one run writes a store at a time; a dead holder's lock is taken."""

    def __init__(self, path: str | os.PathLike):
        self.store = Path(path)
        self.file = self.store.with_name(self.store.name + ".lock")
        self.held = False

    def acquire(self) -> Lock:
        self.file.parent.mkdir(parents=True, exist_ok=True)
        owner = {"pid": os.getpid(), "host": socket.gethostname()}
        for _ in range(2):
            try:
                fd = os.open(self.file, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if not self._holder_is_dead():
                    raise StoreError(f"run store {str(self.store)!r} is being written by another run "
                                     f"({self.file.read_text().strip()}); wait for it to "
                                     f"finish, or remove {str(self.file)!r} if it is gone") from None
                self.file.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as fh:
                json.dump(owner, fh)
            self.held = True
            return self
        raise StoreError(f"could not take the lock {str(self.file)!r}")

    def _holder_is_dead(self) -> bool:
        """True when the lock's owner is a process on this host that no longer exists."""
        try:
            owner = json.loads(self.file.read_text())
        except (OSError, ValueError):
            return False
        if owner.get("host") != socket.gethostname():
            return False
        try:
            os.kill(int(owner["pid"]), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def release(self) -> None:
        if self.held:
            self.file.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> Lock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
