"""A template for a custom Python model file: `failfirst run --model THIS_FILE --dataset ...`.

failfirst executes this file (so only run files you trust) and calls `predict_proba(X)` on
batches of the dataset, in the dataset's own layout (images (N, C, H, W) with values in
[0, 1] unless you pass --layout NHWC; series (N, T) or (N, T, C)). Return an (N, K) array
of class probabilities; logits are detected and softmaxed, with a note. `predict(X)` is
optional: failfirst takes the argmax of `predict_proba` so labels and confidences agree.

This example is a real, if simple, model: a nearest-centroid classifier fitted on the
training split of scikit-learn's digits when the file is loaded. Try it with:

    failfirst run --model examples/custom_model_template.py --dataset digits

Replace the body with your own model: load weights from a path next to this file
(`Path(__file__).with_name("weights.npz")`), call an ONNX session, a JAX function, ...
"""

from __future__ import annotations

import numpy as np

from failfirst.datasets import load_dataset

_train = load_dataset("digits", split="train")
_flat = _train.X.reshape(len(_train.X), -1)
CENTROIDS = np.stack([_flat[_train.y == k].mean(axis=0) for k in range(len(_train.classes))])
TEMPERATURE = 2.0  # softness of the distance-to-probability mapping


def predict_proba(X: np.ndarray) -> np.ndarray:
    """Class probabilities from squared distances to each class centroid.

    Shape:
        X (N, 1, 8, 8) -> (N, 10).
    """
    flat = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
    d2 = ((flat[:, None, :] - CENTROIDS[None]) ** 2).sum(axis=2)
    logits = -d2 / TEMPERATURE
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def predict(X: np.ndarray) -> np.ndarray:
    """Predicted labels (optional; shown for completeness)."""
    return predict_proba(X).argmax(axis=1)
