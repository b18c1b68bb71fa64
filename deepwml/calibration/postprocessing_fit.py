"""Choose a lesion model's postprocessing on labelled scans and store it in its checkpoints
(``deepwml_find_postprocessing``), as nnU-Net chooses its postprocessing on cross-validation predictions.

The scans are predicted as by deepwml_predict (folds averaged, left-right flip TTA if asked or the plan says, back on the
input's grid, the model's calibration applied, skull-stripped when predict would strip them, the anatomy map's
rules applied to every candidate mask: deepwml.calibration.fit_input), each fold's validation cases by that fold alone when no labelled
scans are given. Every candidate threshold and lesion filter (deepwml.calibration.postprocessing_search) is scored
case by case; the best replaces the plan's threshold only when it beats it by a margin. The choice is written into
every fold checkpoint under ``postprocessing`` (plain numbers and a record of what it was chosen on), where
deepwml_predict, deepwml_export_model and deepwml_install_model find it.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from deepwml.calibration.case_cache import CaseCache, checkpoint_stamps, run_key
from deepwml.calibration.case_reduction import SearchCounts
from deepwml.calibration.fit_input import FitInput
from deepwml.calibration.fit import case_groups, kept_or_predicted, store_in_checkpoints
from deepwml.calibration.postprocessing_search import COUNTS_VERSION, MIN_GAIN, SearchGrid, SearchResult, choose
from deepwml.inference.model_loading import ModelSpec, check_model
from deepwml.inference.postprocessing import POSTPROCESSING, MaskSettings
from deepwml.inference.thin_slices import model_thin_slab
from deepwml.training.device import DeviceSetup
from deepwml.utils.atomic import atomic_path
from deepwml.utils.errors import DeepWMLError


@dataclass
class PostprocessingChoice:
    """The search's result and the record stored with it."""

    result: SearchResult
    record: Dict[str, Any]
    #: where each case's counts were kept (None: nowhere); stale once the choice is stored (the checkpoints change)
    kept_in: Optional[Path] = None

    def forget_cases(self) -> None:
        """Remove the kept counts (a stored choice changes the checkpoints their key names)."""
        if self.kept_in is not None:
            shutil.rmtree(self.kept_in, ignore_errors=True)


def find_postprocessing(model_dir: Path, images: Optional[Path], labels: Optional[Path], setup: DeviceSetup,
                        folds: Optional[Sequence[Union[int, str]]] = None, checkpoint: str = "best",
                        ignore_label: Optional[int] = None, progress: bool = True, write: bool = True,
                        raw_root: Optional[Path] = None, preprocessed_root: Optional[Path] = None,
                        objective: str = "both", min_gain: float = MIN_GAIN, grid: SearchGrid = SearchGrid(),
                        table: Optional[Path] = None, tta: Optional[bool] = None,
                        shown: FitInput = FitInput(), workers: int = 1) -> PostprocessingChoice:
    """Choose the threshold and lesion filters of the model in ``model_dir`` on labelled scans (or its folds'
    validation cases) predicted with left-right flip TTA when ``tta`` (None: as the plan says; the choice records
    it, so deepwml_predict then predicts so), skull-stripped or as given as ``shown``, store them (``write`` False: a dry run) and optionally write every
    candidate's scores to ``table`` (CSV). ``workers`` > 1: cases counted in that many processes beside the
    networks."""
    spec = check_model(model_dir, folds, checkpoint)
    if spec.plan.network.out_channels != 1:
        raise DeepWMLError("deepwml_find_postprocessing chooses a lesion model's threshold (one output channel); this "
                           f"plan predicts {spec.plan.network.out_channels} classes", spec.folder)
    if not 0 <= min_gain < 1:
        raise DeepWMLError(f"--min-gain must lie in [0, 1), not {min_gain:g}")
    if table is not None and not Path(table).expanduser().parent.is_dir():
        raise DeepWMLError("--table: the folder does not exist", Path(table).expanduser().parent)
    groups, source, ignore_label = case_groups(spec, images, labels, ignore_label, raw_root, preprocessed_root)
    # the plan's own settings are what a stored postprocessing must beat (an older one is chosen afresh)
    tta = spec.plan.inference.tta if tta is None else bool(tta)
    candidates = grid.candidates(MaskSettings(spec.plan.inference.threshold, tta=tta))
    kept_in = _cache_folder(spec, candidates, ignore_label, setup, shown)
    cache = CaseCache(kept_in)

    counts, ids = [], []

    def counted(loaded: ModelSpec) -> SearchCounts:
        """Each case's counts; thresholds cut the probabilities deepwml_predict cuts: calibrated as the folds say."""
        return SearchCounts(tuple(candidates), loaded.calibration(), shown)

    for case_id, tables in kept_or_predicted(spec, groups, setup, ignore_label, progress, "deepwml_find_postprocessing",
                                             cache, counted, tta=tta, shown=shown, masks=True, workers=workers):
        counts.append(tables["counts"])
        ids.append(case_id)
    result = choose(np.stack(counts), candidates, objective, min_gain)
    record = {
        "method": f"grid search of threshold, smallest lesion (ml), lesion peak and lesion contrast; objective: {objective} (case means); "
                  f"kept the plan's threshold unless beaten by {min_gain:g}"
                  f"{f'; no candidate lowering Dice or lesion F1 by more than {min_gain:g}' if objective == 'both' else ''}",
        "objective": objective,
        "before": result.before,
        "after": result.after,
        "source": source,
        "ignore_label": ignore_label,
        "cases": ids,
        "folds": list(spec.folds),
        "checkpoint": spec.checkpoint,
        "temperatures": list(spec.calibration()),
        "tta": tta,
        **shown.record(),
        "fitted": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if table is not None:
        write_table(result.table, table)
    choice = PostprocessingChoice(result, record, kept_in)
    if write:
        store_postprocessing(spec, choice)
        choice.forget_cases()
    return choice


def _cache_folder(spec: ModelSpec, candidates: List[MaskSettings], ignore_label: Optional[int],
                  setup: DeviceSetup, shown: FitInput = FitInput()) -> Optional[Path]:
    """Where this search keeps each case's count table (the user cache; None when it is off), under a key of the
    checkpoints, the candidates, the ignore value and the arithmetic."""
    from deepwml.utils.user_cache import cache_dir

    root = cache_dir()
    if root is None:
        return None
    key = run_key({"checkpoints": checkpoint_stamps(spec.checkpoints), "candidates": [c.as_record() for c in candidates],
                   "ignore_label": ignore_label, "device": str(setup.device), "amp": str(setup.amp_dtype),
                   "counts_version": COUNTS_VERSION, "thin_slab_mm": model_thin_slab(spec.folder),
                   **({"shown": shown.key()} if shown.runs_anatomy(True) else {})})
    return root / "postprocessing_search" / key


def store_postprocessing(spec: ModelSpec, choice: PostprocessingChoice) -> None:
    """Write the chosen settings and their record into every fold checkpoint of ``spec``."""
    store_in_checkpoints(spec, {POSTPROCESSING: dict(choice.result.chosen.as_record(), record=choice.record)})


def write_table(rows: List[Dict[str, float]], path: Path) -> None:
    """Every candidate's settings and case means, best first, as CSV (written beside itself and renamed)."""
    import pandas as pd

    with atomic_path(Path(path).expanduser(), ".csv") as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
