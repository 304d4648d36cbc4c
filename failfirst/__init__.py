"""failfirst: stress-test trained classifiers under controlled degradation and see how they fail."""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# Public API, imported on first use so `import failfirst` (and the CLI's start-up) stays light.
_LAZY = {
    "stress_test": "failfirst.engine",
    "load_model": "failfirst.models",
    "load_dataset": "failfirst.datasets",
    "render_site": "failfirst.report.site",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'failfirst' has no attribute {name!r}")
