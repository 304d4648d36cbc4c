"""The static report site: page data from a run store, rendered with Jinja2 into HTML and assets."""

from __future__ import annotations

import functools
import json
import math
import os
import re
import shutil
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import altair as alt
import jinja2
import markupsafe
import numpy as np
import pandas as pd
import xarray as xr

import failfirst
from failfirst import store
from failfirst.errors import StoreError
from failfirst.metrics import METRICS
from failfirst.report import charts, data, thumbnails
from failfirst.report.examples import Inputs

OVERALL_FAILURES = 20
"""Failures on the "all" view of the failures page: the sweep's most confident mistakes."""
PER_PERTURBATION_FAILURES = 8
"""Failures kept per perturbation, for its page and the failures page's filter."""
CURVE_METRICS = ("accuracy", "avg_confidence", "flip_rate", "ece", "brier", "nll")
MANIFEST = ".failfirst-site.json"
ASSETS = "assets"
THUMBS = f"{ASSETS}/thumbs"
VEGA_BUNDLE = f"{ASSETS}/vega-bundle.js"
REPORT_DATA = f"{ASSETS}/report-data.js"
REPORT_GLOBAL = "FAILFIRST_REPORT"
"""The global that assets/report-data.js defines: {"datasets": {name: {"length": rows,
"columns": {column: [values]}}}, "specs": {name: spec}}. A classic script defining a global
loads from file://, where a fetch of a JSON file would be refused."""


def templates_dir() -> Path:
    """The templates folder: inside the installed package, or at the top of a source checkout."""
    packaged = Path(failfirst.__file__).parent / "templates"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "templates"


