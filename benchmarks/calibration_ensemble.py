"""Is an ensemble calibrated on its folds' own validation cases under-confident? ECE of a fold ensemble on a held-out
set: uncalibrated, calibrated out of fold (deepwml_calibrate -d/-p: one pair of temperatures fitted on each fold's
validation cases, predicted by that fold alone), one fold with those temperatures, and calibrated on the held-out set
itself (the best two temperatures can do there; an in-sample bound, not a method).

    python benchmarks/calibration_ensemble.py -d 510 -p cpu_fast_robust -f 0 1 --checkpoint latest \\
        --heldout WORK/raw/Dataset511_SynthHeldout --work /tmp/calib_ens

DEEPWML_RAW / DEEPWML_PREPROCESSED / DEEPWML_RESULTS must name the trained model's roots (as for deepwml_calibrate).
The model's stored temperatures are changed: it ends calibrated in sample on the held-out set; run
deepwml_calibrate -d/-p again afterwards to put the out-of-fold calibration back.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import List, Optional

from deepwml.cli.common import run
from deepwml.inference.model_loading import resolve_model_dir
from deepwml.paths import results_root
from deepwml.utils.atomic import read_json
from deepwml.utils.commands import run_command
from machine_load import load_line  # benchmarks/machine_load.py, next to this script

TAG = "calibration_ensemble"


def _score(name: str, model: Path, folds: List[str], checkpoint: str, heldout: Path, work: Path, env: dict) -> float:
    """Predict the held-out set with probabilities, evaluate, return the ECE over candidate voxels (p >= 0.05)."""
    pred, report = work / f"pred_{name}", work / f"report_{name}"
    run_command("predict", ["-i", str(heldout / "imagesTr"), "-o", str(pred), "-m", str(model), "-f", *folds,
                            "--checkpoint", checkpoint, "--save-probabilities", "--no-qc", "--no-anatomy", "--device", "cpu",
                            "--overwrite"], env, TAG)
    dataset_id = heldout.name.split("_")[0].removeprefix("Dataset")
    run_command("evaluate", ["-ref", str(heldout / "labelsTr"), "-pred", str(pred), "-d", dataset_id, "-o", str(report)], env, TAG)
    return float(read_json(report / "summary.json")["calibration"]["candidate_voxels"]["ece"])


def main(argv: Optional[List[str]] = None) -> int:
    """Calibrate four ways, score each on the held-out set, print the ECEs and temperatures."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-d", "--dataset", required=True)
    p.add_argument("-p", "--plan", required=True)
    p.add_argument("-f", "--folds", nargs="+", required=True, help="at least two folds")
    p.add_argument("--checkpoint", choices=("best", "latest"), default="best")
    p.add_argument("--heldout", type=Path, required=True, help="a raw dataset folder (imagesTr, labelsTr) none of the folds saw")
    p.add_argument("--work", type=Path, required=True)
    args = p.parse_args(argv)
    print(load_line())
    env = dict(os.environ)
    model = resolve_model_dir(dataset=args.dataset, plan=args.plan, results_root=results_root(None))
    heldout, work = args.heldout.resolve(), args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    common = ["-f", *args.folds, "--checkpoint", args.checkpoint]
    rows = []
    run_command("calibrate", ["-m", str(model), *common, "--reset"], env, TAG)
    rows.append(("ensemble, uncalibrated", _score("uncalibrated", model, args.folds, args.checkpoint, heldout, work, env)))
    run_command("calibrate", ["-d", args.dataset, "-p", args.plan, *common], env, TAG)
    rows.append(("ensemble, calibrated out of fold", _score("out_of_fold", model, args.folds, args.checkpoint, heldout, work, env)))
    rows.append((f"fold {args.folds[0]} alone, same temperatures",
                 _score("one_fold", model, args.folds[:1], args.checkpoint, heldout, work, env)))
    run_command("calibrate", ["-m", str(model), *common, "-i", str(heldout / "imagesTr"), "-l", str(heldout / "labelsTr")], env, TAG)
    rows.append(("ensemble, calibrated on the held-out set itself", _score("in_sample", model, args.folds, args.checkpoint, heldout, work, env)))
    print(f"\nECE over candidate voxels (p >= 0.05) on {heldout.name}, folds {' '.join(args.folds)} ({args.checkpoint}):")
    for name, ece in rows:
        print(f"  {name}: {ece:.4f}")
    print("temperatures: see each deepwml_calibrate line above")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
