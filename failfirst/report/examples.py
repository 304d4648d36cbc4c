"""Stored inputs of chosen samples, clean and recomputed under a perturbation, in canonical layout.

A perturbation depends only on (seed, perturbation name, sample id), so the exact input a
model saw in the sweep is recomputed from the run store without the model.
"""

from __future__ import annotations

import os

import numpy as np
import xarray as xr

from failfirst import store
from failfirst.errors import InputError
from failfirst.perturbations import get


class Inputs:
    """The swept inputs of a run store, read a few samples at a time.

    Args:
        path: The run store.
        attrs: The results' attrs (domain, layout and seed of the run).
    """

    def __init__(self, path: str | os.PathLike, attrs: dict):
        self.domain = attrs.get("domain")
        self.layout = attrs.get("layout")
        self.seed = attrs.get("seed")
        inputs: xr.Dataset = store.open_inputs(path)
        self.array = inputs["input"]
        self.ids = inputs["sample"].values

    def read(self, positions: np.ndarray) -> np.ndarray:
        """Inputs at `positions` (rows of the store) in the user's layout, as stored."""
        return np.asarray(self.array.isel(sample=np.asarray(positions, np.int64)).values)

    def canonical(self, x: np.ndarray) -> np.ndarray:
        """A batch in canonical layout: images (N, C, H, W), series (N, T, C)."""
        if self.domain == "vision":
            return x.transpose(0, 3, 1, 2) if self.layout == "NHWC" else x
        return x[..., None] if x.ndim == 2 else x

    def perturbed(self, x: np.ndarray, name: str, severity: float,
                  sample_ids: np.ndarray) -> np.ndarray | None:
        """`x` (user layout) under perturbation `name` at `severity`, exactly as swept.

        Returns None when `name` is not registered in this process (a custom perturbation
        whose module was not imported): the report then shows the clean input alone.
        """
        try:
            fn = get(name)
        except InputError:
            return None
        layout = self.layout if self.domain == "vision" else None
        return np.asarray(fn(x, float(severity), seed=self.seed,
                             sample_ids=np.asarray(sample_ids, np.int64), layout=layout))
