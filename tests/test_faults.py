"""Faults with real processes: a killed run resumes, a killed worker loses nothing."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from distributed import Client

import failfirst
from failfirst import store
from tests.conftest import images
from tests.test_engine import assert_same_results

PERTS = ["gaussian_noise", "random_occlusion", "blur"]
KW = dict(perturbations=PERTS, severities=4, batch_size=4)


def wait_for_done(path: Path, at_least: int, timeout: float = 90.0) -> int:
    """Poll the store's done marks until `at_least` regions are written."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            count = int(store.done_marks(path).sum())
        except Exception:  # the store is still being created
            count = 0
        if count >= at_least:
            return count
        time.sleep(0.05)
    raise AssertionError(f"fewer than {at_least} regions were written within {timeout} s")


def test_a_run_killed_with_sigkill_resumes_to_the_same_dataset(tmp_path, linear_model_file):
    X, y = images(n=48)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    path = tmp_path / "run.zarr"
    script = tmp_path / "sweep.py"
    script.write_text(textwrap.dedent(f"""
        import numpy as np, failfirst
        X, y = np.load({str(tmp_path / 'X.npy')!r}), np.load({str(tmp_path / 'y.npy')!r})
        failfirst.stress_test({str(linear_model_file)!r}, X, y, store={str(path)!r}, **{KW!r})
    """))
    env = {**os.environ, "FAILFIRST_TEST_SLEEP": "0.05"}
    proc = subprocess.Popen([sys.executable, str(script)], env=env, stderr=subprocess.PIPE)
    try:
        wait_for_done(path, 3)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done_before = store.done_marks(path)
    assert 3 <= done_before.sum() < done_before.size, "the kill should land mid-sweep"
    assert (tmp_path / "run.zarr.lock").exists()  # left behind by the dead run

    resumed = failfirst.stress_test(str(linear_model_file), X, y, store=path, resume=True, **KW)
    fresh = failfirst.stress_test(str(linear_model_file), X, y, **KW)
    assert store.done_marks(path).all()
    assert_same_results(fresh, resumed)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_dask_cluster(tmp_path, sleep: str = "0"):
    """A `dask scheduler` and two `dask worker` processes on 127.0.0.1, as a user would run."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "FAILFIRST_TEST_SLEEP": sleep}
    common = dict(env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    scheduler = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler",
                                  "--host", "127.0.0.1", "--port", str(port),
                                  "--no-dashboard"], **common)
    workers = {name: subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker",
                                       address, "--nthreads", "1", "--no-nanny",
                                       "--no-dashboard", "--name", name,
                                       "--host", "127.0.0.1"], **common)
               for name in ("w1", "w2")}
    return address, [scheduler, *workers.values()], workers


def stop(processes):
    for proc in processes:
        proc.kill()
        proc.wait()


@pytest.fixture
def dask_cluster(tmp_path):
    address, processes, workers = start_dask_cluster(tmp_path, sleep="0.1")
    try:
        yield address, workers
    finally:
        stop(processes)


def test_a_worker_killed_mid_sweep_loses_nothing(tmp_path, dask_cluster, linear_model_file):
    address, workers = dask_cluster
    X, y = images(n=48)
    path = tmp_path / "run.zarr"
    outcome = {}
    with Client(address, timeout=60) as client:
        client.wait_for_workers(2, timeout=60)

        def run():
            try:
                outcome["ds"] = failfirst.stress_test(str(linear_model_file), X, y, store=path,
                                                      client=client, **KW).load()
            except BaseException as exc:  # surfaced in the main thread below
                outcome["error"] = exc

        thread = threading.Thread(target=run)
        thread.start()
        wait_for_done(path, 4)
        workers["w1"].send_signal(signal.SIGKILL)
        workers["w1"].wait()
        thread.join(timeout=240)
        assert not thread.is_alive(), "the sweep did not finish after losing a worker"
        assert len(client.scheduler_info()["workers"]) == 1
    assert "error" not in outcome, outcome.get("error")
    fresh = failfirst.stress_test(str(linear_model_file), X, y, **KW)
    assert_same_results(fresh, outcome["ds"])
