"""The report: worst failures, the seed's export files and the static site (files, safety, size)."""

from __future__ import annotations

import copy
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
    """The chart specs a page embeds, as written (data and shared specs named, not held)."""
    return [json.loads(text) for attrs, text in page.scripts
            if attrs.get("type") == "application/json"]


def report_data(site: Path) -> dict:
    """assets/report-data.js as the object it defines: {"datasets": ..., "specs": ...}."""
    text = (site / "assets" / "report-data.js").read_text(encoding="utf-8")
    match = re.fullmatch(r"/\*.*?\*/\nwindow\.FAILFIRST_REPORT = (.*);\n", text, re.DOTALL)
    assert match, text[:200]
    return json.loads(match.group(1))


def data_names(node) -> set[str]:
    if isinstance(node, list):
        return set().union(*map(data_names, node)) if node else set()
    if isinstance(node, dict):
        names = {node["data"]["name"]} if isinstance(node.get("data"), dict) and \
            "name" in node["data"] else set()
        return names.union(*map(data_names, node.values()))
    return set()


def resolve(spec: dict, shared: dict) -> dict:
    """A page's chart as the whole spec site.js draws: the shared spec with the page's
    parameter values, the datasets it names as rows."""
    if "shared" in spec:
        values = spec["params"]
        spec = copy.deepcopy(shared["specs"][spec["shared"]])
        for param in spec.get("params", []):
            param["value"] = values.get(param["name"], param.get("value"))
    spec = copy.deepcopy(spec)
    names = data_names(spec)
    if names:
        spec["datasets"] = {}
        for name in names:
            table = shared["datasets"][name]
            spec["datasets"][name] = [{k: v[i] for k, v in table["columns"].items()}
                                      for i in range(table["length"])]
    return spec


def resolved_specs(site: Path, page: Page) -> list[dict]:
    shared = report_data(site)
    return [resolve(spec, shared) for spec in specs(page)]


def frame_pixels(site: Path, img: dict) -> np.ndarray:
    """The pixels an <img> of a thumbnail shows: its frame cut out of its sprite sheet.

    Read back from the tag as a browser would: the box has the frame's aspect ratio, the
    sheet is scaled to the box's height, and object-position x% puts the sheet's point at x%
    of (sheet width - frame width) at the box's left edge.
    """
    style = dict(part.split(":", 1) for part in img["style"].split(";"))
    aw, ah = map(int, style["aspect-ratio"].split("/"))
    x_percent = float(style["object-position"].split("%")[0])
    with Image.open(site / img["src"]) as sheet:
        pixels = np.asarray(sheet.convert("RGB" if sheet.mode == "P" else sheet.mode))
    height = pixels.shape[0]
    width = round(height * aw / ah)
    x0 = x_percent / 100 * (pixels.shape[1] - width)
    assert abs(x0 - round(x0)) < 0.01  # a whole pixel (to the style's 4 decimals of a %)
    return pixels[:, round(x0):round(x0) + width]


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
    pictures = [a for t, a in failures.tags if t == "img"]
    per_card = 3 if run == "vision" else 1  # clean, perturbed, difference / one series plot
    assert len(pictures) == per_card * len(cards)
    for name in names:
        page = found[f"perturbation-{name}.html"]
        strip = [a for t, a in page.tags if t == "img" and "at severity" in a.get("alt", "")]
        assert len(strip) == len(SEVERITIES)
        pictures += strip
    for img in pictures:  # each shows one frame of a sheet, and that frame is not empty
        assert "frame" in img["class"].split() and (site / img["src"]).is_file()
        assert frame_pixels(site, img).size > 0
    sheets = sorted((site / "assets" / "thumbs").iterdir())
    # A handful of sheets, not a file per thumbnail: the clean inputs, then per perturbation
    # the perturbed inputs and the differences (vision) or the plots (series).
    assert len(sheets) == 1 + len(names) * (2 if run == "vision" else 1)
    for png in sheets:
        with Image.open(png) as image:
            image.verify()
    text = " ".join(found["index.html"].text)
    assert "sine waves" in text if run == "timeseries" else "scikit-learn digits" in text


def card_pictures(page: Page, sample: int) -> dict[str, dict]:
    """The <img> tags of the first card of `sample` on a page, by the start of their alt."""
    found, inside = {}, False
    for tag, attrs in page.tags:
        if tag == "article":
            if found:
                break
            inside = True
        if inside and tag == "img" and attrs["alt"].endswith(f"input of sample {sample}"):
            found[attrs["alt"].split(" ")[0]] = attrs
    return found


