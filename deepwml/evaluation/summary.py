"""Turn the per-case and per-slice frames into summary.json content and the report's tables."""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from deepwml.datasets import CaseMeta
from deepwml.evaluation.case_metrics import CASE_METRICS
from deepwml.evaluation.groups import thickness_bands
from deepwml.evaluation.statistics import run_statistics
from deepwml.evaluation.stratify import SLICE_METRICS, describe, factor_table, group_order, summarise, table2
from deepwml.evaluation.tables import Table

#: Case-level metrics compared across groups (lesion recall/precision enter through F1).
CASE_TESTED_METRICS = ("dice", "hd95_mm", "avd_percent", "lesion_f1")
UNKNOWN = "unknown"


def attach_meta(cases: pd.DataFrame, slices: pd.DataFrame, meta: Optional[Mapping[str, CaseMeta]],
                lesions: Optional[pd.DataFrame] = None) -> List[str]:
    """Add centre, disease, thickness band to the frames (in place); returns cases missing from dataset.json."""
    cases["thickness_band"] = thickness_bands(cases["slice_thickness_mm"].to_numpy())
    missing = []
    if meta is None:
        cases["centre"] = UNKNOWN
        cases["disease"] = UNKNOWN
    else:
        missing = [c for c in cases["case"] if c not in meta]
        cases["centre"] = [meta[c].centre if c in meta else UNKNOWN for c in cases["case"]]
        cases["disease"] = [meta[c].disease if c in meta else UNKNOWN for c in cases["case"]]
    lookup = cases.set_index("case")[["centre", "disease", "slice_thickness_mm", "thickness_band"]]
    for frame in [slices] + ([lesions] if lesions is not None else []):
        joined = lookup.loc[frame["case"]].reset_index(drop=True)
        for i, column in enumerate(lookup.columns):
            frame.insert(1 + i, column, joined[column].to_numpy())
    return missing


def slice_factors(with_meta: bool) -> List[str]:
    """Factors slice metrics are stratified by: centre and disease only when a dataset supplied them."""
    return (["centre", "disease"] if with_meta else []) + ["lv_group", "thickness_band"]


def case_factors(with_meta: bool) -> List[str]:
    """Factors case metrics are stratified by."""
    return (["centre", "disease"] if with_meta else []) + ["thickness_band"]


def build_summary(cases: pd.DataFrame, slices: pd.DataFrame, with_meta: bool) -> Dict[str, Any]:
    """Counts, stratified statistics and group tests, JSON-ready (NaN written as null)."""
    scored = slices[slices["has_reference_lesion"]]
    no_ref = slices[~slices["has_reference_lesion"]]
    fp = no_ref[no_ref["false_positive_slice"]]
    volumes = ["ref_volume_ml", "pred_volume_ml", "ref_lesion_count", "pred_lesion_count"]
    summary = {
        "slices": {
            "n_slices": int(len(slices)),
            "n_with_reference_lesion": int(len(scored)),
            "n_without_reference_lesion": int(len(no_ref)),
            "n_false_positive_slices": int(len(fp)),
            "false_positive_area_mm2_total": float(fp["fp_area_mm2"].sum()),
            "false_positive_area_mm2_per_fp_slice": describe(fp["fp_area_mm2"]),
            "overall": summarise(scored, None, SLICE_METRICS)["overall"],
            "by": {f: summarise(scored, f, SLICE_METRICS) for f in slice_factors(with_meta)},
            "false_positive_slices_by": {
                f: {g: int(n) for g, n in fp[f].astype(str).value_counts().sort_index().items()}
                for f in slice_factors(with_meta)
                if f != "lv_group"
            },
        },
        "cases": {
            "n_cases": int(len(cases)),
            "n_reference_empty": int(cases["ref_empty"].sum()),
            "n_prediction_empty": int(cases["pred_empty"].sum()),
            "overall": summarise(cases, None, list(CASE_METRICS) + volumes)["overall"],
            "by": {f: summarise(cases, f, list(CASE_METRICS)) for f in case_factors(with_meta)},
        },
        "statistics": {
            "slices": run_statistics(scored, slice_factors(with_meta), SLICE_METRICS),
            "cases": run_statistics(cases, case_factors(with_meta), CASE_TESTED_METRICS),
        },
    }
    return json_ready(summary)


def build_tables(cases: pd.DataFrame, slices: pd.DataFrame, with_meta: bool) -> Dict[str, Table]:
    """Table 2 and the stratified tables, keyed by name."""
    scored = slices[slices["has_reference_lesion"]]
    tables = {"table2": table2(scored, ("centre", "disease") if with_meta else ())}
    tables["lv_group"] = factor_table(scored, "lv_group", SLICE_METRICS, "Per-slice performance by lesion-volume group (Fig. 4)")
    tables["thickness_band"] = factor_table(scored, "thickness_band", SLICE_METRICS, "Per-slice performance by slice thickness")
    for factor in case_factors(with_meta):
        tables[f"cases_{factor}"] = factor_table(
            cases, factor, list(CASE_METRICS), f"Per-case metrics (WMH challenge definitions) by {factor.replace('_', ' ')}", unit="Cases"
        )
    return tables


def fp_table(slices: pd.DataFrame, factors: Sequence[str]) -> Table:
    """False-positive slices (no reference lesion, predicted lesion) per group: count, share, area."""
    no_ref = slices[~slices["has_reference_lesion"]]
    rows = []
    for factor in factors:
        keys = no_ref[factor].astype(str)
        for group in group_order(no_ref, factor):
            rows.append(_fp_row(f"{factor.replace('_', ' ')}: {group}", no_ref[keys == group]))
    rows.append(_fp_row("Overall", no_ref))
    header = ["Group", "Slices without reference lesion", "False-positive slices", "Share", "FP area total (mm²)", "FP area per FP slice, median (IQR) mm²"]
    return Table("False-positive slices", header, rows, key="fp-slices")


def _fp_row(label: str, no_ref: pd.DataFrame) -> List[str]:
    """One row of the false-positive table."""
    fp = no_ref[no_ref["false_positive_slice"]]
    share = f"{len(fp) / len(no_ref):.0%}" if len(no_ref) else "–"
    stats = describe(fp["fp_area_mm2"])
    per_slice = f"{stats['median']:.1f} ({stats['q1']:.1f}–{stats['q3']:.1f})" if stats["n"] else "–"
    return [label, str(len(no_ref)), str(len(fp)), share, f"{fp['fp_area_mm2'].sum():.1f}", per_slice]


def json_ready(obj: Any) -> Any:
    """Replace NaN/inf with None and numpy scalars with Python ones, recursively (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    return obj
