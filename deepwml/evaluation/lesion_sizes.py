"""Lesion detection by lesion size: which reference lesions a model finds and which of its lesions are false, per size.

Lesion recall and F1 pool every lesion of a case; a reader deciding whether to trust a model's small foci needs them
apart, since thick-slice models find confluent lesions and miss specks (issue #12: lesion recall 0.35 on 512² scans).
A reference lesion is found when a predicted voxel touches it, a predicted lesion is true when it touches the
reference (the WMH challenge's lesion rule, 26-connected), each binned by its own volume.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np
import pandas as pd

from deepwml.evaluation.tables import Table

#: upper edges (ml) of the size bins; 0.03 ml is a 3 mm focus on one 5 mm slice, 2 ml a confluent lesion
SIZE_EDGES_ML = (0.03, 0.1, 0.5, 2.0)


def size_labels(edges: tuple = SIZE_EDGES_ML) -> List[str]:
    """Bin names: '< 0.03 ml', '0.03–0.1 ml', …, '≥ 2 ml'."""
    return ([f"< {edges[0]:g} ml"] + [f"{a:g}–{b:g} ml" for a, b in zip(edges[:-1], edges[1:])]
            + [f"≥ {edges[-1]:g} ml"])


def _share(part: int, whole: int) -> Optional[float]:
    """part / whole, None when there is nothing to divide."""
    return part / whole if whole else None


def _text(share: Optional[float]) -> str:
    """A share with two decimals, '–' when undefined."""
    return "–" if share is None else f"{share:.2f}"


def detection_row(label: str, reference: pd.DataFrame, predicted: pd.DataFrame) -> Dict[str, Any]:
    """Counts and shares of one group of lesions (rows of per_lesion.csv, reference and predicted apart)."""
    found, true = int(reference["detected"].sum()), int(predicted["detected"].sum())
    return {"group": label, "reference_lesions": len(reference), "reference_found": found,
            "recall": _share(found, len(reference)), "predicted_lesions": len(predicted),
            "predicted_false": len(predicted) - true, "precision": _share(true, len(predicted))}


def detection_by_size(lesions: pd.DataFrame, edges: tuple = SIZE_EDGES_ML) -> Dict[str, Any]:
    """Per size bin and over all lesions (pooled over cases): reference lesions found, predicted lesions false."""
    bins = np.digitize(lesions["volume_ml"].to_numpy(float), edges) if len(lesions) else np.zeros(0, int)
    is_ref = (lesions["side"] == "reference").to_numpy() if len(lesions) else np.zeros(0, bool)
    rows = [detection_row(label, lesions[(bins == i) & is_ref], lesions[(bins == i) & ~is_ref]) for i, label in enumerate(size_labels(edges))]
    return {"edges_ml": list(edges), "bins": rows, "overall": detection_row("all", lesions[is_ref], lesions[~is_ref])}


def size_table(by_size: Dict[str, Any]) -> Table:
    """The report's table: a row per size bin and one for all lesions."""
    note = ("Pooled over cases; each lesion (26-connected) binned by its own volume. A reference lesion is found when a "
            "predicted voxel touches it; a predicted lesion is false when it touches no reference voxel. Every lesion: "
            "per_lesion.csv.")
    return detection_table("Lesion detection by lesion size", "Lesion volume", by_size["bins"] + [by_size["overall"]], note,
                           "lesion-sizes")


def detection_table(title: str, group: str, rows: List[Dict[str, Any]], note: str, key: str) -> Table:
    """A table of :func:`detection_row` rows, the group's name first."""
    def cells(row: Dict[str, Any]) -> List[str]:
        return [row["group"], str(row["reference_lesions"]), str(row["reference_found"]), _text(row["recall"]),
                str(row["predicted_lesions"]), str(row["predicted_false"]), _text(row["precision"])]

    header = [group, "Reference lesions", "Found", "Lesion recall", "Predicted lesions", "False", "Lesion precision"]
    return Table(title, header, [cells(r) for r in rows], note=note, key=key)
