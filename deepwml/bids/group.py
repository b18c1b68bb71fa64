"""deepwml_bids group level: one table of every published scan's lesion figures, beside participants.tsv, and one
of every comparison of consecutive sessions (wmh_change.tsv, after participant-level runs with --longitudinal).

Read from the derivatives dataset alone (each mask's JSON sidecar holds its scan's figures), so the group level
can run after participant-level runs of separate participants, on other machines. Columns: participant_id,
session_id (datasets with sessions), the participants.tsv and sessions.tsv columns of the source dataset, the
scan's file, then the figures summary.csv gives (volume, count, slices, locations, McDonald regions, Fazekas).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import pandas as pd

from deepwml.anatomy.location import FAR_FROM_VENTRICLES_COLUMN, LOCATIONS, NEAR_VENTRICLES_COLUMN, SPLIT_COLUMNS
from deepwml.anatomy.volumes import BRAIN_VOLUME_COLUMN, COVERAGE_COLUMN, LESION_PERCENT_COLUMN, VENTRICLE_VOLUME_COLUMN
from deepwml.bids.cohort_report import check_group_by, write_cohort_report
from deepwml.bids.derivatives import Sidecar, published_sidecars, read_sidecar
from deepwml.bids.layout import DESCRIPTION_NAME
from deepwml.bids.tables import read_tsv, write_tsv
from deepwml.bids.longitudinal import FOLDER as LONGITUDINAL
from deepwml.bids.longitudinal import VISITS_NAME
from deepwml.inference.output_folder import MASK_OPTIONS, PRODUCER_DEFAULTS
from deepwml.utils.atomic import read_json, write_json
from deepwml.utils.errors import DeepWMLError

TABLE_NAME = "wmh_summary.tsv"
CHANGE_TABLE_NAME = "wmh_change.tsv"
#: change.json figures in wmh_change.tsv (deepwml_compare's counts, volumes and findings sentence)
CHANGE_COLUMNS = ("new_lesions", "new_lesions_not_counted", "enlarging_lesions", "stable_lesions", "shrinking_lesions",
                  "outside_baseline_lesions", "resolved_baseline_lesions", "baseline_lesion_count", "followup_lesion_count",
                  "baseline_volume_ml", "followup_volume_ml", "volume_change_ml", "volume_change_percent",
                  "new_lesion_volume_ml", "findings")
#: change.json's 10 mm split of both visits (with the anatomy map: each visit's summary figures), when it has them
SPLIT_CHANGE_COLUMNS = tuple(f"{visit}_{column}" for visit in ("baseline", "followup") for column in SPLIT_COLUMNS)
#: summary.csv columns that stay out of the group table (per-slice lists, DICOM series)
_LEFT_OUT = ("lesion_area_mm2_per_slice", "source_series")
_DESCRIPTIONS: Dict[str, Dict[str, str]] = {
    "participant_id": {"Description": "participant, as participants.tsv names it"},
    "session_id": {"Description": "session, as sessions.tsv names it"},
    "source": {"Description": "the T2-FLAIR segmented, relative to the source dataset"},
    "total_lesion_volume_ml": {"Description": "white-matter hyperintensity volume", "Units": "ml"},
    "lesion_count": {"Description": "number of lesions (26-connected components)"},
    "slices": {"Description": "slices of the scan"},
    "slices_with_lesion": {"Description": "slices holding lesion"},
    "slice_thickness_mm": {"Description": "slice thickness of the scan", "Units": "mm"},
    "acquisition_warning": {"Description": "how the scan differs from the model's training scans (empty: it does not)"},
    "fazekas_periventricular": {"Description": "Fazekas periventricular grade estimated from the mask and anatomy map (0-3)"},
    "fazekas_deep": {"Description": "Fazekas deep white-matter grade estimated from the mask and anatomy map (0-3)"},
    NEAR_VENTRICLES_COLUMN: {"Description": "supratentorial lesion volume within 10 mm (3D) of the ventricles (the 10 mm "
                                            "rule for periventricular WMH)", "Units": "ml"},
    FAR_FROM_VENTRICLES_COLUMN: {"Description": "supratentorial lesion volume beyond 10 mm (3D) of the ventricles (the 10 mm "
                                                "rule for deep WMH)", "Units": "ml"},
    BRAIN_VOLUME_COLUMN: {"Description": "brain parenchyma (white matter, deep grey, cortex, cerebellum and brainstem; "
                                         "not the ventricles) on the scanned slices, from the anatomy map", "Units": "ml"},
    VENTRICLE_VOLUME_COLUMN: {"Description": "lateral ventricles on the scanned slices, from the anatomy map", "Units": "ml"},
    LESION_PERCENT_COLUMN: {"Description": "total_lesion_volume_ml as a percentage of brain_volume_ml"},
    COVERAGE_COLUMN: {"Description": "complete, or where the brain runs past the scan (cut at the top, bottom or both "
                                     "ends; at the back, front, on the left or right, beyond the field of view): then "
                                     "brain_volume_ml misses what was not scanned"},
    "lesions_dropped_outside_brain": {"Description": "lesions left out of the mask for lying wholly outside the brain "
                                                     "the anatomy model found (false positives, or brain it missed)"},
    "lesions_dropped_faint_in_cortex": {"Description": "lesions left out of the mask for lying in the cortex the anatomy "
                                                       "model found while no brighter than bright normal cortex "
                                                       "(deepwml_predict --min-cortex-contrast)"},
    "lesion_model_input": {"Description": "what the lesion model saw: skull-stripped (to the brain the anatomy model "
                                          "found), already skull-stripped (the scan as given), or as given: no brain found "
                                          "(flagged in acquisition_warning); absent when the run did not strip"},
    "bright_brain_share": {"Description": "share of the brain region in its outer 8 mm, brighter than 2 x the white "
                                          "matter's median and outside the lesion mask: above 0.003 the scan does not look "
                                          "like a T2-FLAIR (acquisition_warning)"},
    "mcdonald_dis_regions": {"Description": "McDonald 2017 dissemination-in-space regions a brain scan shows "
                                            "(periventricular, cortical or juxtacortical, infratentorial) holding a lesion"},
    # each location class's count and volume (docs/prediction.md, Lesion location)
    **{f"{name}_count": {"Description": f"{name} lesions, as located with the anatomy map"} for name in LOCATIONS},
    **{f"{name}_volume_ml": {"Description": f"volume of the {name} lesions", "Units": "ml"} for name in LOCATIONS},
}


def _settings(producer: Dict[str, Any]) -> str:
    """What decides a mask, in words: the weights (wherever the model lay), the mask options and the anatomy model's
    weights when the options use its map."""
    options = ", ".join(f"{k} {producer.get(k, PRODUCER_DEFAULTS.get(k))}" for k in MASK_OPTIONS)
    anatomy = producer.get("anatomy_weights_sha256")
    return (f"weights {', '.join(sorted(producer.get('weights_sha256') or []))} ({options}"
            + (f", anatomy weights {', '.join(anatomy)}" if anatomy else "") + ")")


def _published(out: Path) -> Dict[Path, Sidecar]:
    """Every published mask sidecar of the derivatives dataset ``out``, read."""
    return {path: read_sidecar(path) for path in published_sidecars(out)}


def mixed_settings(out: Path, sidecars: Optional[Dict[Path, Sidecar]] = None) -> Optional[str]:
    """None when every published scan was segmented with one model and one set of mask options, else what differs."""
    sidecars = _published(out) if sidecars is None else sidecars
    groups: Dict[str, List[Path]] = {}
    for path, sidecar in sidecars.items():
        groups.setdefault(_settings(sidecar.producer), []).append(path)
    if len(groups) < 2:
        return None
    listed = "; ".join(f"{len(paths)} scan(s) (e.g. {paths[0].relative_to(out).as_posix()}) with {settings}, model "
                       f"{sidecars[paths[0]].producer.get('model')}" for settings, paths in groups.items())
    return (f"mixes scans segmented with different settings: {listed}; run the participant level again with "
            "--overwrite and one model and one set of options for every participant")


def _sidecar_rows(out: Path, wanted: Optional[set] = None) -> List[Dict[str, object]]:
    """A row per published mask sidecar (of the participant_ids ``wanted``): participant, session, source, figures."""
    sidecars = {}
    for path, found in _published(out).items():
        entities = dict(part.split("-", 1) for part in path.name[: -len("_desc-wmh_mask.json")].split("_"))
        if wanted is None or f"sub-{entities['sub']}" in wanted:
            sidecars[path] = (found, entities)
    mixed = mixed_settings(out, {path: found for path, (found, _) in sidecars.items()})
    if mixed:
        # figures of two models or thresholds in one table do not compare
        raise DeepWMLError(mixed, out)
    rows = []
    for found, entities in sidecars.values():
        row: Dict[str, object] = {"participant_id": f"sub-{entities['sub']}"}
        if "ses" in entities:
            row["session_id"] = f"ses-{entities['ses']}"
        row["source"] = found.source
        row.update({k: v for k, v in found.summary.items() if k not in _LEFT_OUT})
        rows.append(row)
    return rows


def _participant_ids(labels: Optional[Sequence[str]]) -> Optional[set]:
    """participant_id values for labels given with or without 'sub-' (None: every participant)."""
    return None if not labels else {label if label.startswith("sub-") else f"sub-{label}" for label in labels}


def group_table(out: Path, bids_root: Path, participants: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """Every published scan of the derivatives dataset ``out``, with its participant's and session's columns."""
    rows = _sidecar_rows(out, _participant_ids(participants))
    if not rows:
        raise DeepWMLError("holds no scan segmented by DeepWML (no sub-*/[ses-*/]anat/*_desc-wmh_mask.json); "
                           "run the participant level first", out)
    table = pd.DataFrame(rows)
    ours = list(table.columns)
    ids = ["participant_id"] + (["session_id"] if "session_id" in table else [])
    participants = read_tsv(bids_root / "participants.tsv")
    extra: List[str] = []
    if participants is not None and "participant_id" in participants:
        keep = [c for c in participants.columns if c not in ours]
        table = table.merge(participants[["participant_id"] + keep], on="participant_id", how="left")
        extra += keep
    if "session_id" in table:
        frames = [f.assign(participant_id=sub) for sub in table["participant_id"].unique()
                  if (f := read_tsv(bids_root / sub / f"{sub}_sessions.tsv")) is not None and "session_id" in f]
        if frames:
            sessions = pd.concat(frames, ignore_index=True)
            keep = [c for c in sessions.columns if c not in ours and c not in extra and c != "participant_id"]
            table = table.merge(sessions[["participant_id", "session_id"] + keep], on=["participant_id", "session_id"], how="left")
            extra += keep
    order = ids + extra + [c for c in ours if c not in ids]
    return table[order].sort_values(["source"], kind="stable").reset_index(drop=True)


def change_table(out: Path, participants: Optional[Sequence[str]] = None) -> Optional[pd.DataFrame]:
    """A row per comparison of two sessions (deepwml_bids --longitudinal), or None when there is none."""
    rows = []
    for visits_path in sorted(out.glob(f"sub-*/{LONGITUDINAL}/*/{VISITS_NAME}")):
        change_path = visits_path.with_name("change.json")
        try:
            visits, change = read_json(visits_path), read_json(change_path)
        except DeepWMLError:
            continue  # a comparison interrupted before both were written is not one
        row = {k: visits.get(k) for k in ("participant_id", "baseline_session", "followup_session", "compared_with", "interval_days",
                                     "ordered_by")}
        row.update({k: change.get(k) for k in CHANGE_COLUMNS})
        row.update({k: change[k] for k in SPLIT_CHANGE_COLUMNS if k in change})
        row["registration_correlation"] = (change.get("registration") or {}).get("correlation")
        row["warnings"] = "; ".join(change.get("warnings") or [])
        row["folder"] = visits_path.parent.relative_to(out).as_posix()
        rows.append(row)
    wanted = _participant_ids(participants)
    rows = [r for r in rows if wanted is None or r["participant_id"] in wanted]
    return pd.DataFrame(rows) if rows else None


def write_group_table(out: Path, bids_root: Path, participants: Optional[Sequence[str]] = None,
                      group_by: Optional[str] = None) -> List[Path]:
    """``out``/wmh_summary.tsv (and its column dictionary wmh_summary.json), wmh_change.tsv when sessions were
    compared, and the cohort page wmh_report.html (volumes by ``group_by``, a participants.tsv column); only
    ``participants`` (labels with or without 'sub-') when given; returns the paths written."""
    out = Path(out)
    table = group_table(out, Path(bids_root), participants)
    check_group_by(table, group_by)  # before anything is written
    path = out / TABLE_NAME
    write_tsv(table, path)
    write_json(path.with_suffix(".json"), {c: d for c, d in _DESCRIPTIONS.items() if c in table.columns})
    written = [path]
    changes = change_table(out, participants)
    if changes is not None:
        write_tsv(changes, out / CHANGE_TABLE_NAME)
        written.append(out / CHANGE_TABLE_NAME)
    description = read_json(out / DESCRIPTION_NAME) if (out / DESCRIPTION_NAME).is_file() else {}
    generated = (description.get("GeneratedBy") or [{}])[0] if isinstance(description, dict) else {}
    model = str(generated.get("Description", "unknown")).split("lesion model: ")[-1]
    written.append(write_cohort_report(out, Path(bids_root), table, changes, model, group_by))
    return written
