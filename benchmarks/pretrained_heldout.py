"""A lesion model on the shipped model's held-out synthetic set: headline figures and calibration (issue #14 point 4).

The held-out set is the recipe's (deepwml/pretrained/recipe.py: seed 1000, scale 0.05, drawn with another seed than
any training case). The model predicts it with probability maps, and deepwml_evaluate scores it: per-slice median
Dice, sensitivity and precision, case mean Dice and lesion F1, and the expected calibration error (ECE, 10 bins)
over all voxels and over candidate voxels (probability >= 0.05, docs/evaluation.md); the reliability diagram is
WORK/report/figures/reliability.png. Then the same split by matrix (fine, >= 384 pixels across as 512^2 scans; coarse
as 256^2 ones): case mean Dice, lesion F1, the recall of small reference lesions (< 30 ul, 26-connected) and the
false components (predicted lesions touching no reference lesion).

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
from typing import Dict, List, Optional

import numpy as np

from deepwml.cli.common import run
from deepwml.evaluation.case_metrics import case_metrics
from deepwml.evaluation.lesions import label_lesions
from deepwml.imageio import read_image
from deepwml.pretrained.recipe import HELDOUT_ID, HELDOUT_NAME, Recipe
from deepwml.utils.atomic import read_json
from deepwml.utils.commands import run_command
from machine_load import load_line  # benchmarks/machine_load.py, next to this script
from results_table import HEADLINE, SLICE_DETAIL, headline  # benchmarks/results_table.py


#: matrices at least this wide are "fine" (512^2-like), the rest "coarse" (256^2-like)
FINE_MATRIX = 384
#: reference lesions under this volume are "small" (the 1-3 pixel wide lesions of 512^2 scans)
SMALL_LESION_UL = 30.0


def by_matrix(dataset: Path, predictions: Path) -> str:
    """A markdown table of the held-out figures split by matrix: fine (>= FINE_MATRIX pixels across) and coarse."""
    groups: Dict[str, Dict[str, list]] = {}
    for label_file in sorted((dataset / "labelsTr").glob("*.nii.gz")):
        case = label_file.name[: -len(".nii.gz")]
        ref = read_image(label_file)
        reference, predicted = ref.array > 0, read_image(predictions / label_file.name).array > 0
        group = "fine" if max(ref.geometry.size[:2]) >= FINE_MATRIX else "coarse"
        g = groups.setdefault(group, {"dice": [], "f1": [], "small": [0, 0], "false": [0, 0], "cases": []})
        figures = case_metrics(reference, predicted, ref.geometry)
        g["cases"].append(case)
        g["dice"].append(figures["dice"])
        g["f1"].append(figures["lesion_f1"])
        ref_labels, n_ref = label_lesions(reference)
        volume_ul = np.bincount(ref_labels.ravel(), minlength=n_ref + 1)[1:] * ref.geometry.voxel_volume_ml * 1000
        found = np.zeros(n_ref + 1, bool)
        found[np.unique(ref_labels[predicted])] = True
        small = volume_ul < SMALL_LESION_UL
        g["small"][0] += int(found[1:][small].sum())
        g["small"][1] += int(small.sum())
        pred_labels, n_pred = label_lesions(predicted)
        touching = np.zeros(n_pred + 1, bool)
        touching[np.unique(pred_labels[reference])] = True
        g["false"][0] += int((~touching[1:]).sum())
        g["false"][1] += n_pred
    lines = [f"| matrix | cases | case mean Dice | lesion F1 | recall of lesions < {SMALL_LESION_UL:g} ul | false / predicted components |",
             "|---|---|---|---|---|---|"]
    for name in ("fine", "coarse"):
        if name in groups:
            g = groups[name]
            recall = g["small"][0] / g["small"][1] if g["small"][1] else float("nan")
            lines.append(f"| {name} ({'>=' if name == 'fine' else '<'} {FINE_MATRIX}) | {len(g['cases'])} | "
                         f"{np.nanmean(g['dice']):.3f} | {np.nanmean(g['f1']):.3f} | {recall:.2f} ({g['small'][0]} / "
                         f"{g['small'][1]}) | {g['false'][0]} / {g['false'][1]} |")
    return "\n".join(lines)


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
    print()
    print(by_matrix(dataset, predictions))
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
