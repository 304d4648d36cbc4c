"""Robustness metrics, one formula each: on arrays, on per-sample statistics, over the run store."""

from __future__ import annotations

import numbers
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from failfirst.errors import InputError, unknown_name

if TYPE_CHECKING:
    import torch

    Array = np.ndarray | torch.Tensor

EPS = 1e-12
"""Floor on the probability of the true class in `nll`: a zero probability costs
-log(1e-12) ~= 27.6 nats instead of infinity, so one hopeless sample cannot swamp a mean."""

_RUN_VARIABLES = ("pred", "confidence", "p_true", "sum_sq")
_RUN_DIMS = ("perturbation", "severity", "sample")


# -- metadata ------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricInfo:
    """What a metric means and how to read it; charts, rankings and `failfirst list` read it.

    Attributes:
        name: The registry key and the variable name in the run store.
        long_name: A human title for axes and tables.
        description: One sentence on what the metric measures.
        higher_is_better: True or False for ranking; None where neither direction is better
            (a high confidence is good only while the model is right).
        bounds: The (lo, hi) range the metric can take, or None where it is unbounded.
        units: Units for axis labels ("" for a dimensionless score).
    """

    name: str
    long_name: str
    description: str
    higher_is_better: bool | None
    bounds: tuple[float, float] | None
    units: str

    def attrs(self) -> dict[str, Any]:
        """The xarray attrs a summary variable carries."""
        return {
            "long_name": self.long_name,
            "description": self.description,
            "units": self.units,
            "higher_is_better": self.higher_is_better,
        }


METRICS: Mapping[str, MetricInfo] = MappingProxyType(
    {
        m.name: m
        for m in (
            MetricInfo(
                "accuracy", "Accuracy",
                "Fraction of samples whose top-1 prediction equals the label.",
                True, (0.0, 1.0), "fraction",
            ),
            MetricInfo(
                "avg_confidence", "Average confidence",
                "Mean of the highest predicted probability per sample; it falls when confidence "
                "collapses and stays high when the model turns confidently wrong.",
                None, (0.0, 1.0), "probability",
            ),
            MetricInfo(
                "flip_rate", "Flip rate",
                "Fraction of samples whose top-1 prediction differs from the prediction on the "
                "clean input (severity 0).",
                False, (0.0, 1.0), "fraction",
            ),
            MetricInfo(
                "ece", "Expected calibration error",
                "Gap between accuracy and confidence in equal-width, right-closed confidence "
                "bins, weighted by the share of samples in each bin.",
                False, (0.0, 1.0), "probability",
            ),
            MetricInfo(
                "brier", "Brier score",
                "Mean squared distance between the predicted probability vector and the one-hot "
                "label, summed over classes (0 is perfect, 2 the worst).",
                False, (0.0, 2.0), "",
            ),
            MetricInfo(
                "nll", "Negative log-likelihood",
                "Mean negative natural log of the probability given to the true class, floored "
                "at 1e-12 so a zero probability costs 27.6 nats instead of infinity.",
                False, None, "nats",
            ),
            MetricInfo(
                "degradation_slope", "Degradation slope",
                "Least-squares slope of accuracy against severity; strongly negative means "
                "accuracy collapses quickly.",
                True, None, "accuracy per unit severity",
            ),
        )
    }
)


def get_metric(name: str) -> MetricInfo:
    """The metadata of metric `name`; an InputError listing the choices if there is none."""
    try:
        return METRICS[name]
    except KeyError:
        raise unknown_name("metric", name, METRICS) from None


# -- validation ----------------------------------------------------------------------------


def _torch():
    # A tensor can only exist if torch is already imported, so never import it here.
    return sys.modules.get("torch")


def _is_tensor(x: Any) -> bool:
    torch = _torch()
    return torch is not None and isinstance(x, torch.Tensor)


