"""The figures of /work/shared/REAL_FLAIR_FIGURES.md, measured on synthetic cases, next to the real ranges."""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np
from scipy import ndimage

from deepwml.constants import LV_GROUP_BOUNDS_ML, LV_GROUP_NAMES
from deepwml.synthetic.generate import SyntheticCase

#: Real ranges over ten clinical patients (REAL_FLAIR_FIGURES.md).
REAL = {
    "lesion_ratio": (1.28, 1.59),
    "lesion_iqr_units": (1.7, 2.4),
    "csf_ratio": (0.27, 0.62),
    "lesions_per_patient": (11, 77),
    "total_volume_ml": (11, 128),
    "slices_with_lesion": (9, 15),
    "fraction_under_10ul": (0.0, 0.16),
}
REAL_VOLUME_PERCENTILES_UL = {10: 14, 25: 26, 50: 53, 75: 148, 90: 490, 99: 9100}
REAL_GROUP_SHARES = dict(zip(LV_GROUP_NAMES, (0.19, 0.19, 0.30, 0.18, 0.14)))


def lesion_contrast(image: np.ndarray, brain: np.ndarray, label: np.ndarray) -> Dict[str, float]:
    """Brain median, lesion / brain median, (lesion - brain median) / brain IQR and how bright the brightest normal
    brain is (its 97th percentile / median); ``brain`` excludes the lesions.

    The same figures for synthetic cases (:func:`case_figures`) and real stacks (benchmarks/real_dev.py --contrast).
    """
    q25, brain_median, q75, p97 = np.percentile(image[brain], [25, 50, 75, 97])
    lesion_median = float(np.median(image[label])) if label.any() else float("nan")
    return {"brain_median": float(brain_median), "lesion_ratio": lesion_median / brain_median,
            "lesion_iqr_units": (lesion_median - brain_median) / (q75 - q25), "p97_ratio": float(p97 / brain_median)}


def case_figures(case: SyntheticCase) -> Dict[str, object]:
    """Per-patient figures of one case generated with ``truth=True``."""
    if case.truth is None:
        raise ValueError("case_figures needs a case generated with truth=True")
    image = case.image.astype(np.float32)
    label = case.label.astype(bool)
    contrast = lesion_contrast(image, case.truth["brain"] & ~label, label)
    brain_median = contrast["brain_median"]
    ventricle = image[case.truth["ventricle"]]
    components, n = ndimage.label(label, structure=np.ones((3, 3, 3), bool))
    voxel_ul = case.geometry.voxel_volume_ml * 1000.0
    volumes_ul = np.bincount(components.ravel())[1:] * voxel_ul
    slice_ml = label.sum(axis=(1, 2)) * voxel_ul / 1000.0
    rim = case.truth["rim"] & ~label
    mimic = case.truth.get("mimic", np.zeros(label.shape, bool))
    cortex, white = cortex_and_white_matter(case.truth, label)
    return {
        "disease": case.meta.disease,
        "lesion_ratio": contrast["lesion_ratio"],
        "lesion_iqr_units": contrast["lesion_iqr_units"],
        "csf_ratio": float(np.median(ventricle)) / brain_median if ventricle.size else float("nan"),
        "rim_ratio": float(np.median(image[rim])) / brain_median if rim.any() else float("nan"),
        "lesions_per_patient": int(n),
        "total_volume_ml": float(volumes_ul.sum() / 1000.0),
        "slices": int(label.shape[0]),
        "slices_with_lesion": int((slice_ml > 0).sum()),
        "fraction_under_10ul": float((volumes_ul < 10).mean()) if n else 0.0,
        "volumes_ul": volumes_ul,
        "slice_volumes_ml": slice_ml[slice_ml > 0],
        "small_2d_components": _small_2d_components(label),
        "rim_pixels": int(rim.sum()),
        "mimic_ratio": float(np.median(image[mimic])) / brain_median if mimic.any() else float("nan"),
        "mimic_labelled": int((label & mimic).sum()),
        "brain": str(case.meta.extra.get("brain", "procedural")),
        "cortex_ratio": float(np.median(image[cortex]) / np.median(image[white])) if cortex.any() and white.any() else float("nan"),
        "p97_ratio": contrast["p97_ratio"],
        "skull_stripped": bool(case.meta.extra.get("skull_stripped", False)),
        "storage": str(case.meta.extra.get("intensity_storage", "vendor")),
        "stored_range": (int(case.image.min()), int(case.image.max())),
    }


