"""deepwml_finetune --holdout N: a few of the site's labelled scans kept aside, so the model card says how the
fine-tuned model and the model it started from do on scans neither was trained on.

The scans kept aside are drawn with the run's seed (the same on a resumed run), written to the raw dataset's test
split (imagesTs / labelsTs, converted as the training scans are), segmented by both models with deepwml_predict's
library run (into WORK/holdout/finetuned and WORK/holdout/start, so a resumed run reuses them) and scored as
deepwml_evaluate scores a case (deepwml.evaluation.case_metrics).
"""
from __future__ import annotations

import random
import statistics
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from deepwml.evaluation.case_metrics import case_metrics
from deepwml.evaluation.masks import scored_lesions
from deepwml.imageio import read_image
from deepwml.utils.atomic import write_json
from deepwml.utils.errors import DeepWMLError

SCORES_NAME = "holdout.json"
#: per-scan figures kept (case_metrics' names)
FIGURES = ("dice", "lesion_f1", "lesion_recall", "lesion_precision", "avd_percent", "ref_volume_ml", "pred_volume_ml")


def choose_holdout(case_ids: Sequence[str], n: int, seed: int) -> List[str]:
    """``n`` of the labelled cases, drawn with ``seed`` from their sorted ids; at least one must be left to train on."""
    if n < 0:
        raise DeepWMLError(f"--holdout must be 0 or more, not {n}")
    if n and n >= len(case_ids):
        raise DeepWMLError(f"--holdout {n} keeps every one of the {len(case_ids)} labelled scan(s) aside: at least one "
                           "must be left to train on")
    return sorted(random.Random(seed).sample(sorted(case_ids), n)) if n else []


def _mean(values: List[float]) -> float:
    """The mean of the finite values (NaN when there is none)."""
    finite = [v for v in values if np.isfinite(v)]
    return statistics.fmean(finite) if finite else float("nan")


def segment(images: Path, out: Path, model: tuple, device: str, **settings: Any) -> None:
    """Segment every scan of ``images`` into ``out`` with ``model`` ((model folder, folds, checkpoint)), as
    deepwml_predict's library run does (no QC; scans already done with the same settings are kept, those made
    otherwise are segmented anew); ``settings`` are further PredictRequest
    fields (e.g. tta, postprocessing). Otherwise predict's defaults, the anatomy model's among them (skull stripping
    where predict strips, lesions outside the brain and faint ones in or against the cortex dropped): the figures are those of the
    masks a user of the model gets, and deepwml_find_postprocessing scores its candidates the same way."""
    from deepwml.inference.run import PredictRequest, predict

    model_dir, folds, checkpoint = model
    report = predict(PredictRequest(input=images, output=out, model_dir=model_dir, folds=folds, checkpoint=checkpoint,
                                    device=device, write_qc=False, overwrite_if_changed=True, **settings))
    if report.failed:
        raise DeepWMLError(f"a labelled scan could not be segmented: {report.failed[0].case_id}: {report.failed[0].error}",
                           images)


def score_case(label: Path, prediction: Path, ignore_label: Optional[int] = None) -> Dict[str, float]:
    """One scan's figures (FIGURES), scored as deepwml_evaluate scores a case (``ignore_label`` voxels counted for
    neither side, as the WMH challenge's evaluator leaves out its label 2)."""
    predicted = read_image(prediction)
    metrics = case_metrics(*scored_lesions(read_image(label).array, predicted.array, ignore_label), predicted.geometry)
    return {k: float(metrics[k]) for k in FIGURES}


def model_scores(model_dir: Path, per_case: Dict[str, Dict[str, float]]) -> Dict:
    """A model's per-scan figures with their means (NaN-free)."""
    return {"model": str(model_dir), "per_case": per_case,
            "mean_dice": _mean([c["dice"] for c in per_case.values()]),
            "mean_lesion_f1": _mean([c["lesion_f1"] for c in per_case.values()])}


def score_holdout(work: Path, raw: Path, ending: str, held: Sequence[str], models: Dict[str, tuple], device: str,
                  ignore_label: Optional[int] = None, folders: Optional[Dict[str, str]] = None) -> Dict:
    """Segment the scans kept aside with each of ``models`` (name -> (model folder, folds, checkpoint)) into
    WORK/holdout/NAME (``folders`` names another folder for a model: masks of another network are never reused) and
    score them against their labels; written to WORK/holdout/holdout.json and returned."""
    result: Dict = {"cases": list(held), "models": {}}
    for name, model in models.items():
        out = work / "holdout" / (folders or {}).get(name, name)
        segment(raw / "imagesTs", out, model, device)
        per_case = {case_id: score_case(raw / "labelsTs" / f"{case_id}{ending}", out / f"{case_id}{ending}", ignore_label)
                    for case_id in held}
        result["models"][name] = model_scores(model[0], per_case)
    write_json(work / "holdout" / SCORES_NAME, result)
    return result


def card_lines(scores: Dict) -> List[str]:
    """The model card's lines on the scans kept aside."""
    models = scores["models"]
    n = len(scores["cases"])
    lines = [f"- On {n} labelled scan(s) kept aside (not trained on: {', '.join(scores['cases'])}), mean Dice / lesion F1:"]
    for name, label in (("finetuned", "this fine-tuned model"), ("start", "the model it started from")):
        if name in models:
            lines.append(f"  {label} {models[name]['mean_dice']:.3f} / {models[name]['mean_lesion_f1']:.3f}")
    return lines
