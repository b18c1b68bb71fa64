"""Evaluation stage: per-slice metrics (the paper), per-case metrics (MICCAI 2017 WMH challenge), stratification,
statistics, figures and a self-contained HTML report."""
from deepwml.evaluation.case_metrics import case_metrics
from deepwml.evaluation.evaluate import evaluate_folders
from deepwml.evaluation.slice_metrics import slice_metrics

__all__ = ["case_metrics", "evaluate_folders", "slice_metrics"]
