"""The report: exports (JSON, CSV, PNG) and the static HTML site, both from the results alone."""

from __future__ import annotations

from failfirst.report.data import worst_failures
from failfirst.report.exports import write_exports
from failfirst.report.site import render_site

__all__ = ["render_site", "worst_failures", "write_exports"]
