"""Altair charts of a sweep, built from data frames without I/O; one style per perturbation.

Every chart embeds the whole frame it is given (rounded), never a per-chart selection of its
columns or rows: charts of one frame then hold one identical dataset, which the site writes
once and the pages name (see `detach_data`).
"""

from __future__ import annotations

import json
from typing import Any, Literal, Sequence

import altair as alt
import pandas as pd

from failfirst.metrics import METRICS

# Okabe & Ito's colour-blind-safe palette, without its yellow (unreadable on white), in an
# order where neighbours differ most. Past seven perturbations the colours repeat with a new
# dash pattern, so every perturbation keeps one (colour, dash) pair on every chart.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000")
DASHES = ((1, 0), (6, 3), (2, 2), (8, 3, 2, 3))
CONTEXT_GREY = "#c9c9c9"
CLEAN_GREY = "#8a8a8a"

Width = int | Literal["container"]
SEVERITY_TITLE = "Severity (0 = clean, 1 = harshest)"
# Steps of 0.1 at most: a wide chart would otherwise tick every 0.05.
SEVERITY_AXIS = alt.Axis(title=SEVERITY_TITLE, format=".2~f", tickCount=10)
SMALL_SEVERITY_AXIS = alt.Axis(title=SEVERITY_TITLE, format=".2~f", tickCount=5)
FRACTION_METRICS = ("accuracy", "avg_confidence", "flip_rate")


