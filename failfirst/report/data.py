"""Report data from a results dataset: tidy summaries, the damage ranking and the worst failures."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from failfirst.errors import InputError
from failfirst.metrics import METRICS, reliability, summarize

SUMMARY_METRICS = ("accuracy", "avg_confidence", "flip_rate", "ece", "brier", "nll")
"""The per-(perturbation, severity) summaries, in the order tables and exports show them."""

BREAK_DROP = 0.10
"""A perturbation "breaks" the model at the first severity whose accuracy is more than this
(10 percentage points) below the clean accuracy. Relative to the clean level, so it means the
same for a 99 % model and a 60 % one, unlike a fixed 50 % line."""

_PER_SAMPLE = ("pred", "confidence", "label")


def _check(ds: Any, needed: tuple[str, ...]) -> None:
    if not isinstance(ds, xr.Dataset):
        raise InputError(f"expected an xarray Dataset of sweep results, found {type(ds).__name__}")
    missing = [name for name in needed if name not in ds.variables]
    if missing:
        raise InputError(f"expected results variables {', '.join(needed)}; missing "
                         f"{', '.join(missing)}")


def _class_name(classes: list[str], index: int) -> str:
    return classes[index] if 0 <= index < len(classes) else str(index)


def class_names(ds: xr.Dataset) -> list[str]:
    """The class names from the attrs, or the indices as text when the run recorded none."""
    classes = ds.attrs.get("classes")
    if classes:
        return [str(c) for c in classes]
    top = int(max(np.nanmax(ds["label"].values), 0)) if ds.sizes.get("sample") else 0
    return [str(k) for k in range(top + 1)]


# -- worst failures -------------------------------------------------------------------------


def _top_wrong(confidence: np.ndarray, pred: np.ndarray, label: np.ndarray, k: int) -> np.ndarray:
    """Flat indices of the k most confident wrong cells, most confident first.

    Ties are broken by position in the (perturbation, severity, sample) grid, so the order is
    the store's: perturbation order, then lower severity, then sample position.

    Shape:
        confidence, pred (P, S, N); label (N,) -> (min(k, wrong cells),) flat indices.
    """
    wrong = (pred != label) & (pred >= 0) & np.isfinite(confidence)  # -1: not written yet
    score = np.where(wrong, confidence.astype(np.float64), -np.inf).ravel()
    n_wrong = int(wrong.sum())
    k = min(k, n_wrong)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    # Keep every cell tied with the k-th best, then sort those few exactly: argpartition alone
    # would pick among ties arbitrarily.
    kth = np.partition(score, score.size - k)[score.size - k]
    candidates = np.flatnonzero(score >= kth)
    order = np.lexsort((candidates, -score[candidates]))
    return candidates[order[:k]]


def worst_failures(ds: xr.Dataset, k: int = 20) -> list[dict[str, Any]]:
    """The k highest-confidence misclassifications of the sweep, highest confidence first.

    Only perturbed cells (severity > 0) count: severity 0 is the same clean prediction for
    every perturbation, so counting it would repeat each clean mistake once per perturbation.
    A sample the model already gets wrong on clean input still appears when it stays wrong
    under a perturbation; `clean_pred_label` and `clean_confidence` say whether it did.
    Ties in confidence go to the earlier perturbation (store order), then the lower
    severity, then the earlier sample.

    Args:
        ds: Sweep results with `pred`, `confidence` over (perturbation, severity, sample) and
            `label` over sample; class names in `ds.attrs["classes"]` when known.
        k: How many failures to return, a non-negative integer.

    Returns:
        Up to k dicts with `sample_idx` (the sample id), `true_label`, `pred_label`,
        `true_class`, `pred_class`, `confidence`, `perturbation`, `severity`,
        `clean_pred_label`, `clean_pred_class` and `clean_confidence`.
    """
    _check(ds, _PER_SAMPLE)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise InputError(f"expected k as a non-negative integer, found {k!r}")
    ds = ds.transpose("perturbation", "severity", "sample")
    severity = ds["severity"].values.astype(np.float64)
    perturbed = np.flatnonzero(severity > 0)
    if perturbed.size == 0 or k == 0:
        return []
    sub = ds[list(_PER_SAMPLE)].isel(severity=perturbed)
    confidence, pred = sub["confidence"].values, sub["pred"].values
    label = sub["label"].values
    flat = _top_wrong(confidence, pred, label, int(k))
    p, s, n = np.unravel_index(flat, pred.shape)
    clean = _clean_level(ds)
    clean_pred = clean_conf = None
    if clean is not None:
        clean_pred = ds["pred"].isel(severity=clean).values[p, n]
        clean_conf = ds["confidence"].isel(severity=clean).values[p, n]
    classes = class_names(ds)
    names, levels = ds["perturbation"].values, severity[perturbed]
    samples = ds["sample"].values
    out = []
    for i in range(flat.size):  # k rows only: the scan above was vectorised
        true_label, pred_label = int(label[n[i]]), int(pred[p[i], s[i], n[i]])
        row = {
            "sample_idx": int(samples[n[i]]),
            "true_label": true_label,
            "pred_label": pred_label,
            "true_class": _class_name(classes, true_label),
            "pred_class": _class_name(classes, pred_label),
            "confidence": float(confidence[p[i], s[i], n[i]]),
            "perturbation": str(names[p[i]]),
            "severity": float(levels[s[i]]),
            "clean_pred_label": None, "clean_pred_class": None, "clean_confidence": None,
        }
        if clean_pred is not None and clean_pred[i] >= 0:
            row["clean_pred_label"] = int(clean_pred[i])
            row["clean_pred_class"] = _class_name(classes, int(clean_pred[i]))
            row["clean_confidence"] = float(clean_conf[i])
        out.append(row)
    return out


def _clean_level(ds: xr.Dataset) -> int | None:
    hits = np.flatnonzero(ds["severity"].values == 0.0)
    return int(hits[0]) if hits.size else None


# -- summaries ------------------------------------------------------------------------------


def summaries(ds: xr.Dataset) -> xr.Dataset:
    """The summary metrics of a sweep: read from the store, or recomputed where absent."""
    _check(ds, ())
    if all(name in ds.variables for name in (*SUMMARY_METRICS, "degradation_slope")):
        out = ds[[*SUMMARY_METRICS, "degradation_slope"]]
    else:
        out = summarize(ds)
    return out.transpose("perturbation", "severity").compute()


def summary_frame(summary: xr.Dataset) -> pd.DataFrame:
    """One row per (perturbation, severity): the tidy table of every summary metric.

    Returns:
        Columns perturbation, severity, then `SUMMARY_METRICS`; rows in store order.
    """
    frame = summary[list(SUMMARY_METRICS)].to_dataframe().reset_index()
    frame["perturbation"] = frame["perturbation"].astype(str)
    return frame[["perturbation", "severity", *SUMMARY_METRICS]]


def clean_accuracy(summary: xr.Dataset) -> float:
    """Accuracy at severity 0 (the same for every perturbation); NaN if there is no clean level."""
    clean = summary["accuracy"].where(summary["severity"] == 0.0, drop=True)
    values = clean.values.ravel()
    values = values[np.isfinite(values)]
    return float(values[0]) if values.size else math.nan


def _none_if_nan(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def ranking(summary: xr.Dataset) -> list[dict[str, Any]]:
    """Perturbations ranked by damage, the most damaging first.

    Damage is ranked by `auc`, the area under the accuracy-vs-severity curve divided by the
    severity range swept (so the mean accuracy over that range; lower is worse). Each row also
    holds `slope` (degradation slope), `breaks_at` (the first severity where accuracy is more
    than `BREAK_DROP` below the clean accuracy, None if it never is), `harshest_accuracy`,
    `worst_ece` and `worst_ece_at`, and `overconfidence` (the largest average confidence minus
    accuracy) and `overconfidence_at`. NaN values read None. Ties keep store order.
    """
    severity = summary["severity"].values.astype(np.float64)
    span = severity.max() - severity.min() if severity.size else 0.0
    clean = clean_accuracy(summary)
    rows = []
    for name in summary["perturbation"].values:
        one = summary.sel(perturbation=name)
        acc = one["accuracy"].values.astype(np.float64)
        if span > 0 and np.isfinite(acc).all():
            # The trapezoid rule by hand: np.trapezoid is numpy >= 2 only.
            auc = float(np.sum(np.diff(severity) * (acc[1:] + acc[:-1]) / 2) / span)
        else:
            auc = float(acc[0]) if acc.size == 1 else math.nan
        broken = np.flatnonzero((severity > 0) & (acc < clean - BREAK_DROP))
        ece = one["ece"].values.astype(np.float64)
        gap = (one["avg_confidence"] - one["accuracy"]).values.astype(np.float64)
        rows.append({
            "perturbation": str(name),
            "auc": _none_if_nan(auc),
            "slope": _none_if_nan(float(one["degradation_slope"])),
            "breaks_at": float(severity[broken[0]]) if broken.size else None,
            "harshest_accuracy": _none_if_nan(acc[-1]) if acc.size else None,
            "worst_ece": _none_if_nan(np.nanmax(ece)) if np.isfinite(ece).any() else None,
            "worst_ece_at": float(severity[np.nanargmax(ece)]) if np.isfinite(ece).any() else None,
            "overconfidence": _none_if_nan(np.nanmax(gap)) if np.isfinite(gap).any() else None,
            "overconfidence_at": (float(severity[np.nanargmax(gap)])
                                  if np.isfinite(gap).any() else None),
        })
    # Python's sort is stable: equal damage keeps the store order; unknown damage goes last.
    rows.sort(key=lambda r: (r["auc"] is None, r["auc"] if r["auc"] is not None else 0.0))
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return rows


def reliability_levels(severities: np.ndarray) -> list[float]:
    """The clean, middle and harshest severity (fewer when fewer were swept)."""
    levels = sorted(float(s) for s in severities)
    picked = [levels[0], levels[len(levels) // 2], levels[-1]]
    return sorted(set(picked))


def reliability_frame(ds: xr.Dataset, levels: list[float], n_bins: int = 10) -> pd.DataFrame:
    """Reliability-diagram bins at the given severities, one row per non-empty bin.

    Returns:
        Columns perturbation, severity, bin, bin_lower, bin_upper, count, mean_confidence,
        accuracy.
    """
    rel = reliability(ds.sel(severity=levels), n_bins).compute()
    frame = rel.to_dataframe().reset_index()
    frame = frame[frame["count"] > 0]
    frame["perturbation"] = frame["perturbation"].astype(str)
    return frame[["perturbation", "severity", "bin", "bin_lower", "bin_upper", "count",
                  "mean_confidence", "accuracy"]].reset_index(drop=True)


def provenance(ds: xr.Dataset) -> dict[str, Any]:
    """What was tested, from the attrs and coordinates, with JSON-friendly values."""
    attrs = ds.attrs
    return {
        "title": attrs.get("title", "failfirst stress test"),
        "model": attrs.get("model"),
        "model_outputs": attrs.get("model_outputs"),
        "data": attrs.get("data"),
        "domain": attrs.get("domain"),
        "layout": attrs.get("layout"),
        "classes": class_names(ds),
        "n_samples": int(ds.sizes.get("sample", 0)),
        "perturbations": [str(p) for p in ds["perturbation"].values],
        "severities": [float(s) for s in ds["severity"].values],
        "seed": attrs.get("seed"),
        "batch_size": attrs.get("batch_size"),
        "device": attrs.get("device"),
        "started": attrs.get("started"),
        "finished": attrs.get("finished"),
        "sweep_seconds": attrs.get("sweep_seconds"),
        "fingerprint": attrs.get("fingerprint"),
        "versions": dict(attrs.get("versions") or {}),
        "perturbation_params": dict(attrs.get("perturbation_params") or {}),
    }


def metric_info() -> dict[str, dict[str, Any]]:
    """Long name, description, units and direction of each metric, for tables and exports."""
    return {name: {"long_name": m.long_name, "description": m.description, "units": m.units,
                   "higher_is_better": m.higher_is_better}
            for name, m in METRICS.items()}
