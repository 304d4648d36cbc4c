"""The run store: chunks aligned with tasks, inputs inside, consolidated metadata, the lock."""

from __future__ import annotations

import json
import os
import socket

import numpy as np
import pytest
import xarray as xr
import zarr

from failfirst import store
from failfirst.errors import StoreError
from tests.conftest import images
from tests.test_engine import sweep

pytestmark = pytest.mark.filterwarnings("ignore:.*treating them as logits")


def test_every_task_owns_exactly_one_chunk_of_every_result(tmp_path):
    path = tmp_path / "run.zarr"
    sweep(store=path, batch_size=16, severities=5)
    group = zarr.open_group(path, mode="r", zarr_format=store.ZARR_FORMAT)
    for name in store.PER_SAMPLE:
        assert group[name].shape == (3, 5, 40)
        assert group[name].chunks == (1, 5, 16)  # (one perturbation, all severities, one batch)
    assert group["progress/done"].chunks == (1, 1)
    assert group["progress/done"].shape == (3, 3)
    inputs = store.open_inputs(path)
    X, y = images()
    np.testing.assert_array_equal(inputs.input.values, X)
    np.testing.assert_array_equal(inputs.label.values, y)
    assert inputs.input.encoding["chunks"][0] == 16


def test_grid_layout_batches_cover_the_samples_once():
    layout = store.Layout(n_samples=40, batch_size=16)
    assert layout.n_batches == 3
    covered = np.concatenate([np.arange(40)[layout.batch(b)] for b in range(layout.n_batches)])
    np.testing.assert_array_equal(covered, np.arange(40))


def test_a_finished_store_is_consolidated_and_self_describing(tmp_path):
    path = tmp_path / "run.zarr"
    sweep(store=path)
    assert (path / ".zmetadata").exists()
    ds = xr.open_zarr(path, consolidated=True)
    assert "accuracy" in ds and ds.attrs["finished"]
    assert ds.attrs["identity"]["seed"] == 42
    assert json.loads((path / ".zattrs").read_text())["fingerprint"] == ds.attrs["fingerprint"]


def test_open_results_refuses_a_folder_that_is_not_a_store(tmp_path):
    with pytest.raises(StoreError, match="no run store"):
        store.open_results(tmp_path)


def test_lock_is_exclusive_and_released(tmp_path):
    path = tmp_path / "run.zarr"
    with store.Lock(path) as lock:
        owner = json.loads(lock.file.read_text())
        assert owner == {"pid": os.getpid(), "host": socket.gethostname()}
        with pytest.raises(StoreError, match="another run"):
            store.Lock(path).acquire()
    assert not lock.file.exists()
    store.Lock(path).acquire().release()


def test_a_lock_held_by_a_live_process_elsewhere_is_respected(tmp_path):
    path = tmp_path / "run.zarr"
    lock_file = tmp_path / "run.zarr.lock"
    lock_file.write_text(json.dumps({"pid": 1, "host": "another-machine"}))
    with pytest.raises(StoreError, match="another run"):
        store.Lock(path).acquire()
