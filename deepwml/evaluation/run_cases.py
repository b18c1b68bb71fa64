"""Evaluate every case (one in memory per worker), in parallel with joblib, resumable through a per-case cache."""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pandas as pd
from joblib import Parallel, delayed
from tqdm import tqdm

from deepwml.evaluation.case_metrics import case_metrics
from deepwml.evaluation.cases import CasePair
from deepwml.evaluation.lesion_locations import locations_of, read_anatomy
from deepwml.evaluation.lesions import lesion_detection, lesion_rows
from deepwml.evaluation.masks import load_case_masks
from deepwml.evaluation.slice_metrics import slice_metrics
from deepwml.imageio import has_image_ending, split_ending
from deepwml.utils.atomic import write_json

#: Bump when a metric definition changes, so cached results from older code are recomputed.
#: 2: each case also keeps its lesions (per_lesion.csv), located with an anatomy map when there is one
METRICS_VERSION = 2
CACHE_FOLDER = ".cache"

#: (per-case row, per-slice columns, per-lesion columns)
CaseResult = Tuple[Dict[str, Any], Dict[str, list], Dict[str, list]]


def evaluate_case(pair: CasePair, ignore_label: Optional[int]) -> CaseResult:
    """Metrics of one case: (per-case row, per-slice columns, per-lesion columns)."""
    masks = load_case_masks(pair.case_id, pair.reference, pair.prediction, ignore_label)
    slices = slice_metrics(masks.reference, masks.prediction, masks.geometry)
    detection = lesion_detection(masks.reference, masks.prediction, masks.geometry.slice_axis_numpy)
    row = case_metrics(masks.reference, masks.prediction, masks.geometry, detection)
    locations = None
    if pair.anatomy is not None:
        anatomy = read_anatomy(pair.anatomy, masks.geometry)
        locations = (locations_of(masks.reference, masks.geometry, anatomy), locations_of(masks.prediction, masks.geometry, anatomy))
    no_ref = ~slices["has_reference_lesion"]
    row.update(
        case=pair.case_id,
        prediction_missing=pair.prediction is None,
        slice_thickness_mm=masks.geometry.slice_thickness,
        n_slices=len(slices),
        n_lesion_slices=int(slices["has_reference_lesion"].sum()),
        n_false_positive_slices=int(slices["false_positive_slice"].sum()),
        false_positive_slice_area_mm2=float(slices.loc[no_ref, "fp_area_mm2"].sum()),
        ignored_voxels=masks.n_ignored,
    )
    return row, slices.to_dict(orient="list"), lesion_rows(detection, masks.geometry.voxel_volume_ml, locations)


def _file_key(path: Optional[Path]) -> List[Any]:
    """What identifies a file's content cheaply: resolved path, size, modification time (of data files too)."""
    if path is None:
        return [None]
    path = Path(path)
    stem, ending = split_ending(path.name) if has_image_ending(path) else (path.stem, path.suffix)  # or a SEG, CASE.dcm
    # header-only formats keep the voxels in a sibling file (CASE.raw, CASE.zraw); a change there must count too
    files = sorted(path.parent.glob(f"{stem}.*")) if ending in (".mhd", ".nhdr") else [path]
    return [[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in files]


def cache_key(pair: CasePair, ignore_label: Optional[int]) -> str:
    """Hash of everything a case's metrics depend on."""
    payload = [METRICS_VERSION, pair.case_id, _file_key(pair.reference), _file_key(pair.prediction), ignore_label,
               _file_key(pair.anatomy)]
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()


def evaluate_case_cached(pair: CasePair, ignore_label: Optional[int], cache_dir: Optional[Path]) -> CaseResult:
    """evaluate_case, reusing a cached result when neither mask nor settings changed since it was written."""
    if cache_dir is None:
        return evaluate_case(pair, ignore_label)
    key = cache_key(pair, ignore_label)
    cache_file = cache_dir / f"{pair.case_id}.json"
    if cache_file.exists():
        try:
            cached = json.loads(cache_file.read_text())
            if cached.get("key") == key:
                return cached["case"], cached["slices"], cached["lesions"]
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache entry is recomputed, never trusted
    row, slices, lesions = evaluate_case(pair, ignore_label)
    write_json(cache_file, {"key": key, "case": row, "slices": slices, "lesions": lesions}, indent=None)
    return row, slices, lesions


def evaluate_cases(
    pairs: List[CasePair],
    ignore_label: Optional[int],
    cache_dir: Optional[Path] = None,
    n_jobs: int = 1,
    progress: Optional[bool] = None,
) -> Tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Evaluate all pairs; returns per-case, per-slice and per-lesion frames (the latter two with a 'case' column),
    in case order."""
    show = sys.stderr.isatty() if progress is None else progress
    jobs = (delayed(evaluate_case_cached)(p, ignore_label, cache_dir) for p in pairs)
    runner = Parallel(n_jobs=max(1, int(n_jobs)), return_as="generator")
    rows, slice_frames, lesion_frames = [], [], []
    for pair, (row, slices, lesions) in zip(pairs, tqdm(runner(jobs), total=len(pairs), desc="evaluate", unit="case", disable=not show)):
        rows.append(row)
        for frames, columns in ((slice_frames, slices), (lesion_frames, lesions)):
            frame = pd.DataFrame(columns)
            frame.insert(0, "case", pair.case_id)
            frames.append(frame)
    return pd.DataFrame(rows), pd.concat(slice_frames, ignore_index=True), pd.concat(lesion_frames, ignore_index=True)
