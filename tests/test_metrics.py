"""Tests for failfirst.metrics: values by hand, independent references, run-store summaries."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import xarray as xr
from scipy.stats import linregress
from sklearn.metrics import accuracy_score, brier_score_loss, log_loss

from failfirst import metrics as m
from failfirst.errors import InputError

PROBS = np.array(
    [
        [0.7, 0.2, 0.1],
        [0.1, 0.6, 0.3],
        [0.2, 0.3, 0.5],
        [0.25, 0.5, 0.25],
    ]
)
LABELS = np.array([0, 2, 2, 0])


def _random_probs(rng, n, c, dtype=np.float64):
    return rng.dirichlet(np.full(c, 0.7), size=n).astype(dtype)


def _naive_ece(confidence, correct, n_bins):
    """A loop-by-loop reference: right-closed bins, 0 in the first bin."""
    n = len(confidence)
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        members = [
            i for i, c in enumerate(confidence) if (lo < c <= hi) or (b == 0 and c == 0.0)
        ]
        if members:
            acc = sum(correct[i] for i in members) / len(members)
            conf = sum(confidence[i] for i in members) / len(members)
            total += len(members) / n * abs(acc - conf)
    return total


# -- hand-computed values ------------------------------------------------------------------


def test_accuracy_by_hand():
    assert m.accuracy([0, 1, 2, 1], [0, 1, 1, 1]) == 0.75


def test_avg_confidence_by_hand():
    # Row maxima 0.7, 0.6, 0.5, 0.5.
    assert m.avg_confidence(PROBS) == pytest.approx(0.575)


def test_flip_rate_by_hand():
    assert m.flip_rate([0, 1, 2, 1], [0, 2, 2, 0]) == 0.5
    assert m.flip_rate([3, 1], [3, 1]) == 0.0


def test_brier_by_hand():
    # Row 0, label 0: 0.3^2 + 0.2^2 + 0.1^2 = 0.14; row 1, label 2: 0.1^2 + 0.6^2 + 0.7^2 = 0.86.
    assert m.brier([0, 2], PROBS[:2]) == pytest.approx(0.5)
    assert m.brier([1], [[0.0, 1.0]]) == 0.0
    assert m.brier([0], [[0.0, 1.0]]) == pytest.approx(2.0)


def test_nll_by_hand_and_clipped_at_eps():
    assert m.nll([0, 2], PROBS[:2]) == pytest.approx(-(math.log(0.7) + math.log(0.3)) / 2)
    # A zero probability for the true class costs -log(EPS), not infinity.
    assert m.nll([0], [[0.0, 1.0]]) == pytest.approx(-math.log(m.EPS))
    assert m.EPS == 1e-12


def test_ece_by_hand_right_closed_edge_and_empty_bins():
    conf, correct = [0.3, 0.25, 0.95, 0.85], [1, 0, 1, 0]
    # 0.3 and 0.25 share (0.2, 0.3]: acc 0.5, conf 0.275 -> 2/4 * 0.225 = 0.1125;
    # (0.8, 0.9]: 1/4 * 0.85 = 0.2125; (0.9, 1]: 1/4 * 0.05 = 0.0125. Bins 0-1 and 3-7 are empty.
    # Were 0.3 put in (0.3, 0.4] instead, ECE would be 0.4625.
    assert m.ece_from_samples(conf, correct) == pytest.approx(0.3375)
    assert m.ece_from_samples(np.float32(conf), correct) == pytest.approx(0.3375, abs=1e-6)
    # The same samples through probabilities: conf 0.3 is the top of [0.3, 0.3, 0.2, 0.2].
    probs = np.array(
        [[0.3, 0.3, 0.2, 0.2], [0.25, 0.25, 0.25, 0.25], [0.95, 0.05, 0, 0], [0.05, 0.85, 0.1, 0]]
    )
    assert m.ece([0, 1, 0, 0], probs) == pytest.approx(0.3375)


def test_ece_confidence_zero_is_in_the_first_bin():
    assert m.ece_from_samples([0.0], [True]) == 1.0
    assert m.ece_from_samples([0.0, 1.0], [False, True]) == 0.0


def test_ece_single_bin_is_gap_of_means():
    conf, correct = np.array([0.9, 0.6, 0.8]), np.array([1, 0, 0])
    assert m.ece_from_samples(conf, correct, n_bins=1) == pytest.approx(abs(1 / 3 - 2.3 / 3))


def test_ece_is_nan_when_a_confidence_is_nan():
    assert math.isnan(m.ece_from_samples([0.5, np.nan], [1, 0]))


def test_degradation_slope_by_hand():
    assert m.degradation_slope([0.0, 0.5, 1.0], [1.0, 0.75, 0.5]) == pytest.approx(-0.5)
    with_nan = m.degradation_slope([0.0, 0.5, 1.0, 0.7], [1.0, 0.75, 0.5, np.nan])
    assert with_nan == pytest.approx(-0.5)
    assert math.isnan(m.degradation_slope([0.1, 0.1, 0.1], [1.0, 2.0, 3.0]))
    assert math.isnan(m.degradation_slope([0.1, 0.2], [1.0, np.nan]))


def test_per_sample_by_hand():
    s = m.per_sample(PROBS, LABELS)
    np.testing.assert_array_equal(s["pred"], [0, 1, 2, 1])
    np.testing.assert_allclose(s["confidence"], [0.7, 0.6, 0.5, 0.5])
    np.testing.assert_allclose(s["p_true"], [0.7, 0.3, 0.5, 0.25])
    np.testing.assert_allclose(s["sum_sq"], [0.54, 0.46, 0.38, 0.375])
    assert s["pred"].dtype == np.int64


def test_per_sample_ties_go_to_the_lowest_class():
    s = m.per_sample(np.array([[0.4, 0.4, 0.2]]), np.array([1]))
    assert s["pred"].tolist() == [0]


# -- independent references ----------------------------------------------------------------


def test_binary_case_matches_scikit_learn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=40)
    p1 = rng.uniform(0.01, 0.99, size=40)
    probs = np.stack([1 - p1, p1], axis=1)
    # Our Brier sums over both classes; scikit-learn's binary form counts the positive class.
    assert m.brier(y, probs) == pytest.approx(2 * brier_score_loss(y, p1))
    assert m.nll(y, probs) == pytest.approx(log_loss(y, probs, labels=[0, 1]))
    assert m.accuracy(y, probs.argmax(1)) == pytest.approx(accuracy_score(y, probs.argmax(1)))


def test_slope_matches_scipy_linregress_ignoring_nan():
    rng = np.random.default_rng(1)
    x = np.sort(rng.uniform(0, 1, size=9))
    y = 0.9 - 0.6 * x + rng.normal(0, 0.05, size=9)
    y[[2, 6]] = np.nan
    ok = ~np.isnan(y)
    assert m.degradation_slope(x, y) == pytest.approx(linregress(x[ok], y[ok]).slope)


# -- per-sample forms agree with the array forms and with direct definitions --------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_from_samples_equal_array_forms_and_definitions(seed, dtype):
    rng = np.random.default_rng(seed)
    n, c = 57, 5
    probs = _random_probs(rng, n, c, dtype)
    y = rng.integers(0, c, size=n)
    s = m.per_sample(probs, y)
    correct = s["pred"] == y

    assert m.brier_from_samples(s["p_true"], s["sum_sq"]) == m.brier(y, probs)
    assert m.nll_from_samples(s["p_true"]) == m.nll(y, probs)
    assert m.ece_from_samples(s["confidence"], correct, 7) == m.ece(y, probs, 7)
    assert m.avg_confidence_from_samples(s["confidence"]) == m.avg_confidence(probs)

    p64 = probs.astype(np.float64)
    onehot = np.eye(c)[y]
    assert m.brier(y, probs) == pytest.approx(((p64 - onehot) ** 2).sum(1).mean(), rel=1e-6)
    assert m.nll(y, probs) == pytest.approx(-np.log(p64[np.arange(n), y]).mean(), rel=1e-6)
    assert m.avg_confidence(probs) == pytest.approx(p64.max(1).mean(), rel=1e-6)
    conf = s["confidence"].astype(np.float64).tolist()
    assert m.ece(y, probs, 7) == pytest.approx(_naive_ece(conf, correct.tolist(), 7), abs=1e-12)


def test_torch_tensors_are_accepted():
    rng = np.random.default_rng(3)
    probs = _random_probs(rng, 20, 4, np.float32)
    y = rng.integers(0, 4, size=20)
    tp, ty = torch.from_numpy(probs), torch.from_numpy(y)
    assert m.brier(ty, tp) == m.brier(y, probs)
    assert m.nll(ty, tp) == m.nll(y, probs)
    assert m.ece(ty, tp) == m.ece(y, probs)
    assert m.avg_confidence(tp) == m.avg_confidence(probs)
    assert m.accuracy(ty, tp.argmax(1)) == m.accuracy(y, probs.argmax(1))
    assert m.flip_rate(ty, tp.argmax(1)) == m.flip_rate(y, probs.argmax(1))


def test_per_sample_on_torch_returns_tensors_on_the_same_device():
    rng = np.random.default_rng(4)
    probs = _random_probs(rng, 16, 3, np.float32)
    y = rng.integers(0, 3, size=16)
    ts = m.per_sample(torch.from_numpy(probs), torch.from_numpy(y))
    ns = m.per_sample(probs, y)
    assert set(ts) == {"pred", "confidence", "p_true", "sum_sq"}
    for key, value in ts.items():
        assert isinstance(value, torch.Tensor) and value.device.type == "cpu"
        assert value.shape == (16,)
        np.testing.assert_allclose(value.numpy(), ns[key], rtol=1e-6)
    assert ts["pred"].dtype == torch.int64 and ts["confidence"].dtype == torch.float32
    # Labels given as numpy with torch probabilities work too; half precision is raised.
    half = m.per_sample(torch.from_numpy(probs).half(), y)
    assert half["sum_sq"].dtype == torch.float32


# -- input validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda: m.accuracy([0, 1, 2], [0, 1]),
        lambda: m.flip_rate([0, 1], [0, 1, 1]),
        lambda: m.brier([0, 1, 1], PROBS),
        lambda: m.nll([0, 1, 1], PROBS),
        lambda: m.ece([0, 1, 1], PROBS),
        lambda: m.brier_from_samples([0.5, 0.5], [0.5]),
        lambda: m.ece_from_samples([0.5, 0.5], [1]),
        lambda: m.degradation_slope([0.0, 0.5], [1.0]),
        lambda: m.per_sample(torch.from_numpy(PROBS), torch.tensor([0, 1])),
    ],
)
def test_mismatched_lengths_are_refused(call):
    with pytest.raises(InputError, match=r"expected .* same length, found"):
        call()


@pytest.mark.parametrize("n_bins", [0, -3, 2.5, True, "10", None])
def test_bad_n_bins_is_refused(n_bins):
    with pytest.raises(InputError, match=r"expected n_bins to be an integer larger than 0, found"):
        m.ece(LABELS, PROBS, n_bins=n_bins)
    with pytest.raises(InputError, match="n_bins"):
        m.ece_from_samples([0.5], [1], n_bins=n_bins)


@pytest.mark.parametrize("probs", [np.array([0.2, 0.8]), np.ones((2, 2, 2)) / 4, np.ones((2, 0))])
def test_probs_not_2d_are_refused(probs):
    with pytest.raises(InputError, match=r"expected probs as a 2-D array .* found shape"):
        m.brier(np.zeros(2, dtype=int), probs)
    with pytest.raises(InputError, match=r"expected probs as a 2-D array"):
        m.avg_confidence(probs)


def test_other_bad_inputs_are_refused():
    with pytest.raises(InputError, match=r"expected labels in \[0, 2\] .* from 0 to 3"):
        m.per_sample(PROBS, np.array([0, 1, 2, 3]))
    with pytest.raises(InputError, match=r"expected labels in \[0, 2\]"):
        m.per_sample(torch.from_numpy(PROBS), torch.tensor([0, -1, 2, 1]))
    with pytest.raises(InputError, match="expected integer class labels"):
        m.per_sample(PROBS, np.array([0.0, 1.0, 2.0, 1.0]))
    with pytest.raises(InputError, match="expected at least one sample"):
        m.accuracy([], [])
    with pytest.raises(InputError, match="expected at least one sample"):
        m.nll(np.zeros(0, dtype=int), np.zeros((0, 3)))
    with pytest.raises(InputError, match="expected y_pred as a 1-D array"):
        m.accuracy([0, 1], [[0, 1]])
    # Every input error is also a ValueError, never an AttributeError.
    with pytest.raises(ValueError):
        m.flip_rate([0], [0, 1])


# -- metadata ------------------------------------------------------------------------------


def test_metric_registry():
    expected = {
        "accuracy", "avg_confidence", "flip_rate", "ece", "brier", "nll", "degradation_slope"
    }
    assert set(m.METRICS) == expected
    for name, info in m.METRICS.items():
        assert info.name == name and info.long_name and info.description
        assert info.higher_is_better in (True, False, None)
        assert info.bounds is None or info.bounds[0] < info.bounds[1]
    assert m.METRICS["accuracy"].higher_is_better is True
    assert m.METRICS["ece"].higher_is_better is False
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.METRICS["ece"].units = "x"
    with pytest.raises(TypeError):
        m.METRICS["new"] = m.METRICS["ece"]
    assert m.get_metric("nll") is m.METRICS["nll"]
    with pytest.raises(InputError, match="unknown metric 'acc'; expected one of: accuracy"):
        m.get_metric("acc")


# -- summaries over the run store ----------------------------------------------------------

PERTURBATIONS = ["blur", "noise"]
SEVERITIES = [0.0, 0.5, 1.0]
N, C = 11, 3


@pytest.fixture(scope="module")
def sweep():
    """A small synthetic run store plus the probability vectors it was made from."""
    rng = np.random.default_rng(7)
    label = rng.integers(0, C, size=N)
    probs = _random_probs(rng, len(PERTURBATIONS) * len(SEVERITIES) * N, C, np.float32)
    probs = probs.reshape(len(PERTURBATIONS), len(SEVERITIES), N, C)
    shape = (len(PERTURBATIONS), len(SEVERITIES), N)
    stats = {k: np.empty(shape) for k in ("pred", "confidence", "p_true", "sum_sq")}
    for i in range(len(PERTURBATIONS)):
        for j in range(len(SEVERITIES)):
            for key, value in m.per_sample(probs[i, j], label).items():
                stats[key][i, j] = value
    dims = ("perturbation", "severity", "sample")
    ds = xr.Dataset(
        {
            "pred": (dims, stats["pred"].astype(np.int64)),
            "confidence": (dims, stats["confidence"].astype(np.float32)),
            "p_true": (dims, stats["p_true"].astype(np.float32)),
            "sum_sq": (dims, stats["sum_sq"].astype(np.float32)),
            "label": ("sample", label),
        },
        coords={"perturbation": PERTURBATIONS, "severity": SEVERITIES, "sample": np.arange(N)},
        attrs={"model": "demo"},
    )
    return ds, probs


def test_summarize_equals_array_functions_per_cell(sweep):
    ds, probs = sweep
    s = m.summarize(ds, n_bins=5)
    assert set(s.data_vars) == set(m.METRICS)
    label = ds["label"].values
    for i, p in enumerate(PERTURBATIONS):
        clean_pred = probs[i, 0].argmax(1)
        for j, sev in enumerate(SEVERITIES):
            cell = s.sel(perturbation=p, severity=sev)
            pr = probs[i, j]
            pred = pr.argmax(1)
            assert cell["accuracy"].item() == pytest.approx(m.accuracy(label, pred), abs=1e-12)
            assert cell["avg_confidence"].item() == pytest.approx(m.avg_confidence(pr), abs=1e-12)
            flips = m.flip_rate(clean_pred, pred)
            assert cell["flip_rate"].item() == pytest.approx(flips, abs=1e-12)
            assert cell["ece"].item() == pytest.approx(m.ece(label, pr, n_bins=5), abs=1e-12)
            assert cell["brier"].item() == pytest.approx(m.brier(label, pr), abs=1e-12)
            assert cell["nll"].item() == pytest.approx(m.nll(label, pr), abs=1e-12)
        expected_slope = m.degradation_slope(SEVERITIES, s["accuracy"].sel(perturbation=p).values)
        assert s["degradation_slope"].sel(perturbation=p).item() == pytest.approx(expected_slope)
    assert s["accuracy"].dims == ("perturbation", "severity")
    assert s["degradation_slope"].dims == ("perturbation",)


def test_summarize_flip_rate_is_zero_at_the_clean_level(sweep):
    ds, _ = sweep
    s = m.summarize(ds)
    assert (s["flip_rate"].sel(severity=0.0) == 0).all()


def test_summarize_attrs_come_from_the_registry(sweep):
    ds, _ = sweep
    s = m.summarize(ds)
    for name in s.data_vars:
        info = m.METRICS[name]
        assert s[name].attrs["long_name"] == info.long_name
        assert s[name].attrs["description"] == info.description
        assert s[name].attrs["units"] == info.units
        assert s[name].attrs["higher_is_better"] == info.higher_is_better
    assert s["ece"].attrs["n_bins"] == 10
    assert s.attrs["model"] == "demo"


def test_summarize_on_a_dask_backed_dataset_is_lazy_and_equal(sweep):
    ds, _ = sweep
    eager = m.summarize(ds, n_bins=4)
    lazy = m.summarize(ds.chunk({"sample": 4, "severity": 1}), n_bins=4)
    for name in lazy.data_vars:
        assert lazy[name].chunks is not None, f"{name} was computed eagerly"
    xr.testing.assert_allclose(lazy.compute(), eager, rtol=1e-12)
    rel_lazy = m.reliability(ds.chunk({"sample": 5}), n_bins=4)
    assert rel_lazy["count"].chunks is not None
    xr.testing.assert_allclose(rel_lazy.compute(), m.reliability(ds, n_bins=4))


def test_reliability_bins_and_ece_agree(sweep):
    ds, _ = sweep
    rel = m.reliability(ds, n_bins=5)
    assert rel["count"].dims == ("perturbation", "severity", "bin")
    np.testing.assert_allclose(rel["bin_lower"], [0, 0.2, 0.4, 0.6, 0.8])
    np.testing.assert_allclose(rel["bin_upper"], [0.2, 0.4, 0.6, 0.8, 1.0])
    assert (rel["count"].sum("bin") == N).all()
    empty = rel["count"] == 0
    assert empty.any(), "three classes keep every confidence above 1/3, so (0, 0.2] is empty"
    assert rel["mean_confidence"].isnull().equals(empty) and rel["accuracy"].isnull().equals(empty)
    weighted = (rel["count"] * abs(rel["accuracy"] - rel["mean_confidence"])).sum("bin") / N
    xr.testing.assert_allclose(m.summarize(ds, n_bins=5)["ece"].drop_attrs(), weighted)


def test_reliability_right_closed_edge_and_zero_confidence():
    dims = ("perturbation", "severity", "sample")
    ds = xr.Dataset(
        {
            "pred": (dims, np.array([[[0, 1, 1]]])),
            "confidence": (dims, np.array([[[0.0, 0.3, 0.31]]], dtype=np.float32)),
            "p_true": (dims, np.full((1, 1, 3), 0.5, dtype=np.float32)),
            "sum_sq": (dims, np.full((1, 1, 3), 0.5, dtype=np.float32)),
            "label": ("sample", np.array([0, 1, 0])),
        },
        coords={"perturbation": ["x"], "severity": [0.0], "sample": np.arange(3)},
    )
    rel = m.reliability(ds, n_bins=10).isel(perturbation=0, severity=0)
    assert rel["count"].values.tolist() == [1, 0, 1, 1, 0, 0, 0, 0, 0, 0]
    assert rel["accuracy"].values[[0, 2, 3]].tolist() == [1.0, 1.0, 0.0]
    assert np.isnan(rel["mean_confidence"].values[1])


def test_summarize_refuses_bad_datasets(sweep):
    ds, _ = sweep
    with pytest.raises(InputError, match=r"expected results variables .* \(missing p_true\)"):
        m.summarize(ds.drop_vars("p_true"))
    with pytest.raises(InputError, match=r"including 0.0 .* found \[0.5, 1.0\]"):
        m.summarize(ds.sel(severity=[0.5, 1.0]))
    with pytest.raises(InputError, match="expected n_bins"):
        m.summarize(ds, n_bins=0)
    with pytest.raises(InputError, match="expected label over dims"):
        m.summarize(ds.assign(label=ds["pred"]))
    with pytest.raises(InputError, match="expected an xarray Dataset"):
        m.summarize(ds["pred"])


def test_summarize_keeps_nan_for_missing_samples(sweep):
    ds, _ = sweep
    ds = ds.copy(deep=True)
    # Not written yet, as the store fills it: pred -1, statistics NaN.
    ds["pred"][1, 2, 4] = -1
    for name in ("confidence", "p_true", "sum_sq"):
        ds[name][1, 2, 4] = np.nan
    s = m.summarize(ds)
    for name in ("accuracy", "flip_rate", "avg_confidence", "ece", "brier", "nll"):
        assert np.isnan(s[name].sel(perturbation="noise", severity=1.0).item()), name
        assert s[name].drop_sel(perturbation="noise").notnull().all(), name