def perturbation_style(perturbations: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each perturbation's colour and dash pattern, fixed by its position in the sweep."""
    return {name: {"color": PALETTE[i % len(PALETTE)],
                   "dash": list(DASHES[(i // len(PALETTE)) % len(DASHES)])}
            for i, name in enumerate(perturbations)}


def _color(perturbations: Sequence[str], legend: alt.Legend | None = None) -> alt.Color:
    style = perturbation_style(perturbations)
    # The domain is fixed to the whole ordered list, so a chart holding only some
    # perturbations still gives each the colour it has everywhere else.
    scale = alt.Scale(domain=list(perturbations), range=[style[p]["color"] for p in perturbations])
    return alt.Color("perturbation:N", scale=scale, title="Perturbation", legend=legend)


def _dash(perturbations: Sequence[str], legend: alt.Legend | None = None) -> alt.StrokeDash:
    style = perturbation_style(perturbations)
    scale = alt.Scale(domain=list(perturbations), range=[style[p]["dash"] for p in perturbations])
    return alt.StrokeDash("perturbation:N", scale=scale, title="Perturbation", legend=legend)


DECIMALS = 4
"""Chart numbers keep 4 decimals: finer than a pixel on any axis here, and as fine as the
tooltips show (".3f", ".1%"); 17 digits would be noise the site carries around."""


def _data(frame: pd.DataFrame) -> pd.DataFrame:
    """All of `frame`, rounded, so that charts of one frame share one dataset."""
    return frame.round(DECIMALS)


def _metric_title(metric: str) -> str:
    if metric == "overconfidence":
        return "Confidence minus accuracy"
    return METRICS[metric].long_name


def _y(metric: str) -> alt.Y:
    if metric in FRACTION_METRICS:
        return alt.Y(f"{metric}:Q", title=_metric_title(metric), scale=alt.Scale(domain=[0, 1]),
                     axis=alt.Axis(format=".0%"))
    return alt.Y(f"{metric}:Q", title=_metric_title(metric), scale=alt.Scale(zero=True))


def _value_format(metric: str) -> str:
    return ".1%" if metric in FRACTION_METRICS else ".3f"


def _legend(perturbations: Sequence[str], interactive: bool) -> alt.Legend:
    return alt.Legend(orient="bottom", columns=min(3, len(perturbations)), symbolStrokeWidth=2.5,
                      labelLimit=220,
                      title="Perturbation (click to isolate)" if interactive else "Perturbation")


def metric_curves(frame: pd.DataFrame, metric: str, perturbations: Sequence[str], *,
                  width: Width = "container", height: int = 240,
                  interactive: bool = True) -> alt.LayerChart:
    """One line per perturbation of `metric` against severity, with tooltips.

    Clicking a legend entry isolates that perturbation (shift-click adds more; double-click
    clears), so one curve can be read among many.

    Args:
        frame: Columns perturbation, severity and `metric`.
        metric: A column of `frame`: a metric name or "overconfidence".
        perturbations: Every perturbation of the sweep in order; fixes colours and dashes.
        width: Pixels, or "container" to fill the page element.
        height: Pixels.
        interactive: Whether the legend isolates (off for static PNGs).
    """
    pick = alt.selection_point(fields=["perturbation"], bind="legend")
    opacity = alt.condition(pick, alt.value(1.0), alt.value(0.12)) if interactive else alt.Undefined
    tooltip = [alt.Tooltip("perturbation:N", title="Perturbation"),
               alt.Tooltip("severity:Q", title="Severity", format=".2f"),
               alt.Tooltip(f"{metric}:Q", title=_metric_title(metric),
                           format=_value_format(metric))]
    base = alt.Chart(_data(frame)).encode(
        x=alt.X("severity:Q", axis=SEVERITY_AXIS, scale=alt.Scale(domain=[0, 1])),
        y=_y(metric), opacity=opacity, tooltip=tooltip)
    legend = _legend(perturbations, interactive)
    lines = base.mark_line(strokeWidth=2).encode(
        color=_color(perturbations, legend), strokeDash=_dash(perturbations, legend))
    if interactive:
        lines = lines.add_params(pick)
    points = base.mark_point(filled=True, size=36).encode(color=_color(perturbations))
    layers = [lines, points]
    if metric == "overconfidence":
        layers.insert(0, alt.Chart().mark_rule(color=CLEAN_GREY).encode(y=alt.datum(0)))
    return alt.layer(*layers).properties(width=width, height=height,
                                         title=_metric_title(metric))


FOCUS = "focus"
"""The Vega-Lite parameter naming the perturbation `perturbation_curves` shows in colour."""


def perturbation_curves(frame: pd.DataFrame, perturbations: Sequence[str],
                        metrics: Sequence[str], *, focus: str | None = None,
                        columns: int = 3) -> alt.ConcatChart:
    """Small multiples of each metric for one perturbation, the others in grey behind it.

    The perturbation in colour is the chart's `focus` parameter (default the first), so
    one spec serves every perturbation's page: see `focus_spec`.
    """
    pick = alt.param(name=FOCUS, value=focus if focus is not None else perturbations[0])
    panels = []
    data = _data(frame)  # one copy for every panel
    for metric in metrics:
        x = alt.X("severity:Q", axis=SMALL_SEVERITY_AXIS, scale=alt.Scale(domain=[0, 1]))
        others = alt.Chart(data).transform_filter(f"datum.perturbation != {FOCUS}").mark_line(
            color=CONTEXT_GREY, strokeWidth=1).encode(x=x, y=_y(metric), detail="perturbation:N")
        this = alt.Chart(data).transform_filter(f"datum.perturbation == {FOCUS}")
        tooltip = [alt.Tooltip("severity:Q", title="Severity", format=".2f"),
                   alt.Tooltip(f"{metric}:Q", title=_metric_title(metric),
                               format=_value_format(metric))]
        line = this.mark_line(strokeWidth=2.5).encode(
            x=x, y=_y(metric), color=_color(perturbations), strokeDash=_dash(perturbations))
        dots = this.mark_point(filled=True, size=40).encode(
            x=x, y=_y(metric), color=_color(perturbations), tooltip=tooltip)
        layers = [others, line, dots]
        if metric == "overconfidence":
            layers.insert(0, alt.Chart().mark_rule(color=CLEAN_GREY).encode(y=alt.datum(0)))
        panels.append(alt.layer(*layers).properties(width=230, height=150,
                                                     title=_metric_title(metric)))
    return alt.concat(*panels, columns=columns).add_params(pick)


def focus_spec(spec: dict[str, Any], perturbation: str) -> dict[str, Any]:
    """A copy of a spec with a `focus` parameter (`perturbation_curves`, a focused
    `reliability_chart`) showing `perturbation`."""
    spec = json.loads(json.dumps(spec))
    for param in spec.get("params", []):
        if param.get("name") == FOCUS:
            param["value"] = perturbation
    return spec


def accuracy_heatmap(frame: pd.DataFrame, order: Sequence[str]) -> alt.LayerChart:
    """Accuracy per perturbation (rows, in `order`) and severity (columns), with values."""
    data = _data(frame)
    # Severity itself is the ordinal column (labels formatted by the axis), so the heatmap
    # shares the curves' dataset instead of carrying a copy with a label column.
    levels = data["severity"].nunique()
    base = alt.Chart(data).encode(
        x=alt.X("severity:O", title=SEVERITY_TITLE, axis=alt.Axis(labelAngle=0, format=".2~f")),
        y=alt.Y("perturbation:N", sort=list(order), title=None, axis=alt.Axis(labelLimit=220)))
    cells = base.mark_rect(stroke="white", strokeWidth=1).encode(
        color=alt.Color("accuracy:Q", title="Accuracy",
                        scale=alt.Scale(scheme="viridis", domain=[0, 1]),
                        legend=alt.Legend(format=".0%")),
        tooltip=[alt.Tooltip("perturbation:N", title="Perturbation"),
                 alt.Tooltip("severity:Q", title="Severity", format=".2f"),
                 alt.Tooltip("accuracy:Q", title="Accuracy", format=".1%")])
    # Dark cells (low accuracy on viridis) get white text, light ones black.
    text = base.mark_text(fontSize=11).encode(
        text=alt.Text("accuracy:Q", format=".0%"),
        color=alt.condition(alt.datum.accuracy < 0.55, alt.value("white"), alt.value("black")))
    return alt.layer(cells, text).properties(
        width=max(260, 58 * levels), height=max(90, 26 * len(order)))


RELIABILITY_COLUMNS = ["perturbation", "severity", "bin_lower", "bin_upper", "count",
                       "mean_confidence", "accuracy"]


def reliability_chart(frame: pd.DataFrame, perturbations: Sequence[str], *,
                      columns: int = 4, size: int = 170, focus: bool = False) -> alt.FacetChart:
    """Reliability diagrams: accuracy against mean confidence per bin, a panel per perturbation.

    The clean level is grey (it is the same in every panel); perturbed levels take the
    perturbation's colour, dashed at the middle severity and solid at the harshest. Points on
    the diagonal are calibrated; below it the model is overconfident.

    Args:
        frame: `reliability_frame` rows: perturbation, severity, count, mean_confidence,
            accuracy, bin_lower, bin_upper.
        perturbations: Every perturbation of the sweep in order.
        columns: Panels per row.
        size: Width and height of a panel in pixels.
        focus: Show only the perturbation named by the chart's `focus` parameter (default
            the first), so one spec serves every perturbation's page: see `focus_spec`.
    """
    data = _data(frame[RELIABILITY_COLUMNS])
    levels = sorted(float(s) for s in data["severity"].unique())
    names = {s: ("clean" if s == 0 else "harshest" if s == levels[-1] else "middle")
             + f" ({s:.2f})" for s in levels}
    level_names = list(names.values())
    # The level's name is computed in the browser (a few levels, hundreds of rows), so the
    # dataset holds numbers only and every page's reliability chart shares it.
    level = "".join(f"datum.severity == {s!r} ? {json.dumps(n)} : " for s, n in names.items())
    tooltip = [alt.Tooltip("level:N", title="Severity"),
               alt.Tooltip("bin_lower:Q", title="Bin from", format=".1f"),
               alt.Tooltip("bin_upper:Q", title="Bin to", format=".1f"),
               alt.Tooltip("mean_confidence:Q", title="Mean confidence", format=".3f"),
               alt.Tooltip("accuracy:Q", title="Accuracy", format=".3f"),
               alt.Tooltip("count:Q", title="Samples")]
    x = alt.X("mean_confidence:Q", title="Confidence", scale=alt.Scale(domain=[0, 1]))
    y = alt.Y("accuracy:Q", title="Accuracy", scale=alt.Scale(domain=[0, 1]))
    dash_range = [[2, 2] if name.startswith("clean") else [6, 3] if name.startswith("middle")
                  else [1, 0] for name in level_names]
    dash = alt.StrokeDash("level:N", sort=level_names, title="Severity",
                          scale=alt.Scale(domain=level_names, range=dash_range),
                          legend=alt.Legend(orient="top", symbolStrokeColor="#444"))
    diagonal = alt.Chart().mark_rule(color="#bbbbbb", strokeDash=[1, 3]).encode(
        x=alt.datum(0), y=alt.datum(0), x2=alt.datum(1), y2=alt.datum(1))
    clean = alt.Chart().transform_filter(alt.datum.severity == 0).encode(
        x=x, y=y, tooltip=tooltip)
    perturbed = alt.Chart().transform_filter(alt.datum.severity != 0).encode(
        x=x, y=y, color=_color(perturbations), tooltip=tooltip)
    layers = alt.layer(
        diagonal,
        clean.mark_line(color=CLEAN_GREY, strokeWidth=1.5).encode(strokeDash=dash),
        clean.mark_point(color=CLEAN_GREY, filled=True, size=22),
        perturbed.mark_line(strokeWidth=2).encode(strokeDash=dash, detail="level:N"),
        perturbed.mark_point(filled=True, size=26).encode(shape=alt.Shape(
            "level:N", sort=level_names, legend=None)),
        data=data,
    ).properties(width=size, height=size)
    chart = layers.facet(
        facet=alt.Facet("perturbation:N", sort=list(perturbations), title=None,
                        header=alt.Header(labelFontSize=12, labelFontWeight="bold")),
        columns=columns).transform_calculate(level=level + "''")
    if focus:
        chart = chart.transform_filter(f"datum.perturbation == {FOCUS}").add_params(
            alt.param(name=FOCUS, value=perturbations[0] if perturbations else ""))
    return chart


def vegalite_version() -> str | None:
    """The Vega-Lite version Altair writes specs for ("6.4"), if vl-convert ships it."""
    import vl_convert

    wanted = alt.SCHEMA_VERSION.lstrip("v").rsplit(".", 1)[0]  # "v6.4.1" -> "6.4"
    return wanted if wanted in vl_convert.get_vegalite_versions() else None


def detach_data(spec: dict[str, Any]) -> tuple[dict[str, Any], dict[str, list[dict]]]:
    """Split a spec into the spec alone (naming its data) and its named datasets.

    Altair names each dataset after a hash of its values, so charts of the same data name the
    same dataset: a site writes each once and hands it to the specs that name it (Vega-Lite's
    top-level `datasets`) when it draws them.

    Returns:
        A copy of the spec without `datasets`, and those datasets by name.
    """
    spec = dict(spec)
    return spec, spec.pop("datasets", {})


def to_spec(chart: alt.TopLevelMixin, validate: bool = False) -> dict[str, Any]:
    """The chart as a Vega-Lite dict, without the `$schema` URL (the site never fetches it)."""
    # Not validated against the schema here (a second per chart, most of a render's time):
    # the tests validate every kind of chart, and the browser test draws them.
    spec = chart.to_dict(validate=validate)
    spec.pop("$schema", None)
    return spec
