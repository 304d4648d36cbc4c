"""The seed's six output files: results as JSON and CSV, three PNG charts, the worst failures."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import altair as alt
import xarray as xr

from failfirst.report import charts, data

WORST_FAILURES = 20
PNG_CHARTS = {  # file -> metric, as the seed named them
    "accuracy_curve.png": "accuracy",
    "confidence_drift.png": "avg_confidence",
    "flip_rate.png": "flip_rate",
}


def _clean(value: Any) -> Any:
    """JSON-safe: NaN and inf become null, numpy scalars plain numbers, tuples lists."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def results_document(ds: xr.Dataset) -> dict[str, Any]:
    """The full structured log: provenance, metric definitions and every summary.

    Returns:
        {"provenance": {...}, "metrics": {name: {long_name, description, units,
        higher_is_better}}, "clean_accuracy": float, "results": {perturbation:
        {"degradation_slope": float, "severities": [{"severity": s, "accuracy": ..., ...}]}},
        "ranking": [...]} with NaN written as null.
    """
    summary = data.summaries(ds)
    frame = data.summary_frame(summary)
    results = {}
    for name, rows in frame.groupby("perturbation", sort=False):
        results[name] = {
            "degradation_slope": float(summary["degradation_slope"].sel(perturbation=name)),
            "severities": rows.drop(columns="perturbation").to_dict(orient="records"),
        }
    return _clean({
        "provenance": data.provenance(ds),
        "metrics": data.metric_info(),
        "clean_accuracy": data.clean_accuracy(summary),
        "results": results,
        "ranking": data.ranking(summary),
    })


def write_exports(ds: xr.Dataset, out_dir: str | os.PathLike) -> list[Path]:
    """Write the seed's six files into `out_dir` (created if missing).

    `stress_results.json` (see `results_document`), `stress_results.csv` (one row per
    perturbation x severity: perturbation, severity, accuracy, avg_confidence, flip_rate,
    ece, brier, nll), `accuracy_curve.png`, `confidence_drift.png`, `flip_rate.png`
    (Altair charts rendered by vl-convert) and `worst_failures.json` (`worst_failures`,
    20 of them).

    Args:
        ds: Sweep results (as `failfirst.stress_test` returns or `store.open_results` reads).
        out_dir: The folder to write into.

    Returns:
        The paths written, in the order above.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = data.summaries(ds)
    frame = data.summary_frame(summary)
    perturbations = [str(p) for p in summary["perturbation"].values]
    written = []

    path = out / "stress_results.json"
    path.write_text(json.dumps(results_document(ds), indent=2, allow_nan=False) + "\n")
    written.append(path)

    path = out / "stress_results.csv"
    frame.to_csv(path, index=False, float_format="%.6g")
    written.append(path)

    for filename, metric in PNG_CHARTS.items():
        chart = charts.metric_curves(frame, metric, perturbations, width=560, height=320,
                                     interactive=False)
        path = out / filename
        _save_png(chart, path)
        written.append(path)

    path = out / "worst_failures.json"
    path.write_text(json.dumps(_clean(data.worst_failures(ds, WORST_FAILURES)), indent=2,
                               allow_nan=False) + "\n")
    written.append(path)
    return written


def _save_png(chart: alt.TopLevelMixin, path: Path) -> None:
    import vl_convert

    spec = charts.to_spec(chart.configure(background="white"))
    path.write_bytes(vl_convert.vegalite_to_png(spec, vl_version=charts.vegalite_version(),
                                                scale=2))
