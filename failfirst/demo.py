"""Small demo models trained on the built-in datasets' train splits, cached as TorchScript."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Iterator, Literal

import torch
from torch import nn
from torch.nn import functional as F

from failfirst import datasets
from failfirst.errors import InputError, unknown_name

Kind = Literal["vision", "timeseries"]

# Bump when an architecture or the training recipe changes: old cache files stop matching.
ARCH_VERSION = 1

# Training recipe per built-in dataset: epochs, batch size, learning rate, a cap on the
# training samples (None: the whole train split) and torch threads (None: leave as set).
# cifar10 is capped at a seeded, stratified 10000 of its 50000 training images and 4 epochs
# so the demo trains in about a minute on a CPU; it is meant to be clearly better than chance
# (10 %), not good. digits and synthetic train in seconds and score above 95 % on test.
_RECIPES: dict[str, dict] = {
    "digits": {"epochs": 15, "batch_size": 64, "lr": 3e-3, "max_train": None, "threads": 1},
    "synthetic": {"epochs": 12, "batch_size": 64, "lr": 3e-3, "max_train": None, "threads": 1},
    "cifar10": {"epochs": 4, "batch_size": 64, "lr": 2e-3, "max_train": 10000, "threads": None},
}
_KIND_OF_DATASET: dict[str, Kind] = {
    "digits": "vision",
    "cifar10": "vision",
    "synthetic": "timeseries",
}


class SmallCNN(nn.Module):
    """A small image classifier for NCHW input of any size and channel count.

    Shape:
        (N, C, H, W) float in [0, 1] -> (N, K) logits.
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.conv3 = nn.Conv2d(32, 32, 3, padding=1)
        # Adaptive pooling makes the head independent of the input's height and width.
        self.pool = nn.AdaptiveAvgPool2d((4, 4))
        self.head = nn.Linear(32 * 4 * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        # ceil_mode keeps a 1-pixel input 1 pixel wide instead of failing.
        x = F.max_pool2d(F.relu(self.conv2(x)), 2, ceil_mode=True)
        x = F.relu(self.conv3(x))
        return self.head(torch.flatten(self.pool(x), 1))


class SmallTimeSeriesCNN(nn.Module):
    """A small 1-D CNN for time series of any length and channel count.

    Shape:
        (N, T, C) (layout "NTC") or (N, T) -> (N, K) logits.
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(in_channels, 16, 7, padding=3)
        self.conv2 = nn.Conv1d(16, 32, 5, padding=2)
        self.conv3 = nn.Conv1d(32, 32, 5, padding=2)
        self.pool = nn.AdaptiveAvgPool1d(8)
        self.head = nn.Linear(32 * 8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(-1)
        x = x.transpose(1, 2)  # NTC -> NCT for Conv1d
        x = F.max_pool1d(F.relu(self.conv1(x)), 2, ceil_mode=True)
        x = F.max_pool1d(F.relu(self.conv2(x)), 2, ceil_mode=True)
        x = F.relu(self.conv3(x))
        return self.head(torch.flatten(self.pool(x), 1))


_ARCHITECTURES: dict[Kind, type[nn.Module]] = {"vision": SmallCNN, "timeseries": SmallTimeSeriesCNN}


def default_cache_dir() -> Path:
    """Where demo models are cached: $FAILFIRST_CACHE, else ~/.cache/failfirst/models (XDG)."""
    env = os.environ.get("FAILFIRST_CACHE")
    return Path(env).expanduser() if env else datasets.user_cache_root() / "models"


def _check(kind: str, dataset: str) -> None:
    if kind not in _ARCHITECTURES:
        raise unknown_name("demo model kind", str(kind), _ARCHITECTURES)
    if dataset not in _KIND_OF_DATASET:
        raise unknown_name("demo dataset", str(dataset), _KIND_OF_DATASET)
    if _KIND_OF_DATASET[dataset] != kind:
        fitting = [d for d, k in _KIND_OF_DATASET.items() if k == kind]
        raise InputError(
            f"a {kind} demo model needs a {kind} dataset ({', '.join(sorted(fitting))}); "
            f"found {dataset!r}, which is {_KIND_OF_DATASET[dataset]}"
        )


def _train(
    kind: Kind, train: datasets.Dataset, recipe: dict, seed: int, progress: bool
) -> nn.Module:
    from tqdm.auto import tqdm

    X = torch.from_numpy(train.X)
    y = torch.from_numpy(train.y)
    epochs, batch_size = recipe["epochs"], recipe["batch_size"]
    threads = torch.get_num_threads()
    # fork_rng restores the global torch RNG afterwards: training never shifts the user's
    # random stream. devices=[] avoids touching (and initialising) CUDA.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        channels = train.X.shape[1] if kind == "vision" else train.X.shape[-1]
        model = _ARCHITECTURES[kind](channels if train.X.ndim > 2 else 1, len(train.classes))
        optimizer = torch.optim.Adam(model.parameters(), lr=recipe["lr"])
        steps = epochs * -(-len(X) // batch_size)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, recipe["lr"], total_steps=steps)
        shuffle = torch.Generator().manual_seed(seed)
        bar = tqdm(
            range(epochs), desc=f"training {kind} demo on {train.name}", unit="epoch",
            disable=not progress, leave=False,
        )
        model.train()
        try:
            # The small models are faster on one thread: thread hand-offs cost more than
            # they save (6x slower with 2 threads on a busy 2-core machine). Restored below.
            torch.set_num_threads(recipe["threads"] or threads)
            for _ in bar:
                order = torch.randperm(len(X), generator=shuffle)
                total = 0.0
                for start in range(0, len(X), batch_size):
                    idx = order[start : start + batch_size]
                    loss = F.cross_entropy(model(X[idx]), y[idx])
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    scheduler.step()
                    total += loss.item() * len(idx)
                bar.set_postfix(loss=f"{total / len(X):.3f}")
        finally:
            torch.set_num_threads(threads)
            bar.close()
    return model.eval()


def _cache_path(kind: Kind, dataset: str, fingerprint: str, seed: int, cache_dir: Path) -> Path:
    return cache_dir / f"{kind}-{dataset}-seed{seed}-v{ARCH_VERSION}-{fingerprint[:16]}.pt"


@contextlib.contextmanager
def _torchscript_quietly() -> Iterator[None]:
    # Recent torch marks TorchScript deprecated in favour of torch.export; it is still the
    # format users reload anywhere with one call (torch.jit.load), so the cache uses it.
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r".*torch\.jit.*deprecated", category=DeprecationWarning
        )
        yield


def demo_model_path(
    kind: Kind,
    dataset: str,
    *,
    seed: int = 42,
    progress: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """The cached TorchScript file of a demo model, training it first if it is missing.

    The cache key is kind, dataset, the fingerprint of the training data, seed and
    ARCH_VERSION. The file is written atomically (temporary file + os.replace), so
    processes racing on it never see a half-written model. It is a plain TorchScript
    file: `torch.jit.load(path)` gives the model back; its extra file `failfirst.json`
    records classes, layout and provenance.

    Args:
        kind: "vision" (digits, cifar10) or "timeseries" (synthetic).
        dataset: A built-in dataset name matching the kind.
        seed: Seed for weight initialisation and shuffling.
        progress: Show a tqdm bar while training.
        cache_dir: Folder for cached models; default `default_cache_dir()`.
        data_dir: Folder with downloaded datasets (cifar10); default
            `datasets.default_data_dir()`.

    Returns:
        Path of the cached model file.

    Raises:
        InputError: Unknown kind or dataset, or a dataset of the other kind.
        DataError: The dataset cannot be loaded (e.g. cifar10 not downloaded).
    """
    _check(kind, dataset)
    recipe = _RECIPES[dataset]
    # Trained on the train split only: the test split is what sweeps evaluate.
    train = datasets.load_dataset(
        dataset, split="train", num_samples=recipe["max_train"], seed=seed, data_dir=data_dir
    )
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path = _cache_path(kind, dataset, train.fingerprint, seed, cache)
    if path.is_file():
        return path

    model = _train(kind, train, recipe, seed, progress)
    meta = {
        "kind": kind,
        "dataset": dataset,
        "classes": list(train.classes),
        "layout": train.layout,
        "input_shape": list(train.X.shape[1:]),
        "train_fingerprint": train.fingerprint,
        "train_samples": len(train),
        "seed": seed,
        "arch_version": ARCH_VERSION,
        "outputs": "logits",
    }
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        with _torchscript_quietly():
            scripted = torch.jit.script(model)
            torch.jit.save(scripted, tmp, _extra_files={"failfirst.json": json.dumps(meta)})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def demo_model(
    kind: Kind,
    dataset: str,
    *,
    seed: int = 42,
    progress: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
) -> torch.nn.Module:
    """A small model trained on a built-in dataset's train split, from the cache if there.

    Args:
        kind: "vision" (a small CNN, NCHW input) or "timeseries" (a small 1-D CNN, NTC input).
        dataset: "digits" or "cifar10" for vision, "synthetic" for time series.
        seed: Seed for weight initialisation and shuffling; training is deterministic
            given it and leaves the global torch RNG as it was.
        progress: Show a tqdm bar while training.
        cache_dir: Folder for cached models; default `default_cache_dir()`.
        data_dir: Folder with downloaded datasets (cifar10).

    Returns:
        The TorchScript model on CPU in eval mode, giving logits.

    Shape:
        vision: (N, C, H, W) -> (N, K); timeseries: (N, T, C) -> (N, K).

    Example:
        >>> model = demo_model("vision", "digits", progress=False)
        >>> model(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """
    options = dict(seed=seed, progress=progress, cache_dir=cache_dir, data_dir=data_dir)
    path = demo_model_path(kind, dataset, **options)
    with _torchscript_quietly():
        try:
            model = torch.jit.load(str(path), map_location="cpu")
        except RuntimeError:
            # A damaged cache file (e.g. a disk filled mid-copy): train it again, once.
            path.unlink(missing_ok=True)
            path = demo_model_path(kind, dataset, **options)
            model = torch.jit.load(str(path), map_location="cpu")
    return model.eval()
