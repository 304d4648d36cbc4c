"""The command line, driven through the installed console script as a user would."""

from __future__ import annotations

import csv
import json
import os
import pickle
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from failfirst import store
from tests.conftest import LINEAR_MODEL

FAILFIRST = shutil.which("failfirst", path=str(Path(sys.executable).parent)) or "failfirst"
SEED_FILES = ["stress_results.json", "stress_results.csv", "accuracy_curve.png",
              "confidence_drift.png", "flip_rate.png", "worst_failures.json"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One model cache for the module, so demo models train once."""
    return tmp_path_factory.mktemp("cache")


def failfirst(*args, cwd, cache, timeout=600, env=None):
    environment = {**os.environ, "FAILFIRST_CACHE": str(cache), **(env or {})}
    return subprocess.run([FAILFIRST, *map(str, args)], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=timeout)


def check_outputs(out: Path, n_perturbations: int, n_severities: int, classes=None):
    """Every seed output file exists and holds what it should, consistent with the store."""
    ds = store.open_results(out / "results.zarr")
    for name in SEED_FILES:
        assert (out / name).stat().st_size > 0, name
    log = json.loads((out / "stress_results.json").read_text())
    text = json.dumps(log)
    for name in ds.perturbation.values:
        assert str(name) in text
    rows = list(csv.DictReader((out / "stress_results.csv").open()))
    assert len(rows) == n_perturbations * n_severities
    assert {"perturbation", "severity", "accuracy", "avg_confidence", "flip_rate", "ece"} <= set(rows[0])
    for row in rows:
        expected = ds.accuracy.sel(perturbation=row["perturbation"]).sel(
            severity=float(row["severity"]), method="nearest", tolerance=1e-6)
        assert float(row["accuracy"]) == pytest.approx(float(expected), abs=1e-6)
    for png in ("accuracy_curve.png", "confidence_drift.png", "flip_rate.png"):
        with Image.open(out / png) as image:
            assert image.format == "PNG" and image.width > 200 and image.height > 100
    failures = json.loads((out / "worst_failures.json").read_text())
    assert 0 < len(failures) <= 20
    confidences = [f["confidence"] for f in failures]
    assert confidences == sorted(confidences, reverse=True)
    for f in failures:
        assert {"sample_idx", "true_label", "pred_label", "confidence", "perturbation",
                "severity"} <= set(f)
        assert f["true_label"] != f["pred_label"]
        cell = ds.sel(perturbation=f["perturbation"], sample=f["sample_idx"]).sel(
            severity=f["severity"], method="nearest", tolerance=1e-6)
        assert int(cell.pred) == f["pred_label"] and int(cell.label) == f["true_label"]
        assert float(cell.confidence) == pytest.approx(f["confidence"], abs=1e-6)
    assert (out / "site" / "index.html").exists()
    if classes:
        assert list(ds.attrs["classes"]) == list(classes)
    return ds


def test_run_with_no_arguments_is_a_meaningful_demo(tmp_path, cache):
    result = failfirst("run", cwd=tmp_path, cache=cache)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "results" / "vision"
    ds = check_outputs(out, n_perturbations=ds_size(out, "perturbation"), n_severities=11)
    assert ds.sizes["sample"] == 500 and ds.sizes["severity"] == 11
    assert float(ds.accuracy.isel(severity=0).min()) > 0.9  # a model worth stress-testing
    assert float(ds.accuracy.sel(perturbation="random_occlusion").isel(severity=-1)) < 0.3
    assert "dashboard http://127.0.0.1:" in result.stdout
    assert "eval/s" in result.stderr  # the tqdm bar over the grid
    for column in ("perturbation", "clean acc", "harshest acc", "slope", "worst ECE"):
        assert column in result.stdout
    assert "site/index.html" in result.stdout and "failfirst serve" in result.stdout


def ds_size(out: Path, dim: str) -> int:
    return store.open_results(out / "results.zarr").sizes[dim]


def test_timeseries_demo_on_synthetic_series(tmp_path, cache):
    result = failfirst("run", "--model", "timeseries", "--dataset", "synthetic",
                       "--num-samples", "200", "--severities", "5", "--workers", "0",
                       "--perturbations", "ts_gaussian_noise,temporal_dropout,mean_shift,variance_shift",
                       cwd=tmp_path, cache=cache)
    assert result.returncode == 0, result.stderr
    ds = check_outputs(tmp_path / "results" / "timeseries", 4, 5)
    assert float(ds.accuracy.isel(severity=0).min()) > 0.9
    assert ds.attrs["domain"] == "timeseries"


def test_python_model_file_with_npz_data_and_family_names(tmp_path, cache):
    (tmp_path / "my_model.py").write_text(LINEAR_MODEL)
    rng = np.random.default_rng(0)
    X = rng.random((40, 3, 8, 8), dtype=np.float32)
    np.savez(tmp_path / "data.npz", X=X, y=rng.integers(0, 4, 40),
             classes=np.array(["cat", "dog", "cow", "<b>owl</b>"]))
    result = failfirst("run", "--model", "my_model.py", "--dataset", "data.npz",
                       "--severities", "0,0.5,1", "--workers", "0", "--perturbations", "noise,blur",
                       cwd=tmp_path, cache=cache)
    assert result.returncode == 0, result.stderr
    ds = check_outputs(tmp_path / "results" / "my_model", ds_size(tmp_path / "results" / "my_model", "perturbation"), 3,
                       classes=["cat", "dog", "cow", "<b>owl</b>"])
    assert "gaussian_noise" in ds.perturbation.values and "blur" in ds.perturbation.values
    assert "random_occlusion" not in ds.perturbation.values


def test_torchscript_model_with_the_old_npy_format_needs_allow_pickle(tmp_path, cache):
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 3))
    torch.jit.save(torch.jit.script(net), str(tmp_path / "model.pt"))
    rng = np.random.default_rng(1)
    np.save(tmp_path / "data.npy", {"X": rng.random((30, 3, 4, 4), dtype=np.float32),
                                    "y": rng.integers(0, 3, 30)})
    args = ["run", "--model", "model.pt", "--dataset", "data.npy", "--severities", "3",
            "--workers", "0", "--perturbations", "gaussian_noise"]
    refused = failfirst(*args, cwd=tmp_path, cache=cache)
    assert refused.returncode == 2
    assert "--allow-pickle" in refused.stderr and "Traceback" not in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "results").exists()
    result = failfirst(*args, "--allow-pickle", cwd=tmp_path, cache=cache)
    assert result.returncode == 0, result.stderr
    check_outputs(tmp_path / "results" / "model", 1, 3)


def test_exported_program_with_a_fixed_batch_runs_a_sweep(tmp_path, cache):
    # torch.export is TorchScript's successor; a program exported at batch 4 still serves
    # the sweep's batches of 16 (in chunks) and names the shape it wants when the data differ.
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 3)).eval()
    torch.export.save(torch.export.export(net, (torch.zeros(4, 3, 4, 4),)), tmp_path / "model.pt2")
    rng = np.random.default_rng(2)
    np.savez(tmp_path / "data.npz", X=rng.random((30, 3, 4, 4), dtype=np.float32), y=rng.integers(0, 3, 30))
    np.savez(tmp_path / "wide.npz", X=rng.random((30, 3, 5, 5), dtype=np.float32), y=rng.integers(0, 3, 30))
    args = ["run", "--model", "model.pt2", "--severities", "3", "--workers", "0", "--batch-size", "16",
            "--perturbations", "gaussian_noise"]
    refused = failfirst(*args, "--dataset", "wide.npz", cwd=tmp_path, cache=cache)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "exported for inputs of shape (4, 3, 4, 4); got (2, 3, 5, 5)" in refused.stderr
    result = failfirst(*args, "--dataset", "data.npz", cwd=tmp_path, cache=cache)
    assert result.returncode == 0, result.stderr
    check_outputs(tmp_path / "results" / "model", 1, 3)


def write_fake_cifar(root: Path, n_train=60, n_test=40):
    """A small CIFAR-10 folder in the official python layout."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def batch(n, offset):
        labels = [int(v) for v in rng.integers(0, 10, n)]
        # class-dependent brightness so a model can learn something
        data = (rng.random((n, 3072)) * 128 + np.array(labels)[:, None] * 12).astype(np.uint8)
        return {b"data": data, b"labels": labels, b"batch_label": b"batch",
                b"filenames": [f"img{offset + i}.png".encode() for i in range(n)]}

    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch(n_train // 5, i * 1000)))
    (folder / "test_batch").write_bytes(pickle.dumps(batch(n_test, 0)))
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse",
             b"ship", b"truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}))


def test_cifar10_from_a_folder_in_the_official_layout(tmp_path, cache):
    missing = failfirst("run", "--dataset", "cifar10", "--data-dir", tmp_path / "nowhere",
                        cwd=tmp_path, cache=cache)
    assert missing.returncode == 2 and "cifar-10-batches-py" in missing.stderr
    assert "cs.toronto.edu" in missing.stderr and len(missing.stderr.strip().splitlines()) == 1
    write_fake_cifar(tmp_path / "data")
    result = failfirst("run", "--dataset", "cifar10", "--data-dir", tmp_path / "data",
                       "--severities", "3", "--workers", "0", "--no-progress",
                       "--perturbations", "gaussian_noise,blur", cwd=tmp_path, cache=cache)
    assert result.returncode == 0, result.stderr
    ds = check_outputs(tmp_path / "results" / "vision", 2, 3)
    assert ds.attrs["classes"][0] == "airplane" and ds.sizes["sample"] == 40


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, cache):
    """A finished small run to re-render, re-run and serve."""
    root = tmp_path_factory.mktemp("small")
    result = failfirst("run", "--num-samples", "50", "--severities", "3", "--workers", "0",
                       "--perturbations", "gaussian_noise,random_occlusion", cwd=root, cache=cache)
    assert result.returncode == 0, result.stderr
    return root


def test_report_rerenders_from_the_store_alone(small_run, tmp_path, cache):
    run_dir = tmp_path / "copy"
    shutil.copytree(small_run / "results" / "vision", run_dir)
    for name in SEED_FILES:
        (run_dir / name).unlink()
    result = failfirst("report", run_dir, "-o", tmp_path / "site", cwd=tmp_path,
                       cache=tmp_path / "empty-cache")  # no model anywhere
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "site" / "index.html").exists()
    check_outputs(run_dir, 2, 3)
    missing = failfirst("report", tmp_path / "nothing", cwd=tmp_path, cache=cache)
    assert missing.returncode == 2 and "no run store" in missing.stderr