def cortex_and_white_matter(truth: Dict[str, np.ndarray], label: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Cortex and supratentorial white matter of a case's truth masks, lesions left out of both."""
    cortex = truth["cortex"] & ~label
    white = truth["brain"] & ~truth["cortex"] & ~truth["ventricle"] & ~truth["infratentorial"] & ~label
    return cortex, white


def _small_2d_components(label: np.ndarray, max_pixels: int = 10) -> int:
    """In-slice lesion components (8-connected) of fewer than ``max_pixels`` pixels."""
    count = 0
    for sl in label:
        if sl.any():
            comps, n = ndimage.label(sl, structure=np.ones((3, 3), bool))
            count += int((np.bincount(comps.ravel())[1:] < max_pixels).sum())
    return count


def group_shares(slice_volumes_ml: np.ndarray) -> Dict[str, float]:
    """Share of lesion-bearing slices in each of the paper's groups G1-G5."""
    index = np.searchsorted(np.asarray(LV_GROUP_BOUNDS_ML), slice_volumes_ml, side="right")
    counts = np.bincount(index, minlength=len(LV_GROUP_NAMES))
    return dict(zip(LV_GROUP_NAMES, (counts / max(1, counts.sum())).tolist()))


def summary_rows(figures: Sequence[Dict[str, object]]) -> List[Tuple[str, str, str]]:
    """(figure, synthetic, real) rows: per-patient ranges with medians, lesion-volume percentiles, group shares."""
    rows = []
    for key, (lo, hi) in REAL.items():
        values = np.array([f[key] for f in figures], float)
        values = values[np.isfinite(values)]
        inside = np.mean((values >= lo) & (values <= hi)) if values.size else float("nan")
        rows.append((key, f"{values.min():.3g} – {values.max():.3g} (median {np.median(values):.3g}; {inside:.0%} in real range)", f"{lo:g} – {hi:g}"))
    for disease in sorted({str(f["disease"]) for f in figures}):
        values = np.array([f["total_volume_ml"] for f in figures if f["disease"] == disease])
        rows.append((f"total_volume_ml {disease}", f"{values.min():.3g} – {values.max():.3g} (median {np.median(values):.3g})", "MS 13 – 21" if disease == "MS" else ""))
    volumes = np.concatenate([f["volumes_ul"] for f in figures])
    pct = np.percentile(volumes, list(REAL_VOLUME_PERCENTILES_UL))
    rows.append(("lesion volume p10/25/50/75/90/99 µl", " / ".join(f"{v:.0f}" for v in pct), " / ".join(str(v) for v in REAL_VOLUME_PERCENTILES_UL.values())))
    shares = group_shares(np.concatenate([f["slice_volumes_ml"] for f in figures]))
    rows.append(("slices by group G1/G2/G3/G4/G5", " / ".join(f"{v:.0%}" for v in shares.values()), " / ".join(f"{v:.0%}" for v in REAL_GROUP_SHARES.values())))
    for disease in sorted({str(f["disease"]) for f in figures}):
        shares = group_shares(np.concatenate([f["slice_volumes_ml"] for f in figures if f["disease"] == disease]))
        rows.append((f"slices by group, {disease}", " / ".join(f"{v:.0%}" for v in shares.values()), ""))
    slices = np.array([f["slices"] for f in figures])
    rows.append(("slices per patient", f"{slices.min()} – {slices.max()}", "16 – 20 (paper: 16 – 32)"))
    rows.append(("2D lesion components < 10 pixels", str(sum(int(f["small_2d_components"]) for f in figures)), "occur (a failure mode)"))
    rim = np.array([f["rim_ratio"] for f in figures], float)
    rows.append(("bright rim / brain median (not lesion)", f"{np.nanmin(rim):.3g} – {np.nanmax(rim):.3g}", "brighter than brain"))
    return rows + _v5_rows(figures)


def _v5_rows(figures: Sequence[Dict[str, object]]) -> List[Tuple[str, str, str]]:
    """Rows for what generator version 5 added: skull stripping, stored ranges, bright mimics."""
    if "storage" not in figures[0]:
        return []
    stripped = np.mean([bool(f["skull_stripped"]) for f in figures])
    rows = [("skull-stripped cases", f"{stripped:.0%}", "5 of 10 (the vascular site)")]
    ranges = []
    for mode in sorted({str(f["storage"]) for f in figures}):
        lo = min(f["stored_range"][0] for f in figures if f["storage"] == mode)
        hi = [f["stored_range"][1] for f in figures if f["storage"] == mode]
        ranges.append(f"{mode} {sum(f['storage'] == mode for f in figures)}: min {lo}, max {min(hi)}–{max(hi)}")
    rows.append(("stored intensities by mode (cases: min, max)", "; ".join(ranges), "0…240, 0…16383, int16 with negatives"))
    mimic = np.array([f["mimic_ratio"] for f in figures], float)
    covered = np.isfinite(mimic)
    labelled = sum(int(f["mimic_labelled"]) for f in figures)
    rows.append(("bright mimics / brain median (not lesion)",
                 f"{np.nanmedian(mimic):.3g} median over {covered.sum()} cases that show them; {labelled} labelled voxels",
                 "fat, sinuses, flow: a failure mode"))
    return rows + _v9_rows(figures)


def _v9_rows(figures: Sequence[Dict[str, object]]) -> List[Tuple[str, str, str]]:
    """Rows for generator version 9's cortex: how bright cortex and normal brain get against white matter."""
    if "cortex_ratio" not in figures[0]:
        return []
    rows = []
    for brain in sorted({str(f["brain"]) for f in figures}):
        values = np.array([f["cortex_ratio"] for f in figures if f["brain"] == brain], float)
        rows.append((f"cortex / white matter median, {brain} brains", f"{np.nanmin(values):.3g} – {np.nanmax(values):.3g} "
                     f"(median {np.nanmedian(values):.3g})", "grey brighter than white on FLAIR"))
    p97 = np.array([f["p97_ratio"] for f in figures], float)
    rows.append(("brain p97 / brain median (lesions left out)", f"{p97.min():.3g} – {p97.max():.3g} (median {np.median(p97):.3g})",
                 "1.19 – 1.23 on real 3D FLAIR in slabs (real_dev.py --contrast)"))
    return rows
