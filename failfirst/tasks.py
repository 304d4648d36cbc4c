"""Worker-side work: the model and store handles each process keeps, and the two task kinds.

A task is (perturbation, batch) with every severity inside it: the batch is read once from
the run store, moved to the device once, perturbed at each level with the same draws, and
its region written straight into the store. The clean (severity 0) outputs of a batch are
computed once, by a clean task, and shared by that batch's perturbation tasks.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch

from failfirst.errors import FailFirstError, SweepError
from failfirst.metrics import per_sample
from failfirst.models import Classifier, resolve_device
from failfirst.perturbations import SampleRNG, from_canonical, get, to_canonical
from failfirst.store import PER_SAMPLE, Layout, Reader, Writer

# Per process: the model on its device and the store handles, keyed by the run's fingerprint.
# A distributed worker fills these once and every later task on it reuses them.
_CACHE: dict[tuple, object] = {}
_CACHE_LOCK = threading.Lock()


@dataclass(frozen=True)
class SweepPlan:
    """Everything a task needs besides the model: small, so it travels with every task."""

    store: str
    perturbations: tuple[str, ...]
    severities: tuple[float, ...]
    seed: int
    batch_size: int
    n_samples: int
    domain: str
    layout: str | None
    device: str
    fingerprint: str   # of the run; keys the per-process caches

    @property
    def grid(self) -> Layout:
        return Layout(self.n_samples, self.batch_size)

    def cells(self, b: int) -> int:
        """Grid cells (severities x samples) one perturbation fills for batch `b`."""
        region = self.grid.batch(b)
        return len(self.severities) * (region.stop - region.start)


def _cached(key: tuple, make):
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = make()
        return _CACHE[key]


def worker_model(plan: SweepPlan, model: Classifier) -> Classifier:
    """The model on this worker's device, moved there once per process."""
    device = resolve_device(plan.device)
    return _cached(("model", plan.fingerprint, str(device)), lambda: model.to(device))


def _read_batch(plan: SweepPlan, model: Classifier, b: int):
    """Batch `b` from the store, moved to the model's device once: (region, x, y, ids)."""
    region = plan.grid.batch(b)
    x, y, ids = _cached(("reader", plan.fingerprint, plan.store), lambda: Reader(plan.store)).read(region)
    device = model.device
    return (region, torch.from_numpy(np.ascontiguousarray(x)).to(device),
            torch.from_numpy(y).to(device), ids)


def _outputs(model: Classifier, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    return per_sample(model.predict_proba(x), y)


def clean_task(plan: SweepPlan, model: Classifier, b: int) -> dict[str, np.ndarray]:
    """Per-sample outputs of batch `b` without perturbation (severity 0)."""
    model = worker_model(plan, model)
    region, x, y, _ = _read_batch(plan, model, b)
    try:
        with torch.inference_mode():
            out = _outputs(model, x, y)
    except FailFirstError:
        raise
    except Exception as exc:
        raise SweepError(f"the model failed on the clean inputs, samples {region.start}.."
                         f"{region.stop - 1}: {type(exc).__name__}: {exc}") from exc
    return {name: value.cpu().numpy() for name, value in out.items()}


def perturbation_task(plan: SweepPlan, model: Classifier, p: int, b: int,
                      clean: dict[str, np.ndarray]) -> int:
    """Perturb batch `b` with perturbation `p` at every severity, write the region, mark it.

    Returns the number of grid cells (severities x samples) it filled, for progress.
    """
    model = worker_model(plan, model)
    region, x, y, ids = _read_batch(plan, model, b)
    perturbation = get(plan.perturbations[p])
    canonical = to_canonical(x, perturbation.domain, plan.layout)
    rng = SampleRNG(plan.seed, perturbation.name, ids, device=x.device)
    levels: dict[str, list] = {name: [] for name in PER_SAMPLE}
    for severity in plan.severities:
        if severity == 0.0:
            for name in PER_SAMPLE:
                levels[name].append(torch.as_tensor(clean[name]))
            continue
        where = (f"perturbation {perturbation.name!r} at severity {severity:g}, "
                 f"samples {region.start}..{region.stop - 1}")
        with torch.inference_mode():
            try:
                perturbed = from_canonical(perturbation.apply(canonical, severity, rng),
                                           perturbation.domain, plan.layout, x.ndim)
            except Exception as exc:
                raise SweepError(f"{where} failed to perturb: {type(exc).__name__}: {exc}") from exc
            try:
                out = _outputs(model, perturbed, y)
            except Exception as exc:
                raise SweepError(f"the model failed on {where}: {type(exc).__name__}: {exc}") from exc
        for name in PER_SAMPLE:
            levels[name].append(out[name].cpu())
    values = {name: torch.stack(rows).numpy().astype(PER_SAMPLE[name][0])
              for name, rows in levels.items()}
    _cached(("writer", plan.fingerprint, plan.store), lambda: Writer(plan.store)).write(p, b, region, values)
    return plan.cells(b)



def release(fingerprint: str) -> None:
    """Drop this process's cached model and store handles of a finished run."""
    with _CACHE_LOCK:
        for key in [k for k in _CACHE if k[1] == fingerprint]:
            del _CACHE[key]
