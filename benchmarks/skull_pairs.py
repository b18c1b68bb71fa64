"""The same synthetic brains with and without their skull: does a model's mask depend on the skull, and does
deepwml_predict's skull stripping (its default since 2026-12-07; --skull-strip) remove the dependence?

deepwml_make_synthetic draws the stripping from a random stream of its own, so one seed and scale with
``--skull-stripped always`` and ``never`` give the same brains, lesions and masks, stripped and with skull. Both sets
are predicted by deepwml_predict with --no-skull-strip and with --skull-strip and scored per case (MICCAI-2017 WMH case metrics,
deepwml.evaluation.case_metrics). Printed per arm: mean Dice, lesion F1, predicted and reference volume; then the
per-case predicted-volume ratio with skull / stripped (median, IQR, mean |log ratio|) without and with the option.

    python benchmarks/skull_pairs.py --work /tmp/skull_pairs                 # the shipped models, 27 pairs
    python benchmarks/skull_pairs.py --work /tmp/skull_pairs -m PLAN_DIR

The work folder resumes (data and finished predictions are kept).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from deepwml.cli.common import run
from deepwml.evaluation.case_metrics import case_metrics
from deepwml.imageio import read_image
from deepwml.utils.commands import run_command
from deepwml.utils.errors import DeepWMLError
from machine_load import load_line  # benchmarks/machine_load.py, next to this script

REPO_ROOT = Path(__file__).resolve().parents[1]


def outside_repository(work: Path) -> Path:
    """``work`` resolved; a folder inside the repository is refused (a benchmark's scans and models never go there)."""
    work = Path(work).expanduser().resolve()
    if work == REPO_ROOT or REPO_ROOT in work.parents:
        raise DeepWMLError("the work folder must lie outside the repository", work)
    return work
#: arm name -> (stripped set?, --skull-strip (deepwml_predict's default since 2026-12-07) or --no-skull-strip?)
ARMS = {"stripped, --no-skull-strip": (True, False), "with skull, --no-skull-strip": (False, False),
        "stripped, --skull-strip": (True, True), "with skull, --skull-strip": (False, True)}


def build_parser() -> argparse.ArgumentParser:
    """Arguments of the benchmark."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True, help="work folder (outside the repository; resumes)")
    p.add_argument("-m", "--model", help="a lesion model's PLAN folder (default: the shipped one)")
    p.add_argument("--scale", type=float, default=0.05, help="deepwml_make_synthetic --scale (default 0.05: 27 cases)")
    p.add_argument("--seed", type=int, default=4242, help="deepwml_make_synthetic --seed (default 4242)")
    p.add_argument("--keep-outside-brain", action="store_true",
                   help="deepwml_predict --keep-outside-brain in every arm (own prediction folders, so one work folder "
                        "holds both ways)")
    return p


def make_pairs(work: Path, scale: float, seed: int, env: Dict[str, str]) -> Dict[bool, Path]:
    """The two data sets (True: stripped); each case's image and mask in imagesTr / labelsTr."""
    out = {}
    for stripped in (True, False):
        raw = work / ("raw_stripped" if stripped else "raw_skull")
        run_command("make_synthetic", ["--raw", str(raw), "--dataset-id", "601", "--name", "Pairs", "--scale", str(scale),
                                       "--seed", str(seed), "--test-fraction", "0",
                                       "--skull-stripped", "always" if stripped else "never"], env, "skull_pairs")
        out[stripped] = raw / "Dataset601_Pairs"
    return out


def score_arm(dataset: Path, predictions: Path) -> Dict[str, Dict]:
    """Case id -> case metrics of the predictions against the data set's masks."""
    rows = {}
    for label_file in sorted((dataset / "labelsTr").glob("*.nii.gz")):
        ref = read_image(label_file)
        rows[label_file.name.split(".")[0]] = case_metrics(ref.array > 0, read_image(predictions / label_file.name).array > 0,
                                                            ref.geometry)
    return rows


def ratio_line(skull: Dict[str, Dict], stripped: Dict[str, Dict]) -> str:
    """Per-case predicted-volume ratio with skull / stripped: median, IQR, mean |log ratio| (cases both predict)."""
    ratios = np.array([skull[c]["pred_volume_ml"] / stripped[c]["pred_volume_ml"] for c in skull
                       if stripped[c]["pred_volume_ml"] > 0 and skull[c]["pred_volume_ml"] > 0])
    if ratios.size == 0:
        return "no case with lesion predicted in both"
    q1, med, q3 = np.percentile(ratios, [25, 50, 75])
    return f"median {med:.3f} (IQR {q1:.3f}-{q3:.3f}), mean |log ratio| {np.abs(np.log(ratios)).mean():.3f}, {ratios.size} cases"


def _main(argv: Optional[List[str]]) -> int:
    args = build_parser().parse_args(argv)
    work = outside_repository(args.work)
    env = dict(os.environ)
    print(f"# {load_line()}")
    print("lesions outside the brain: " + ("kept (--keep-outside-brain)" if args.keep_outside_brain
                                           else "dropped (deepwml_predict's default)"))
    data = make_pairs(work, args.scale, args.seed, env)
    model = ["-m", args.model] if args.model else []
    scores = {}
    for arm, (stripped, strip_option) in ARMS.items():
        out = work / ("pred_" + arm.replace(", --", "_").replace(" ", "_").replace("-", "")
                      + ("_keep" if args.keep_outside_brain else ""))
        run_command("predict", ["-i", str(data[stripped] / "imagesTr"), "-o", str(out), "--no-qc", *model]
                    + ["--skull-strip" if strip_option else "--no-skull-strip"]
                    + (["--keep-outside-brain"] if args.keep_outside_brain else []), env, "skull_pairs")
        scores[arm] = score_arm(data[stripped], out)
    print()
    print("| arm | cases | mean Dice | lesion F1 | HD95 mm, mean / median | predicted ml | reference ml |")
    print("|---|---|---|---|---|---|---|")
    for arm, rows in scores.items():
        figures = list(rows.values())
        hd95 = [f["hd95_mm"] for f in figures]
        print(f"| {arm} | {len(figures)} | {np.mean([f['dice'] for f in figures]):.3f} "
              f"| {np.nanmean([f['lesion_f1'] for f in figures]):.3f} | {np.nanmean(hd95):.1f} / {np.nanmedian(hd95):.1f} "
              f"| {sum(f['pred_volume_ml'] for f in figures):.1f} | {sum(f['ref_volume_ml'] for f in figures):.1f} |")
    print()
    print(f"volume with skull / stripped, --no-skull-strip: "
          f"{ratio_line(scores['with skull, --no-skull-strip'], scores['stripped, --no-skull-strip'])}")
    print(f"volume with skull / stripped, --skull-strip: "
          f"{ratio_line(scores['with skull, --skull-strip'], scores['stripped, --skull-strip'])}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point: user errors print one line and exit 2."""
    return run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