def test_vision_thumbnails_show_the_input_the_model_saw(vision):
    path, ds, site = vision
    failure = worst_failures(ds, 1)[0]  # the first card of the failures page
    sample = failure["sample_idx"]
    x = store.open_inputs(path)["input"].sel(sample=[sample]).values
    perturbed = failfirst.perturbations.get(failure["perturbation"])(
        x, failure["severity"], seed=42, sample_ids=[sample])
    shown = card_pictures(pages(site)["failures.html"], sample)
    assert set(shown) == {"clean", "perturbed", "difference"}
    # 8x8 digits stay 8x8 in the PNG (the page enlarges them, pixelated), exactly as swept.
    clean = frame_pixels(site, shown["clean"]) / 255
    seen = frame_pixels(site, shown["perturbed"]) / 255
    assert clean.shape == seen.shape == (8, 8)
    np.testing.assert_allclose(clean, x[0, 0], atol=1 / 255)
    np.testing.assert_allclose(seen, perturbed[0, 0], atol=1 / 255)
    diff = np.abs(perturbed[0, 0] - x[0, 0])
    np.testing.assert_allclose(frame_pixels(site, shown["difference"]) / 255, diff / diff.max(),
                               atol=1 / 255)
    # The strip's clean end is the same frame as the cards' clean pictures of that sample.
    page = pages(site)[f"perturbation-{failure['perturbation']}.html"]
    strip = [a for t, a in page.tags if t == "img" and "at severity" in a.get("alt", "")]
    strip_sample = int(strip[0]["alt"].split()[1])
    x = store.open_inputs(path)["input"].sel(sample=[strip_sample]).values
    np.testing.assert_allclose(frame_pixels(site, strip[0]) / 255, x[0, 0], atol=1 / 255)
    for img, severity in zip(strip[1:], SEVERITIES[1:], strict=True):
        want = failfirst.perturbations.get(failure["perturbation"])(
            x, severity, seed=42, sample_ids=[strip_sample])
        np.testing.assert_allclose(frame_pixels(site, img) / 255, want[0, 0], atol=1 / 255)


def test_thumbnails_of_odd_channel_counts_show_the_first_channel():
    rng = np.random.default_rng(0)
    two = rng.random((2, 40, 40))
    image = thumbnails.image_thumbnail(two)
    assert image.mode == "L" and image.size == (40, 40)
    np.testing.assert_allclose(np.asarray(image) / 255, two[0], atol=1 / 255)
    assert thumbnails.image_thumbnail(rng.random((3, 8, 8))).mode == "RGB"
    assert thumbnails.image_thumbnail(rng.random((3, 8, 8))).size == (8, 8)  # CSS enlarges it
    assert thumbnails.image_thumbnail(rng.random((1, 300, 150))).size == (64, 128)


def test_sprite_sheets_place_each_frame_where_its_style_says(tmp_path):
    rng = np.random.default_rng(0)
    sheets = thumbnails.SpriteSheets("assets/thumbs")
    pictures = [thumbnails.image_thumbnail(rng.random((3, 6, 4))) for _ in range(5)]
    frames = [sheets.add("a", p) for p in pictures]
    grey_picture = thumbnails.image_thumbnail(rng.random((1, 6, 4)))
    wide_picture = thumbnails.image_thumbnail(rng.random((3, 6, 9)))
    grey = sheets.add("a", grey_picture)  # another mode: another sheet
    wide = sheets.add("a", wide_picture)  # another size: another sheet
    other = sheets.add("b", pictures[0], key="first")
    assert sheets.add("b", pictures[1], key="first") is other  # a known key: stored once
    written = sheets.write(tmp_path)
    assert sorted(p.name for p in written) == ["a.0.png", "a.1.png", "a.2.png", "b.0.png"]
    assert {f.src for f in frames} == {"assets/thumbs/a.0.png"}
    assert len({grey.src, wide.src, frames[0].src}) == 3
    with Image.open(tmp_path / "assets/thumbs/a.0.png") as image:
        assert image.size == (5 * (4 + 2 * thumbnails.PAD), 6)
    for frame, picture in [*zip(frames, pictures, strict=True), (grey, grey_picture),
                           (wide, wide_picture), (other, pictures[0])]:
        shown = frame_pixels(tmp_path, {"src": frame.src, "style": frame.style})
        assert (shown == np.asarray(picture)).all()
        # The padding copies the frame's own edge columns, never a neighbour's pixels.
        with Image.open(tmp_path / frame.src) as image:
            sheet = np.asarray(image.convert("RGB" if image.mode == "P" else image.mode))
        x0 = frame.index * frame.sheet.cell
        assert (sheet[:, x0] == shown[:, 0]).all() and (sheet[:, x0 + frame.sheet.cell - 1] ==
                                                        shown[:, -1]).all()
    assert "aspect-ratio:4/6" in frames[0].style and "aspect-ratio:9/6" in wide.style


