"""The findings as short sentences a reader can check against the pictures and copy into a report: the lesion count
and volume, with an anatomy map the locations, the volume split by the 10 mm rule, the brain's and ventricles' volumes
with the lesions' share of the brain, and the Fazekas and McDonald estimates, any caution about the scan, and the
model. The DICOM findings picture burns them in above its montage; the per-patient report prints them first, as text
to select."""
from __future__ import annotations

from typing import Any, Dict, List

import deepwml
from deepwml.anatomy.location import FAR_FROM_VENTRICLES_COLUMN, LOCATIONS, NEAR_VENTRICLES_COLUMN
from deepwml.anatomy.volumes import (BRAIN_VOLUME_COLUMN, COMPLETE, COVERAGE_COLUMN, LESION_PERCENT_COLUMN,
                                     VENTRICLE_VOLUME_COLUMN)
from deepwml.inference.lesion_report import CaseSummary


def findings_lines(summary: CaseSummary, model_name: str) -> List[str]:
    """The findings as short sentences: totals, locations and estimates (with an anatomy map), warnings, model."""
    plural = "" if summary.lesion_count == 1 else "s"
    reviewed = summary.lesions_from  # a reader's mask (--lesion-masks), measured by DeepWML
    lines = [f"White-matter lesions ({'as reviewed' if reviewed else 'automatic'}): {summary.lesion_count} lesion{plural}, "
             f"{summary.total_lesion_volume_ml:.2f} ml, on {summary.slices_with_lesion} of {summary.slices} slices"]
    a = summary.anatomy
    if a:
        located = ", ".join(f"{name} {a[f'{name}_count']}" for name in LOCATIONS if a[f"{name}_count"])
        lines.append(f"Locations: {located or 'no lesion'}")
        if NEAR_VENTRICLES_COLUMN in a:  # figures of an older run have no volumes by the 10 mm rule
            lines.append(f"Supratentorial lesion volume within / beyond 10 mm of the ventricles: "
                         f"{a[NEAR_VENTRICLES_COLUMN]:.2f} / {a[FAR_FROM_VENTRICLES_COLUMN]:.2f} ml")
        if BRAIN_VOLUME_COLUMN in a:  # likewise without the brain's volume
            lines.append(brain_sentence(a))
        lines.append(f"Fazekas estimate: periventricular {int(a['fazekas_periventricular'])}, deep "
                     f"{int(a['fazekas_deep'])}; McDonald 2017 brain regions with a lesion of 3 mm or more: "
                     f"{a['mcdonald_dis_regions']} of 3 (spinal cord not imaged)")
    if summary.acquisition_warning:
        lines.append(f"Caution: {summary.acquisition_warning}")
    made = f"Lesions from the {reviewed}, measured with the {model_name}" if reviewed else model_name
    lines.append(f"{made[:1].upper()}{made[1:]}, DeepWML {deepwml.__version__}. Research use only, not a "
                 "medical device: a qualified reader must review these findings.")
    return lines


def brain_sentence(a: Dict[str, Any]) -> str:
    """The brain and ventricle volumes of the scanned slices and the lesions' share of the brain, with a caution when
    the brain runs past the scan."""
    if not a[BRAIN_VOLUME_COLUMN] > 0:
        return "No brain parenchyma found on the scanned slices by the anatomy model"
    text = (f"Brain parenchyma on the scanned slices {a[BRAIN_VOLUME_COLUMN]:.0f} ml (lesions {a[LESION_PERCENT_COLUMN]:.2f} % "
            f"of it), lateral ventricles {a[VENTRICLE_VOLUME_COLUMN]:.1f} ml")
    if a[COVERAGE_COLUMN] != COMPLETE:
        text += f"; the brain is {a[COVERAGE_COLUMN]} of the scan: its scanned part only"
    return text
