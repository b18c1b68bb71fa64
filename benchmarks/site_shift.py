"""How a model holds up on a site unlike the generator, zero-shot: one synthetic centre's test scans, shifted as
benchmarks/finetune.py shifts its site (a flatter contrast, Rician noise, raters who outline wider), each shift alone.

The centre is drawn with a seed the shipped model never saw (default MS#2, seed 77, the test half of a 0.5 scale:
9 scans). Each ``--shift`` is a copy of those test scans and masks changed once (``contrast=G``: m (I / m) ** G about
each scan's tissue median; ``noise=S``: Rician noise of S x m; ``dilate=N``: every mask grown N pixels in-plane;
joined by commas, ``none`` for the scans as drawn); every ``-m`` model predicts every copy as it is set to predict
(the shipped one with its flip TTA) and deepwml_evaluate scores it. One table: per-slice median Dice, sensitivity and
precision, case mean Dice and lesion F1 per shift and model.

    python benchmarks/site_shift.py --work /tmp/shift                          # the shipped model
    python benchmarks/site_shift.py --work /tmp/shift -m builtin RESULTS/Dataset510_SynthPretrain/cpu_fast_robust \\
        --shifts none contrast=0.8 contrast=0.6 noise=0.03 dilate=1

The work folder resumes: scans, shifted copies and each model's scored predictions are kept (by the model folder's
path and --checkpoint); --redo predicts again, e.g. after that folder's model was trained further. A model made by
deepwml_train_pretrained --checkpoint latest is scored as it ships with --checkpoint latest.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from deepwml.cli.common import run
from deepwml.utils.commands import run_command
from deepwml.utils.errors import DeepWMLError
from finetune import shift_site  # benchmarks/finetune.py, next to this script
from machine_load import load_line  # benchmarks/machine_load.py, next to this script
from results_table import headline  # benchmarks/results_table.py

DATASET_ID, NAME = 521, "SiteShift"
DATASET = f"Dataset{DATASET_ID}_{NAME}"
KEYS = {"contrast": 1.0, "noise": 0.0, "dilate": 0}
DEFAULT_SHIFTS = ["none", "contrast=0.8", "contrast=0.7", "contrast=0.6", "noise=0.03", "dilate=1",
                  "contrast=0.6,noise=0.03,dilate=1"]
COLUMNS = (("slice_dice", "slice Dice"), ("slice_sensitivity", "sensitivity"), ("slice_precision", "precision"),
           ("case_dice", "case Dice"), ("lesion_f1", "lesion F1"))


def parse_shift(text: str) -> Tuple[float, float, int]:
    """``contrast=G,noise=S,dilate=N`` (any of them, any order; ``none``) as (contrast, noise, dilate)."""
    values = dict(KEYS)
    if text.strip() != "none":
        for part in text.split(","):
            key, sep, value = part.partition("=")
            key = key.strip()
            if not sep or key not in KEYS:
                raise DeepWMLError(f"--shifts: {part!r} is not one of contrast=G, noise=S, dilate=N (or none)")
            try:
                values[key] = int(value) if key == "dilate" else float(value)
            except ValueError:
                raise DeepWMLError(f"--shifts: {part!r} needs a number after '='") from None
    contrast, noise, dilate = float(values["contrast"]), float(values["noise"]), int(values["dilate"])
    if not (contrast > 0 and noise >= 0 and dilate >= 0):
        raise DeepWMLError(f"--shifts: {text!r} needs contrast > 0, noise >= 0 and dilate >= 0")
    return contrast, noise, dilate


def shift_name(shift: Tuple[float, float, int]) -> str:
    """A folder name that says the shift: 'none' or e.g. 'contrast0.6_noise0.03_dilate1'."""
    parts = [f"{key}{value:g}" for key, value in zip(KEYS, shift) if value != KEYS[key]]
    return "_".join(parts) or "none"


def shifted_copy(raw: Path, shift: Tuple[float, float, int], work: Path, seed: int) -> Path:
    """The site's test scans and masks copied to WORK/shift_NAME and shifted there (once; a finished copy is reused)."""
    folder = work / f"shift_{shift_name(shift)}"
    if not (folder / "complete").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        for sub in ("imagesTs", "labelsTs"):
            shutil.copytree(raw / sub, folder / sub)
        shift_site(folder, *shift, seed=seed)
        (folder / "complete").write_text("shifted\n")
    return folder


