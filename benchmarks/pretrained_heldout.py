"""A lesion model on the shipped model's held-out synthetic set: headline figures and calibration (issue #14 point 4).

The held-out set is the recipe's (deepwml/pretrained/recipe.py: seed 1000, scale 0.05, drawn with another seed than
any training case). The model predicts it with probability maps, and deepwml_evaluate scores it: per-slice median
Dice, sensitivity and precision, case mean Dice and lesion F1, and the expected calibration error (ECE, 10 bins)
over all voxels and over candidate voxels (probability >= 0.05, docs/evaluation.md); the reliability diagram is
WORK/report/figures/reliability.png. Then the same split by matrix (fine, >= 384 pixels across as 512^2 scans; coarse
as 256^2 ones): case mean Dice, lesion F1, the recall of small reference lesions (< 30 ul, 26-connected) and the
false components (predicted lesions touching no reference lesion); and split by lesion load (>= 10 ml, as every
held-back real patient of issue #12, 11-128 ml, against lighter cases).

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
from deepwml.evaluation.lesions import label_lesions, lesion_detection
from deepwml.evaluation.volume_agreement import agreement_line
from deepwml.imageio import read_image
from deepwml.inference.lesion_contrast import background_floor, lesion_contrasts, ring_radius
from deepwml.pretrained.recipe import HELDOUT_ID, HELDOUT_NAME, Recipe
from deepwml.utils.atomic import read_json
from deepwml.utils.commands import run_command
from machine_load import load_line  # benchmarks/machine_load.py, next to this script
from results_table import HEADLINE, SLICE_DETAIL, headline  # benchmarks/results_table.py


#: matrices at least this wide are "fine" (512^2-like), the rest "coarse" (256^2-like)
FINE_MATRIX = 384
#: reference lesions under this volume are "small" (the 1-3 pixel wide lesions of 512^2 scans)
SMALL_LESION_UL = 30.0


#: cases with at least this lesion load are "heavy": the held-back real patients of issue #12 hold 11-128 ml each
HEAVY_LOAD_ML = 10.0


def case_rows(dataset: Path, predictions: Path) -> List[Dict]:
    """Per held-out case: matrix and load group, Dice, lesion F1, small reference lesions found (with the contrast of
    each small one found and missed), false components."""
    rows = []
    for label_file in sorted((dataset / "labelsTr").glob("*.nii.gz")):
        ref = read_image(label_file)
        reference, predicted = ref.array > 0, read_image(predictions / label_file.name).array > 0
        detection = lesion_detection(reference, predicted, ref.geometry.slice_axis_numpy)
        figures = case_metrics(reference, predicted, ref.geometry, detection)
        volume_ul = detection.reference_lesions["voxels"] * ref.geometry.voxel_volume_ml * 1000
        found = detection.reference_lesions["touched"]
        small = volume_ul < SMALL_LESION_UL
        contrast = _reference_contrasts(read_image(dataset / "imagesTr" / label_file.name).array, reference, ref.geometry)
        rows.append({
            "matrix": f"fine (>= {FINE_MATRIX})" if max(ref.geometry.size[:2]) >= FINE_MATRIX else f"coarse (< {FINE_MATRIX})",
            "load": f">= {HEAVY_LOAD_ML:g} ml" if volume_ul.sum() / 1000 >= HEAVY_LOAD_ML else f"< {HEAVY_LOAD_ML:g} ml",
            "dice": figures["dice"], "f1": figures["lesion_f1"],
            "small_found": int(found[small].sum()), "small": int(small.sum()),
            "small_found_contrast": contrast[small & found].tolist(), "small_missed_contrast": contrast[small & ~found].tolist(),
            "false": int((~detection.predicted_lesions["touched"]).sum()), "predicted": detection.n_predicted})
    return rows


def _reference_contrasts(image: np.ndarray, reference: np.ndarray, geometry) -> np.ndarray:
    """Each reference lesion's contrast as deepwml_predict's --min-lesion-contrast measures it (mean over the median of
    the tissue within 3 mm in-plane), in label order."""
    labels, n = label_lesions(reference)
    image = image.astype(np.float32)
    return lesion_contrasts(image, labels, n, ring_radius(geometry.numpy_spacing, geometry.slice_axis_numpy),
                            background_floor(image))


def contrast_line(rows: List[Dict]) -> str:
    """How bright the small reference lesions the model finds are against those it misses."""
    found = np.asarray([c for r in rows for c in r["small_found_contrast"]], float)
    missed = np.asarray([c for r in rows for c in r["small_missed_contrast"]], float)

    def median(values: np.ndarray) -> str:
        return f"{np.nanmedian(values):.2f}" if np.isfinite(values).any() else "n/a"

    return (f"reference lesions < {SMALL_LESION_UL:g} ul, contrast (mean over the median of the tissue within 3 mm, as "
            f"--min-lesion-contrast measures it): found {len(found)}, median {median(found)}; missed {len(missed)}, "
            f"median {median(missed)}")


def split_table(rows: List[Dict], key: str, title: str) -> str:
    """A markdown table of :func:`case_rows` grouped by ``key`` ("matrix" or "load")."""
    lines = [f"| {title} | cases | case mean Dice | lesion F1 | recall of lesions < {SMALL_LESION_UL:g} ul | false / predicted components |",
             "|---|---|---|---|---|---|"]
    for group in sorted({r[key] for r in rows}, reverse=True):
        g = [r for r in rows if r[key] == group]
        found, small = sum(r["small_found"] for r in g), sum(r["small"] for r in g)
        recall = found / small if small else float("nan")
        lines.append(f"| {group} | {len(g)} | {np.nanmean([r['dice'] for r in g]):.3f} | "
                     f"{np.nanmean([r['f1'] for r in g]):.3f} | {recall:.2f} ({found} / {small}) | "
                     f"{sum(r['false'] for r in g)} / {sum(r['predicted'] for r in g)} |")
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
    p.add_argument("--anatomy", action="store_true",
                   help="predict with the shipped anatomy model as deepwml_predict does by default, so lesions outside its "
                   "brain are dropped (own output folders; without it the lesion model's masks are scored as they are)")
    p.add_argument("--tta", action="store_true", help="deepwml_predict --tta: average each slice with its left-right flip "
                   "(own output folders)")
    p.add_argument("--no-skull-strip", action="store_true",
                   help="with --anatomy or --white-matter-only: deepwml_predict --no-skull-strip, the lesion model sees each "
                   "scan with its skull as before 2026-12-07 (own output folders)")
    args = p.parse_args(argv)
    if args.no_skull_strip and not (args.anatomy or args.white_matter_only):
        p.error("--no-skull-strip needs --anatomy or --white-matter-only: without the anatomy model nothing is stripped")
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
    suffix = (f"_{tag}" if tag else "") + ("_white_matter_only" if args.white_matter_only else "_anatomy" if args.anatomy else "")
    suffix += ("_tta" if args.tta else "") + ("_no_skull_strip" if args.no_skull_strip else "")
    predictions, report = work / f"predictions{suffix}", work / f"report{suffix}"
    anatomy = ["--white-matter-only"] if args.white_matter_only else [] if args.anatomy else ["--no-anatomy"]
    run_command("predict", ["-i", str(dataset / "imagesTr"), "-o", str(predictions), *model, "--save-probabilities",
                            "--no-qc", *anatomy, *(["--tta"] if args.tta else []),
                            *(["--no-skull-strip"] if args.no_skull_strip else []), "--device", "cpu"], env, "pretrained_heldout")
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
    evaluated = read_json(report / "summary.json")
    print(f"lesion volume, predicted - reference: {agreement_line(evaluated['volume_agreement'])}")
    print(f"lesion count, predicted - reference: {agreement_line(evaluated['count_agreement'])}")
    print()
    rows = case_rows(dataset, predictions)
    print(split_table(rows, "matrix", "matrix"))
    print()
    print(split_table(rows, "load", "lesion load"))
    print()
    print(contrast_line(rows))
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
