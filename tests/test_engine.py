"""The sweep engine: the results dataset, invariance to batching and scheduling, resume, refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr
from distributed import Client, LocalCluster, get_task_stream

import failfirst
from failfirst import metrics, store
from failfirst.errors import DataError, InputError, ModelError, StoreError, SweepError
from failfirst.perturbations import get
from tests.conftest import images, tiny_cnn

pytestmark = pytest.mark.filterwarnings("ignore:.*treating them as logits")
PERTS = ["gaussian_noise", "random_occlusion", "blur"]


def sweep(model=None, X=None, y=None, **kw):
    if X is None:
        X, y = images()
    kw.setdefault("perturbations", PERTS)
    kw.setdefault("severities", 4)
    return failfirst.stress_test(model if model is not None else tiny_cnn(), X, y, **kw)


def assert_same_results(a: xr.Dataset, b: xr.Dataset):
    np.testing.assert_array_equal(a.pred.values, b.pred.values)
    for name in ("confidence", "p_true", "sum_sq"):
        np.testing.assert_allclose(a[name].values, b[name].values, atol=1e-6, rtol=0)
    for name in ("accuracy", "flip_rate", "ece", "brier", "nll", "degradation_slope"):
        np.testing.assert_allclose(a[name].values, b[name].values, atol=1e-6)


def test_the_dataset_has_the_documented_shape_names_and_provenance():
    X, y = images()
    ds = sweep(X=X, y=y, severities=[0.5, 1.0, 0.25], classes=["a", "b", "c", "d"],
               data_description="forty random images")
    assert dict(ds.sizes) == {"perturbation": 3, "severity": 4, "sample": 40}
    assert list(ds.severity.values) == [0.0, 0.25, 0.5, 1.0]  # sorted, clean level added
    assert list(ds.perturbation.values) == PERTS
    for name in ("pred", "confidence", "p_true", "sum_sq"):
        assert ds[name].dims == ("perturbation", "severity", "sample")
        assert ds[name].attrs["long_name"]
    for name in ("accuracy", "avg_confidence", "flip_rate", "ece", "brier", "nll"):
        assert ds[name].dims == ("perturbation", "severity") and ds[name].attrs["description"]
    assert ds.degradation_slope.dims == ("perturbation",)
    assert ds.label.dims == ("sample",) and np.array_equal(ds.label.values, y)
    attrs = ds.attrs
    assert attrs["seed"] == 42 and attrs["classes"] == ["a", "b", "c", "d"]
    assert attrs["data"] == "forty random images" and "Sequential" in attrs["model"]
    assert set(attrs["versions"]) >= {"failfirst", "torch", "dask", "numpy", "xarray", "zarr"}
    assert attrs["started"] <= attrs["finished"] and len(attrs["fingerprint"]) == 64
    assert attrs["perturbation_params"]["gaussian_noise"]["sigma"] == [0.0, 0.5]
    assert "_FillValue" not in ds.pred.attrs


def test_clean_level_matches_plain_inference_and_flip_rate_is_zero_there():
    X, y = images()
    net = tiny_cnn()
    ds = sweep(net, X, y)
    with torch.inference_mode():
        probs = torch.softmax(net(torch.from_numpy(X)), 1).numpy()
    for p in PERTS:
        clean = ds.sel(perturbation=p, severity=0.0)
        np.testing.assert_array_equal(clean.pred.values, probs.argmax(1))
        np.testing.assert_allclose(clean.confidence.values, probs.max(1), atol=1e-6)
        assert float(clean.flip_rate) == 0.0
        assert float(clean.accuracy) == pytest.approx(metrics.accuracy(y, probs.argmax(1)))


def test_perturbed_rows_are_the_perturbation_applied_with_their_sample_ids():
    X, y = images()
    ids = np.arange(100, 140)
    net = tiny_cnn()
    ds = sweep(net, X, y, sample_ids=ids, batch_size=16)
    perturbed = get("gaussian_noise")(X, 1 / 3, seed=42, sample_ids=ids)
    with torch.inference_mode():
        expected = torch.softmax(net(torch.from_numpy(perturbed)), 1).numpy()
    got = ds.sel(perturbation="gaussian_noise").isel(severity=1)
    np.testing.assert_array_equal(got.pred.values, expected.argmax(1))
    np.testing.assert_allclose(got.confidence.values, expected.max(1), atol=1e-6)
    assert list(ds.sample.values) == list(ids)


def test_summaries_can_be_recomputed_from_the_store_alone(tmp_path):
    ds = sweep(store=tmp_path / "run.zarr")
    reopened = store.open_results(tmp_path / "run.zarr")
    recomputed = metrics.summarize(reopened.drop_vars(["accuracy", "ece"]))
    for name in ("accuracy", "ece", "brier", "nll", "flip_rate", "degradation_slope"):
        np.testing.assert_allclose(recomputed[name].values, ds[name].values)


def test_severity_zero_is_computed_once_per_batch():
    calls = []

    def model(x):
        calls.append(len(x))
        return torch.softmax(tiny_cnn()(torch.as_tensor(x)), 1).detach().numpy()

    X, y = images(n=30)
    sweep(model, X, y, batch_size=10, severities=3)
    # a 2-sample probe, 3 clean batches, then 3 perturbations x 3 batches x 2 levels
    assert calls == [2] + [10] * (3 + 3 * 3 * 2)


def test_results_do_not_depend_on_the_batch_size():
    assert_same_results(sweep(batch_size=7), sweep(batch_size=64))


def test_results_do_not_depend_on_the_scheduler():
    threads = sweep(batch_size=16)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        explicit = sweep(batch_size=16, client=client)
        with get_task_stream(client) as stream:
            active = sweep(batch_size=16)  # the active client is used without being passed
        workers = {t["worker"] for t in stream.data}
    assert_same_results(threads, explicit)
    assert_same_results(threads, active)
    assert any("perturb" in t["key"] for t in stream.data)
    assert len(workers) == 2


def test_an_existing_store_is_refused_without_resume_and_a_different_run_always(tmp_path):
    path = tmp_path / "run.zarr"
    first = sweep(store=path)
    with pytest.raises(StoreError, match="resume"):
        sweep(store=path)
    with pytest.raises(StoreError, match="seed"):
        sweep(store=path, seed=7, resume=True)
    with pytest.raises(StoreError, match="perturbations"):
        sweep(store=path, perturbations=["blur"], resume=True)
    again = sweep(store=path, resume=True)  # nothing left to do: same results
    assert_same_results(first, again)


def test_resume_finishes_exactly_the_missing_regions(tmp_path):
    path = tmp_path / "run.zarr"
    reference = sweep(batch_size=8)
    sweep(store=path, batch_size=8)
    # Forget some regions, as if the run had died before writing them.
    group = store.zarr.open_group(path, mode="r+", zarr_format=store.ZARR_FORMAT)
    group["progress/done"][1, 2:4] = False
    group["pred"][1, :, 16:32] = -1
    assert not store.done_marks(path).all()
    resumed = sweep(store=path, batch_size=8, resume=True)
    assert store.done_marks(path).all()
    assert_same_results(reference, resumed)


def test_a_held_lock_refuses_a_second_writer_and_a_dead_holder_is_replaced(tmp_path):
    path = tmp_path / "run.zarr"
    with store.Lock(path):
        with pytest.raises(StoreError, match="another run"):
            sweep(store=path)
    lock_file = tmp_path / "run.zarr.lock"
    lock_file.write_text('{"pid": 999999999, "host": "%s"}' % __import__("socket").gethostname())
    sweep(store=path)
    assert not lock_file.exists()


def test_a_failing_model_names_the_cell_keeps_what_was_written_and_resumes(tmp_path, monkeypatch,
                                                                         linear_model_file):
    flag = tmp_path / "fail"
    flag.write_text("on")
    monkeypatch.setenv("FAILFIRST_TEST_FAIL_FLAG", str(flag))
    X, y = images(n=24)
    path = tmp_path / "run.zarr"
    kw = dict(perturbations=["gaussian_noise", "random_occlusion"], severities=[0.5, 1.0],
              batch_size=8, store=path)
    with pytest.raises(SweepError, match=r"'random_occlusion' at severity 1, samples \d+\.\.\d+"):
        failfirst.stress_test(str(linear_model_file), X, y, **kw)
    done = store.done_marks(path)
    assert not done[1].any()  # occlusion at severity 1 blanks every image: it always fails
    pred = store.open_results(path).pred.values
    for p, b in zip(*np.nonzero(done)):  # every region marked done was written in full
        assert (pred[p, :, 8 * b:8 * b + 8] >= 0).all()
    flag.unlink()  # "fix" the model: same file, same fingerprint
    resumed = failfirst.stress_test(str(linear_model_file), X, y, resume=True, **kw)
    fresh = failfirst.stress_test(str(linear_model_file), X, y,
                                  **{**kw, "store": tmp_path / "fresh.zarr"})
    assert_same_results(fresh, resumed)


@pytest.mark.parametrize("change, error, match", [
    (dict(X=np.full((4, 3, 8, 8), np.nan, np.float32)), DataError, "NaN"),
    (dict(y=np.array([0, 1, 2, 9] * 10)), ModelError, "labels must lie in 0..3"),
    (dict(perturbations=["gausian_noise"]), InputError, "expected one of"),
    (dict(perturbations=["ts_gaussian_noise"]), InputError, "timeseries"),
    (dict(severities=[0.5, 2.0]), InputError, "severity"),
    (dict(severities=1), InputError, "at least 2"),
    (dict(batch_size=0), InputError, "batch size"),
    (dict(classes=["a", "b"]), ModelError, "2 classes"),
    (dict(layout="NWHC"), InputError, "layout"),
    (dict(device="cuda:7"), InputError, "cuda"),
])
def test_bad_input_is_refused_before_any_work(tmp_path, change, error, match):
    X, y = images()
    if "X" in change:
        X, y = change.pop("X"), np.zeros(4, int)
    y = change.pop("y", y)
    path = tmp_path / "run.zarr"
    with pytest.raises(error, match=match):
        sweep(X=X, y=y, store=path, **change)
    assert not path.exists()


def test_time_series_sweep():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((20, 32)).astype(np.float32)
    y = (X[:, :16].mean(1) > X[:, 16:].mean(1)).astype(int)
    W = rng.standard_normal((32, 2))
    ds = failfirst.stress_test(lambda x: np.asarray(x) @ W, X, y, severities=3)
    assert list(ds.perturbation.values)[:4] == ["ts_gaussian_noise", "temporal_dropout",
                                                "mean_shift", "variance_shift"]
    assert ds.attrs["domain"] == "timeseries" and ds.attrs["layout"] == "NT"


def test_nhwc_data_reaches_the_model_as_given():
    X, y = images()
    nhwc = np.ascontiguousarray(X.transpose(0, 2, 3, 1))
    seen = []
    net = tiny_cnn()

    def model(x):
        seen.append(tuple(x.shape[1:]))
        return torch.softmax(net(torch.as_tensor(x).permute(0, 3, 1, 2)), 1).detach().numpy()

    a = sweep(model, nhwc, y, layout="NHWC")
    b = sweep(net, X, y)
    assert set(seen) == {(12, 12, 3)}
    assert_same_results(a, b)


def test_device_selection_on_a_machine_without_gpus():
    from failfirst import tasks
    from failfirst.cli import _local_cluster
    from failfirst.models import load_model, resolve_device

    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    plan = tasks.SweepPlan("unused", ("blur",), (0.0, 1.0), 0, 8, 8, "vision", None, "cpu", "fp-test")
    model = tasks.worker_model(plan, load_model(tiny_cnn()))
    assert model.device == torch.device("cpu")
    assert tasks.worker_model(plan, load_model(tiny_cnn())) is model  # cached per process
    tasks.release("fp-test")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="cuda"):
            _local_cluster("cuda", None)
        with pytest.raises(InputError, match="cuda"):
            sweep(device="cuda")
