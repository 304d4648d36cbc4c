"""The report: worst failures, the seed's export files and the static site (files, safety, size)."""

from __future__ import annotations

import csv
import importlib.util
import json
import re
import subprocess
import sys
import zipfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from PIL import Image

import failfirst
from failfirst import store
from failfirst.errors import InputError, StoreError
from failfirst.perturbations import register
from failfirst.perturbations import registry as perturbation_registry
from failfirst.report import (
    charts,
    render_site,
    thumbnails,
    worst_failures,
    write_exports,
)
from failfirst.report.data import (
    SUMMARY_METRICS,
    ranking,
    reliability_frame,
    reliability_levels,
    summaries,
    summary_frame,
)

pytestmark = pytest.mark.filterwarnings("ignore:.*treating them as logits")

VISION_PERTURBATIONS = ["gaussian_noise", "random_occlusion", "blur"]
SERIES_PERTURBATIONS = ["ts_gaussian_noise", "temporal_dropout", "mean_shift"]
SEVERITIES = [0.0, 0.5, 1.0]
XSS_CLASS = "<img src=x onerror=alert(1)>"
XSS_TEXT = "</script><script>alert(1)</script>"


# -- small real runs (shared with test_site.py) ---------------------------------------------


def digit_images(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first n of scikit-learn's 8x8 digits as (n, 1, 8, 8) images in [0, 1]."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.images[:n] / 16.0).astype(np.float32)[:, None], digits.target[:n]


def digit_model():
    """A fixed classifier of digits: a mean template per class (from other samples than those
    swept), softmax of minus the squared distance; about 89 % right and 90 % confident."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    X, y = digits.images[200:] / 16.0, digits.target[200:]
    templates = np.stack([X[y == k].mean(0).ravel() for k in range(10)])

    def predict_proba(x):
        flat = np.asarray(x, np.float64).reshape(len(x), -1)
        logits = -((flat[:, None, :] - templates[None]) ** 2).sum(-1) / 0.5
        e = np.exp(logits - logits.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    return predict_proba


def vision_run(path: Path, n: int = 40, classes=None, perturbations=None) -> xr.Dataset:
    X, y = digit_images(n)
    return failfirst.stress_test(
        digit_model(), X, y, store=path, severities=SEVERITIES, batch_size=16,
        perturbations=perturbations or VISION_PERTURBATIONS,
        classes=classes or [f"digit {k}" for k in range(10)],
        data_description="scikit-learn digits, first samples", sample_ids=np.arange(100, 100 + n))


def series(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two-channel sine waves (n, 48, 2) of three frequencies, labelled by frequency."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, 48)
    y = rng.integers(0, 3, n)
    phase = rng.uniform(0, 2 * np.pi, (n, 1))
    wave = np.sin(2 * np.pi * (y[:, None] + 1) * 2 * t + phase)
    X = np.stack([wave, 0.5 * np.cos(2 * np.pi * t + phase)], axis=-1)
    return (X + 0.1 * rng.standard_normal(X.shape)).astype(np.float32), y


def series_model(x):
    """Classify by the dominant frequency of the first channel (2, 4 or 6 cycles)."""
    spectrum = np.abs(np.fft.rfft(np.asarray(x)[..., 0], axis=1))
    logits = 3 * spectrum[:, [2, 4, 6]] / (spectrum[:, 1:].sum(1, keepdims=True) + 1e-9) * 4
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def series_run(path: Path, n: int = 30) -> xr.Dataset:
    X, y = series(n)
    return failfirst.stress_test(series_model, X, y, store=path, severities=SEVERITIES,
                                 perturbations=SERIES_PERTURBATIONS, batch_size=16,
                                 classes=["slow", "medium", "fast"], data_description="sine waves")


@pytest.fixture(scope="module")
def vision(tmp_path_factory):
    path = tmp_path_factory.mktemp("vision") / "results.zarr"
    ds = vision_run(path)
    return path, ds, render_site(path, path.parent / "site").parent


@pytest.fixture(scope="module")
def timeseries(tmp_path_factory):
    path = tmp_path_factory.mktemp("series") / "results.zarr"
    ds = series_run(path)
    return path, ds, render_site(path, path.parent / "site").parent


# -- worst failures -------------------------------------------------------------------------


def hand_built() -> xr.Dataset:
    """2 perturbations x 3 severities x 3 samples whose worst failures are known."""
    pred = np.array([
        [[1, 0, 2], [1, 1, 1], [2, 2, 2]],   # "a": labels are 0, 1, 2
        [[1, 0, 2], [0, -1, 0], [2, 0, 1]],  # "b": -1 is a cell not written yet
    ])
    conf = np.array([
        [[0.99, 0.5, 0.5], [0.7, 0.6, 0.8], [0.9, 0.95, 0.4]],
        [[0.99, 0.5, 0.5], [0.9, 0.99, np.nan], [0.9, 0.3, 0.9]],
    ], dtype=np.float32)
    return xr.Dataset(
        {"pred": (("perturbation", "severity", "sample"), pred),
         "confidence": (("perturbation", "severity", "sample"), conf),
         "label": ("sample", np.array([0, 1, 2]))},
        coords={"perturbation": ["a", "b"], "severity": [0.0, 0.5, 1.0], "sample": [10, 11, 12]},
        attrs={"classes": ["zero", "one", "two"]})


def test_worst_failures_on_a_known_grid_orders_by_confidence_then_position():
    got = worst_failures(hand_built(), k=10)
    # Left out: the clean level (0.99 wrong in both), right cells, the unwritten -1 at
    # (b, 0.5, 11) and the NaN confidence at (b, 0.5, 12).
    expected = [  # (perturbation, severity, sample id, pred, confidence)
        ("a", 1.0, 11, 2, 0.95),
        ("a", 1.0, 10, 2, 0.9),  # ties at 0.9: "a" before "b", then the earlier sample
        ("b", 1.0, 10, 2, 0.9),
        ("b", 1.0, 12, 1, 0.9),
        ("a", 0.5, 12, 1, 0.8),
        ("a", 0.5, 10, 1, 0.7),
        ("b", 1.0, 11, 0, 0.3),
    ]
    assert [(f["perturbation"], f["severity"], f["sample_idx"], f["pred_label"])
            for f in got] == [e[:4] for e in expected]
    np.testing.assert_allclose([f["confidence"] for f in got], [e[4] for e in expected],
                               rtol=1e-6)
    first = got[0]
    assert first == {"sample_idx": 11, "true_label": 1, "pred_label": 2, "true_class": "one",
                     "pred_class": "two", "confidence": pytest.approx(0.95),
                     "perturbation": "a", "severity": 1.0, "clean_pred_label": 0,
                     "clean_pred_class": "zero", "clean_confidence": pytest.approx(0.5)}
    assert [f["sample_idx"] for f in worst_failures(hand_built(), k=2)] == [11, 10]
    assert worst_failures(hand_built(), k=0) == []


def test_worst_failures_refuses_bad_input():
    with pytest.raises(InputError, match="non-negative integer"):
        worst_failures(hand_built(), k=-1)
    with pytest.raises(InputError, match="missing confidence"):
        worst_failures(hand_built().drop_vars("confidence"))
    with pytest.raises(InputError, match="xarray Dataset"):
        worst_failures({"pred": 1})


def test_worst_failures_of_a_real_sweep_match_a_brute_force_scan(vision):
    _, ds, _ = vision
    got = worst_failures(ds, k=20)
    pred, conf, label = ds.pred.values, ds.confidence.values, ds.label.values
    cells = [(-float(conf[p, s, n]), p, s, n) for p in range(pred.shape[0])
             for s in range(1, pred.shape[1]) for n in range(pred.shape[2])
             if pred[p, s, n] != label[n]]
    want = sorted(cells)[:20]
    assert len(got) == 20
    assert [(f["perturbation"], f["severity"], f["sample_idx"]) for f in got] == [
        (VISION_PERTURBATIONS[p], SEVERITIES[s], 100 + n) for _, p, s, n in want]
    for f in got:
        assert f["true_class"] == f"digit {f['true_label']}" != f["pred_class"]
        assert f["severity"] > 0


# -- ranking --------------------------------------------------------------------------------


def test_ranking_puts_the_most_damaging_perturbation_first(vision):
    _, ds, _ = vision
    rows = ranking(summaries(ds))
    auc = [r["auc"] for r in rows]
    assert auc == sorted(auc) and [r["rank"] for r in rows] == [1, 2, 3]
    for r in rows:
        acc = ds.accuracy.sel(perturbation=r["perturbation"]).values
        # The trapezoid rule on severities 0, 0.5 and 1, over a range of width 1.
        assert r["auc"] == pytest.approx((acc[0] + 2 * acc[1] + acc[2]) / 4)
        assert r["slope"] == pytest.approx(float(ds.degradation_slope.sel(
            perturbation=r["perturbation"])))
        broken = [s for s, a in zip(SEVERITIES, acc, strict=True) if s > 0 and a < acc[0] - 0.10]
        assert r["breaks_at"] == (broken[0] if broken else None)
        gap = (ds.avg_confidence - ds.accuracy).sel(perturbation=r["perturbation"]).values
        assert r["overconfidence"] == pytest.approx(gap.max())


# -- exports --------------------------------------------------------------------------------


def test_exports_hold_the_datasets_numbers(vision, tmp_path):
    _, ds, _ = vision
    paths = write_exports(ds, tmp_path / "out")
    assert [p.name for p in paths] == ["stress_results.json", "stress_results.csv",
                                       "accuracy_curve.png", "confidence_drift.png",
                                       "flip_rate.png", "worst_failures.json"]
    doc = json.loads((tmp_path / "out" / "stress_results.json").read_text())
    assert set(doc) == {"provenance", "metrics", "clean_accuracy", "results", "ranking"}
    prov = doc["provenance"]
    assert prov["perturbations"] == VISION_PERTURBATIONS and prov["severities"] == SEVERITIES
    assert prov["seed"] == 42 and prov["n_samples"] == 40 and prov["domain"] == "vision"
    assert prov["classes"] == [f"digit {k}" for k in range(10)]
    assert prov["fingerprint"] == ds.attrs["fingerprint"] and prov["versions"]["failfirst"]
    assert doc["clean_accuracy"] == pytest.approx(float(ds.accuracy[0, 0]))
    assert list(doc["results"]) == VISION_PERTURBATIONS
    for p in VISION_PERTURBATIONS:
        entry = doc["results"][p]
        assert entry["degradation_slope"] == pytest.approx(float(ds.degradation_slope.sel(
            perturbation=p)))
        assert [row["severity"] for row in entry["severities"]] == SEVERITIES
        for row in entry["severities"]:
            for metric in SUMMARY_METRICS:
                assert row[metric] == pytest.approx(float(ds[metric].sel(
                    perturbation=p, severity=row["severity"])))

    with open(tmp_path / "out" / "stress_results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["perturbation", "severity", *SUMMARY_METRICS]
    assert len(rows) == len(VISION_PERTURBATIONS) * len(SEVERITIES)
    for row in rows:
        cell = ds.sel(perturbation=row["perturbation"], severity=float(row["severity"]))
        for metric in SUMMARY_METRICS:
            assert float(row[metric]) == pytest.approx(float(cell[metric]), rel=1e-5, abs=1e-9)

    for name in ("accuracy_curve.png", "confidence_drift.png", "flip_rate.png"):
        with Image.open(tmp_path / "out" / name) as image:
            image.verify()
        with Image.open(tmp_path / "out" / name) as image:
            assert image.format == "PNG" and image.width >= 600 and image.height >= 300
            lo, hi = image.convert("L").getextrema()
            assert hi - lo > 100  # drawn, not blank

    failures = json.loads((tmp_path / "out" / "worst_failures.json").read_text())
    assert failures == json.loads(json.dumps(worst_failures(ds, 20)))
    assert len(failures) == 20
    assert {"sample_idx", "true_label", "pred_label", "confidence", "perturbation",
            "severity"} <= set(failures[0])


# -- the site -------------------------------------------------------------------------------


class Page(HTMLParser):
    """Every tag with its attributes, the text, and the contents of each script element."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.scripts: list[tuple[dict, str]] = []
        self._script: dict | None = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._script = dict(attrs)
            self.scripts.append((self._script, ""))

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        if tag == "script":
            self._script = None

    def handle_data(self, data):
        if self._script is not None:
            attrs, text = self.scripts[-1]
            self.scripts[-1] = (attrs, text + data)
        else:
            self.text.append(data)


def pages(site: Path) -> dict[str, Page]:
    return {p.name: Page(p.read_text(encoding="utf-8")) for p in sorted(site.glob("*.html"))}


def specs(page: Page) -> list[dict]:
    return [json.loads(text) for attrs, text in page.scripts
            if attrs.get("type") == "application/json"]


EXPECTED_CHARTS = {"index.html": 1, "curves.html": 6, "calibration.html": 2, "failures.html": 0}


@pytest.mark.parametrize("run", ["vision", "timeseries"])
def test_site_has_every_page_with_its_charts_and_pictures(run, request):
    path, ds, site = request.getfixturevalue(run)
    names = [str(p) for p in ds.perturbation.values]
    found = pages(site)
    expected = {**EXPECTED_CHARTS, **{f"perturbation-{n}.html": 2 for n in names}}
    assert set(found) == set(expected)
    for name, page in found.items():
        assert len(specs(page)) == expected[name], name
        charts_divs = [a for t, a in page.tags if "data-spec" in a]
        assert len(charts_divs) == expected[name]
        hrefs = [a["href"] for t, a in page.tags if t == "a" and "href" in a]
        for href in hrefs:  # every link inside the site resolves
            assert (site / href.split("#")[0]).is_file(), href
    failures = found["failures.html"]
    cards = [a for t, a in failures.tags if t == "article"]
    assert {c["data-perturbation"] for c in cards} <= set(names)
    assert sum(c["data-overall"] == "yes" for c in cards) == 20
    pictures = [a["src"] for t, a in failures.tags if t == "img"]
    per_card = 3 if run == "vision" else 1  # clean, perturbed, difference / one series plot
    assert len(pictures) == per_card * len(cards)
    for name in names:
        page = found[f"perturbation-{name}.html"]
        strip = [a for t, a in page.tags if t == "img" and "at severity" in a.get("alt", "")]
        assert len(strip) == len(SEVERITIES)
    for png in (site / "assets" / "thumbs").glob("*.png"):
        with Image.open(png) as image:
            image.verify()
    text = " ".join(found["index.html"].text)
    assert "sine waves" in text if run == "timeseries" else "scikit-learn digits" in text


def test_vision_thumbnails_show_the_input_the_model_saw(vision):
    path, ds, site = vision
    failure = worst_failures(ds, 1)[0]
    x = store.open_inputs(path)["input"].sel(sample=[failure["sample_idx"]]).values
    perturbed = failfirst.perturbations.get(failure["perturbation"])(
        x, failure["severity"], seed=42, sample_ids=[failure["sample_idx"]])
    level = SEVERITIES.index(failure["severity"])
    with Image.open(site / "assets" / "thumbs" /
                    f"{failure['perturbation']}-s{level}-{failure['sample_idx']}.png") as image:
        shown = np.asarray(image, np.float64) / 255
    # 8x8 digits are enlarged 4x with nearest neighbour: every 4x4 block is one input pixel.
    assert shown.shape == (32, 32)
    np.testing.assert_allclose(shown[::4, ::4], perturbed[0, 0], atol=1 / 255)
    assert (shown.reshape(8, 4, 8, 4) == shown[::4, ::4][:, None, :, None]).all()


def test_thumbnails_of_odd_channel_counts_show_the_first_channel():
    rng = np.random.default_rng(0)
    two = rng.random((2, 40, 40))
    image = thumbnails.image_thumbnail(two)
    assert image.mode == "L" and image.size == (40, 40)
    np.testing.assert_allclose(np.asarray(image) / 255, two[0], atol=1 / 255)
    assert thumbnails.image_thumbnail(rng.random((3, 8, 8))).mode == "RGB"
    assert thumbnails.image_thumbnail(rng.random((1, 300, 150))).size == (64, 128)


def test_every_chart_gives_each_perturbation_one_colour(vision):
    _, ds, site = vision
    names = [str(p) for p in ds.perturbation.values]
    style = charts.perturbation_style(names)

    def colour_scales(node):
        if isinstance(node, dict):
            color = node.get("color")
            if isinstance(color, dict) and color.get("field") == "perturbation":
                yield color["scale"]
            for value in node.values():
                yield from colour_scales(value)
        elif isinstance(node, list):
            for value in node:
                yield from colour_scales(value)

    seen = 0
    for page in pages(site).values():
        for spec in specs(page):
            for scale in colour_scales(spec):
                assert scale["domain"] == names
                assert scale["range"] == [style[n]["color"] for n in names]
                seen += 1
    assert seen >= 10
    assert len({(s["color"], tuple(s["dash"])) for s in
                charts.perturbation_style([f"p{i}" for i in range(25)]).values()}) == 25


def test_every_kind_of_chart_is_valid_vega_lite(vision):
    _, ds, _ = vision
    summary = summaries(ds)
    frame = summary_frame(summary)
    frame["overconfidence"] = frame["avg_confidence"] - frame["accuracy"]
    names = [str(p) for p in ds.perturbation.values]
    levels = reliability_levels(ds.severity.values)
    built = [charts.metric_curves(frame, "accuracy", names),
             charts.metric_curves(frame, "overconfidence", names, width=400),
             charts.metric_curves(frame, "flip_rate", names, width=400, interactive=False),
             charts.perturbation_curves(frame, names, ["accuracy", "overconfidence"]),
             charts.accuracy_heatmap(frame, names[::-1]),
             charts.reliability_chart(reliability_frame(ds, levels), names)]
    for chart in built:
        charts.to_spec(chart, validate=True)  # raises on a spec Vega-Lite would reject
    curve = json.dumps(charts.to_spec(built[0]))
    assert '"tooltip"' in curve and '"bind": "legend"' in curve  # hover values, legend isolates
    spec = charts.to_spec(built[3])
    focused = charts.focus_spec(spec, names[1])
    assert [p["value"] for p in focused["params"] if p["name"] == charts.FOCUS] == [names[1]]
    assert [p["value"] for p in spec["params"] if p["name"] == charts.FOCUS] == [names[0]]


def test_site_works_offline_with_the_vega_scripts_written_once(vision, timeseries):
    for _, _, site in (vision, timeseries):
        bundle = site / "assets" / "vega-bundle.js"
        assert bundle.stat().st_size > 100_000
        assert "vegaEmbed" in bundle.read_text()
        for name, page in pages(site).items():
            for tag, attrs in page.tags:
                for attr in ("src", "href"):
                    ref = attrs.get(attr)
                    if ref is None or (tag == "a" and ref.startswith("#")):
                        continue
                    assert not re.match(r"^[a-z][a-z0-9+.-]*:|^//", ref), (name, tag, ref)
                    if tag in ("script", "link", "img"):
                        assert (site / ref).is_file(), (name, ref)
            scripts = [a.get("src") for a, _ in page.scripts if a.get("src")]
            assert scripts in ([], ["assets/site.js"], ["assets/vega-bundle.js", "assets/site.js"])
            inline = [text for a, text in page.scripts if not a.get("src")]
            assert all(a.get("type") == "application/json" for a, _ in page.scripts
                       if not a.get("src"))
            assert sum(map(len, inline)) < 200_000  # specs only, the libraries are not inlined
        for path in site.rglob("*"):
            if path.suffix in (".html", ".css") or path.name == "site.js":
                assert not re.search(r"https?://", path.read_text()), path
        for page in pages(site).values():
            for spec in specs(page):
                assert "$schema" not in spec


def test_site_size_is_bounded_by_aggregates_not_samples(tmp_path):
    small, large = tmp_path / "small.zarr", tmp_path / "large.zarr"
    vision_run(small, n=60, perturbations=["gaussian_noise"])
    vision_run(large, n=600, perturbations=["gaussian_noise"])

    def size(site):
        return sum(p.stat().st_size for p in site.rglob("*")
                   if p.is_file() and p.name != "vega-bundle.js")

    a = size(render_site(small, tmp_path / "a").parent)
    b = size(render_site(large, tmp_path / "b").parent)
    assert b < 1.3 * a and b < 600_000


def test_user_strings_are_shown_as_text_never_as_markup(tmp_path):
    weird = XSS_TEXT + "<b>bold</b>"

    @register("vision", name=weird, description="A " + XSS_TEXT + " perturbation.")
    def invert(x, severity, rng):
        return x + severity * (1 - 2 * x)

    try:
        path = tmp_path / "results.zarr"
        classes = [XSS_CLASS, *[f"digit {k}" for k in range(1, 10)]]
        vision_run(path, n=30, classes=classes, perturbations=["gaussian_noise", weird])
        store.update_attrs(path, model="model file evil" + XSS_TEXT + ".py",
                           data="data " + XSS_TEXT)
        store.consolidate(path)
        site = render_site(path, tmp_path / "site").parent
    finally:
        perturbation_registry._REGISTRY.pop(weird, None)  # leave the registry as it was

    found = pages(site)
    assert len(found) == 4 + 2  # the weird name still gets its own (safely named) page
    for name, page in found.items():
        for tag, attrs in page.tags:
            assert not any(a.startswith("on") for a in attrs), (name, tag, attrs)
            assert tag not in ("b",) and attrs.get("src") != "x", (name, tag, attrs)
        for attrs, text in page.scripts:
            assert attrs.get("src") or attrs.get("type") == "application/json"
            assert "<" not in text  # tojson escapes <, so no </script> can close it early
            if not attrs.get("src"):
                json.loads(text)
    text = " ".join(found["index.html"].text)
    assert XSS_CLASS in text and "model file evil" + XSS_TEXT + ".py" in text
    assert "data " + XSS_TEXT in text and weird in text
    assert XSS_CLASS in " ".join(found["failures.html"].text)
    assert any(a.get("data-perturbation") == weird for t, a in found["failures.html"].tags)
    assert all(re.fullmatch(r"[a-z0-9_.-]+", p.name) for p in site.rglob("*"))


def test_rerendering_removes_only_its_own_stale_files(vision, tmp_path):
    path, _, _ = vision
    site = tmp_path / "site"
    site.mkdir()
    (site / "notes.txt").write_text("mine")
    render_site(path, site)
    stale = site / "assets" / "thumbs" / "gaussian_noise-s1-999.png"
    stale.write_bytes(b"old")
    manifest = json.loads((site / ".failfirst-site.json").read_text())
    manifest["files"].append("assets/thumbs/gaussian_noise-s1-999.png")
    manifest["files"].append("../outside.txt")
    (tmp_path / "outside.txt").write_text("keep")
    (site / ".failfirst-site.json").write_text(json.dumps(manifest))
    render_site(path, site)
    assert not stale.exists()
    assert (site / "notes.txt").read_text() == "mine"
    assert (tmp_path / "outside.txt").read_text() == "keep"


def test_render_site_refuses_what_is_not_a_run_store(tmp_path):
    with pytest.raises(StoreError, match="no run store"):
        render_site(tmp_path / "missing.zarr", tmp_path / "site")


def test_render_site_is_the_public_api():
    assert failfirst.render_site is render_site


def test_the_wheel_ships_the_templates(tmp_path):
    repo = Path(__file__).resolve().parents[1]
    command = [sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path / "dist")]
    if importlib.util.find_spec("hatchling") is not None:
        command.append("--no-isolation")  # offline when the backend is already installed
    subprocess.run([*command, str(repo)], check=True, capture_output=True, timeout=240)
    (wheel,) = (tmp_path / "dist").glob("failfirst-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "installed")
    templates = {p.relative_to(repo / "templates").as_posix()
                 for p in (repo / "templates").rglob("*") if p.is_file()}
    assert {"base.html", "index.html", "failures.html", "static/site.js",
            "static/style.css"} <= templates
    assert {f"failfirst/templates/{t}" for t in templates} <= names
    # The installed package finds its own copy, not the checkout's.
    found = subprocess.run(
        [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
         "from failfirst.report.site import templates_dir; print(templates_dir())",
         str(tmp_path / "installed")], check=True, capture_output=True, text=True, timeout=120)
    assert Path(found.stdout.strip()) == tmp_path / "installed" / "failfirst" / "templates"
