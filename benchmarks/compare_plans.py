"""Plans against each other on one synthetic dataset: by default cpu_fast (2D), cpu_fast_25d and cpu_resenc.

cpu_fast_25d gives each slice its two neighbours as input channels (2.5D, k = 3); cpu_resenc swaps the U-Net's encoder
for nnU-Net-style residual stages. One synthetic dataset of a given scale and seed; every plan is preprocessed from
it, trained on the same fold for the same number of training images (same epochs × iterations × batch; the script
checks the batch sizes agree) and scored on the dataset's held-out test scans (imagesTs, never trained or validated
on) by deepwml_evaluate.

    python benchmarks/compare_plans.py --work /tmp/cmp --scale 0.1 --seed 0 --epochs 30 --iterations 25 -np 2

Prints a Markdown table: per-slice median Dice, sensitivity and precision, case mean Dice and lesion F1 on the test
scans, the validation median Dice of the checkpoint used, the first epoch whose validation passed --pass-dice, and
the median training images per second of log.jsonl (comparable between runs of one invocation only). Every step is
a public command; the work folder resumes (a finished run is not trained again).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from deepwml.cli.common import run
from deepwml.utils.atomic import read_json
from deepwml.utils.commands import run_command
from deepwml.utils.errors import DeepWMLError
from machine_load import load_line  # benchmarks/machine_load.py, next to this script
from results_table import HEADLINE, SLICE_DETAIL, headline, print_table  # benchmarks/results_table.py

DATASET_ID, NAME = 530, "SynthPlans"
DATASET = f"Dataset{DATASET_ID}_{NAME}"
#: the repository's presets
PLANS = Path(__file__).resolve().parents[1] / "plans"
DEFAULT_PLANS = ("cpu_fast", "cpu_fast_25d", "cpu_resenc")


def _run(module: str, args: List[str], env: Dict[str, str]) -> float:
    """Run one public command; returns its wall time."""
    start = time.perf_counter()
    run_command(module, args, env, "compare_plans")
    return time.perf_counter() - start


def _score(work: Path, plan: str, fold: str, checkpoint: str, env: Dict[str, str]) -> Dict[str, float]:
    """Predict the test scans with one trained fold and evaluate; the headline figures."""
    raw = work / "raw" / DATASET
    pred, report = work / f"pred_{plan}", work / f"report_{plan}"
    model = work / "res" / DATASET / plan
    _run("predict", ["-i", str(raw / "imagesTs"), "-o", str(pred), "-m", str(model), "-f", fold,
                     "--checkpoint", checkpoint, "--no-qc", "--no-anatomy", "--device", "cpu"], env)
    _run("evaluate", ["-ref", str(raw / "labelsTs"), "-pred", str(pred), "-d", str(DATASET_ID), "-o", str(report)], env)
    val = read_json(model / f"fold_{fold}" / "validation" / "summary.json")
    return {**headline(report), "val_dice": val["median_dice"]}


def training_record(log: Path, pass_dice: float) -> Dict[str, float]:
    """From a run's log.jsonl: median images/s and the first epoch whose validation median Dice reached pass_dice."""
    epochs = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    passed = [e["epoch"] for e in epochs if (e.get("val_median_dice") or 0.0) >= pass_dice]
    return {"images_per_second": float(np.median([e["images_per_second"] for e in epochs])),
            "first_pass": float(passed[0]) if passed else float("nan")}


def main(argv: Optional[List[str]] = None) -> int:
    """Make the data, preprocess and train every plan, score them on the test scans, print."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True, help="work folder (resumable)")
    p.add_argument("--plans", nargs="+", default=list(DEFAULT_PLANS),
                   help=f"presets in plans/ to compare (default: {' '.join(DEFAULT_PLANS)})")
    p.add_argument("--scale", type=float, default=0.1, help="deepwml_make_synthetic --scale (default 0.1: 49 patients)")
    p.add_argument("--seed", type=int, default=0, help="synthetic seed (default 0)")
    p.add_argument("--centres", default=None, help="deepwml_make_synthetic --centres (default: all twelve)")
    p.add_argument("--fold", default="0", help="the fold every plan trains on (default 0)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--iterations", type=int, default=25, help="iterations per epoch (default 25, cpu_fast's)")
    p.add_argument("--checkpoint", default="best", choices=("best", "latest"))
    p.add_argument("--pass-dice", type=float, default=0.7,
                   help="report the first epoch whose validation median Dice reached this (default 0.7)")
    p.add_argument("--threads", type=int, default=1, help="training threads per run (default 1: comparable under load)")
    p.add_argument("-np", "--num-processes", type=int, default=1, help="processes for synthesis and preprocessing")
    args = p.parse_args(argv)
    print(load_line())
    work = args.work.resolve()
    env = dict(os.environ, DEEPWML_RAW=str(work / "raw"), DEEPWML_PREPROCESSED=str(work / "pp"), DEEPWML_RESULTS=str(work / "res"))
    np_ = ["-np", str(args.num_processes)]
    centres = ["--centres", args.centres] if args.centres else []
    _run("make_synthetic", ["--dataset-id", str(DATASET_ID), "--name", NAME, "--scale", str(args.scale),
                            "--seed", str(args.seed), *centres, *np_], env)
    for plan in args.plans:
        _run("plan_and_preprocess", ["-d", str(DATASET_ID), "--preset", str(PLANS / f"{plan}.json"), *np_], env)
    batches = {plan: read_json(work / "pp" / DATASET / plan / "plans.json")["training"]["batch_size"] for plan in args.plans}
    if len(set(batches.values())) > 1:
        raise DeepWMLError(f"the plans' batch sizes differ ({batches}): the runs would not see the same number of images")
    rows, seconds = {}, {}
    for plan in args.plans:
        fold_dir = work / "res" / DATASET / plan / f"fold_{args.fold}"
        # the final validation summary is written when a run has finished all its epochs
        if not (fold_dir / "validation" / "summary.json").is_file():
            resume = ["--continue"] if (fold_dir / "checkpoint_latest.pth").is_file() else []
            seconds[plan] = _run("train", ["-d", str(DATASET_ID), args.fold, "-p", plan, "--epochs", str(args.epochs),
                                           "--iterations", str(args.iterations), "--device", "cpu",
                                           "--threads", str(args.threads), *resume], env)
        rows[plan] = {**_score(work, plan, args.fold, args.checkpoint, env),
                      **training_record(fold_dir / "log.jsonl", args.pass_dice)}
    first = args.plans[0]
    images = args.epochs * args.iterations * batches[first]
    print(f"\nsynthetic scale {args.scale}, seed {args.seed}, fold {args.fold}: {images} training images per run, "
          f"checkpoint_{args.checkpoint}, {rows[first]['slices']} test slices with lesion\n")
    columns = [(key, f"test {title}") for key, title in (*HEADLINE[:1], *SLICE_DETAIL, *HEADLINE[1:])]
    print_table("plan", rows, seconds, columns + [("val_dice", "val median Dice"),
                                                  ("first_pass", f"first epoch val ≥ {args.pass_dice}"),
                                                  ("images_per_second", "median images/s")])
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
