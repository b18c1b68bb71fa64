"""Two methods on the same reference lesions (``deepwml_evaluate --against``): which of them each method finds, by
lesion size, with McNemar's exact test.

Both reports label the same reference masks with the same 26-connectivity, so reference lesion k of a case is the
same lesion in both per_lesion.csv files: whether each method found it is a paired binary outcome, and only the
lesions one method finds and the other misses carry information (McNemar). For "does fine-tuning find more of the
small lesions?", which the case-level Wilcoxon tests of lesion recall pool away.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import pandas as pd
from scipy import stats

from deepwml.evaluation.lesion_sizes import SIZE_EDGES_ML, size_labels
from deepwml.evaluation.statistics import ALPHA
from deepwml.evaluation.tables import Table

LESION_FILE = "per_lesion.csv"


def read_lesions(folder: Path) -> Optional[pd.DataFrame]:
    """The other report's per_lesion.csv, or None when it has none (a report made before DeepWML wrote it)."""
    path = Path(folder) / LESION_FILE
    return pd.read_csv(path, dtype={"case": str}) if path.is_file() else None


def mcnemar_exact(this_only: int, other_only: int) -> Optional[float]:
    """Two-sided exact McNemar p-value from the discordant pairs; None without any."""
    n = this_only + other_only
    return float(stats.binomtest(min(this_only, other_only), n, 0.5).pvalue) if n else None


def paired_detection(this: pd.DataFrame, other: Optional[pd.DataFrame]) -> Dict[str, Any]:
    """Per size bin of the reference lesions: found by this method, by the other, by one of them only, and McNemar's
    p; not testable (with the reason) when the other report has no lesion table or other reference lesions."""
    if other is None:
        return {"testable": False, "reason": f"the other report has no {LESION_FILE} (made by an older DeepWML): "
                                             "evaluate its masks again"}
    keys = ["case", "lesion"]
    mine = this[this["side"] == "reference"].assign(case=lambda f: f["case"].astype(str))
    theirs = other[other["side"] == "reference"].assign(case=lambda f: f["case"].astype(str))
    paired = mine.merge(theirs[keys + ["voxels", "detected"]], on=keys, how="outer", suffixes=("", "_other"), indicator=True)
    if (paired["_merge"] != "both").any() or not np.array_equal(paired["voxels"], paired["voxels_other"]):
        return {"testable": False, "reason": "the two reports' reference lesions differ (other reference masks or ignore label)"}
    found, found_other = paired["detected"].astype(bool).to_numpy(), paired["detected_other"].astype(bool).to_numpy()
    bins = np.digitize(paired["volume_ml"].to_numpy(float), SIZE_EDGES_ML)
    rows = [_row(label, found[bins == i], found_other[bins == i]) for i, label in enumerate(size_labels())]
    return {"testable": True, "bins": rows, "overall": _row("all", found, found_other)}


def _row(label: str, found: np.ndarray, found_other: np.ndarray) -> Dict[str, Any]:
    """Counts and McNemar's test of one group of reference lesions."""
    this_only, other_only = int(np.sum(found & ~found_other)), int(np.sum(~found & found_other))
    p = mcnemar_exact(this_only, other_only)
    n = int(found.size)
    return {"group": label, "reference_lesions": n, "found_this": int(found.sum()), "found_other": int(found_other.sum()),
            "this_only": this_only, "other_only": other_only, "mcnemar_p": p,
            "favours": None if p is None or p >= ALPHA else ("this" if this_only > other_only else "other")}


def paired_detection_table(paired: Dict[str, Any], source: str) -> Table:
    """The report's table of :func:`paired_detection`."""
    title = f"Against {source}: reference lesions found, by lesion size (paired by lesion)"
    header = ["Lesion volume", "Reference lesions", "Found, this", "Found, other", "This only", "Other only",
              "McNemar p", "Better"]
    if not paired["testable"]:
        return Table(title, header[:1] + ["Result"], [["–", f"not compared: {paired['reason']}"]], key="against-lesions")
    rows: List[List[str]] = []
    for r in paired["bins"] + [paired["overall"]]:
        p = "–" if r["mcnemar_p"] is None else ("< 0.001" if r["mcnemar_p"] < 0.001 else f"{r['mcnemar_p']:.3f}")
        rows.append([r["group"], str(r["reference_lesions"]), str(r["found_this"]), str(r["found_other"]),
                     str(r["this_only"]), str(r["other_only"]), p, r["favours"] or "–"])
    note = ("Each reference lesion found (touched by a predicted voxel) by this method, the other, or both; McNemar's "
            "exact two-sided test on the lesions only one method finds; not corrected for the bins tested; lesions of "
            "one case are not independent, so read p-values as descriptive.")
    return Table(title, header, rows, note=note, key="against-lesions")