def render_site(run_store_path: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Render the static report site of a run from its run store alone (no model needed).

    Pages: index.html (overview and damage ranking), curves.html, calibration.html,
    failures.html and one perturbation-<name>.html per perturbation; assets/ holds the CSS,
    the scripts (Vega, Vega-Lite and vega-embed, written once, so the site works offline and
    from file://), report-data.js and the thumbnails. The site stays small, holding
    aggregates and thumbnails only: the pages embed chart specs that name their data, and the
    data (and the specs every perturbation page shares) are written once into
    report-data.js; thumbnails are packed into a few sprite sheets, each picture once however
    many cards show it. Files a previous render wrote into `out_dir` and this one does not
    are removed; nothing else there is touched.

    Args:
        run_store_path: A run store written by `failfirst.stress_test` (`results.zarr`).
        out_dir: The folder to write; created if missing.

    Returns:
        The path of index.html.
    """
    path = Path(run_store_path)
    ds = store.open_results(path)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise StoreError(f"expected a folder to write the site into, found a file at {str(out)!r}")
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    site = _SiteData(ds, path)
    written += site.write_pictures(out)
    written += _write_assets(out)
    env = _environment()
    common = site.common()
    pages = [("index.html", "index.html", site.overview()),
             ("curves.html", "curves.html", site.curves()),
             ("calibration.html", "calibration.html", site.calibration()),
             ("failures.html", "failures.html", site.failures())]
    pages += [(p["page"], "perturbation.html", site.perturbation_page(p["name"]))
              for p in site.perturbations]
    for filename, template, context in pages:
        html = env.get_template(template).render(**common, page=filename, **context)
        written.append(_write_text(out / filename, html))
    # Last: building the pages' charts (above) is what gathers the data they name.
    written.append(_write_text(out / REPORT_DATA, site.shared.script()))
    _clean_previous(out, written)
    return out / "index.html"


# -- page data ------------------------------------------------------------------------------


class _SiteData:
    """Everything the pages show, computed once from the results and inputs of a run."""

    def __init__(self, ds: xr.Dataset, path: Path):
        self.ds = ds
        self.path = path
        self.run = data.provenance(ds)
        self.summary = data.summaries(ds)
        frame = data.summary_frame(self.summary)
        frame["overconfidence"] = frame["avg_confidence"] - frame["accuracy"]
        self.frame = frame
        self.ranking = data.ranking(self.summary)
        self.clean_accuracy = data.clean_accuracy(self.summary)
        self.names = self.run["perturbations"]
        style = charts.perturbation_style(self.names)
        slugs = _slugs(self.names)
        rank = {row["perturbation"]: row for row in self.ranking}
        params = self.run["perturbation_params"]
        self.perturbations = [
            {"name": name, "slug": slugs[name], "page": f"perturbation-{slugs[name]}.html",
             "color": style[name]["color"], "dash": style[name]["dash"],
             "description": (params.get(name) or {}).get("description", ""),
             "family": (params.get(name) or {}).get("family", ""),
             "params": {k: v for k, v in (params.get(name) or {}).items()
                        if k not in ("description", "family")},
             "ranking": rank[name]}
            for name in self.names]
        self.by_name = {p["name"]: p for p in self.perturbations}
        self.levels = data.reliability_levels(ds["severity"].values)
        self.reliability = data.reliability_frame(ds, self.levels)
        # The per-sample arrays the failures need, loaded once (P x S x N numbers, no inputs).
        self.samples = ds[["pred", "confidence", "label"]].load()
        self.classes = data.class_names(ds)
        self.overall = data.worst_failures(self.samples, OVERALL_FAILURES)
        self.per_perturbation = {
            name: data.worst_failures(self.samples.isel(perturbation=[i]),
                                      PER_PERTURBATION_FAILURES)
            for i, name in enumerate(self.names)}
        self.shared = _Shared()
        # Written once into report-data.js: each perturbation's page only names its focus.
        self.shared.add_spec("perturbation-curves", charts.perturbation_curves(
            frame, self.names, [*CURVE_METRICS[:4], "brier", "overconfidence"]))
        self.shared.add_spec("perturbation-reliability", charts.reliability_chart(
            self.reliability, self.names, columns=1, size=220, focus=True))
        self.pictures: dict[tuple, dict] = {}  # filled by write_pictures
        self.strips: dict[str, list[dict]] = {}
        self.strip_sample: dict[str, Any] | None = None

    # -- pictures --------------------------------------------------------------------------

    def write_pictures(self, out: Path) -> list[Path]:
        """Write the failure thumbnails and the example strips; remember what goes where."""
        try:
            inputs = Inputs(self.path, self.ds.attrs)
        except (OSError, KeyError, ValueError, StoreError):
            return []  # a store without inputs: the pages show failures without pictures
        position = pd.Index(inputs.ids)
        sheets = thumbnails.SpriteSheets(THUMBS)
        wanted: dict[tuple[str, float], set[int]] = defaultdict(set)
        for failure in [*self.overall, *(f for fs in self.per_perturbation.values() for f in fs)]:
            wanted[(failure["perturbation"], failure["severity"])].add(failure["sample_idx"])
        # One perturbation call per (perturbation, severity): rows are keyed by sample id, so
        # a batch gives each sample exactly what it got in the sweep.
        for (name, severity), ids in sorted(wanted.items()):
            ids_array = np.array(sorted(ids), dtype=np.int64)
            x = inputs.read(position.get_indexer(ids_array))
            perturbed = inputs.perturbed(x, name, severity, ids_array)
            clean = inputs.canonical(x)
            perturbed = None if perturbed is None else inputs.canonical(perturbed)
            for j, sample_id in enumerate(ids_array.tolist()):
                self.pictures[(name, severity, sample_id)] = self._pictures(
                    sheets, name, severity, sample_id, clean[j],
                    None if perturbed is None else perturbed[j])
        self._strips(sheets, inputs, position)
        return sheets.write(out)

    def _class(self, index: int) -> str:
        return self.classes[index] if 0 <= index < len(self.classes) else str(index)

    def _level(self, severity: float) -> int:
        return int(np.flatnonzero(self.ds["severity"].values == severity)[0])

    def _pictures(self, sheets: thumbnails.SpriteSheets, name: str, severity: float,
                  sample_id: int, clean: np.ndarray, perturbed: np.ndarray | None) -> list[dict]:
        """One failure's pictures, added to the sheets; returned for its card."""
        slug, level = self.by_name[name]["slug"], self._level(severity)
        if self.run["domain"] != "vision":
            if perturbed is None:
                frame = self._clean_frame(sheets, sample_id, clean)
                return [_picture(frame, "grey: clean", pixelated=False)]
            frame = sheets.add(f"{slug}.plots", thumbnails.series_plot(
                clean, perturbed, self.by_name[name]["color"]), key=(name, level, sample_id))
            return [_picture(frame, f"grey: clean, colour: {name} at {severity:.2g}",
                             pixelated=False)]
        pictures = [_picture(self._clean_frame(sheets, sample_id, clean), "clean")]
        if perturbed is None:
            return pictures
        shown = sheets.add(f"{slug}.perturbed", thumbnails.image_thumbnail(perturbed),
                           key=(name, level, sample_id))
        diff, gain = thumbnails.difference_thumbnail(clean, perturbed)
        stretched = f" ×{gain:.1f}" if gain > 1.05 else ""
        return [*pictures, _picture(shown, f"perturbed ({severity:.2g})"),
                _picture(sheets.add(f"{slug}.diff", diff), f"difference{stretched}")]

    def _clean_frame(self, sheets: thumbnails.SpriteSheets, sample_id: int,
                     clean: np.ndarray) -> thumbnails.Frame:
        """The clean input's thumbnail (a plot for series), stored once per sample.

        A sample failing several ways, and the clean end of every perturbation's strip, show
        the same picture: one frame, referenced many times.
        """
        vision = self.run["domain"] == "vision"
        return sheets.add("clean", thumbnails.image_thumbnail(clean) if vision
                          else thumbnails.series_plot(clean), key=("clean", sample_id))

    def example_position(self) -> int:
        """The strip's sample: the first the model gets right on clean input (else the first)."""
        clean = self.samples["pred"].isel(perturbation=0).sel(severity=0.0).values
        right = np.flatnonzero(clean == self.samples["label"].values)
        return int(right[0]) if right.size else 0

    def _strips(self, sheets: thumbnails.SpriteSheets, inputs: Inputs,
                position: pd.Index) -> None:
        """One sample at every severity of every perturbation, with the model's prediction."""
        n = self.example_position()
        sample_id = int(self.samples["sample"].values[n])
        label = int(self.samples["label"].values[n])
        self.strip_sample = {"sample_idx": sample_id, "true_class": self._class(label)}
        x = inputs.read(position.get_indexer([sample_id]))
        clean = inputs.canonical(x)[0]
        pred, confidence = self.samples["pred"].values, self.samples["confidence"].values
        vision = self.run["domain"] == "vision"
        for p, name in enumerate(self.names):
            slug, strip = self.by_name[name]["slug"], []
            for s, severity in enumerate(self.ds["severity"].values.tolist()):
                if severity == 0:  # the identity: the clean picture every strip shares
                    frame = self._clean_frame(sheets, sample_id, clean)
                else:
                    perturbed = inputs.perturbed(x, name, severity, np.array([sample_id]))
                    if perturbed is None:
                        break  # not registered here: no pictures beyond the clean input
                    picture = inputs.canonical(perturbed)[0]
                    # Keyed as the cards' pictures are: a card of this sample at this
                    # severity shows the same frame.
                    frame = (sheets.add(f"{slug}.perturbed", thumbnails.image_thumbnail(picture),
                                        key=(name, s, sample_id)) if vision else
                             sheets.add(f"{slug}.plots", thumbnails.series_plot(
                                 clean, picture, self.by_name[name]["color"]),
                                 key=(name, s, sample_id)))
                k = int(pred[p, s, n])
                strip.append({**_picture(frame, "", pixelated=vision), "severity": severity,
                              "pred_class": self._class(k) if k >= 0 else "not run",
                              "confidence": float(confidence[p, s, n]), "correct": k == label})
            self.strips[name] = strip

    # -- pages -----------------------------------------------------------------------------

    def common(self) -> dict[str, Any]:
        return {"run": self.run, "perturbations": self.perturbations,
                "generated": {"version": failfirst.__version__,
                              "fingerprint": (self.run["fingerprint"] or "")[:12]},
                "vega_bundle": VEGA_BUNDLE, "report_data": REPORT_DATA}

    def _card(self, failure: dict, overall: bool) -> dict:
        key = (failure["perturbation"], failure["severity"], failure["sample_idx"])
        style = self.by_name[failure["perturbation"]]
        return {**failure, "overall": overall, "pictures": self.pictures.get(key, []),
                "style": style, "page": style["page"]}

    def overview(self) -> dict[str, Any]:
        order = [row["perturbation"] for row in self.ranking]
        heatmap = charts.accuracy_heatmap(self.frame, order)
        overconfident = [r for r in self.ranking if r["overconfidence"] is not None]
        ece = [r for r in self.ranking if r["worst_ece"] is not None]
        return {
            "title": "Overview",
            "clean_accuracy": self.clean_accuracy,
            "ranking": self.ranking,
            "break_drop": data.BREAK_DROP,
            "most_damaging": self.ranking[0] if self.ranking else None,
            "most_overconfident": max(overconfident, key=lambda r: r["overconfidence"])
            if overconfident else None,
            "worst_ece": max(ece, key=lambda r: r["worst_ece"]) if ece else None,
            "charts": [self._chart("heatmap", "Accuracy by perturbation and severity",
                                   heatmap, "Rows in the ranking's order, most damaging first.")],
        }

    def curves(self) -> dict[str, Any]:
        return {"title": "Curves", "charts": [
            self._chart(f"curve-{m}", METRICS[m].long_name,
                        charts.metric_curves(self.frame, m, self.names), METRICS[m].description,
                        wide=True)
            for m in CURVE_METRICS]}

    def calibration(self) -> dict[str, Any]:
        return {
            "title": "Calibration",
            "levels": self.levels,
            "charts": [
                self._chart("reliability", "Reliability diagrams",
                            charts.reliability_chart(self.reliability, self.names),
                            "Accuracy against mean confidence in ten equal-width confidence "
                            "bins (empty bins left out). On the diagonal the model is "
                            "calibrated; below it, overconfident."),
                self._chart("overconfidence", "Confidence minus accuracy",
                            charts.metric_curves(self.frame, "overconfidence", self.names),
                            "Average confidence minus accuracy: above zero the model claims "
                            "more than it delivers.", wide=True),
            ],
        }

    def failures(self) -> dict[str, Any]:
        overall = {(f["perturbation"], f["severity"], f["sample_idx"]) for f in self.overall}
        merged: dict[tuple, dict] = {}
        for f in [*self.overall, *(f for fs in self.per_perturbation.values() for f in fs)]:
            key = (f["perturbation"], f["severity"], f["sample_idx"])
            merged.setdefault(key, self._card(f, key in overall))
        order = {name: i for i, name in enumerate(self.names)}
        cards = sorted(merged.values(), key=lambda c: (-c["confidence"], order[c["perturbation"]],
                                                       c["severity"], c["sample_idx"]))
        return {"title": "Worst failures", "cards": cards, "overall_count": len(self.overall),
                "per_perturbation": PER_PERTURBATION_FAILURES}

    def perturbation_page(self, name: str) -> dict[str, Any]:
        i = self.names.index(name)
        return {
            "title": name,
            "p": self.by_name[name],
            "previous": self.perturbations[i - 1] if i > 0 else None,
            "next": self.perturbations[i + 1] if i + 1 < len(self.perturbations) else None,
            "strip": self.strips.get(name, []),
            "strip_sample": self.strip_sample,
            "cards": [self._card(f, False) for f in self.per_perturbation[name]],
            "charts": [
                {"id": "curves", "title": "Metrics against severity", "wide": False,
                 "spec": self.shared.use("perturbation-curves", name),
                 "caption": "This perturbation in colour, the others in grey."},
                {"id": "reliability", "wide": False,
                 "title": "Reliability at clean, middle and harshest severity",
                 "spec": self.shared.use("perturbation-reliability", name),
                 "caption": "Below the diagonal the model is overconfident."},
            ],
        }

    def _chart(self, chart_id: str, title: str, chart: alt.TopLevelMixin, caption: str = "",
               wide: bool = False) -> dict[str, Any]:
        return {"id": chart_id, "title": title, "spec": self.shared.spec(chart),
                "caption": caption, "wide": wide}


class _Shared:
    """What several pages draw, written once into report-data.js: datasets and whole specs.

    A page embeds a chart as a Vega-Lite spec whose data is named (`{"data": {"name":
    ...}}`), or as `{"shared": spec name, "params": {"focus": perturbation}}`; site.js puts
    the named pieces back together before drawing. Twenty-five perturbation pages then carry
    one copy of the curves' data and spec instead of twenty-five.
    """

    def __init__(self) -> None:
        self.datasets: dict[str, list[dict]] = {}
        self.specs: dict[str, dict] = {}

    def spec(self, chart: alt.TopLevelMixin) -> dict[str, Any]:
        """The chart's spec for a page: its data kept here, named in the spec."""
        spec, datasets = charts.detach_data(charts.to_spec(chart))
        self.datasets.update(datasets)  # names are hashes of the values: equal data, one copy
        spec.pop("title", None)  # the page's heading names the chart already
        return spec

    def add_spec(self, name: str, chart: alt.TopLevelMixin) -> None:
        """Keep a whole spec that pages draw with their own `focus` (see `use`)."""
        self.specs[name] = self.spec(chart)

    def use(self, name: str, focus: str) -> dict[str, Any]:
        """A page's reference to the shared spec `name`, showing perturbation `focus`."""
        return {"shared": name, "params": {charts.FOCUS: focus}}

    def script(self) -> str:
        """report-data.js: the datasets column by column (a row's keys are not repeated)."""
        tables = {name: _columns(rows) for name, rows in self.datasets.items()}
        body = jinja2.utils.htmlsafe_json_dumps(
            {"datasets": tables, "specs": self.specs}, **_JSON)
        return (f"/* failfirst report: data and chart specs the pages share (see site.js). */\n"
                f"window.{REPORT_GLOBAL} = {body};\n")


def _columns(rows: list[dict]) -> dict[str, Any]:
    """Rows of a dataset as {"length": rows, "columns": {column: [value per row]}}.

    The length is kept apart: a dataset of rows without columns (Altair's one empty row that
    draws a rule at a fixed value) has rows all the same. A missing value reads null.
    """
    names = list(dict.fromkeys(key for row in rows for key in row))
    return {"length": len(rows), "columns": {name: [row.get(name) for row in rows]
                                             for name in names}}


def _picture(frame: thumbnails.Frame, caption: str, pixelated: bool = True) -> dict[str, Any]:
    """A thumbnail for a template; its `style` is read when the page renders, after every
    frame is in its sheet (a frame's position depends on how many its sheet holds)."""
    return {"frame": frame, "caption": caption, "pixelated": pixelated}


def _slugs(names: list[str]) -> dict[str, str]:
    """File-name-safe, unique slugs of the perturbation names."""
    out, used = {}, set()
    for name in names:
        base = re.sub(r"[^a-z0-9_]+", "-", name.lower()).strip("-")[:60] or "perturbation"
        slug, k = base, 2
        while slug in used:
            slug, k = f"{base}-{k}", k + 1
        used.add(slug)
        out[name] = slug
    return out


# -- rendering ------------------------------------------------------------------------------


# A NaN would make the embedded JSON unparsable in the browser: fail here instead. No spaces
# after separators: the pages embed specs, and those spaces were a tenth of them.
_JSON = {"sort_keys": False, "allow_nan": False, "separators": (",", ":")}


class _Loader(jinja2.FileSystemLoader):
    """Templates without their indentation: it is for people reading them, not browsers.

    Only template text changes (no template holds <pre> or <textarea>); values rendered
    into it keep every character.
    """

    def get_source(self, environment: jinja2.Environment, template: str):
        source, filename, uptodate = super().get_source(environment, template)
        return re.sub(r"^[ \t]+", "", source, flags=re.MULTILINE), filename, uptodate


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=_Loader(templates_dir()),
        autoescape=True,  # every template is HTML; user strings must stay text
        undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True,
    )
    env.policies["json.dumps_kwargs"] = _JSON
    env.filters.update(pct=_pct, num=_num, sev=_sev, when=_when, duration=_duration,
                       ticks=_ticks)
    return env


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def _ticks(text: Any) -> markupsafe.Markup:
    """Escape text, then show `backticked` words (registry descriptions use them) as code."""
    escaped = str(markupsafe.escape("" if text is None else text))
    return markupsafe.Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped))


