"""Tests for failfirst.datasets: built-ins, file formats, checks, subsets, fingerprints."""

from __future__ import annotations

import dataclasses
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from failfirst.datasets import (
    CIFAR_FOLDER,
    CIFAR_URL,
    Dataset,
    dataset_names,
    default_data_dir,
    load_dataset,
    user_cache_root,
)
from failfirst.errors import DataError, InputError

CIFAR_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]


def write_fake_cifar(root, n_test=12, n_train=4):
    """A tiny CIFAR-10 folder in the official layout: Python-2 style pickled dicts."""
    folder = root / CIFAR_FOLDER
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    batches = {"test_batch": n_test, **{f"data_batch_{i}": n_train for i in range(1, 6)}}
    for name, n in batches.items():
        batch = {
            b"batch_label": name.encode(),
            b"labels": [int(v) for v in np.arange(n) % 10],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [f"img_{i}.png".encode() for i in range(n)],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": CIFAR_NAMES, b"num_cases_per_batch": 10000}, f, protocol=2)
    return folder


def save_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------- built-ins


def test_digits_is_nchw_float_in_unit_range_with_fixed_split():
    test = load_dataset("digits")
    train = load_dataset("digits", split="train")
    assert isinstance(test, Dataset)
    assert test.X.shape == (540, 1, 8, 8) and train.X.shape == (1257, 1, 8, 8)
    assert test.X.dtype == np.float32 and test.y.dtype == np.int64
    assert 0.0 <= test.X.min() and test.X.max() <= 1.0 and test.X.max() == 1.0
    assert test.classes == tuple(str(i) for i in range(10))
    assert (test.domain, test.layout, test.name) == ("vision", "NCHW", "digits")
    assert np.array_equal(test.sample_ids, np.arange(540))
    # The split does not move with the user's seed: the demo model never sees test rows.
    assert load_dataset("digits", seed=7).fingerprint == test.fingerprint
    assert np.bincount(test.y).min() >= 50  # stratified


def test_synthetic_is_ntc_balanced_and_splits_do_not_overlap():
    test = load_dataset("synthetic")
    train = load_dataset("synthetic", split="train")
    assert test.X.shape == (1000, 128, 1) and train.X.shape == (2000, 128, 1)
    assert (test.domain, test.layout) == ("timeseries", "NTC")
    assert len(test.classes) == 4 and np.bincount(test.y).tolist() == [250] * 4
    assert np.isfinite(test.X).all()
    shared = {row.tobytes() for row in train.X} & {row.tobytes() for row in test.X}
    assert not shared
    assert load_dataset("synthetic").fingerprint == test.fingerprint


def test_cifar10_reads_the_official_layout(tmp_path):
    folder = write_fake_cifar(tmp_path)
    test = load_dataset("cifar10", data_dir=tmp_path)
    assert test.X.shape == (12, 3, 32, 32) and test.X.dtype == np.float32
    assert test.classes[:3] == ("airplane", "automobile", "bird") and len(test.classes) == 10
    with open(folder / "test_batch", "rb") as f:
        raw = pickle.load(f, encoding="bytes")
    # Rows are 1024 red, 1024 green, 1024 blue values, row-major.
    assert test.X[1, 0, 0, 1] == np.float32(raw[b"data"][1, 1] / 255.0)
    assert test.X[1, 1, 0, 0] == np.float32(raw[b"data"][1, 1024] / 255.0)
    assert test.X[1, 2, 31, 31] == np.float32(raw[b"data"][1, 3071] / 255.0)
    assert test.y.tolist() == raw[b"labels"]
    train = load_dataset("cifar10", split="train", data_dir=tmp_path)
    assert len(train) == 5 * 4


def test_cifar10_uses_failfirst_data_env(tmp_path, monkeypatch):
    write_fake_cifar(tmp_path)
    monkeypatch.setenv("FAILFIRST_DATA", str(tmp_path))
    assert default_data_dir() == tmp_path
    assert len(load_dataset("cifar10")) == 12


def test_cifar10_missing_folder_says_where_and_from_where(tmp_path):
    with pytest.raises(DataError) as excinfo:
        load_dataset("cifar10", data_dir=tmp_path)
    message = one_line_error(excinfo)
    assert str(tmp_path / CIFAR_FOLDER) in message
    assert CIFAR_URL in message and "cifar-10-python.tar.gz" in message


def test_cifar10_missing_batch_is_named(tmp_path):
    folder = write_fake_cifar(tmp_path)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3"):
        load_dataset("cifar10", split="train", data_dir=tmp_path)


class _Payload:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.makedirs, (self.target,))


