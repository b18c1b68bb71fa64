"""Two methods scored on the same scans: paired Wilcoxon signed-rank tests of every metric (``deepwml_evaluate
--against REPORT_DIR``), for "is the fine-tuned model better than the shipped one" or "than LST-LPA" on a test set.

Per case, the six challenge metrics are paired by case id and tested two-sided, Bonferroni-corrected over the six.
Per slice, Dice, sensitivity and precision are paired by (case, slice) over the slices with reference lesion; slices of
one case are not independent, so those p-values are descriptive, as the group comparisons are (statistics.py).
A pair with either value undefined (e.g. HD95 of an empty mask, precision of an empty slice) is left out and counted.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from deepwml.evaluation.case_metrics import CASE_METRICS
from deepwml.evaluation.labels import METRIC_LABELS
from deepwml.evaluation.statistics import ALPHA, MIN_GROUP_SIZE
from deepwml.evaluation.stratify import SLICE_METRICS
from deepwml.evaluation.tables import Table
from deepwml.utils.errors import DeepWMLError

#: the report files the other method's folder must hold (written by deepwml_evaluate)
REPORT_FILES = ("per_case.csv", "per_slice.csv", "summary.json")


def read_report(folder: Path) -> Dict[str, Any]:
    """Another deepwml_evaluate report folder: its per-case and per-slice tables and summary."""
    folder = Path(folder).expanduser()
    missing = [name for name in REPORT_FILES if not (folder / name).is_file()]
    if missing:
        raise DeepWMLError(f"--against: not a deepwml_evaluate report folder (no {', '.join(missing)}); evaluate the "
                           "other method's masks with deepwml_evaluate -o THAT_FOLDER first", folder)
    try:
        cases = pd.read_csv(folder / "per_case.csv", dtype={"case": str})
        slices = pd.read_csv(folder / "per_slice.csv", dtype={"case": str})
        summary = json.loads((folder / "summary.json").read_text())
    except (ValueError, OSError, pd.errors.ParserError) as e:
        raise DeepWMLError(f"--against: the report cannot be read ({type(e).__name__}: {e})", folder) from None
    needed = {"case", *CASE_METRICS}
    if not needed <= set(cases.columns) or not {"case", "slice", "has_reference_lesion", *SLICE_METRICS} <= set(slices.columns):
        raise DeepWMLError("--against: per_case.csv or per_slice.csv lacks deepwml_evaluate's columns", folder)
    return {"folder": folder, "cases": cases, "slices": slices, "summary": summary}


def paired_wilcoxon(this: Sequence[float], other: Sequence[float], better: str) -> Dict[str, Any]:
    """Two-sided Wilcoxon signed-rank test of paired values (pairs with an undefined value left out), with the
    medians, the median of the differences (this - other) and which method the differences favour."""
    a, b = np.asarray(this, float), np.asarray(other, float)
    both = np.isfinite(a) & np.isfinite(b)
    a, b = a[both], b[both]
    result: Dict[str, Any] = {"n": int(a.size), "n_undefined": int((~both).sum()),
                              "median_this": _median(a), "median_other": _median(b), "median_difference": _median(a - b)}
    if a.size < MIN_GROUP_SIZE:
        return {**result, "testable": False, "reason": f"n={a.size} < {MIN_GROUP_SIZE} pairs"}
    if not np.any(a != b):
        return {**result, "testable": False, "reason": "identical values in every pair"}
    statistic, p = stats.wilcoxon(a, b, zero_method="wilcox", alternative="two-sided")
    # the median difference says which way; with a median of 0 (many ties) the mean does
    direction = float(np.median(a - b)) or float(np.mean(a - b))
    favours = "neither" if direction == 0 else ("this" if (direction > 0) == (better == "higher") else "other")
    return {**result, "testable": True, "statistic": float(statistic), "p": float(p), "favours": favours}


def _as_written(values: Sequence[float]) -> np.ndarray:
    """``values`` rounded as deepwml_evaluate writes them (``%.6g``), NaN kept."""
    return np.array([float(f"{v:.6g}") for v in np.asarray(values, float)], float)


def _median(values: np.ndarray) -> Optional[float]:
    """The median, None without values."""
    return float(np.median(values)) if values.size else None


def compare_with(report: Dict[str, Any], cases: pd.DataFrame, slices: pd.DataFrame,
                 summary: Dict[str, Any]) -> Dict[str, Any]:
    """Paired tests of this evaluation against another report of the same reference cases; other case sets are
    refused, and a different reference folder or ignore value is noted."""
    other_cases, other_slices, other_summary = report["cases"], report["slices"], report["summary"]
    mine, theirs = set(cases["case"].astype(str)), set(other_cases["case"].astype(str))
    if mine != theirs:
        only_mine, only_theirs = sorted(mine - theirs), sorted(theirs - mine)
        raise DeepWMLError("--against: the two reports hold different cases (only here: "
                           f"{', '.join(only_mine[:5]) or 'none'}; only there: {', '.join(only_theirs[:5]) or 'none'}); "
                           "a paired comparison needs both methods scored on the same cases", report["folder"])
    notes = []
    if other_summary.get("reference_dir") != summary.get("reference_dir"):
        notes.append(f"The other report was scored against {other_summary.get('reference_dir')}, this one against "
                     f"{summary.get('reference_dir')}: check that they hold the same masks.")
    if other_summary.get("ignore_label") != summary.get("ignore_label"):
        notes.append(f"The reports leave out different label values ({other_summary.get('ignore_label')} there, "
                     f"{summary.get('ignore_label')} here).")
    paired_cases = cases.assign(case=cases["case"].astype(str)).merge(
        other_cases.assign(case=other_cases["case"].astype(str)), on="case", suffixes=("", "_other"))
    # this method's values as its CSV will hold them (6 significant digits), as the other's were read back: the same
    # masks then give equal pairs
    by_case = {m: paired_wilcoxon(_as_written(paired_cases[m]), paired_cases[f"{m}_other"], better)
               for m, better in CASE_METRICS.items()}
    tested = [r for r in by_case.values() if r["testable"]]
    for r in tested:
        r["p_bonferroni"] = min(1.0, r["p"] * len(tested))
        r["significant"] = bool(r["p_bonferroni"] < ALPHA)
    keys = ["case", "slice"]
    lesion_slices = slices[slices["has_reference_lesion"].astype(bool)]
    paired_slices = lesion_slices.assign(case=lesion_slices["case"].astype(str)).merge(
        other_slices.assign(case=other_slices["case"].astype(str))[keys + list(SLICE_METRICS)], on=keys,
        suffixes=("", "_other"), how="left")
    by_slice = {m: paired_wilcoxon(_as_written(paired_slices[m]), paired_slices[f"{m}_other"], "higher")
                for m in SLICE_METRICS}
    return {"other_report": str(Path(report["folder"]).resolve()),
            "other_prediction_dir": other_summary.get("prediction_dir"),
            "n_cases": int(len(paired_cases)), "cases": by_case, "slices": by_slice, "notes": notes}


def paired_tables(paired: Dict[str, Any]) -> List[Table]:
    """The per-case and per-slice comparisons as report tables."""
    source = paired["other_prediction_dir"] or paired["other_report"]
    out = []
    for part, p_label, title, note in (
            ("cases", "Wilcoxon p (Bonferroni)", f"Against {source}: per-case metrics (paired by case)",
             "Two-sided Wilcoxon signed-rank test; p Bonferroni-corrected over the metrics tested; 'Better' names the "
             "method the differences favour when p < 0.05."),
            ("slices", "Wilcoxon p", f"Against {source}: per-slice metrics (slices with reference lesion, paired by slice)",
             "Two-sided Wilcoxon signed-rank test; slices of one case are correlated, so these p-values are "
             "descriptive.")):
        header = ["Metric", "Median, this", "Median, other", "Median difference", "Pairs", p_label, "Better"]
        rows = []
        for metric, r in paired[part].items():
            p = r.get("p_bonferroni", r.get("p"))
            significant = r.get("significant", r.get("testable") and p is not None and p < ALPHA)
            rows.append([METRIC_LABELS.get(metric, metric), _num(r["median_this"]), _num(r["median_other"]),
                         _num(r["median_difference"]), str(r["n"]),
                         _p(p) if r["testable"] else r["reason"],
                         r["favours"] if r["testable"] and significant else "–"])
        out.append(Table(title, header, rows, note=note, key=f"against-{part}"))
    return out


def _num(value: Optional[float]) -> str:
    """Three decimals; '–' when undefined."""
    return "–" if value is None else f"{value:.3f}"


def _p(value: Optional[float]) -> str:
    """A p-value for a table."""
    return "–" if value is None else ("< 0.001" if value < 0.001 else f"{value:.3f}")
