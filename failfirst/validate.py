"""Checks that refuse bad input before any work, each with one sentence: expected vs found."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from failfirst.errors import DataError, InputError, ModelError
from failfirst.models import Classifier
from failfirst.perturbations import check_severity, get, names
from failfirst.perturbations.registry import Domain


def domain_of(X: np.ndarray) -> Domain:
    """Vision for 4-D batches, time series for 2-D and 3-D ones."""
    if X.ndim == 4:
        return "vision"
    if X.ndim in (2, 3):
        return "timeseries"
    raise DataError(f"expected images (N, C, H, W) / (N, H, W, C) or series (N, T) / (N, T, C), "
                    f"found an array of shape {X.shape}")


def check_data(X: np.ndarray, y: np.ndarray) -> None:
    """Finite floating-point inputs, one integer label per row."""
    if len(X) == 0:
        raise DataError("expected at least one sample, found none")
    if X.dtype.kind != "f":
        raise DataError(f"expected floating-point inputs, found dtype {X.dtype}")
    # In blocks, so checking 100k images costs no extra copy of them.
    finite = np.concatenate([np.isfinite(X[i:i + 4096].reshape(len(X[i:i + 4096]), -1)).all(axis=1)
                             for i in range(0, len(X), 4096)])
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise DataError(f"expected finite inputs, found NaN or inf in {len(bad)} sample(s), "
                        f"the first at row {bad[0]}")
    if y.shape != (len(X),):
        raise DataError(f"expected one label per sample ({len(X)}), found labels of shape {y.shape}")
    if y.dtype.kind not in "iu":
        raise DataError(f"expected integer class labels, found dtype {y.dtype}")


def check_model(model: Classifier, X: np.ndarray, y: np.ndarray,
                classes: Sequence[str] | None) -> int:
    """Probe the model on two samples; labels must fall inside its classes. Returns K."""
    k = model.probe(X[:2])
    outside = (y < 0) | (y >= k)
    if outside.any():
        raise ModelError(f"the model gives {k} class probabilities, so labels must lie in "
                         f"0..{k - 1}; found label {y[outside][0]} at row {np.flatnonzero(outside)[0]}")
    if classes is not None and len(classes) != k:
        raise ModelError(f"the dataset names {len(classes)} classes but the model gives {k} "
                         "class probabilities")
    return k


def check_perturbations(requested: Sequence[str] | None, domain: Domain) -> tuple[str, ...]:
    """The perturbations to run: all of the domain's by default; names must fit the domain."""
    if requested is None:
        return tuple(names(domain))
    if isinstance(requested, str):
        requested = [requested]
    chosen = tuple(dict.fromkeys(requested))
    if not chosen:
        raise InputError("expected at least one perturbation, found an empty list")
    for name in chosen:
        if get(name).domain != domain:
            raise InputError(f"perturbation {name!r} is for {get(name).domain} data but the "
                             f"inputs are {domain}; choose from: {', '.join(names(domain))}")
    return chosen


def check_severities(severities: int | Sequence[float]) -> tuple[float, ...]:
    """An int K gives K evenly spaced levels from 0 to 1; a list is sorted, with 0 added."""
    if isinstance(severities, (int, np.integer)) and not isinstance(severities, bool):
        if severities < 2:
            raise InputError(f"expected at least 2 severity levels (0 and 1), found {severities}")
        return tuple(float(s) for s in np.linspace(0.0, 1.0, int(severities)))
    levels = sorted({0.0, *(check_severity(s) for s in severities)})
    if len(levels) < 2:
        raise InputError("expected at least one severity above 0, found only the clean level")
    return tuple(levels)


def check_batch_size(batch_size: int) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise InputError(f"expected a positive integer batch size, found {batch_size!r}")
    return int(batch_size)
