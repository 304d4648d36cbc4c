"""Shared fixtures: tiny real models and data the sweep tests run on."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch

# A deterministic linear model as a Python model file (the seed's upload contract). It
# sleeps FAILFIRST_TEST_SLEEP seconds a call, so fault tests can interrupt it mid-sweep, and
# raises on an all-blank image while the file named by FAILFIRST_TEST_FAIL_FLAG exists.
LINEAR_MODEL = textwrap.dedent('''
    """A fixed random linear classifier over flattened inputs."""
    import os
    import time

    import numpy as np

    def predict_proba(X):
        time.sleep(float(os.environ.get("FAILFIRST_TEST_SLEEP", "0")))
        flag = os.environ.get("FAILFIRST_TEST_FAIL_FLAG")
        flat = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
        if flag and os.path.exists(flag) and (np.abs(flat).max(axis=1) == 0).any():
            raise RuntimeError("blank image")
        W = np.random.default_rng(0).standard_normal((flat.shape[1], 4))
        logits = (flat - 0.5) @ W / np.sqrt(flat.shape[1]) * 4
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
''')


@pytest.fixture
def linear_model_file(tmp_path):
    path = tmp_path / "linear_model.py"
    path.write_text(LINEAR_MODEL)
    return path


def tiny_cnn(in_channels: int = 3, classes: int = 4, seed: int = 0) -> torch.nn.Module:
    """A small conv net from torch's own layers, so any process can unpickle it."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return torch.nn.Sequential(
            torch.nn.Conv2d(in_channels, 8, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(32, classes),
        ).eval()


def images(n: int = 40, c: int = 3, h: int = 12, w: int = 12, seed: int = 0):
    """Images in [0, 1] and labels in 0..3."""
    rng = np.random.default_rng(seed)
    return rng.random((n, c, h, w), dtype=np.float32), rng.integers(0, 4, n)