def test_serve_serves_the_site_on_localhost(small_run, cache):
    proc = subprocess.Popen([FAILFIRST, "serve", small_run / "results" / "vision" / "site",
                             "--port", "0"], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        url = line.split(" at ")[1].split()[0]
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url + "index.html", timeout=10) as response:
            assert response.status == 200 and b"<html" in response.read().lower()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.parametrize("case", ["missing model", "nan", "labels", "unknown perturbation",
                                  "different run", "bad severities"])
def test_bad_input_is_refused_before_the_sweep_in_one_line(case, small_run, tmp_path, cache):
    rng = np.random.default_rng(0)
    (tmp_path / "m.py").write_text(LINEAR_MODEL)
    X = rng.random((20, 3, 8, 8), dtype=np.float32)
    args = ["run", "--workers", "0", "--severities", "3"]
    expect = {"missing model": "not found", "nan": "NaN", "labels": "0..3",
              "unknown perturbation": "expected one of", "different run": "already holds a run",
              "bad severities": "severity"}[case]
    if case == "missing model":
        args += ["--model", "absent.pt", "--dataset", "digits"]
    elif case in ("nan", "labels"):
        y = rng.integers(0, 4, 20)
        if case == "nan":
            X[3, 0, 2, 2] = np.nan
        else:
            y[5] = 7
        np.savez(tmp_path / "d.npz", X=X, y=y)
        args += ["--model", "m.py", "--dataset", "d.npz"]
    elif case == "unknown perturbation":
        args += ["--perturbations", "gausian_noise"]
    elif case == "different run":
        shutil.copytree(small_run / "results", tmp_path / "results")
        args += ["--num-samples", "50", "--seed", "7", "--perturbations",
                 "gaussian_noise,random_occlusion"]
    else:
        args = ["run", "--severities", "0,2"]
    result = failfirst(*args, cwd=tmp_path, cache=cache)
    assert result.returncode == 2, result.stderr
    lines = [l for l in result.stderr.strip().splitlines() if not l.startswith("failfirst: note:")]
    assert len(lines) == 1 and lines[0].startswith("failfirst: error:"), result.stderr
    assert expect in lines[0] and "Traceback" not in result.stderr
    if case != "different run":
        assert not (tmp_path / "results").exists()