def _to_numpy(x: Any) -> np.ndarray:
    if _is_tensor(x):
        x = x.detach()
        if x.dtype == _torch().bfloat16:  # numpy has no bfloat16
            x = x.float()
        return x.cpu().numpy()
    return np.asarray(x)


def _check_n_bins(n_bins: Any) -> None:
    if isinstance(n_bins, bool) or not isinstance(n_bins, numbers.Integral) or n_bins < 1:
        raise InputError(f"expected n_bins to be an integer larger than 0, found {n_bins!r}")


def _check_same_length(**arrays: Any) -> None:
    lengths = {name: int(a.shape[0]) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        found = ", ".join(f"{name} has {n}" for name, n in lengths.items())
        raise InputError(f"expected {' and '.join(lengths)} to have the same length, found {found}")


def _vectors(**arrays: Any) -> list[np.ndarray]:
    """Named inputs as non-empty 1-D numpy arrays of one length, in the order given."""
    out = {name: _to_numpy(a) for name, a in arrays.items()}
    for name, a in out.items():
        if a.ndim != 1:
            raise InputError(f"expected {name} as a 1-D array (samples,), found shape {a.shape}")
    _check_same_length(**out)
    if next(iter(out.values())).shape[0] == 0:
        raise InputError(f"expected at least one sample in {', '.join(out)}, found 0")
    return list(out.values())


def _check_probs_labels(probs: Array, y_true: Array) -> None:
    if probs.ndim != 2 or probs.shape[1] == 0:
        raise InputError(
            f"expected probs as a 2-D array (samples, classes), found shape {tuple(probs.shape)}"
        )
    if y_true.ndim != 1:
        raise InputError(
            f"expected y_true as a 1-D array (samples,), found shape {tuple(y_true.shape)}"
        )
    _check_same_length(probs=probs, y_true=y_true)


def _check_label_range(low: int, high: int, n_classes: int) -> None:
    if low < 0 or high >= n_classes:
        raise InputError(
            f"expected labels in [0, {n_classes - 1}] for {n_classes} classes, "
            f"found values from {low} to {high}"
        )


# -- per-sample statistics -----------------------------------------------------------------


def per_sample(probs: Array, y_true: Array) -> dict[str, Array]:
    """The four per-sample statistics every summary metric is computed from.

    A sweep stores these instead of full probability vectors, so every metric can be
    recomputed later without the model. Torch in, torch out on the same device (the engine
    computes them on the accelerator and moves only these four vectors); anything else in,
    numpy out. Half-precision probabilities are raised to float32; otherwise the float dtype
    of `probs` is kept. Ties in the top probability go to the lowest class index.

    Args:
        probs: Predicted class probabilities, rows summing to 1.
        y_true: Integer class labels.

    Returns:
        ``{"pred": argmax class, "confidence": max probability, "p_true": probability of the
        true class, "sum_sq": sum of squared probabilities}``.

    Shape:
        probs (N, C), y_true (N,) -> four vectors of shape (N,).

    Example:
        >>> s = per_sample(np.array([[0.2, 0.8], [0.6, 0.4]]), np.array([1, 1]))
        >>> s["pred"].tolist(), s["p_true"].tolist()
        ([1, 0], [0.8, 0.4])
    """
    if _is_tensor(probs):
        return _per_sample_torch(probs, y_true)
    probs, y = _to_numpy(probs), _to_numpy(y_true)
    _check_probs_labels(probs, y)
    if y.dtype.kind not in "iu":
        raise InputError(f"expected integer class labels in y_true, found dtype {y.dtype}")
    if y.size:
        _check_label_range(int(y.min()), int(y.max()), probs.shape[1])
    if probs.dtype.kind != "f":
        probs = probs.astype(np.float64)
    elif probs.dtype.itemsize < 4:
        probs = probs.astype(np.float32)
    rows = np.arange(probs.shape[0])
    pred = probs.argmax(axis=1)
    return {
        "pred": pred.astype(np.int64),
        "confidence": probs[rows, pred],
        "p_true": probs[rows, y],
        "sum_sq": np.einsum("ij,ij->i", probs, probs),
    }


def _per_sample_torch(probs: torch.Tensor, y_true: Array) -> dict[str, torch.Tensor]:
    torch = _torch()
    y = y_true if isinstance(y_true, torch.Tensor) else torch.as_tensor(np.asarray(y_true))
    y = y.to(probs.device)
    _check_probs_labels(probs, y)
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise InputError(f"expected integer class labels in y_true, found dtype {y.dtype}")
    if y.numel():
        # One small sync, worth it: an out-of-range gather on CUDA poisons the whole context.
        low, high = torch.aminmax(y)
        _check_label_range(int(low), int(high), probs.shape[1])
    probs = probs.detach()
    if not probs.is_floating_point():
        probs = probs.double()
    elif probs.dtype in (torch.float16, torch.bfloat16):
        probs = probs.float()
    pred = probs.argmax(dim=1)
    return {
        "pred": pred,
        "confidence": probs.gather(1, pred[:, None]).squeeze(1),
        "p_true": probs.gather(1, y.long()[:, None]).squeeze(1),
        "sum_sq": (probs * probs).sum(dim=1),
    }


# -- the formulas: each written once, on numpy arrays and xarray DataArrays alike -----------


def _correct(pred, label):
    return pred == label


def _flips(clean_pred, pred):
    return clean_pred != pred


def _confidence_terms(confidence):
    return confidence.astype(np.float64)


def _brier_terms(p_true, sum_sq):
    # sum_c (p_c - onehot_c)^2 = sum_c p_c^2 - 2 p_true + 1
    return sum_sq.astype(np.float64) - 2.0 * p_true.astype(np.float64) + 1.0


def _nll_terms(p_true):
    return -np.log(np.maximum(p_true.astype(np.float64), EPS))


def _bin_edges(n_bins: int) -> np.ndarray:
    # i / n is correctly rounded, so the edge 3/10 is the same double as the literal 0.3.
    return np.arange(n_bins + 1, dtype=np.float64) / n_bins


def _reliability_core(
    confidence: xr.DataArray, correct: xr.DataArray, n_bins: int, dim: str = "sample"
) -> xr.Dataset:
    """Per-bin count, mean confidence and accuracy, reducing `dim`; NaN in empty bins."""
    edges = _bin_edges(n_bins)
    # Compare in the data's own precision: a float32 confidence of 0.3 must meet the float32
    # edge 0.3, not the float64 one just below it.
    as_dtype = confidence.dtype.type if confidence.dtype.kind == "f" else np.float64
    conf64 = confidence.astype(np.float64)
    counts, conf_sums, correct_sums = [], [], []
    for b in range(n_bins):
        # Right-closed (lo, hi]; the first bin reaches down to -inf (so it takes 0) and the last
        # up to +inf (so a rounded 1.0000001 is kept), so every non-NaN sample lands in one bin.
        lo = as_dtype(edges[b] if b > 0 else -np.inf)
        hi = as_dtype(edges[b + 1] if b < n_bins - 1 else np.inf)
        in_bin = (confidence > lo) & (confidence <= hi)
        counts.append(in_bin.sum(dim))
        conf_sums.append(conf64.where(in_bin, 0.0).sum(dim))
        correct_sums.append((correct & in_bin).sum(dim))
    count = xr.concat(counts, dim="bin")
    nonempty = count.where(count > 0)  # NaN divisor: empty bins become NaN without a warning
    rel = xr.Dataset(
        {
            "count": count,
            "mean_confidence": xr.concat(conf_sums, dim="bin") / nonempty,
            "accuracy": xr.concat(correct_sums, dim="bin") / nonempty,
        }
    ).transpose(..., "bin")
    return rel.assign_coords(
        bin=np.arange(n_bins), bin_lower=("bin", edges[:-1]), bin_upper=("bin", edges[1:])
    )


def _ece_from_reliability(rel: xr.Dataset, n_samples: int) -> xr.DataArray:
    gap = abs(rel["accuracy"] - rel["mean_confidence"])
    # Empty bins are NaN and skipped by the sum: they carry no weight.
    ece = (rel["count"] * gap).sum("bin") / n_samples
    # A NaN confidence lands in no bin; say so with NaN rather than a silently smaller ECE.
    return ece.where(rel["count"].sum("bin") == n_samples)


def _slope(x: xr.DataArray, y: xr.DataArray, dim: str) -> xr.DataArray:
    """Least-squares slope of y on x along `dim`, ignoring pairs with a NaN; NaN if x is flat."""
    x, y = xr.broadcast(x.astype(np.float64), y.astype(np.float64))
    ok = x.notnull() & y.notnull()
    x, y = x.where(ok), y.where(ok)
    # Shift by the minimum first so a constant x gives exactly 0 spread, not rounding noise.
    x = x - x.min(dim)
    dx, dy = x - x.mean(dim), y - y.mean(dim)
    spread = (dx * dx).sum(dim)
    return (dx * dy).sum(dim) / spread.where(spread > 0)


# -- from per-sample statistics ------------------------------------------------------------


def avg_confidence_from_samples(confidence: Array) -> float:
    """Mean confidence from the per-sample top probability.

    Shape:
        confidence (N,) -> scalar.
    """
    (confidence,) = _vectors(confidence=confidence)
    return float(_confidence_terms(confidence).mean())


def brier_from_samples(p_true: Array, sum_sq: Array) -> float:
    """Multi-class Brier score from per-sample statistics: mean(sum_sq - 2 * p_true + 1).

    Shape:
        p_true (N,), sum_sq (N,) -> scalar.
    """
    p_true, sum_sq = _vectors(p_true=p_true, sum_sq=sum_sq)
    return float(_brier_terms(p_true, sum_sq).mean())


def nll_from_samples(p_true: Array) -> float:
    """Negative log-likelihood from the probability of the true class: mean(-log(max(p_true, EPS))).

    Shape:
        p_true (N,) -> scalar.
    """
    (p_true,) = _vectors(p_true=p_true)
    return float(_nll_terms(p_true).mean())


def ece_from_samples(confidence: Array, correct: Array, n_bins: int = 10) -> float:
    """Expected calibration error from per-sample confidence and correctness.

    ECE = sum_b |B_b| / N * |acc_b - conf_b| over `n_bins` equal-width bins on [0, 1],
    right-closed: a confidence of exactly 0.3 falls in (0.2, 0.3], a confidence of 0 in the
    first bin. NaN if any confidence is NaN.

    Args:
        confidence: The top predicted probability per sample.
        correct: Whether each prediction was right (bool or 0/1).
        n_bins: Number of bins, a positive integer.

    Shape:
        confidence (N,), correct (N,) -> scalar.
    """
    _check_n_bins(n_bins)
    confidence, correct = _vectors(confidence=confidence, correct=correct)
    rel = _reliability_core(
        xr.DataArray(confidence, dims="sample"),
        xr.DataArray(correct.astype(bool), dims="sample"),
        int(n_bins),
    )
    return float(_ece_from_reliability(rel, confidence.shape[0]))


# -- on arrays -----------------------------------------------------------------------------


def accuracy(y_true: Array, y_pred: Array) -> float:
    """Fraction of predictions equal to the labels.

    Shape:
        y_true (N,), y_pred (N,) -> scalar.
    """
    y_true, y_pred = _vectors(y_true=y_true, y_pred=y_pred)
    return float(_correct(y_pred, y_true).mean())


def avg_confidence(probs: Array) -> float:
    """Mean over samples of the highest predicted probability.

    Shape:
        probs (N, C) -> scalar.
    """
    probs = _to_numpy(probs)
    if probs.ndim != 2 or probs.shape[1] == 0:
        raise InputError(
            f"expected probs as a 2-D array (samples, classes), found shape {probs.shape}"
        )
    # Labels do not matter for the confidence; zeros keep per_sample's contract.
    stats = per_sample(probs, np.zeros(probs.shape[0], dtype=np.int64))
    return avg_confidence_from_samples(stats["confidence"])


def flip_rate(clean_pred: Array, pred: Array) -> float:
    """Fraction of predictions that differ from the predictions on the clean input.

    Shape:
        clean_pred (N,), pred (N,) -> scalar.
    """
    clean_pred, pred = _vectors(clean_pred=clean_pred, pred=pred)
    return float(_flips(clean_pred, pred).mean())


def _stats(y_true: Array, probs: Array) -> dict[str, np.ndarray]:
    stats = per_sample(_to_numpy(probs), _to_numpy(y_true))
    if stats["pred"].shape[0] == 0:
        raise InputError("expected at least one sample in probs and y_true, found 0")
    return stats


def ece(y_true: Array, probs: Array, n_bins: int = 10) -> float:
    """Expected calibration error of predicted probabilities (see `ece_from_samples`).

    Shape:
        y_true (N,), probs (N, C) -> scalar.
    """
    _check_n_bins(n_bins)
    s = _stats(y_true, probs)
    return ece_from_samples(s["confidence"], _correct(s["pred"], _to_numpy(y_true)), n_bins)


def brier(y_true: Array, probs: Array) -> float:
    """Multi-class Brier score: mean over samples of ||probs - onehot(y_true)||^2.

    Summed over classes, so it lies in [0, 2]; on two classes it is twice scikit-learn's
    binary `brier_score_loss`.

    Shape:
        y_true (N,), probs (N, C) -> scalar.
    """
    s = _stats(y_true, probs)
    return brier_from_samples(s["p_true"], s["sum_sq"])


def nll(y_true: Array, probs: Array) -> float:
    """Mean negative natural log of the probability of the true class, floored at `EPS` (1e-12).

    Shape:
        y_true (N,), probs (N, C) -> scalar.
    """
    s = _stats(y_true, probs)
    return nll_from_samples(s["p_true"])


def degradation_slope(severities: Array, values: Array) -> float:
    """Least-squares slope of `values` against `severities`, ignoring pairs with a NaN.

    NaN when fewer than two distinct severities remain.

    Shape:
        severities (S,), values (S,) -> scalar.
    """
    severities, values = _vectors(severities=severities, values=values)
    return float(_slope(xr.DataArray(severities, dims="s"), xr.DataArray(values, dims="s"), "s"))


# -- over the run store --------------------------------------------------------------------


def _check_run_dataset(ds: xr.Dataset) -> None:
    if not isinstance(ds, xr.Dataset):
        raise InputError(f"expected an xarray Dataset of sweep results, found {type(ds).__name__}")
    missing = [v for v in (*_RUN_VARIABLES, "label") if v not in ds.variables]
    if missing:
        raise InputError(
            f"expected results variables {', '.join((*_RUN_VARIABLES, 'label'))}, "
            f"found {', '.join(map(str, ds.data_vars)) or 'none'} (missing {', '.join(missing)})"
        )
    for name in _RUN_VARIABLES:
        if set(ds[name].dims) != set(_RUN_DIMS):
            raise InputError(f"expected {name} over dims {_RUN_DIMS}, found {ds[name].dims}")
    if ds["label"].dims != ("sample",):
        raise InputError(f"expected label over dims ('sample',), found {ds['label'].dims}")
    if ds.sizes["sample"] == 0:
        raise InputError("expected at least one sample in the results, found 0")
    if "severity" not in ds.indexes or not np.any(ds.indexes["severity"].to_numpy() == 0.0):
        found = ds.indexes["severity"].to_numpy().tolist() if "severity" in ds.indexes else "none"
        raise InputError(
            f"expected severity coordinates including 0.0 (the clean level), found {found}"
        )


def reliability(ds: xr.Dataset, n_bins: int = 10) -> xr.Dataset:
    """Reliability-diagram data per (perturbation, severity): the bins ECE is computed from.

    Bins are equal-width over [0, 1] and right-closed, as in `ece_from_samples`. Works on
    in-memory and dask-backed datasets alike (lazy in, lazy out). Read the counts as
    ``rel["count"]``: ``rel.count`` is xarray's method.

    Args:
        ds: Sweep results with `pred`, `confidence` over (perturbation, severity, sample)
            and `label` over sample.
        n_bins: Number of bins, a positive integer.

    Returns:
        A Dataset over (perturbation, severity, bin) with `count`, `mean_confidence` and
        `accuracy` (NaN in empty bins), and coords `bin_lower`, `bin_upper` over bin.
    """
    _check_n_bins(n_bins)
    _check_run_dataset(ds)
    rel = _reliability_core(ds["confidence"], _correct(ds["pred"], ds["label"]), int(n_bins))
    rel = rel.transpose("perturbation", "severity", "bin")
    rel["count"].attrs = {"long_name": "Samples in bin", "units": "samples"}
    rel["mean_confidence"].attrs = {"long_name": "Mean confidence in bin", "units": "probability"}
    rel["accuracy"].attrs = {"long_name": "Accuracy in bin", "units": "fraction"}
    rel.attrs["n_bins"] = int(n_bins)
    return rel


def summarize(ds: xr.Dataset, n_bins: int = 10) -> xr.Dataset:
    """Every summary metric of a sweep, recomputed from the stored per-sample statistics.

    Works on in-memory and dask-backed datasets alike (lazy in, lazy out: call `.compute()`).
    Reductions over samples keep NaN, so a cell with samples not written yet (NaN
    statistics, or `pred` -1 as the store fills it) reads NaN, not a number over fewer
    samples. Each variable carries the attrs of its `METRICS` entry.

    Args:
        ds: Sweep results: `pred`, `confidence`, `p_true`, `sum_sq` over
            (perturbation, severity, sample), `label` over sample; severity includes 0.0.
        n_bins: Number of ECE bins, a positive integer.

    Returns:
        A Dataset with `accuracy`, `avg_confidence`, `flip_rate`, `ece`, `brier`, `nll` over
        (perturbation, severity) and `degradation_slope` (of accuracy) over perturbation.
        `flip_rate` compares with the prediction at severity 0 of the same perturbation.
    """
    rel = reliability(ds, n_bins)  # validates ds and n_bins
    pred, n = ds["pred"], ds.sizes["sample"]
    clean = pred.sel(severity=0.0, drop=True)
    # The store marks predictions not written yet with -1 (NaN if decoded as float); class
    # indices are never negative, so those samples make the cell NaN like a NaN confidence.
    written = pred >= 0
    out = xr.Dataset(
        {
            "accuracy": _correct(pred, ds["label"]).where(written).mean("sample", skipna=False),
            "avg_confidence": _confidence_terms(ds["confidence"]).mean("sample", skipna=False),
            "flip_rate": _flips(clean, pred)
            .where(written & (clean >= 0))
            .mean("sample", skipna=False),
            "ece": _ece_from_reliability(rel, n),
            "brier": _brier_terms(ds["p_true"], ds["sum_sq"]).mean("sample", skipna=False),
            "nll": _nll_terms(ds["p_true"]).mean("sample", skipna=False),
        }
    ).transpose("perturbation", "severity")
    out["degradation_slope"] = _slope(out["severity"], out["accuracy"], "severity")
    for name in out.data_vars:
        out[name].attrs = METRICS[name].attrs()
    out["ece"].attrs["n_bins"] = int(n_bins)
    out.attrs = dict(ds.attrs)
    return out
