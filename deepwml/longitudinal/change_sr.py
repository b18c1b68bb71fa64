"""The lesion change as a DICOM Structured Report (TID 1500) in the follow-up's study, for a DICOM follow-up series:
what a registry or reporting system reads as numbers from a follow-up comparison.

One group for the comparison (new lesions of 3 mm or more, enlarging, resolved, lesion counts and volumes at both
visits and the change) and one per follow-up lesion, numbered as in followup_lesions_change.csv: its outlines on
the follow-up's slices (as deepwml_predict --dicom-sr draws them), its change status, volume, long axis and the
baseline volume of its group. Statuses and the baseline figures are coded in DeepWML's local scheme (99DEEPWML).
As in deepwml_predict's SR, at most SR_MAX_LESIONS follow-up lesions (largest first, SR_MAX_OUTLINES outlines in
all) get a group of their own; the comparison group says how many did.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from deepwml.inference.dicom_seg import source_headers
from deepwml.inference.dicom_sr import (
    LesionOutlines,
    SR_SERIES_NUMBER,
    sr_codes,
    local_code,
    algorithm_identification,
    measurement_report,
    save_sr,
)
from deepwml.longitudinal.change import CHANGE_CODES, LesionChange

CHANGE_SR_DESCRIPTION = "DeepWML lesion change measurements (research use)"
COMPARISON_TRACKING = "Lesion change since the baseline"
#: the comparison's figures: summary key -> (local code, meaning, unit key of dicom_sr._codes)
SUMMARY_CONCEPTS = {
    "new_lesions": ("CHG-NEW", "New lesions of 3 mm or more", "unitless"),
    "enlarging_lesions": ("CHG-ENL", "Enlarging lesions", "unitless"),
    "resolved_baseline_lesions": ("CHG-RES", "Baseline lesions no longer seen", "unitless"),
    "baseline_lesion_count": ("CHG-BCNT", "Number of lesions at baseline", "unitless"),
    "baseline_volume_ml": ("CHG-BVOL", "Total lesion volume at baseline", "cm3"),
    "volume_change_ml": ("CHG-DVOL", "Change in total lesion volume", "cm3"),
}


def _status_codes() -> Dict[str, object]:
    """A local code for each change status of a follow-up lesion."""
    return {status: local_code(f"CHG-S{code}", f"{status} lesion") for status, code in CHANGE_CODES.items()}


def build_change_sr(change: LesionChange, headers: List, model_name: str, slice_axis: int = 0):
    """A Comprehensive 3D SR of a lesion change over the follow-up series' ``headers`` (one per slice or one
    multi-frame header); the follow-up lesions are those of ``change.change_map``, numbered as its table."""
    import highdicom as hd

    c = sr_codes()
    algorithm = algorithm_identification(model_name)
    s = change.summary
    measurements = [hd.sr.Measurement(name=c["count"], value=int(s["followup_lesion_count"]), unit=c["unitless"]),
                    hd.sr.Measurement(name=c["volume"], value=float(s["followup_volume_ml"]), unit=c["cm3"])]
    measurements += [hd.sr.Measurement(name=local_code(code, meaning), value=float(s[key]), unit=c[unit])
                     for key, (code, meaning, unit) in SUMMARY_CONCEPTS.items()]
    outlines = LesionOutlines(np.asarray(change.change_map) > 0, headers, slice_axis)
    table = change.followup
    if outlines.count != len(table):
        raise ValueError(f"{outlines.count} lesions in the change map, {len(table)} in the table")  # a bug
    itemised = set(outlines.itemised([int(k) for k in table.lesion_id]))
    measurements.append(hd.sr.Measurement(name=c["itemised"], value=len(itemised), unit=c["unitless"]))
    groups = [hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=COMPARISON_TRACKING),
        finding_type=c["finding"], finding_category=c["category"], algorithm_id=algorithm, measurements=measurements)]
    statuses = _status_codes()
    name = {code: status for status, code in CHANGE_CODES.items()}
    status_name = local_code("CHG-STATUS", "DeepWML lesion change status")
    change_map = np.asarray(change.change_map)
    for row in table.itertuples(index=False):
        lesion_id = int(row.lesion_id)
        if lesion_id not in itemised:
            continue
        box = outlines.boxes[lesion_id - 1]
        # the change map's code holds the counted / not counted split of new lesions (read within the lesion's box)
        code = int(change_map[box][outlines.labels[box] == lesion_id].max())
        figures = [hd.sr.Measurement(name=c["volume"], value=float(row.volume_ml), unit=c["cm3"]),
                   hd.sr.Measurement(name=local_code("CHG-GBVOL", "Baseline volume of the lesion's group"),
                                     value=float(row.group_baseline_volume_ml), unit=c["cm3"])]
        if np.isfinite(row.long_axis_mm):
            figures.append(hd.sr.Measurement(name=c["long_axis"], value=float(row.long_axis_mm), unit=c["mm"]))
        groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"follow-up lesion {lesion_id}"),
            referenced_regions=outlines.regions(lesion_id), finding_type=c["finding"], finding_category=c["category"],
            algorithm_id=algorithm, measurements=figures,
            qualitative_evaluations=[hd.sr.QualitativeEvaluation(status_name, statuses[name[code]])]))
    return measurement_report(groups, headers, model_name, CHANGE_SR_DESCRIPTION, series_number=SR_SERIES_NUMBER)


def write_change_sr(change: LesionChange, folder: Path, path: Path, model_name: str, slice_axis: int = 0,
                    series_uid: Optional[str] = None) -> Path:
    """Write the change SR for the DICOM follow-up series in ``folder``, atomically."""
    return save_sr(build_change_sr(change, source_headers(folder, series_uid), model_name, slice_axis), path)
