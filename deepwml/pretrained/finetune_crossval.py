"""deepwml_finetune --folds K: the site's labelled scans split into K folds, one network fine-tuned per fold, so that
every scan is segmented once by a network that never trained on it (out of fold, as nnU-Net's cross-validation
scores a model) and the model card says how the fine-tuned model and the model it started from do on all of them,
without keeping scans out of training for good.

Each fold's validation scans are linked into WORK/crossval/inputs/fold_K and segmented by that fold alone into
WORK/crossval/finetuned/fold_K; the start model segments every scan (the raw dataset's imagesTr) into
WORK/crossval/start (a resumed run reuses what is there). Scored as deepwml_evaluate scores a case
(finetune_holdout.score_case), written to WORK/crossval/crossval.json.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Dict, List, Optional

from deepwml.calibration.fit import labelled_cases
from deepwml.inference.inputs import InputCase
from deepwml.planning.splits import fold_split
from deepwml.pretrained.finetune_holdout import model_scores, score_case, segment
from deepwml.utils.atomic import read_json, write_json
from deepwml.utils.errors import DeepWMLError

SCORES_NAME = "crossval.json"


def check_folds(folds: int, n_training: int) -> None:
    """Refuse a fold count that cannot make a cross-validation of ``n_training`` scans."""
    if folds == 1 or folds < 0:
        raise DeepWMLError(f"--folds must be 2 or more (or 0: one network on every scan), not {folds}")
    if folds > n_training:
        raise DeepWMLError(f"--folds {folds} needs at least {folds} labelled scans to train on, and there are {n_training}")


def fold_validation(splits_path: Path, folds: int) -> Dict[str, List[str]]:
    """Each fold's validation scans (fold name -> case ids), from the dataset's splits.json."""
    splits = read_json(splits_path)
    if len(splits.get("folds", [])) != folds:
        raise DeepWMLError(f"holds {len(splits.get('folds', []))} folds, not the {folds} of --folds; delete it and run "
                           "the same command again", splits_path)
    return {str(k): sorted(fold_split(splits, k, splits_path)["val"]) for k in range(folds)}


def _linked_inputs(cases: List[InputCase], folder: Path) -> Path:
    """``folder`` holding links to (or, where links cannot be made, copies of) these scans' files."""
    folder.mkdir(parents=True, exist_ok=True)
    for source in (path for case in cases for path in case.input_files()):
        target = folder / source.name
        if target.is_file():
            continue
        try:
            os.symlink(source.resolve(), target)
        except OSError:  # copied beside itself and renamed: an interrupted copy is never taken for the scan
            partial = target.with_name(f".{target.name}.partial")
            shutil.copy2(source, partial)
            partial.replace(target)
    return folder


def score_crossval(work: Path, raw: Path, ending: str, validation: Dict[str, List[str]], tuned: Path, start: Path,
                   device: str, tta: bool, ignore_label: Optional[int] = None,
                   centres: Optional[Dict[str, str]] = None, n_channels: int = 1) -> Dict:
    """Segment each fold's validation scans with that fold of ``tuned`` (checkpoint latest; at the plan's threshold,
    with flip TTA when ``tta``, whatever the folds store) and every scan with the ``start`` model as it is set to, and
    score both against the labels (each scan with its ``centres`` entry, when given); written to
    WORK/crossval/crossval.json and returned."""
    root = work / "crossval"
    fold_of = {case_id: fold for fold, ids in validation.items() for case_id in ids}
    # the scans as deepwml_predict finds them (CASE<ending>, or its channels CASE_0000<ending> ...)
    scans = {case.case_id: case for case, _ in labelled_cases(raw / "imagesTr", raw / "labelsTr", n_channels)}
    tuned_cases: Dict[str, Dict[str, float]] = {}
    for fold, ids in validation.items():
        out = root / "finetuned" / f"fold_{fold}"
        segment(_linked_inputs([scans[i] for i in ids], root / "inputs" / f"fold_{fold}"), out, (tuned, [fold], "latest"),
                device, postprocessing=False, tta=tta)
        for case_id in ids:
            tuned_cases[case_id] = dict(score_case(raw / "labelsTr" / f"{case_id}{ending}", out / f"{case_id}{ending}",
                                                   ignore_label), fold=fold)
    # imagesTr holds exactly the scans trained on (those kept aside by --holdout are in imagesTs)
    segment(raw / "imagesTr", root / "start", (start, None, "best"), device)
    start_cases = {case_id: score_case(raw / "labelsTr" / f"{case_id}{ending}", root / "start" / f"{case_id}{ending}",
                                       ignore_label) for case_id in sorted(fold_of)}
    for per_case in (tuned_cases, start_cases):
        for case_id, figures in per_case.items():
            if centres and case_id in centres:
                figures["centre"] = centres[case_id]
    result = {"cases": sorted(fold_of), "folds": validation,
              "models": {"finetuned": model_scores(tuned, dict(sorted(tuned_cases.items()))),
                         "start": model_scores(start, start_cases)}}
    write_json(root / SCORES_NAME, result)
    return result


