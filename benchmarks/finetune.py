"""Fine-tuning a pretrained model on a new site's few labelled scans against training from scratch (issue #12).

A "site" is one synthetic centre drawn with a seed the pretrained model never saw: ``--train-cases`` scans to
learn from, ``--test-cases`` other scans of the same centre to score on. Both runs see exactly the same number of
training images (same epochs x iterations x batch); the zero-shot pretrained model is scored too.

    python benchmarks/finetune.py --work /tmp/finetune                 # the shipped model (builtin)
    python benchmarks/finetune.py --work /tmp/ft --pretrained RESULTS/Dataset510_SynthPretrain/cpu_fast --centre MS#3

Prints a Markdown table (per-slice median Dice, case mean Dice, lesion F1) and the time of each run. Every step
is a public command; the work folder resumes.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

from deepwml.cli.common import run
from deepwml.utils.atomic import read_json
from deepwml.utils.commands import run_command
from machine_load import load_line  # benchmarks/machine_load.py, next to this script
from results_table import headline, print_table  # benchmarks/results_table.py

DATASET_ID, NAME = 520, "SiteFinetune"
DATASET = f"Dataset{DATASET_ID}_{NAME}"


def _run(module: str, args: List[str], env: Dict[str, str]) -> float:
    """Run one public command; returns its wall time."""
    start = time.perf_counter()
    run_command(module, args, env, "finetune")
    return time.perf_counter() - start


def _score(work: Path, name: str, model: List[str], env: Dict[str, str]) -> Dict[str, float]:
    """Predict the site's test scans with ``model`` (CLI arguments) and evaluate; headline figures."""
    raw = work / "raw" / DATASET
    pred, report = work / f"pred_{name}", work / f"report_{name}"
    _run("predict", ["-i", str(raw / "imagesTs"), "-o", str(pred), *model, "--no-qc"], env)
    _run("evaluate", ["-ref", str(raw / "labelsTs"), "-pred", str(pred), "-d", str(DATASET_ID), "-o", str(report)], env)
    return headline(report)


def main(argv: Optional[List[str]] = None) -> int:
    """Make the site, train both ways, score, print."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True, help="work folder (resumable)")
    p.add_argument("--pretrained", default="builtin", help="builtin or a PLAN/fold folder or checkpoint (default builtin)")
    p.add_argument("--centre", default="CSVD#2", help="the new site's centre (default CSVD#2)")
    p.add_argument("--scale", type=float, default=0.5, help="fraction of the centre's patients to draw (default 0.5)")
    p.add_argument("--test-fraction", type=float, default=0.5, help="share of them kept as the site's test scans")
    p.add_argument("--seed", type=int, default=77, help="seed of the site's scans (the shipped model used 0)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--iterations", type=int, default=20)
    args = p.parse_args(argv)
    print(load_line())
    work = args.work.resolve()
    env = dict(os.environ, DEEPWML_RAW=str(work / "raw"), DEEPWML_PREPROCESSED=str(work / "pp"), DEEPWML_RESULTS=str(work / "res"))
    _run("make_synthetic", ["--raw", str(work / "raw"), "--dataset-id", str(DATASET_ID), "--name", NAME, "--centres", args.centre,
                            "--scale", str(args.scale), "--seed", str(args.seed), "--test-fraction", str(args.test_fraction)], env)
    _run("plan_and_preprocess", ["-d", str(DATASET_ID), "--preset", "cpu_fast", "--test-fraction", "0"], env)
    train = ["-d", str(DATASET_ID), "all", "-p", "cpu_fast", "--epochs", str(args.epochs), "--iterations", str(args.iterations)]
    rows, seconds = {}, {}
    for name, extra in (("scratch", []), ("fine-tuned", ["--pretrained", args.pretrained])):
        results = work / f"res_{name}"
        env_run = dict(env, DEEPWML_RESULTS=str(results))
        fold = results / DATASET / "cpu_fast" / "fold_all"
        if not (fold / "validation" / "summary.json").is_file():
            seconds[name] = _run("train", train + extra + (["--continue"] if (fold / "checkpoint_latest.pth").is_file() else []), env_run)
        rows[name] = _score(work, name, ["-m", str(results / DATASET / "cpu_fast"), "-f", "all", "--checkpoint", "latest"], env_run)
    rows["zero-shot pretrained"] = _score(work, "zeroshot", ["-m", args.pretrained], env)
    images = args.epochs * args.iterations * 8
    n_train = read_json(work / "raw" / DATASET / "dataset.json")["numTraining"]
    print(f"\n{args.centre}, seed {args.seed}: {n_train} training scans, {images} training images per run\n")
    print_table("model", rows, seconds)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
