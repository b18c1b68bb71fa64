"""A lesion model on the shipped model's held-out synthetic set: headline figures and calibration (issue #14 point 4).

The held-out set is the recipe's (deepwml/pretrained/recipe.py: seed 1000, scale 0.05, drawn with another seed than
any training case). The model predicts it with probability maps, and deepwml_evaluate scores it: per-slice median
Dice, sensitivity and precision, case mean Dice and lesion F1, and the expected calibration error (ECE, 10 bins)
over all voxels and over candidate voxels (probability >= 0.05, docs/evaluation.md); the reliability diagram is
WORK/report/figures/reliability.png.

    python benchmarks/pretrained_heldout.py --work /tmp/heldout            # the shipped model
    python benchmarks/pretrained_heldout.py --work /tmp/heldout -m PLAN_DIR -f 0 --checkpoint latest

Every step is a public command; the work folder resumes (existing predictions are kept). Each model gets its own
prediction and report folders in it (the shipped one: predictions/, report/; another: predictions_<tag>/ ...), so one
held-out set serves several models.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path
from typing import List, Optional

from deepwml.cli.common import run
from deepwml.pretrained.recipe import HELDOUT_ID, HELDOUT_NAME, Recipe
from deepwml.utils.atomic import read_json
from deepwml.utils.commands import run_command
from machine_load import load_line  # benchmarks/machine_load.py, next to this script
from results_table import HEADLINE, SLICE_DETAIL, headline  # benchmarks/results_table.py


def main(argv: Optional[List[str]] = None) -> int:
    """Synthesise the held-out set, predict it with probabilities, evaluate, print."""
    recipe = Recipe.defaults()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True, help="work folder (resumable)")
    p.add_argument("-m", "--model", type=Path, default=None, help="a PLAN folder (default: the shipped model)")
    p.add_argument("-f", "--folds", nargs="+", default=None, help="fold(s) of --model, averaged (default: all it has)")
    p.add_argument("--checkpoint", choices=("best", "latest"), default="best", help="checkpoint of --model (default best)")
    p.add_argument("--seed", type=int, default=recipe.heldout_seed, help=f"held-out seed (default {recipe.heldout_seed}, the recipe's)")
    p.add_argument("--scale", type=float, default=recipe.heldout_scale, help=f"held-out scale (default {recipe.heldout_scale})")
    p.add_argument("-np", "--num-processes", type=int, default=1)
    p.add_argument("--white-matter-only", action="store_true",
                   help="predict with the shipped anatomy model and deepwml_predict --white-matter-only (own output folders)")
    args = p.parse_args(argv)
    print(load_line())
    work = args.work.resolve()
    raw = work / "raw"
    env = dict(os.environ, DEEPWML_RAW=str(raw))
    dataset = raw / f"Dataset{HELDOUT_ID:03d}_{HELDOUT_NAME}"
    run_command("make_synthetic", ["--raw", str(raw), "--dataset-id", str(HELDOUT_ID), "--name", HELDOUT_NAME,
                                   "--scale", str(args.scale), "--seed", str(args.seed), "--test-fraction", "0",
                                   "-np", str(args.num_processes)], env, "pretrained_heldout")
    model = (["-m", str(args.model), "--checkpoint", args.checkpoint] + (["-f", *args.folds] if args.folds else [])
             if args.model else [])
    # a model other than the shipped one predicts into folders of its own (deepwml_predict refuses to mix two models)
    tag = hashlib.sha256(f"{args.model.resolve()}:{args.folds}:{args.checkpoint}".encode()).hexdigest()[:8] if args.model else ""
    suffix = (f"_{tag}" if tag else "") + ("_white_matter_only" if args.white_matter_only else "")
    predictions, report = work / f"predictions{suffix}", work / f"report{suffix}"
    anatomy = ["--white-matter-only"] if args.white_matter_only else ["--no-anatomy"]
    run_command("predict", ["-i", str(dataset / "imagesTr"), "-o", str(predictions), *model, "--save-probabilities",
                            "--no-qc", *anatomy, "--device", "cpu"], env, "pretrained_heldout")
    run_command("evaluate", ["-ref", str(dataset / "labelsTr"), "-pred", str(predictions), "-d", str(HELDOUT_ID),
                             "-o", str(report)], env, "pretrained_heldout")
    figures = headline(report)
    calibration = read_json(report / "summary.json")["calibration"]
    cases = int(read_json(dataset / "dataset.json")["numTraining"])
    print(f"\n{args.model or 'the shipped model'} on {cases} held-out cases (seed {args.seed}, scale {args.scale})\n")
    for key, title in (*HEADLINE[:1], *SLICE_DETAIL, *HEADLINE[1:]):
        print(f"{title}: {figures[key]:.3f}")
    for part in ("all_voxels", "candidate_voxels"):
        c = calibration[part]
        print(f"ECE, {part.replace('_', ' ')}: {c['ece']:.4f} ({c['voxels']} voxels)")
    print(f"reliability diagram: {report / 'figures' / 'reliability.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