def test_sprite_sheets_start_a_new_sheet_past_the_width_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(thumbnails, "MAX_SHEET_WIDTH", 25)  # two 10-pixel cells a sheet
    sheets = thumbnails.SpriteSheets("t")
    frames = [sheets.add("g", Image.new("L", (8, 8), k)) for k in range(5)]
    assert [f.src for f in frames] == ["t/g.0.png"] * 2 + ["t/g.1.png"] * 2 + ["t/g.2.png"]
    sheets.write(tmp_path)
    for k, frame in enumerate(frames):
        assert (frame_pixels(tmp_path, {"src": frame.src, "style": frame.style}) == k).all()


def test_sheets_of_few_colours_are_palette_pngs_without_loss(tmp_path):
    plot = thumbnails.series_plot(np.sin(np.linspace(0, 6, 50))[:, None],
                                  np.cos(np.linspace(0, 6, 50))[:, None])
    path = thumbnails.save_png(plot, tmp_path / "plot.png")
    with Image.open(path) as image:
        assert image.mode == "P"
        assert (np.asarray(image.convert("RGB")) == np.asarray(plot)).all()
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 20, 3), np.uint8))
    with Image.open(thumbnails.save_png(noise, tmp_path / "noise.png")) as image:
        assert image.mode == "RGB" and (np.asarray(image) == np.asarray(noise)).all()


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
        for spec in resolved_specs(site, page):
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
            assert scripts in ([], ["assets/site.js"], ["assets/vega-bundle.js",
                                                        "assets/report-data.js", "assets/site.js"])
            inline = [text for a, text in page.scripts if not a.get("src")]
            assert all(a.get("type") == "application/json" for a, _ in page.scripts
                       if not a.get("src"))
            assert sum(map(len, inline)) < 20_000  # specs only: no libraries, no data
        for path in site.rglob("*"):
            if path.suffix in (".html", ".css") or path.name in ("site.js", "report-data.js"):
                assert not re.search(r"https?://", path.read_text()), path
        for page in pages(site).values():
            for spec in specs(page):
                assert "$schema" not in spec


def test_pages_name_their_data_and_shared_specs_which_are_written_once(vision):
    _, ds, site = vision
    names = [str(p) for p in ds.perturbation.values]
    shared = report_data(site)
    # One table of the summaries (curves, heatmap, focus curves), one of reliability bins and
    # Altair's one empty row (rules at a fixed value), whatever the number of pages and charts.
    lengths = sorted(table["length"] for table in shared["datasets"].values())
    assert len(lengths) == 3 and lengths[:2] == [1, len(names) * len(SEVERITIES)]
    assert set(shared["specs"]) == {"perturbation-curves", "perturbation-reliability"}
    used = set()
    for filename, page in pages(site).items():
        for spec in specs(page):
            assert "datasets" not in json.dumps(spec) and '"values"' not in json.dumps(spec)
            if filename.startswith("perturbation-"):  # a reference, not a spec
                assert spec == {"shared": spec["shared"],
                                "params": {"focus": filename[len("perturbation-"):-5]}}
                used.add(spec["shared"])
            used |= data_names(spec)
    assert used == set(shared["datasets"]) | set(shared["specs"])
    assert all(spec["params"] for spec in shared["specs"].values())


def test_pages_draw_exactly_the_charts_altair_makes(vision):
    _, ds, site = vision
    names = [str(p) for p in ds.perturbation.values]
    frame = summary_frame(summaries(ds))
    frame["overconfidence"] = frame["avg_confidence"] - frame["accuracy"]
    rel = reliability_frame(ds, reliability_levels(ds.severity.values))
    found = pages(site)
    order = [r["perturbation"] for r in ranking(summaries(ds))]
    pairs = [(found["index.html"], [charts.accuracy_heatmap(frame, order)]),
             (found["calibration.html"], [charts.reliability_chart(rel, names),
                                          charts.metric_curves(frame, "overconfidence", names)]),
             (found["curves.html"], [charts.metric_curves(frame, m, names)
                                     for m in SUMMARY_METRICS]),
             (found[f"perturbation-{names[2]}.html"], [
                 charts.perturbation_curves(frame, names, [*SUMMARY_METRICS[:4], "brier",
                                                           "overconfidence"], focus=names[2]),
                 charts.reliability_chart(rel, names, columns=1, size=220, focus=True)])]
    for page, built in pairs:
        got = resolved_specs(site, page)
        assert len(got) == len(built)
        for spec, chart in zip(got, built, strict=True):
            want = charts.to_spec(chart)
            want.pop("title", None)
            if "shared" in specs(page)[0]:  # the focus is the page's, not the default
                want = charts.focus_spec(want, names[2])
            assert json.loads(json.dumps(spec)) == json.loads(json.dumps(want))


