"""The perturbation registry and the contract wrapper every perturbation is called through."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping, Sequence

import numpy as np
import torch

from failfirst.errors import InputError, unknown_name
from failfirst.perturbations.draws import SampleRNG

Domain = Literal["vision", "timeseries"]
Layout = Literal["NCHW", "NHWC", "NT", "NTC"]
DOMAINS: tuple[Domain, ...] = ("vision", "timeseries")

# A transform sees the batch in canonical form (vision NCHW, series (N, T, C)), floating
# point, with severity in (0, 1] and the batch's SampleRNG; it returns the same shape.
Transform = Callable[[torch.Tensor, float, SampleRNG], torch.Tensor]


def interp(severity: float, table: Sequence[float]) -> float:
    """Read a parameter off a table of values at evenly spaced severities from 0 to 1.

    Example:
        >>> interp(0.25, (0.0, 0.5, 1.0))
        0.25
    """
    return float(np.interp(severity, np.linspace(0.0, 1.0, len(table)), table))


@dataclass(frozen=True)
class Perturbation:
    """A registered perturbation: `fn(x, severity, seed=None, *, sample_ids=None, layout=None)`.

    Batch in, same shape and type out: numpy in -> numpy out, torch in -> torch out with the
    same dtype and device. Vision batches are NCHW (or `layout="NHWC"`) with values in [0, 1]
    and the output is clipped to [0, 1]; series are (N, T) or (N, T, C). Severity 0 returns
    the input unchanged; row draws depend only on (seed, name, sample id).
    """

    name: str
    domain: Domain
    family: str
    description: str
    transform: Transform = field(repr=False)
    params: Mapping[str, Any] | Callable[[tuple[int, ...]], Mapping[str, Any]] = field(
        default_factory=dict)

    def describe(self, shape: tuple[int, ...] | None = None) -> dict[str, Any]:
        """The parameters a sweep on batches of `shape` uses, for provenance.

        `params` may be a function of the batch shape (canonical layout) where the parameter
        table depends on it, e.g. small-image versus large-image tables.
        """
        params = self.params(tuple(shape or ())) if callable(self.params) else self.params
        return {"family": self.family, "description": self.description, **params}

    def __call__(self, x, severity: float, seed: int | None = None, *,
                 sample_ids: Sequence[int] | None = None, layout: Layout | None = None):
        severity = check_severity(severity)
        n = len(x)
        ids = np.arange(n) if sample_ids is None else np.asarray(sample_ids)
        if ids.shape != (n,):
            raise InputError(f"sample_ids must hold one id per row ({n}), got shape {ids.shape}")
        if severity == 0.0:
            return x.copy() if isinstance(x, np.ndarray) else x.clone()
        tensor = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
        canonical = to_canonical(tensor, self.domain, layout)
        rng = SampleRNG(seed, self.name, ids, device=tensor.device)
        out = from_canonical(self.apply(canonical, severity, rng), self.domain, layout, x.ndim)
        out = out.to(tensor.dtype)
        return out.numpy() if isinstance(x, np.ndarray) else out

    def apply(self, x: torch.Tensor, severity: float, rng: SampleRNG) -> torch.Tensor:
        """Perturb a canonical batch; the engine calls this once per severity with one rng.

        Shape:
            vision (N, C, H, W), series (N, T, C); float; returns a new tensor of that shape.
        """
        if severity == 0.0:
            return x
        work = x if x.dtype in (torch.float32, torch.float64) else x.float()
        out = self.transform(work, float(severity), rng)
        if self.domain == "vision":
            out = out.clamp(0.0, 1.0)
        return out.to(x.dtype)


def check_severity(severity: float) -> float:
    """Return severity as a float, refusing anything outside [0, 1]."""
    try:
        value = float(severity)
    except (TypeError, ValueError):
        raise InputError(f"severity must be a number in [0, 1], got {severity!r}") from None
    if not 0.0 <= value <= 1.0:
        raise InputError(f"severity must be in [0, 1], got {value}")
    return value


def to_canonical(x: torch.Tensor, domain: Domain, layout: Layout | None = None) -> torch.Tensor:
    """View a user batch in canonical layout: vision NCHW, series (N, T, C).

    Raises InputError for a wrong rank, layout or a non-floating dtype.
    """
    if not torch.is_floating_point(x):
        raise InputError(f"expected a floating-point batch, got dtype {x.dtype}")
    if domain == "vision":
        if x.ndim != 4:
            raise InputError(f"vision batches must be 4-D (NCHW or NHWC), got shape {tuple(x.shape)}")
        layout = layout or "NCHW"
        if layout not in ("NCHW", "NHWC"):
            raise InputError(f"vision layout must be 'NCHW' or 'NHWC', got {layout!r}")
        return x.permute(0, 3, 1, 2) if layout == "NHWC" else x
    if x.ndim not in (2, 3):
        raise InputError(f"time series batches must be (N, T) or (N, T, C), got shape {tuple(x.shape)}")
    return x.unsqueeze(-1) if x.ndim == 2 else x


def from_canonical(x: torch.Tensor, domain: Domain, layout: Layout | None, ndim: int) -> torch.Tensor:
    """Undo `to_canonical`: back to the user's layout (a contiguous tensor)."""
    if domain == "vision":
        return (x.permute(0, 2, 3, 1) if layout == "NHWC" else x).contiguous()
    return x.squeeze(-1) if ndim == 2 else x


_REGISTRY: dict[str, Perturbation] = {}


def register(domain: Domain, *, family: str = "custom", description: str | None = None,
             name: str | None = None,
             params: Mapping[str, Any] | Callable[[tuple[int, ...]], Mapping[str, Any]] | None = None):
    """Register a transform under its function name (or `name`) and return the Perturbation.

    The decorated function receives the batch in canonical layout as a float tensor, a
    severity in (0, 1] and a `SampleRNG`; draw all randomness from the rng so rows are
    reproducible and shared across severities.

    Example:
        >>> @register("vision", family="digital", description="Invert colours.")
        ... def invert(x, severity, rng):
        ...     return x + severity * (1 - 2 * x)
    """
    if domain not in DOMAINS:
        raise unknown_name("domain", domain, DOMAINS)

    def decorator(fn: Transform) -> Perturbation:
        key = name or fn.__name__
        if key in _REGISTRY:
            warnings.warn(f"perturbation {key!r} was registered twice; the later one wins",
                          stacklevel=2)
        summary = description or next(iter((fn.__doc__ or "").strip().splitlines()), "")
        perturbation = Perturbation(key, domain, family, summary, fn, params or {})
        _REGISTRY[key] = perturbation
        return perturbation

    return decorator


def get(name: str) -> Perturbation:
    """The registered perturbation called `name`; an unknown name lists the valid ones."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise unknown_name("perturbation", name, _REGISTRY) from None


def names(domain: Domain | None = None) -> list[str]:
    """Registered names, optionally for one domain, in registration order."""
    if domain is not None and domain not in DOMAINS:
        raise unknown_name("domain", domain, DOMAINS)
    return [k for k, p in _REGISTRY.items() if domain is None or p.domain == domain]


def get_perturbations(domain: Domain) -> list[tuple[str, Perturbation]]:
    """`[(name, fn), ...]` for `"vision"` or `"timeseries"`, as the seed's API had it."""
    if domain not in DOMAINS:
        raise unknown_name("domain", domain, DOMAINS)
    return [(k, _REGISTRY[k]) for k in names(domain)]
