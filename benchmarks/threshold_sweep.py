"""How a lesion model's figures move with the mask threshold (`deepwml_predict --threshold`), the smallest lesion
kept (`--min-lesion-ml`), the least certain one kept (`--min-lesion-peak`) and the faintest one kept
(`--min-lesion-contrast`), on labelled scans; with `--heavy-ml ML` also over the scans carrying at least ML of lesion.

The model predicts every scan once with probability maps; each threshold then makes masks from them, scored as
deepwml_evaluate scores: per-slice median Dice, sensitivity and precision over slices with reference lesion,
false-positive slices, case mean Dice and mean lesion F1 (26-connected components). Choose a threshold on scans the
model was validated on, not on the scans you report (e.g. the recipe's training validation cases):

    python benchmarks/threshold_sweep.py --raw WORK/raw/Dataset510_SynthPretrain \
        --split WORK/preprocessed/Dataset510_SynthPretrain/splits.json --fold 0 --work /tmp/sweep [-m PLAN -f 0]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from deepwml.cli.common import run
from deepwml.evaluation.case_metrics import dice
from deepwml.evaluation.lesions import lesion_detection
from deepwml.evaluation.slice_metrics import slice_metrics
from deepwml.imageio import read_image
from deepwml.inference.lesion_report import filter_lesions
from deepwml.inference.run import PredictRequest, predict
from deepwml.pretrained import BUILTIN_ALIAS, builtin_model_dir
from machine_load import load_line  # benchmarks/machine_load.py, next to this script

DEFAULT_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
SETTING_NAMES = ("threshold", "min lesion ml", "min lesion peak", "min lesion contrast")


def _cases(raw: Path, split: Optional[Path], fold: Optional[int]) -> List[str]:
    """Case ids of ``raw``/labelsTr, or the validation cases of one fold of ``split``."""
    if split is None:
        return sorted(p.name[: -len(".nii.gz")] for p in (raw / "labelsTr").glob("*.nii.gz"))
    folds = json.loads(split.read_text())["folds"]
    return sorted(folds[fold or 0]["val"])


def score(reference: np.ndarray, probabilities: np.ndarray, geometry, threshold: float,
          min_lesion_ml: float = 0.0, min_lesion_peak: float = 0.0, image: Optional[np.ndarray] = None,
          min_lesion_contrast: float = 0.0) -> Dict[str, object]:
    """The slice rows and the case figures of one scan at one threshold, smallest, least certain and faintest lesion
    kept (``image``: the scan, for the contrast)."""
    mask = filter_lesions(probabilities >= threshold, geometry, probabilities, min_lesion_ml, min_lesion_peak, image,
                          min_lesion_contrast) > 0
    slices = slice_metrics(reference, mask, geometry)
    detection = lesion_detection(reference, mask)
    return {"slices": slices, "dice": dice(reference, mask), "f1": detection.f1}


def figures(settings: Tuple[float, ...], per_case: Sequence[Dict[str, object]]) -> Dict[str, object]:
    """One table row: the setting and the figures over its cases."""
    sl = pd.concat([s["slices"] for s in per_case])
    lesion = sl[sl["has_reference_lesion"]]
    return {**dict(zip(SETTING_NAMES, settings)), "slice Dice": lesion["dice"].median(),
            "sensitivity": lesion["sensitivity"].median(), "precision": lesion["precision"].median(),
            "FP slices": int(sl["false_positive_slice"].sum()),
            "case mean Dice": float(np.nanmean([s["dice"] for s in per_case])),
            "lesion F1": float(np.mean([s["f1"] for s in per_case]))}


def print_table(rows: Sequence[Dict[str, object]]) -> None:
    """Markdown of :func:`figures` rows."""
    print("| " + " | ".join(rows[0]) + " |")
    print("|" + "---|" * len(rows[0]))
    for r in rows:
        print("| " + " | ".join(f"{v:g}" if k in SETTING_NAMES else (f"{v:.3f}" if isinstance(v, float) else str(v))
                                for k, v in r.items()) + " |")


def main(argv: Optional[List[str]] = None) -> int:
    """Predict once with probabilities, then score every threshold."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--raw", type=Path, required=True,
                   help="a raw dataset folder (imagesTr/CASE_0000.nii.gz or CASE.nii.gz, labelsTr/CASE.nii.gz)")
    p.add_argument("--split", type=Path, help="splits.json of the preprocessed dataset: score one fold's validation cases only")
    p.add_argument("--fold", type=int, default=0, help="the fold of --split (default 0)")
    p.add_argument("--work", type=Path, required=True, help="where the probability maps go (kept; reused when present)")
    p.add_argument("-m", "--model", default=BUILTIN_ALIAS, help="a PLAN folder (default: the shipped model)")
    p.add_argument("-f", "--folds", nargs="+", default=None, help="folds of --model, averaged (default: all it has)")
    p.add_argument("--thresholds", type=float, nargs="+", default=list(DEFAULT_THRESHOLDS))
    p.add_argument("--min-lesion-ml", type=float, nargs="+", default=[0.0],
                   help="smallest lesion volumes kept (deepwml_predict --min-lesion-ml) to sweep too, e.g. 0 0.005 0.01")
    p.add_argument("--min-lesion-peak", type=float, nargs="+", default=[0.0],
                   help="least peak probabilities of a kept lesion (deepwml_predict --min-lesion-peak) to sweep too, e.g. 0 0.7 0.8")
    p.add_argument("--min-lesion-contrast", type=float, nargs="+", default=[0.0],
                   help="least contrasts of a kept lesion to the tissue around it (deepwml_predict --min-lesion-contrast) "
                        "to sweep too, e.g. 0 1.1 1.15 1.2")
    p.add_argument("--heavy-ml", type=float, default=None, metavar="ML",
                   help="also the figures over the cases whose reference carries at least ML of lesion (e.g. 10: the "
                        "held-back patients of issue #12 all do)")
    p.add_argument("--skull-strip", action="store_true",
                   help="show the model each scan stripped to the shipped anatomy model's brain, as deepwml_predict does "
                        "by default for a model that learned stripped scans (lesions outside the brain kept and the cortex "
                        "bound off, so that only what the model sees changes; its own prediction folder)")
    a = p.parse_args(argv)
    print(f"# {load_line()}")
    cases = _cases(a.raw, a.split, a.fold)
    images = a.work / "images"
    images.mkdir(parents=True, exist_ok=True)
    for cid in cases:
        found = [f for f in (a.raw / "imagesTr" / f"{cid}_0000.nii.gz", a.raw / "imagesTr" / f"{cid}.nii.gz") if f.is_file()]
        if not found:
            raise SystemExit(f"no image of case {cid} in {a.raw / 'imagesTr'}")
        link = images / f"{cid}.nii.gz"
        if not link.exists():
            link.symlink_to(found[0].resolve())
    model = builtin_model_dir() if a.model == BUILTIN_ALIAS else Path(a.model)
    strip = dict(anatomy=True, skull_strip=True, keep_outside_brain=True, min_cortex_contrast=0.0) if a.skull_strip else {}
    predictions = a.work / ("pred_skull_strip" if a.skull_strip else "pred")
    report = predict(PredictRequest(input=images, output=predictions, model_dir=model, folds=a.folds,
                                    save_probabilities=True, write_qc=False, **{"anatomy": False, **strip}))
    if report.failed:  # a case without its map cannot be scored: say which and why rather than fail on the missing file
        raise SystemExit("could not predict " + "; ".join(f"{s.case_id}: {s.error}" for s in report.failed))
    settings = [(t, m, k, c) for t in a.thresholds for m in a.min_lesion_ml for k in a.min_lesion_peak
                for c in a.min_lesion_contrast]
    scored: Dict[tuple, List[Dict[str, object]]] = {s: [] for s in settings}
    load_ml = []
    for cid in cases:  # one case in memory at a time, scored at every setting
        ref = read_image(a.raw / "labelsTr" / f"{cid}.nii.gz")
        prob = read_image(predictions / f"{cid}_prob.nii.gz").array
        image = read_image(images / f"{cid}.nii.gz").array if any(a.min_lesion_contrast) else None
        load_ml.append(float((ref.array > 0).sum() * ref.geometry.voxel_volume_ml))
        for t, m, k, c in settings:
            scored[(t, m, k, c)].append(score(ref.array > 0, prob, ref.geometry, t, m, k, image, c))
    print(f"{model} (folds {' '.join(a.folds) if a.folds else 'all'}) on {len(cases)} cases of {a.raw}"
          + (f" (validation of fold {a.fold})" if a.split else ""))
    print_table([figures(s, per_case) for s, per_case in scored.items()])
    if a.heavy_ml is not None:
        heavy = [i for i, ml in enumerate(load_ml) if ml >= a.heavy_ml]
        print()
        print(f"the {len(heavy)} case(s) with >= {a.heavy_ml:g} ml of reference lesion:")
        if heavy:
            print_table([figures(s, [per_case[i] for i in heavy]) for s, per_case in scored.items()])
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
