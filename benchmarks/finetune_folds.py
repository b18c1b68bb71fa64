"""deepwml_finetune with --folds K against one network on every scan, on a new site's scans (issue #12).

The site is made as benchmarks/finetune.py makes it (one synthetic centre drawn with a seed the shipped model never
saw, optionally shifted unlike the generator: --site-contrast, --site-noise, --dilate-masks); its training scans go
into a CSV manifest and are fine-tuned by the user's command, `deepwml_finetune`, twice with the same schedule per
network: one network on every scan (fold 'all') and K fold networks (each on (K-1)/K of the scans; the threshold and
lesion filters chosen on their out-of-fold predictions, installed as an ensemble), then `--ship all` on the K-fold
work folder (one more network on every scan, given the settings chosen out of fold). The site's test scans, which
none saw, are then segmented by the installed models, by the K-fold model without its chosen postprocessing and by
the start model, and scored by deepwml_evaluate. Printed: that table, the K-fold run's cross-validated estimate (from
its model card's scores) beside what the test scans measure, and each fine-tuning's time.

    python benchmarks/finetune_folds.py --work /tmp/ftfolds --centre MS#2 --scale 0.5 --seed 77 --folds 3 \
        --epochs 8 --iterations 25 --site-contrast 0.6 --site-noise 0.03 --dilate-masks 1

The work folder resumes (each deepwml_finetune run resumes; predictions already made are kept).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

from deepwml.calibration.fit import labelled_cases
from deepwml.cli.common import run
from deepwml.utils.atomic import read_json
from deepwml.utils.commands import run_command
from finetune import DATASET, DATASET_ID, NAME, shift_site  # benchmarks/finetune.py, next to this script
from machine_load import load_line  # benchmarks/machine_load.py
from results_table import headline, print_table  # benchmarks/results_table.py


def site_manifest(raw: Path, centre: str) -> Path:
    """A CSV manifest of the site's training scans and masks (what a site gives deepwml_finetune)."""
    rows = ["image,label,centre,disease"]
    for case, label in labelled_cases(raw / "imagesTr", raw / "labelsTr"):  # paired as deepwml_calibrate pairs them
        rows.append(f"{case.source},{label},{centre},{centre.split('#')[0]}")
    path = raw.parent.parent / "site_manifest.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def _timed(module: str, args: List[str], env: Dict[str, str]) -> float:
    """Run one public command; its wall time."""
    start = time.perf_counter()
    run_command(module, args, env, "finetune_folds")
    return time.perf_counter() - start


def _score(work: Path, name: str, model: List[str], env: Dict[str, str]) -> Dict[str, float]:
    """The site's test scans segmented with ``model`` (deepwml_predict arguments) and scored; headline figures."""
    raw = work / "raw" / DATASET
    pred, report = work / f"pred_{name}", work / f"report_{name}"
    run_command("predict", ["-i", str(raw / "imagesTs"), "-o", str(pred), *model, "--no-qc"], env, "finetune_folds")
    run_command("evaluate", ["-ref", str(raw / "labelsTs"), "-pred", str(pred), "-d", str(DATASET_ID), "-o", str(report)],
                env, "finetune_folds")
    return headline(report)