def test_list_shows_every_perturbation_with_family_datasets_and_metrics(tmp_path, cache):
    from failfirst.perturbations import get, names

    result = failfirst("list", cwd=tmp_path, cache=cache)
    assert result.returncode == 0
    for name in names():
        line = next(l for l in result.stdout.splitlines() if l.split()[:1] == [name])
        assert get(name).family in line
    for word in ("digits", "cifar10", "synthetic", ".npz", "ece", "flip_rate"):
        assert word in result.stdout


def test_python_dash_m_and_usage_errors(tmp_path, cache):
    result = subprocess.run([sys.executable, "-m", "failfirst", "--version"],
                            capture_output=True, text=True)
    assert result.returncode == 0 and "failfirst" in result.stdout
    bad = failfirst("run", "--layout", "CHWN", cwd=tmp_path, cache=cache)
    assert bad.returncode == 2


def test_the_custom_model_template_is_a_working_model(tmp_path, cache):
    template = Path(__file__).resolve().parents[1] / "examples" / "custom_model_template.py"
    result = failfirst("run", "--model", template, "--dataset", "digits", "--num-samples", "100",
                       "--severities", "3", "--workers", "0", "--perturbations", "blur",
                       cwd=tmp_path, cache=cache)
    assert result.returncode == 0, result.stderr
    ds = store.open_results(tmp_path / "results" / "custom_model_template" / "results.zarr")
    assert float(ds.accuracy.sel(perturbation="blur").isel(severity=0)) > 0.85


def test_run_on_an_existing_dask_cluster(tmp_path, cache):
    from tests.test_faults import start_dask_cluster, stop

    (tmp_path / "m.py").write_text(LINEAR_MODEL)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", X=rng.random((30, 3, 8, 8), dtype=np.float32),
             y=rng.integers(0, 4, 30))
    address, processes, _ = start_dask_cluster(tmp_path)
    try:
        result = failfirst("run", "--model", "m.py", "--dataset", "d.npz", "--scheduler", address,
                           "--severities", "3", "--batch-size", "8", "--perturbations",
                           "gaussian_noise,blur", cwd=tmp_path, cache=cache)
    finally:
        stop(processes)
    assert result.returncode == 0, result.stderr
    assert f"using the cluster at {address}" in result.stdout
    check_outputs(tmp_path / "results" / "m", 2, 3)
    unreachable = failfirst("run", "--scheduler", "tcp://127.0.0.1:1", cwd=tmp_path, cache=cache)
    assert unreachable.returncode == 2 and "could not reach" in unreachable.stderr