def model_arguments(model: str, checkpoint: str = "best") -> Tuple[str, str, List[str]]:
    """A row name, a key naming its predictions' folders and deepwml_predict's model arguments for ``builtin`` or a
    PLAN folder (both from the folder's whole path, as two models' PLAN folders often share their names, and from the
    checkpoint read from it, since a fine-tuning recipe ships its last one and deepwml_predict reads the best)."""
    if model == "builtin":
        return "shipped", "builtin", ["-m", "builtin"]
    path = Path(model).expanduser().resolve()
    if not path.is_dir():
        raise DeepWMLError("-m: not a folder (a trained model's PLAN folder, or builtin)", path)
    # "best" keeps the key of the runs made before --checkpoint existed, so their kept predictions stay theirs
    ident = str(path) if checkpoint == "best" else f"{path}:{checkpoint}"
    name = str(path) if checkpoint == "best" else f"{path} ({checkpoint})"
    return name, hashlib.sha1(ident.encode()).hexdigest()[:12], ["-m", str(path), "--checkpoint", checkpoint]


def main(argv: Optional[List[str]] = None) -> int:
    """Draw the site, shift its copies, predict and score each with each model, print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True, help="work folder (resumable)")
    p.add_argument("-m", "--models", nargs="+", default=["builtin"], help="builtin and/or trained models' PLAN folders")
    p.add_argument("--centre", default="MS#2", help="the site's centre (default MS#2)")
    p.add_argument("--scale", type=float, default=0.5, help="fraction of the centre's patients to draw (default 0.5)")
    p.add_argument("--test-fraction", type=float, default=0.5, help="share of them scored (default 0.5)")
    p.add_argument("--seed", type=int, default=77, help="seed of the site's scans (the shipped model's data used 0)")
    p.add_argument("--shifts", nargs="+", default=DEFAULT_SHIFTS, help=f"shifts to score (default {' '.join(DEFAULT_SHIFTS)})")
    p.add_argument("--checkpoint", choices=("best", "latest"), default="best",
                   help="checkpoint of each trained model (default best, as deepwml_predict; deepwml_train_pretrained "
                        "--checkpoint latest ships and calibrates the last one). The shipped model reads its own")
    p.add_argument("--redo", action="store_true", help="predict again even where predictions are kept")
    args = p.parse_args(argv)
    shifts = [parse_shift(s) for s in args.shifts]
    models = [model_arguments(m, args.checkpoint) for m in args.models]
    print(load_line())
    work = args.work.expanduser().resolve()
    env = dict(os.environ, DEEPWML_RAW=str(work / "raw"))
    raw = work / "raw" / DATASET
    # every time: a finished draw is kept, and one of other settings (another --centre or --seed) is refused
    run_command("make_synthetic", ["--raw", str(work / "raw"), "--dataset-id", str(DATASET_ID), "--name", NAME,
                                   "--centres", args.centre, "--scale", str(args.scale), "--seed", str(args.seed),
                                   "--test-fraction", str(args.test_fraction)], env, "site_shift")
    rows: Dict[Tuple[str, str], Dict[str, float]] = {}
    for shift in shifts:
        folder = shifted_copy(raw, shift, work, args.seed)
        for name, key, model in models:
            pred, report = folder / f"pred_{key}", folder / f"report_{key}"
            if args.redo or not (report / "summary.json").is_file():
                shutil.rmtree(pred, ignore_errors=True)
                shutil.rmtree(report, ignore_errors=True)
                run_command("predict", ["-i", str(folder / "imagesTs"), "-o", str(pred), *model, "--no-qc", "--overwrite"], env, "site_shift")
                run_command("evaluate", ["-ref", str(folder / "labelsTs"), "-pred", str(pred), "-d", str(DATASET_ID), "-o", str(report)],
                            env, "site_shift")
            rows[(shift_name(shift), name)] = headline(report)
    n_test = len(list((raw / "imagesTs").glob("*.nii.gz")))
    print(f"\n{args.centre}, seed {args.seed}: {n_test} test scans; zero-shot, each model as it predicts\n")
    print("| shift | model | " + " | ".join(title for _, title in COLUMNS) + " |")
    print("|---|---|" + "---|" * len(COLUMNS))
    for (shift, name), r in rows.items():
        print(f"| {shift} | {name} | " + " | ".join(f"{r[key]:.3f}" for key, _ in COLUMNS) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
