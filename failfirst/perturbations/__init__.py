"""Perturbations: a registry of batched, seeded, severity-controlled degradations.

Every perturbation is `fn(x, severity, seed=None, *, sample_ids=None, layout=None)`; see
`Perturbation` for the contract. Importing this package registers the built-in families.
"""

from failfirst.perturbations.draws import SampleRNG
from failfirst.perturbations.registry import (
    DOMAINS,
    Perturbation,
    check_severity,
    from_canonical,
    get,
    get_perturbations,
    interp,
    names,
    register,
    to_canonical,
)

# Built-in families register themselves on import; the order here is the listing order.
from failfirst.perturbations import vision, corruptions, timeseries, ts_augment  # noqa: E402,F401  isort: skip

__all__ = [
    "DOMAINS", "Perturbation", "SampleRNG", "check_severity", "from_canonical", "get",
    "get_perturbations", "interp", "names", "register", "to_canonical",
]