def main(argv: Optional[List[str]] = None) -> int:
    """Make the site, fine-tune both ways, score on the site's test scans, print."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True, help="work folder (resumable)")
    p.add_argument("--centre", default="MS#2", help="the site's synthetic centre (default MS#2)")
    p.add_argument("--scale", type=float, default=0.5, help="fraction of the centre's patients to draw (default 0.5)")
    p.add_argument("--test-fraction", type=float, default=0.5, help="share of them kept as the site's test scans")
    p.add_argument("--seed", type=int, default=77, help="seed of the site's scans (the shipped model used 0)")
    p.add_argument("--folds", type=int, default=3, help="K of the cross-validated run (default 3)")
    p.add_argument("--epochs", type=int, default=8, help="epochs of every network (default 8)")
    p.add_argument("--iterations", type=int, default=25, help="iterations per epoch (default 25)")
    p.add_argument("--train-seed", type=int, default=0, help="seed of every fine-tuning (default 0)")
    p.add_argument("--site-contrast", type=float, default=1.0, help="the site's contrast exponent about the tissue median (< 1: flatter)")
    p.add_argument("--site-noise", type=float, default=0.0, help="Rician noise added, as a share of the tissue median")
    p.add_argument("--dilate-masks", type=int, default=0, help="the site's raters outline lesions this many pixels wider")
    p.add_argument("-np", "--num-processes", type=int, default=2)
    args = p.parse_args(argv)
    print(load_line())
    work = args.work.resolve()
    env = dict(os.environ, DEEPWML_RAW=str(work / "raw"))
    run_command("make_synthetic", ["--raw", str(work / "raw"), "--dataset-id", str(DATASET_ID), "--name", NAME,
                                   "--centres", args.centre, "--scale", str(args.scale), "--seed", str(args.seed),
                                   "--test-fraction", str(args.test_fraction)], env, "finetune_folds")
    shift_site(work / "raw" / DATASET, args.site_contrast, args.site_noise, args.dilate_masks, args.seed)
    manifest = site_manifest(work / "raw" / DATASET, args.centre)
    schedule = ["--epochs", str(args.epochs), "--iterations", str(args.iterations), "--seed", str(args.train_seed),
                "-np", str(args.num_processes)]
    rows, seconds = {}, {}
    for folds in (0, args.folds):
        tag = f"{folds}_folds" if folds else "all"
        label = f"fine-tuned, {folds} fold networks" if folds else "fine-tuned, one network on every scan"
        model = work / "models" / tag
        if not (model / "MODEL_CARD.md").is_file():
            seconds[label] = _timed("finetune", [str(manifest), "-o", str(model), "--work", str(work / f"ft_{tag}"),
                                                 "--folds", str(folds), *schedule], env)
        rows[label] = _score(work, tag, ["-m", str(model)], env)
        if folds:
            rows[f"{label}, without the chosen postprocessing"] = _score(
                work, f"{tag}_plain", ["-m", str(model), "--no-postprocessing", "--tta"], env)
            # --ship all on the same work folder: only the network on every scan is trained, given the folds' choice
            single, label = work / "models" / f"{tag}_all", f"fine-tuned, {folds} folds then --ship all"
            if not (single / "MODEL_CARD.md").is_file():
                seconds[label] = _timed("finetune", [str(manifest), "-o", str(single), "--work", str(work / f"ft_{tag}"),
                                                     "--folds", str(folds), "--ship", "all", *schedule], env)
            rows[label] = _score(work, f"{tag}_all", ["-m", str(single)], env)
    rows["start model (shipped), zero-shot"] = _score(work, "zeroshot", [], env)
    n_train = read_json(work / "raw" / DATASET / "dataset.json")["numTraining"]
    n_test = len(list((work / "raw" / DATASET / "labelsTs").glob("*")))
    shift = f"site contrast {args.site_contrast:g}, noise {args.site_noise:g}, masks dilated {args.dilate_masks} px"
    print(f"\n{args.centre}, seed {args.seed}: {n_train} training scans, {n_test} test scans, {shift}; every network "
          f"{args.epochs} x {args.iterations} iterations x batch 8, training seed {args.train_seed}\n")
    print_table("model (on the site's test scans)", rows, seconds)
    cv = read_json(work / f"ft_{args.folds}_folds" / "crossval" / "crossval.json")["models"]
    test = rows[f"fine-tuned, {args.folds} fold networks, without the chosen postprocessing"]
    print(f"\ncross-validated estimate in the {args.folds}-fold model's card (each training scan out of fold, one fold "
          f"network, plan's threshold): case mean Dice {cv['finetuned']['mean_dice']:.3f}, lesion F1 "
          f"{cv['finetuned']['mean_lesion_f1']:.3f}; start model on the same scans {cv['start']['mean_dice']:.3f} / "
          f"{cv['start']['mean_lesion_f1']:.3f}. On the test scans (the {args.folds} networks averaged, same settings): "
          f"{test['case_dice']:.3f} / {test['lesion_f1']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
