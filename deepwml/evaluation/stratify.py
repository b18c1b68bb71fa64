"""Group metrics by centre, disease, lesion-volume group and slice-thickness band; median, IQR, range and n per group."""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

from deepwml.constants import DISEASES, LV_GROUP_NAMES
from deepwml.evaluation.groups import THICKNESS_BAND_NAMES, ordered
from deepwml.evaluation.labels import FACTOR_LABELS, METRIC_LABELS
from deepwml.evaluation.tables import Table

SLICE_METRICS = ("dice", "sensitivity", "precision")
#: Display order of the groups of each factor (others follow, sorted).
FACTOR_ORDER: Dict[str, Sequence[str]] = {
    "disease": DISEASES,
    "lv_group": LV_GROUP_NAMES,
    "thickness_band": THICKNESS_BAND_NAMES,
    "centre": (),
}
#: Factors whose groups are always all shown, even when empty, so reports stay comparable with the paper's Fig. 4.
ALWAYS_ALL_GROUPS = {"lv_group"}


def describe(values: Sequence[float]) -> Dict[str, Optional[float]]:
    """n (finite values), n_undefined (NaN), median, q1, q3, iqr, min, max, mean; None where there is no value."""
    arr = np.asarray(values, dtype=float)
    finite = arr[np.isfinite(arr)]
    stats: Dict[str, Optional[float]] = {"n": int(finite.size), "n_undefined": int(arr.size - finite.size)}
    if finite.size == 0:
        stats.update(dict.fromkeys(("median", "q1", "q3", "iqr", "min", "max", "mean")))
        return stats
    q1, median, q3 = np.percentile(finite, [25, 50, 75])
    stats.update(
        median=float(median),
        q1=float(q1),
        q3=float(q3),
        iqr=float(q3 - q1),
        min=float(finite.min()),
        max=float(finite.max()),
        mean=float(finite.mean()),
    )
    return stats


def group_order(frame: pd.DataFrame, factor: str) -> List[str]:
    """The groups of ``factor`` present in ``frame`` (all of them for G1–G5), in display order."""
    present = frame[factor].astype(str).tolist()
    if factor in ALWAYS_ALL_GROUPS:
        present += list(FACTOR_ORDER[factor])
    return ordered(present, FACTOR_ORDER.get(factor, ()))


def summarise(frame: pd.DataFrame, factor: Optional[str], metrics: Sequence[str]) -> Dict[str, Dict[str, dict]]:
    """{group: {metric: describe(...)}} for each group of ``factor`` (None: one group 'overall')."""
    if factor is None:
        return {"overall": {m: describe(frame[m]) for m in metrics}}
    keys = frame[factor].astype(str)
    return {g: {m: describe(frame.loc[keys == g, m]) for m in metrics} for g in group_order(frame, factor)}


def median_iqr(stats: Dict[str, Optional[float]], digits: int = 2) -> str:
    """'median (q1–q3)' as in the paper's Table 2; '–' without values."""
    if not stats.get("n"):
        return "–"
    return f"{_fmt(stats['median'], digits)} ({_fmt(stats['q1'], digits)}–{_fmt(stats['q3'], digits)})"


def _fmt(value: Optional[float], digits: int) -> str:
    """A number with ``digits`` decimals; '–' for None/NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def table2(scored_slices: pd.DataFrame, factors: Sequence[str] = ("centre", "disease")) -> Table:
    """The paper's Table 2: rows Dice, sensitivity, precision as median (IQR); columns per centre, per disease, overall."""
    columns: List[tuple] = []
    for factor in factors:
        for group in group_order(scored_slices, factor):
            columns.append((f"{FACTOR_LABELS[factor]} {group}" if factor == "centre" else group, scored_slices[factor].astype(str) == group))
    columns.append(("Overall", pd.Series(True, index=scored_slices.index)))
    header = ["Metric"] + [name for name, _ in columns]
    rows = [["Slices (n)"] + [str(int(sel.sum())) for _, sel in columns]]
    for metric in SLICE_METRICS:
        rows.append([METRIC_LABELS[metric]] + [median_iqr(describe(scored_slices.loc[sel, metric])) for _, sel in columns])
    return Table(
        "Table 2. Per-slice segmentation performance, median (IQR)",
        header,
        rows,
        note="Slices with reference lesion only; precision is undefined (left out) on slices with an empty prediction.",
        key="table2",
    )


def factor_table(frame: pd.DataFrame, factor: str, metrics: Sequence[str], title: str, unit: str = "Slices") -> Table:
    """Rows = groups of ``factor`` plus overall; columns = n and each metric as median (IQR) [min–max]."""
    groups = summarise(frame, factor, metrics)
    groups["Overall"] = summarise(frame, None, metrics)["overall"]
    counts = frame[factor].astype(str).value_counts()
    header = [FACTOR_LABELS.get(factor, factor), f"{unit} (n)"] + [METRIC_LABELS.get(m, m) for m in metrics]
    rows = []
    for group, stats in groups.items():
        n = int(counts.get(group, 0)) if group != "Overall" else len(frame)
        rows.append([group, str(n)] + [_with_range(stats[m]) for m in metrics])
    return Table(title, header, rows, note="median (IQR) [min–max]", key=f"by-{factor}")


def _with_range(stats: Dict[str, Optional[float]]) -> str:
    """'median (IQR) [min–max]'."""
    if not stats.get("n"):
        return "–"
    return f"{median_iqr(stats)}\n[{_fmt(stats['min'], 2)}–{_fmt(stats['max'], 2)}]"
