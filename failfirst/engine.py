"""The sweep: the perturbation x batch grid as a Dask graph writing into a Zarr run store."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import dask
import numpy as np
import torch
import xarray as xr
from dask.callbacks import Callback
from tqdm.auto import tqdm

import failfirst
from failfirst import store as run_store
from failfirst import tasks, validate
from failfirst.errors import InputError, StoreError
from failfirst.metrics import summarize
from failfirst.models import ModelSpec, load_model, resolve_device
from failfirst.perturbations import get, to_canonical


def stress_test(model: ModelSpec, X, y, *, perturbations: Sequence[str] | None = None,
                severities: int | Sequence[float] = 11, seed: int = 42, batch_size: int = 256,
                client=None, store: str | Path | None = None, resume: bool = False,
                progress: bool = False, device: str = "auto", layout: str | None = None,
                classes: Sequence[str] | None = None, sample_ids: Sequence[int] | None = None,
                data_description: str | None = None) -> xr.Dataset:
    """Sweep every perturbation over every severity and sample; return the results dataset.

    Args:
        model: anything `load_model` accepts (a torch module, a path, an object with
            `predict_proba`, a callable).
        X: inputs in the user's layout: images (N, C, H, W) or with `layout="NHWC"`
            (N, H, W, C), values in [0, 1]; series (N, T) or (N, T, C).
        y: integer labels, (N,).
        perturbations: registry names; default all of the data's domain.
        severities: an int K (K levels evenly spaced from 0 to 1) or a list of levels in
            [0, 1]; 0, the clean baseline, is always included.
        seed: keys every random draw together with the perturbation and sample id.
        batch_size: samples per task and per Zarr chunk; results do not depend on it.
        client: a `distributed.Client`; default the active one, else in-process threads.
        store: path of the Zarr run store; None keeps the results in memory.
        resume: finish an interrupted run in `store` instead of refusing it.
        progress: show a tqdm bar over the grid.
        device: "auto", "cpu", "cuda" or "cuda:N": where workers perturb and predict.
        layout: "NCHW" (default) or "NHWC" for images.
        classes: class names, one per model output.
        sample_ids: ids of the rows (default 0..N-1); they key the draws and label results.
        data_description: a line describing the data, for provenance.

    Returns:
        Dataset with dims (perturbation, severity, sample): per-sample `pred`, `confidence`,
        `p_true`, `sum_sq`; `label`; the summaries `accuracy`, `avg_confidence`,
        `flip_rate`, `ece`, `brier`, `nll` over (perturbation, severity) and
        `degradation_slope` over perturbation; provenance in attrs. Lazily backed by the
        store when `store` is given, in memory otherwise.

    Example:
        >>> ds = stress_test(model, X, y, perturbations=["gaussian_noise"], severities=5)
        >>> ds.accuracy.sel(perturbation="gaussian_noise").values
    """
    started = datetime.now(timezone.utc)
    X, y = np.asarray(X), np.asarray(y)
    domain = validate.domain_of(X)
    validate.check_data(X, y)
    names = validate.check_perturbations(perturbations, domain)
    levels = validate.check_severities(severities)
    batch_size = validate.check_batch_size(batch_size)
    resolve_device(device)  # refuse an unavailable device here, not on every worker
    ids = np.arange(len(X)) if sample_ids is None else np.asarray(sample_ids, np.int64)
    if ids.shape != (len(X),) or len(np.unique(ids)) != len(ids):
        raise InputError(f"expected {len(X)} distinct sample ids, found shape {ids.shape}")
    # Refuses a wrong layout up front; the canonical shape keys size-dependent parameters.
    canonical_shape = tuple(to_canonical(torch.from_numpy(X[:1]), domain, layout).shape)
    classifier = load_model(model, device="cpu")
    validate.check_model(classifier, X, y, classes)

    identity = {
        "model": classifier.fingerprint, "data": _data_fingerprint(X, y, ids),
        "perturbations": list(names), "severities": list(levels), "seed": int(seed),
        "batch_size": batch_size, "layout": layout or _default_layout(domain, X),
    }
    fingerprint = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    attrs = {
        "title": "failfirst stress test", "fingerprint": fingerprint, "identity": identity,
        "model": classifier.description, "model_outputs": classifier.outputs,
        "data": data_description or f"array of shape {X.shape}", "domain": domain,
        "classes": list(classes) if classes is not None
        else [str(k) for k in range(classifier.num_classes)],
        "perturbation_params": {n: _jsonable(get(n).describe(canonical_shape)) for n in names},
        "seed": int(seed), "batch_size": batch_size, "layout": identity["layout"],
        "device": device, "versions": _versions(), "started": started.isoformat(),
    }

    temporary = store is None
    path = Path(tempfile.mkdtemp(prefix="failfirst-")) / "results.zarr" if temporary else Path(store)
    lock = run_store.Lock(path)
    try:
        with lock:
            _prepare_store(path, resume, fingerprint, attrs, names, levels, ids, X, y,
                           batch_size, domain)
            plan = tasks.SweepPlan(str(path.resolve()), names, levels, int(seed), batch_size,
                                   len(X), domain, layout, device, fingerprint)
            run_start = time.perf_counter()
            _run(plan, classifier, client, progress)
            results = run_store.open_results(path)
            run_store.write_summaries(path, summarize(results))
            run_store.update_attrs(path, finished=datetime.now(timezone.utc).isoformat(),
                                   sweep_seconds=round(time.perf_counter() - run_start, 3))
            run_store.consolidate(path)
        results = run_store.open_results(path)
        return results.load() if temporary else results
    finally:
        tasks.release(fingerprint)
        if temporary:
            shutil.rmtree(path.parent, ignore_errors=True)


def _prepare_store(path, resume, fingerprint, attrs, names, levels, ids, X, y, batch_size, domain):
    """Create the store, or check that an existing one holds this very run (to resume)."""
    if run_store.exists(path):
        found = run_store.read_attrs(path)
        if found.get("fingerprint") != fingerprint:
            differs = [k for k, v in attrs["identity"].items()
                       if found.get("identity", {}).get(k) != v]
            raise StoreError(f"run store {str(path)!r} holds a different run (differs in: "
                             f"{', '.join(differs) or 'fingerprint'}); choose another store or "
                             "delete it")
        if not resume:
            raise StoreError(f"run store {str(path)!r} already holds this run; pass resume=True "
                             "(--resume) to finish it, or choose another store")
        return
    feature_dims = _feature_dims(domain, X.ndim, attrs["layout"])
    run_store.create(path, perturbations=names, severities=levels, sample_ids=ids, X=X, y=y,
                     batch_size=batch_size, attrs=attrs, feature_dims=feature_dims)


def _run(plan: tasks.SweepPlan, classifier, client, progress: bool) -> None:
    """Build the graph of pending tasks and run it on the chosen scheduler."""
    done = run_store.done_marks(plan.store)
    pending = [(int(p), int(b)) for p, b in zip(*np.nonzero(~done))]
    bar = tqdm(total=done.shape[0] * len(plan.severities) * plan.n_samples, unit="eval",
               unit_scale=True, disable=not progress, desc="sweep", dynamic_ncols=True)
    bar.update(sum(plan.cells(int(b)) for _, b in zip(*np.nonzero(done))))
    client = client if client is not None else _active_client()
    with bar:
        if not pending:
            return
        if client is None:
            _run_threads(plan, classifier, pending, bar)
        else:
            _run_distributed(plan, classifier, pending, bar, client)


def _graph(plan, model_ref, pending):
    """One clean task per batch that needs one, one task per pending (perturbation, batch)."""
    # Keys name the task kind for the dashboard and are unique per attempt, so runs sharing
    # a cluster, or a retry in the same session, never pick up each other's results.
    attempt = uuid.uuid4().hex[:12]
    clean = {b: dask.delayed(tasks.clean_task, pure=False)(
        plan, model_ref, b, dask_key_name=f"clean-{attempt}-{b}")
        for b in sorted({b for _, b in pending})}
    return [dask.delayed(tasks.perturbation_task, pure=False)(
        plan, model_ref, p, b, clean[b], dask_key_name=f"perturb-{attempt}-{p}-{b}")
        for p, b in pending]


class _TaskProgress(Callback):
    """Advance the bar as perturbation tasks finish on the threaded scheduler."""

    def __init__(self, bar):
        super().__init__()
        self.bar = bar

    def _posttask(self, key, result, dsk, state, worker_id):
        if isinstance(result, int):
            self.bar.update(result)


def _run_threads(plan, classifier, pending, bar) -> None:
    # Parallel tasks, one torch thread each, as worker processes run: measured faster than
    # fewer tasks sharing torch's intra-op threads (benchmarks/sweep.md).
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with _TaskProgress(bar):
            dask.compute(*_graph(plan, classifier, pending), scheduler="threads",
                         num_workers=os.cpu_count() or 1)
    finally:
        torch.set_num_threads(previous)


def _run_distributed(plan, classifier, pending, bar, client) -> None:
    from distributed import as_completed

    # The model travels once to each worker, never inside every task.
    model_ref = client.scatter(classifier, broadcast=True, hash=False)
    futures = client.compute(_graph(plan, model_ref, pending))
    try:
        for future in as_completed(futures):
            bar.update(future.result())
    except BaseException:
        client.cancel(futures)
        raise
    finally:
        with contextlib.suppress(Exception):
            client.run(tasks.release, plan.fingerprint)


def _active_client():
    """The active distributed Client if there is one (dask's own convention)."""
    try:
        from distributed import default_client
        return default_client()
    except (ImportError, ValueError):
        return None


def _default_layout(domain: str, X: np.ndarray) -> str:
    if domain == "vision":
        return "NCHW"
    return "NT" if X.ndim == 2 else "NTC"


def _feature_dims(domain: str, ndim: int, layout: str) -> tuple[str, ...]:
    if domain == "vision":
        return ("height", "width", "channel") if layout == "NHWC" else ("channel", "height", "width")
    return ("time",) if ndim == 2 else ("time", "channel")


def _data_fingerprint(X: np.ndarray, y: np.ndarray, ids: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in (X, y, ids):
        digest.update(str((array.shape, array.dtype.str)).encode())
        digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()


def _versions() -> dict[str, str]:
    import distributed
    import zarr
    return {"failfirst": failfirst.__version__, "torch": torch.__version__,
            "dask": dask.__version__, "distributed": distributed.__version__,
            "numpy": np.__version__, "xarray": xr.__version__, "zarr": zarr.__version__,
            "python": platform.python_version()}


def _jsonable(value):
    """Parameters as JSON-friendly values for Zarr attrs (tuples become lists)."""
    return json.loads(json.dumps(value, default=str))