def test_cifar10_refuses_pickles_that_would_run_code(tmp_path):
    folder = write_fake_cifar(tmp_path)
    target = str(tmp_path / "pwned")
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": _Payload(target), b"labels": []}, f, protocol=2)
    with pytest.raises(DataError, match="refusing to unpickle"):
        load_dataset("cifar10", data_dir=tmp_path)
    assert not os.path.exists(target)


def test_builtin_vision_can_be_delivered_channels_last():
    nchw = load_dataset("digits", num_samples=20)
    nhwc = load_dataset("digits", num_samples=20, layout="NHWC")
    assert nhwc.layout == "NHWC" and nhwc.X.shape == (20, 8, 8, 1)
    assert np.array_equal(nhwc.X, nchw.X.transpose(0, 2, 3, 1))
    with pytest.raises(DataError, match="NTC"):
        load_dataset("synthetic", layout="NCHW")


def test_dataset_names_lists_builtins_with_descriptions():
    names = dict(dataset_names())
    assert set(names) == {"digits", "cifar10", "synthetic"}
    assert all(isinstance(d, str) and d and "\n" not in d for d in names.values())


def test_default_data_dir_honours_xdg(tmp_path, monkeypatch):
    monkeypatch.delenv("FAILFIRST_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert user_cache_root() == tmp_path / "failfirst"
    assert default_data_dir() == tmp_path / "failfirst" / "data"


# --------------------------------------------------------------------------- files


def test_npz_with_classes(tmp_path):
    X = np.random.default_rng(0).random((6, 3, 5, 5)).astype(np.float32)
    path = save_npz(tmp_path / "d.npz", X=X, y=np.array([0, 1, 2, 0, 1, 2]), classes=np.array(["a", "b", "c"]))
    ds = load_dataset(path)
    assert ds.classes == ("a", "b", "c") and ds.name == "d.npz"
    assert np.array_equal(ds.X, X) and ds.y.dtype == np.int64
    assert (ds.domain, ds.layout) == ("vision", "NCHW")


def test_npz_without_classes_names_them_by_index(tmp_path):
    path = save_npz(tmp_path / "s.npz", X=np.zeros((4, 10)), y=np.array([0, 3, 1, 1]))
    ds = load_dataset(str(path))
    assert ds.classes == ("0", "1", "2", "3")
    assert (ds.domain, ds.layout, ds.X.dtype) == ("timeseries", "NT", np.float32)


def test_npz_with_pickled_object_array_is_refused(tmp_path):
    objects = np.array([{"a": 1}, None], dtype=object)
    path = save_npz(tmp_path / "o.npz", X=np.zeros((2, 4)), y=np.array([0, 1]), classes=objects)
    with pytest.raises(DataError, match="Python objects"):
        load_dataset(path, allow_pickle=True)


def test_npy_dict_needs_allow_pickle(tmp_path):
    path = tmp_path / "data.npy"
    X = np.random.default_rng(0).normal(size=(5, 20, 2)).astype(np.float32)
    np.save(path, {"X": X, "y": np.array([0, 1, 0, 1, 1])})
    with pytest.raises(DataError) as excinfo:
        load_dataset(path)
    message = one_line_error(excinfo)
    assert "pickled dict" in message and "arbitrary code" in message
    assert "--allow-pickle" in message and ".npz" in message
    ds = load_dataset(path, allow_pickle=True)
    assert np.array_equal(ds.X, X) and ds.layout == "NTC"


def test_npy_plain_array_is_refused(tmp_path):
    path = tmp_path / "plain.npy"
    np.save(path, np.zeros((3, 4)))
    with pytest.raises(DataError, match="plain"):
        load_dataset(path, allow_pickle=True)


# --------------------------------------------------------------------------- layout


@pytest.mark.parametrize(
    "shape, layout",
    [
        ((2, 1, 8, 8), "NCHW"),
        ((2, 3, 7, 7), "NCHW"),
        ((2, 8, 8, 3), "NHWC"),
        ((2, 9, 9, 4), "NHWC"),
        ((2, 5, 6, 7), "NCHW"),
    ],
)
def test_vision_layout_inference(tmp_path, shape, layout):
    path = save_npz(tmp_path / "v.npz", X=np.zeros(shape, np.float32), y=np.zeros(2, int))
    ds = load_dataset(path)
    assert ds.layout == layout and ds.X.shape == shape  # kept as given


def test_explicit_layout_wins(tmp_path):
    path = save_npz(tmp_path / "v.npz", X=np.zeros((2, 3, 3, 3), np.float32), y=np.zeros(2, int))
    assert load_dataset(path).layout == "NCHW"
    assert load_dataset(path, layout="NHWC").layout == "NHWC"
    with pytest.raises(DataError, match="NCHW or NHWC"):
        load_dataset(path, layout="NTC")


def test_series_layout_must_match_dims(tmp_path):
    path = save_npz(tmp_path / "s.npz", X=np.zeros((2, 10, 3)), y=np.zeros(2, int))
    assert load_dataset(path, layout="NTC").layout == "NTC"
    with pytest.raises(DataError, match="'NTC'"):
        load_dataset(path, layout="NT")


def test_uint8_images_are_scaled_to_unit_range(tmp_path):
    X = np.array([[[[0, 255], [51, 102]]]], dtype=np.uint8).repeat(2, axis=0)
    ds = load_dataset(save_npz(tmp_path / "u.npz", X=X, y=np.array([0, 1])))
    assert ds.X.dtype == np.float32
    assert np.allclose(ds.X[0, 0], [[0.0, 1.0], [0.2, 0.4]])


def test_integer_series_are_kept_in_scale(tmp_path):
    ds = load_dataset(save_npz(tmp_path / "i.npz", X=np.array([[0, 500], [3, -7]]), y=np.array([0, 1])))
    assert ds.X.tolist() == [[0.0, 500.0], [3.0, -7.0]]


# --------------------------------------------------------------------------- errors


def _expect(path_or_spec, match, **kwargs):
    with pytest.raises(DataError, match=match) as excinfo:
        load_dataset(path_or_spec, **kwargs)
    assert isinstance(excinfo.value, InputError) and isinstance(excinfo.value, ValueError)
    return one_line_error(excinfo)


def test_missing_file_names_the_path(tmp_path):
    message = _expect(tmp_path / "nope.npz", "not found")
    assert str(tmp_path / "nope.npz") in message


def test_unknown_builtin_lists_the_choices():
    message = _expect("mnist", "unknown dataset 'mnist'")
    assert all(name in message for name in ("cifar10", "digits", "synthetic"))


def test_unknown_extension_lists_the_choices(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("1,2\n")
    message = _expect(path, "unknown dataset file extension '.csv'")
    assert ".npy" in message and ".npz" in message


def test_spec_of_wrong_type():
    _expect(12, "expected a built-in dataset name or a path")


@pytest.mark.parametrize("missing", ["X", "y"])
def test_missing_key(tmp_path, missing):
    arrays = {"X": np.zeros((2, 4)), "y": np.zeros(2, int)}
    del arrays[missing]
    _expect(save_npz(tmp_path / "m.npz", **arrays), rf"missing \['{missing}'\]")


def test_missing_key_in_npy_dict(tmp_path):
    path = tmp_path / "d.npy"
    np.save(path, {"X": np.zeros((2, 4))})
    _expect(path, r"missing \['y'\]", allow_pickle=True)


def test_lengths_differ(tmp_path):
    _expect(save_npz(tmp_path / "l.npz", X=np.zeros((3, 4)), y=np.zeros(2, int)), "3 samples in X and 2 labels")


@pytest.mark.parametrize("y", [np.array([0.0, 0.5]), np.array(["a", "b"]), np.array([0.0, np.nan])])
def test_labels_must_be_integers(tmp_path, y):
    _expect(save_npz(tmp_path / "y.npz", X=np.zeros((2, 4)), y=y), "integer class labels")


def test_whole_number_float_labels_are_accepted(tmp_path):
    ds = load_dataset(save_npz(tmp_path / "y.npz", X=np.zeros((2, 4)), y=np.array([1.0, 0.0])))
    assert ds.y.dtype == np.int64 and ds.y.tolist() == [1, 0]


def test_one_hot_labels_are_explained(tmp_path):
    _expect(save_npz(tmp_path / "h.npz", X=np.zeros((2, 4)), y=np.eye(2)), "one-hot")


def test_negative_labels(tmp_path):
    _expect(save_npz(tmp_path / "n.npz", X=np.zeros((2, 4)), y=np.array([0, -1])), ">= 0")


def test_labels_beyond_class_names(tmp_path):
    path = save_npz(tmp_path / "c.npz", X=np.zeros((2, 4)), y=np.array([0, 2]), classes=np.array(["a", "b"]))
    _expect(path, "found label 2")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_values_are_counted_and_located(tmp_path, bad):
    X = np.zeros((5, 6))
    X[3, 1] = X[3, 2] = X[4, 0] = bad
    message = _expect(save_npz(tmp_path / "f.npz", X=X, y=np.zeros(5, int)), "found 3 NaN/inf values")
    assert "sample 3" in message


def test_non_finite_index_is_the_source_index_after_subsetting(tmp_path):
    X = np.zeros((40, 6))
    X[::2] = np.nan  # every even source row is bad: the subset's first bad row names its source index
    with pytest.raises(DataError) as excinfo:
        load_dataset(save_npz(tmp_path / "f.npz", X=X, y=np.zeros(40, int)), num_samples=10, seed=3)
    clean = save_npz(tmp_path / "ok.npz", X=np.zeros((40, 6)), y=np.zeros(40, int))
    expected = load_dataset(clean, num_samples=10, seed=3)
    first_even = int(expected.sample_ids[expected.sample_ids % 2 == 0][0])
    assert f"sample {first_even}" in str(excinfo.value)


@pytest.mark.parametrize("shape", [(5,), (2, 1, 2, 2, 2)])
def test_unusable_shapes_are_named(tmp_path, shape):
    message = _expect(save_npz(tmp_path / "s.npz", X=np.zeros(shape), y=np.zeros(shape[0], int)), "found shape")
    assert str(shape) in message


def test_no_samples(tmp_path):
    _expect(save_npz(tmp_path / "e.npz", X=np.zeros((0, 4)), y=np.zeros(0, int)), "at least 1 sample")


def test_float_images_outside_unit_range(tmp_path):
    X = np.full((2, 1, 3, 3), 0.5)
    X[1, 0, 0, 0] = 255.0
    message = _expect(save_npz(tmp_path / "r.npz", X=X, y=np.zeros(2, int)), r"\[0, 1\]")
    assert "[0.5, 255]" in message


def test_integer_images_outside_byte_range(tmp_path):
    X = np.full((2, 1, 3, 3), 300, dtype=np.int32)
    _expect(save_npz(tmp_path / "r.npz", X=X, y=np.zeros(2, int)), "0..255")


@pytest.mark.parametrize("kwargs", [{"split": "val"}, {"num_samples": 0}, {"num_samples": 2.5}, {"layout": "CHW"}])
def test_bad_options(kwargs):
    with pytest.raises(DataError):
        load_dataset("synthetic", **kwargs)


# --------------------------------------------------------------------------- subsets


def test_subset_is_seeded_sorted_stratified_and_points_to_the_source():
    full = load_dataset("digits")
    a = load_dataset("digits", num_samples=100, seed=1)
    b = load_dataset("digits", num_samples=100, seed=1)
    c = load_dataset("digits", num_samples=100, seed=2)
    assert np.array_equal(a.sample_ids, b.sample_ids) and a.fingerprint == b.fingerprint
    assert not np.array_equal(a.sample_ids, c.sample_ids)
    assert np.all(np.diff(a.sample_ids) > 0)
    assert np.array_equal(a.X, full.X[a.sample_ids]) and np.array_equal(a.y, full.y[a.sample_ids])
    assert np.bincount(a.y, minlength=10).tolist() == [10] * 10
    assert "100 of 540" in a.description


def test_smaller_subsets_nest_in_larger_ones():
    small = load_dataset("synthetic", num_samples=40, seed=5)
    large = load_dataset("synthetic", num_samples=200, seed=5)
    assert set(small.sample_ids) <= set(large.sample_ids)


def test_asking_for_more_than_available_keeps_the_split():
    ds = load_dataset("digits", num_samples=10_000)
    assert len(ds) == 540 and np.array_equal(ds.sample_ids, np.arange(540))
    assert "540" in ds.description and "10000" in ds.description


# --------------------------------------------------------------------------- fingerprint


def test_fingerprint_is_stable_across_processes():
    here = load_dataset("synthetic", num_samples=50).fingerprint
    code = (
        "from failfirst.datasets import load_dataset; "
        "print(load_dataset('synthetic', num_samples=50).fingerprint)"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert here == other and len(here) == 64


def test_fingerprint_changes_with_labels_or_class_names(tmp_path):
    X = np.zeros((2, 4))
    fp = lambda **kw: load_dataset(save_npz(tmp_path / "f.npz", X=X, **kw)).fingerprint  # noqa: E731
    base = fp(y=np.array([0, 1]))
    assert fp(y=np.array([0, 1])) == base
    assert fp(y=np.array([1, 0])) != base
    assert fp(y=np.array([0, 1]), classes=np.array(["a", "b"])) != base


def test_dataset_is_frozen():
    ds = load_dataset("synthetic", num_samples=4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ds.name = "other"
