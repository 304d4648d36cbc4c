"""Tests for failfirst.demo: small models trained on built-in train splits, cached."""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import warnings
from typing import NamedTuple

import numpy as np
import pytest
import torch

from failfirst import demo
from failfirst.datasets import CIFAR_FOLDER, load_dataset
from failfirst.errors import InputError


class Trained(NamedTuple):
    model: torch.nn.Module
    path: object
    output: str
    rng_before: torch.Tensor
    rng_after: torch.Tensor
    threads: tuple[int, int]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("models")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FAILFIRST_CACHE", str(path))
        yield path


@pytest.fixture(
    scope="module", params=[("vision", "digits"), ("timeseries", "synthetic")], ids=["digits", "synthetic"]
)
def trained(request, cache_dir):
    """Each demo model trained once (progress on) into the module's cache via FAILFIRST_CACHE."""
    kind, dataset = request.param
    torch.manual_seed(1234)
    rng_before = torch.get_rng_state()
    threads_before = torch.get_num_threads()
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        model = demo.demo_model(kind, dataset)
    rng_after = torch.get_rng_state()
    path = demo.demo_model_path(kind, dataset)
    threads = (threads_before, torch.get_num_threads())
    return Trained(model, path, stderr.getvalue(), rng_before, rng_after, threads)


def _accuracy(model, dataset: str) -> float:
    test = load_dataset(dataset)
    with torch.no_grad():
        predictions = model(torch.from_numpy(test.X)).argmax(1).numpy()
    return float((predictions == test.y).mean())


def test_clean_test_accuracy_is_above_90_percent(trained):
    dataset = "digits" if "digits" in trained.path.name else "synthetic"
    assert _accuracy(trained.model, dataset) > 0.9


def test_training_shows_progress_and_leaves_global_state(trained, cache_dir):
    assert "training" in trained.output  # the tqdm bar
    assert torch.equal(trained.rng_before, trained.rng_after)
    assert trained.threads[0] == trained.threads[1]
    assert trained.path.parent == cache_dir
    assert not list(cache_dir.glob("*.tmp"))  # the atomic write left no temporary file


def test_second_call_loads_from_cache(trained):
    mtime = trained.path.stat().st_mtime_ns
    kind = "vision" if "vision" in trained.path.name else "timeseries"
    dataset = "digits" if "digits" in trained.path.name else "synthetic"
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        again = demo.demo_model(kind, dataset, progress=True)
    assert stderr.getvalue() == ""  # no training, so no bar
    assert trained.path.stat().st_mtime_ns == mtime
    x = torch.from_numpy(load_dataset(dataset, num_samples=16).X)
    with torch.no_grad():
        assert torch.equal(again(x), trained.model(x))


def test_cached_file_is_a_reusable_torchscript_model_in_eval_mode(trained):
    assert isinstance(trained.model, torch.jit.ScriptModule) and not trained.model.training
    extra = {"failfirst.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        reloaded = torch.jit.load(str(trained.path), _extra_files=extra)
    meta = json.loads(extra["failfirst.json"])
    assert meta["arch_version"] == demo.ARCH_VERSION and meta["seed"] == 42
    # Trained on the train split, never on the test samples a sweep evaluates.
    train = load_dataset(meta["dataset"], split="train")
    assert meta["train_fingerprint"] == train.fingerprint
    assert meta["train_fingerprint"][:16] in trained.path.name
    assert tuple(meta["classes"]) == train.classes
    x = torch.from_numpy(train.X[:3])
    with torch.no_grad():
        assert reloaded(x).shape == (3, len(train.classes))


def test_training_is_deterministic_and_a_damaged_cache_file_is_retrained(tmp_path, cache_dir):
    cached = demo.demo_model("timeseries", "synthetic", progress=False)  # module cache
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        fresh = demo.demo_model("timeseries", "synthetic", cache_dir=tmp_path, progress=False)
    assert stderr.getvalue() == ""  # progress=False trains silently
    path = demo.demo_model_path("timeseries", "synthetic", cache_dir=tmp_path)
    assert path.name in {p.name for p in cache_dir.iterdir()}  # same key, same seed
    x = torch.from_numpy(load_dataset("synthetic", num_samples=32).X)
    with torch.no_grad():
        assert torch.allclose(fresh(x), cached(x), atol=1e-5)
    path.write_bytes(b"not a model")
    retrained = demo.demo_model("timeseries", "synthetic", cache_dir=tmp_path, progress=False)
    with torch.no_grad():
        assert torch.allclose(retrained(x), cached(x), atol=1e-5)


def test_cifar10_demo_trains_on_the_official_layout(tmp_path):
    folder = tmp_path / "data" / CIFAR_FOLDER
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ["test_batch", *(f"data_batch_{i}" for i in range(1, 6))]:
        batch = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": list(range(4))}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [str(i).encode() for i in range(10)]}))
    model = demo.demo_model(
        "vision", "cifar10", data_dir=tmp_path / "data", cache_dir=tmp_path / "m", progress=False
    )
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize(
    "kind, dataset, match",
    [
        ("audio", "digits", "unknown demo model kind 'audio'"),
        ("vision", "mnist", "unknown demo dataset 'mnist'"),
        ("vision", "synthetic", "needs a vision dataset"),
        ("timeseries", "digits", "needs a timeseries dataset"),
    ],
)
def test_bad_kind_or_dataset(tmp_path, kind, dataset, match):
    with pytest.raises(InputError, match=match):
        demo.demo_model(kind, dataset, cache_dir=tmp_path)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("shape", [(2, 1, 8, 8), (2, 3, 32, 32), (2, 4, 5, 7), (2, 3, 1, 1)])
def test_vision_architecture_takes_any_size_and_channel_count(shape):
    assert demo.SmallCNN(shape[1], 6)(torch.zeros(shape)).shape == (2, 6)


@pytest.mark.parametrize("shape", [(2, 128, 1), (2, 50, 3), (2, 9)])
def test_timeseries_architecture_takes_any_length_and_channel_count(shape):
    channels = shape[2] if len(shape) == 3 else 1
    assert demo.SmallTimeSeriesCNN(channels, 3)(torch.zeros(shape)).shape == (2, 3)


def test_default_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("FAILFIRST_CACHE", str(tmp_path / "m"))
    assert demo.default_cache_dir() == tmp_path / "m"
    monkeypatch.delenv("FAILFIRST_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert demo.default_cache_dir() == tmp_path / "failfirst" / "models"