def test_a_perturbation_page_draws_its_own_perturbation(vision):
    import vl_convert

    _, ds, site = vision
    names = [str(p) for p in ds.perturbation.values]
    page = pages(site)[f"perturbation-{names[1]}.html"]
    curves, reliability = resolved_specs(site, page)
    for spec in (curves, reliability):
        assert [p["value"] for p in spec["params"] if p["name"] == "focus"] == [names[1]]
    # Drawn by Vega itself: one reliability panel, headed by this perturbation.
    svg = vl_convert.vegalite_to_svg(reliability, vl_version=charts.vegalite_version())
    assert names[1] in svg and not any(n in svg for n in names if n != names[1])
    # The curves: this perturbation in its colour, the others in grey.
    svg = vl_convert.vegalite_to_svg(curves, vl_version=charts.vegalite_version()).lower()
    style = charts.perturbation_style(names)
    assert style[names[1]]["color"].lower() in svg
    assert not any(style[n]["color"].lower() in svg for n in names if n != names[1])


SIZE_PERTURBATIONS = ["gaussian_noise", "random_occlusion", "resolution_downsample", "shot_noise",
                      "impulse_noise", "speckle_noise", "brightness", "contrast", "saturate",
                      "pixelate"]
BYTES_PER_PERTURBATION = 120_000
"""The site's budget per perturbation, the Vega bundle (0.9 MB, once per site) aside.

From the goal: a CIFAR-size sweep (25 perturbations x 11 severities, 32x32 RGB) in at most
4 MB. Measured: 3.0 MB for 2000 smooth images (87 kB a perturbation); the case below, noise
images PNG cannot compress, 94 kB. 120 kB x 25 + 0.9 MB = 3.9 MB."""


def test_a_cifar_size_sweep_gives_a_site_of_a_few_megabytes(tmp_path):
    from tests.conftest import tiny_cnn

    rng = np.random.default_rng(0)
    X = rng.random((48, 3, 32, 32), dtype=np.float32)  # noise: the worst case for PNG
    path = tmp_path / "results.zarr"
    failfirst.stress_test(tiny_cnn(), X, rng.integers(0, 4, 48), store=path, severities=11,
                          batch_size=64, perturbations=SIZE_PERTURBATIONS)
    site = render_site(path, tmp_path / "site").parent
    files = [p for p in site.rglob("*") if p.is_file() and p.name != "vega-bundle.js"]
    assert sum(p.stat().st_size for p in files) / len(SIZE_PERTURBATIONS) < BYTES_PER_PERTURBATION
    assert len(files) < 50  # sprite sheets: not hundreds of 2 kB thumbnails
    # Small with everything in it: every strip, and full cards for every perturbation.
    found = pages(site)
    cards = [a for t, a in found["failures.html"].tags if t == "article"]
    for name in SIZE_PERTURBATIONS:
        assert sum(c["data-perturbation"] == name for c in cards) >= 8
        strip = [a for t, a in found[f"perturbation-{name}.html"].tags
                 if t == "img" and "at severity" in a.get("alt", "")]
        assert len(strip) == 11


def test_site_size_is_bounded_by_aggregates_not_samples(tmp_path):
    small, large = tmp_path / "small.zarr", tmp_path / "large.zarr"
    vision_run(small, n=60, perturbations=["gaussian_noise"])
    vision_run(large, n=600, perturbations=["gaussian_noise"])

    def size(site):
        return sum(p.stat().st_size for p in site.rglob("*")
                   if p.is_file() and p.name != "vega-bundle.js")

    a = size(render_site(small, tmp_path / "a").parent)
    b = size(render_site(large, tmp_path / "b").parent)
    assert b < 1.3 * a and b < 200_000  # measured: 109 kB for 60 samples and for 600


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
    shared = (site / "assets" / "report-data.js").read_text()
    assert "<" not in shared and weird in json.dumps(report_data(site))  # escaped, still there
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