def kept_scores(work: Path, validation: Dict[str, List[str]]) -> Optional[Dict]:
    """The scores of an earlier run of the same folds (a resumed run), else None."""
    path = work / "crossval" / SCORES_NAME
    if not path.is_file():
        return None
    kept = read_json(path)
    return kept if kept.get("folds") == validation else None


def verdict(scores: Dict) -> str:
    """Whether fine-tuning beat the model it started from on these scans (mean Dice), in words."""
    tuned, start = (scores["models"][name]["mean_dice"] for name in ("finetuned", "start"))
    if tuned > start:
        return f"fine-tuning raised the mean Dice on these scans by {tuned - start:.3f}"
    return (f"fine-tuning did not raise the mean Dice on these scans ({tuned - start:+.3f}): the model it started from may "
            "serve this site as well; more scans or epochs may change that")


def _centre_lines(scores: Dict) -> List[str]:
    """Per centre, when the scans come from more than one: both models' mean Dice and lesion F1 out of fold."""
    tuned, start = (scores["models"][name]["per_case"] for name in ("finetuned", "start"))
    centres = sorted({figures.get("centre") for figures in tuned.values()} - {None})
    if len(centres) < 2:
        return []
    lines = ["  by centre, fine-tuned (out of fold) against the start model, mean Dice / lesion F1:"]
    for centre in centres:
        ids = [case_id for case_id, figures in tuned.items() if figures.get("centre") == centre]
        means = [model_scores(Path(), {i: per_case[i] for i in ids}) for per_case in (tuned, start)]
        lines.append(f"    {centre} ({len(ids)} scans): {means[0]['mean_dice']:.3f} / {means[0]['mean_lesion_f1']:.3f} "
                     f"against {means[1]['mean_dice']:.3f} / {means[1]['mean_lesion_f1']:.3f}")
    return lines


def card_lines(scores: Dict, postprocessing: Optional[Dict] = None, calibration: Optional[Dict] = None) -> List[str]:
    """The model card's lines on the cross-validation, and on the calibration and postprocessing fitted on its
    predictions (``calibration``: deepwml_calibrate's record)."""
    models, folds = scores["models"], scores["folds"]
    lines = [f"- Cross-validated on all {len(scores['cases'])} scans it was tuned on ({len(folds)} folds; each scan segmented "
             "by the fold network that never trained on it, at the plan's threshold), mean Dice / lesion F1:"]
    for name, label in (("finetuned", "fine-tuned (out of fold)"), ("start", "the model it started from, as it predicts")):
        lines.append(f"  {label} {models[name]['mean_dice']:.3f} / {models[name]['mean_lesion_f1']:.3f}")
    lines.append(f"  {verdict(scores)}")
    lines += _centre_lines(scores)
    if calibration:
        lines.append(f"- Probabilities calibrated (`deepwml_calibrate`) on the same out-of-fold predictions: temperatures "
                     f"{calibration['temperature_below']} below and {calibration['temperature_above']} above the 0.5 "
                     "threshold (the masks at the plan's threshold unchanged); ECE over voxels with probability >= 0.05 "
                     f"{calibration['candidate_ece_before']} -> {calibration['candidate_ece_after']}")
    if postprocessing:
        from deepwml.inference.postprocessing import MaskSettings

        settings = MaskSettings.from_record(postprocessing)
        record = postprocessing["record"]
        before, after = record["before"], record["after"]
        if before == after:
            lines.append("- Postprocessing searched (`deepwml_find_postprocessing`) on the same out-of-fold predictions: "
                         f"no threshold or lesion filter beat the plan's, kept: {settings.describe()}")
        else:
            lines.append(f"- Postprocessing chosen (`deepwml_find_postprocessing`) on the same out-of-fold predictions: "
                         f"{settings.describe()}; case mean Dice {before['dice']:.3f} -> {after['dice']:.3f}, lesion F1 "
                         f"{before['lesion_f1']:.3f} -> {after['lesion_f1']:.3f} (chosen and scored on the same scans, "
                         "so the gain is optimistic; `deepwml_predict --no-postprocessing` leaves it out)")
    return lines
