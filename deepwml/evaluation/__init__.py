"""Evaluation stage: per-slice metrics (the paper), per-case metrics (MICCAI 2017 WMH challenge), stratification,
statistics, figures and a self-contained HTML report."""
from __future__ import annotations

import importlib
from typing import Any

#: Public names and the module that defines them; imported on first use so worker processes stay light.
_EXPORTS = {
    "evaluate_folders": "deepwml.evaluation.evaluate",
    "case_metrics": "deepwml.evaluation.case_metrics",
    "slice_metrics": "deepwml.evaluation.slice_metrics",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import ``evaluate_folders`` and friends lazily."""
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'deepwml.evaluation' has no attribute {name!r}")