def _pct(value: Any, digits: int = 1) -> str:
    return "—" if _missing(value) else f"{100 * float(value):.{digits}f} %"


def _num(value: Any, digits: int = 3) -> str:
    return "—" if _missing(value) else f"{float(value):.{digits}f}"


def _sev(value: Any) -> str:
    return "—" if _missing(value) else (f"{float(value):.2f}".rstrip("0").rstrip(".") or "0")


def _when(value: Any) -> str:
    if not value:
        return "—"
    try:
        return datetime.fromisoformat(str(value)).strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    except ValueError:
        return str(value)


def _duration(seconds: Any) -> str:
    if _missing(seconds):
        return "—"
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {rest} s"


@functools.cache
def _vega_bundle() -> str:
    """Vega, Vega-Lite and vega-embed as one classic script that sets window.vegaEmbed."""
    import vl_convert

    return vl_convert.javascript_bundle(vl_version=charts.vegalite_version())


def _write_assets(out: Path) -> list[Path]:
    static = templates_dir() / "static"
    written = []
    for source in sorted(static.iterdir()):
        if source.is_file():
            target = out / ASSETS / source.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            written.append(target)
    written.append(_write_text(out / VEGA_BUNDLE, _vega_bundle()))
    return written


def _write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _clean_previous(out: Path, written: list[Path]) -> None:
    """Remove what the previous render wrote and this one did not; record this render's files."""
    manifest = out / MANIFEST
    now = sorted({p.resolve().relative_to(out.resolve()).as_posix() for p in written})
    try:
        before = json.loads(manifest.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        before = []
    root = out.resolve()
    for rel in set(before) - set(now):
        target = (out / str(rel)).resolve()
        if root in target.parents and target.is_file():  # never outside the site folder
            target.unlink()
    manifest.write_text(json.dumps({"generator": f"failfirst {failfirst.__version__}",
                                    "files": now}, indent=1))
