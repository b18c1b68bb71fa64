"""deepwml_find_best_configuration: rank a dataset's trained plans, and their ensembles of two, on the folds'
out-of-fold predictions, and write how to predict with the best."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from deepwml.cli.common import add_dataset_argument, add_device_argument, add_version_argument, run, run_installed
from deepwml.cli.labelled_scans import add_fit_input_options
from deepwml.paths import add_root_arguments
from deepwml.utils.cpu import worker_processes


def build_parser() -> argparse.ArgumentParser:
    """Arguments of deepwml_find_best_configuration."""
    p = argparse.ArgumentParser(
        prog="deepwml_find_best_configuration",
        description=(
            "After cross-validation, as nnU-Net's find_best_configuration: predict every fold's validation cases with "
            "that fold of each plan (as deepwml_predict predicts them), score each plan and each average of two plans "
            "(as deepwml_ensemble averages them) case by case, with its own threshold and with the best "
            "postprocessing deepwml_find_postprocessing would choose, and write into the dataset's results folder "
            "inference_information.json (every configuration's scores), crossval_scores.csv (per case) and "
            "inference_instructions.txt (the commands that predict with the best). An ensemble, which takes the time "
            "of both its plans, is chosen only when it beats the best single plan by --min-gain. Interrupted, the "
            "same command resumes. Nothing in the models is changed."
        ),
    )
    add_dataset_argument(p)
    p.add_argument("-p", "--plans", nargs="+", required=True, help="the plans to compare (trained with deepwml_train)")
    p.add_argument("-f", "--folds", nargs="+", help="folds to compare on (default: the numbered folds every plan has)")
    p.add_argument("--checkpoint", choices=("best", "latest"), default="best", help="which checkpoint of each fold")
    p.add_argument("--no-ensembles", action="store_true", help="compare the plans alone, not their averages of two")
    p.add_argument("--objective", choices=("both", "dice", "f1"), default="both",
                   help="what to maximise over the cases: mean Dice, mean lesion F1, or their average, never lowering either "
                        "by more than --min-gain (default: both)")
    p.add_argument("--min-gain", type=float, default=0.005,
                   help="margin a postprocessing must beat a configuration's own threshold by, and an ensemble the "
                        "best single plan (default 0.005)")
    p.add_argument("--ignore-label", type=int, default=None,
                   help="label value that marks voxels to leave out (default: the dataset's declared one)")
    p.add_argument("-o", "--output", type=Path, help="folder for the three files (default: the dataset's results folder)")
    p.add_argument("--progress", action="store_true", help="show the progress bar even when stderr is not a terminal")
    p.add_argument("-np", "--num-processes", type=int, default=None, metavar="N",
                   help="processes that count the cases' candidates while the next case is predicted (default: one per "
                        "core, at most 8; 1: everything in this process)")
    add_fit_input_options(p)
    add_device_argument(p)
    add_root_arguments(p)
    add_version_argument(p)
    return p


def _main(argv: Optional[List[str]]) -> int:
    args = build_parser().parse_args(argv)
    # torch comes with these: imported once the arguments are known, so that --help answers at once
    from deepwml.calibration.best_configuration import INSTRUCTIONS, find_best_configuration
    from deepwml.cli.labelled_scans import fitting_device
    from deepwml.datasets.raw_dataset import find_dataset_folder
    from deepwml.paths import preprocessed_root, raw_root, results_root

    results_dir = find_dataset_folder(results_root(args.results_root), args.dataset)
    found = find_best_configuration(
        results_dir, args.plans, fitting_device(args), raw_root(args.raw_root), preprocessed_root(args.preprocessed_root),
        folds=args.folds, checkpoint=args.checkpoint, ensembles=not args.no_ensembles, objective=args.objective,
        min_gain=args.min_gain, ignore_label=args.ignore_label, progress=args.progress or sys.stderr.isatty(),
        output=args.output, skull_strip=args.skull_strip, anatomy_model=args.anatomy_model, anatomy=not args.no_anatomy,
        keep_outside_brain=args.keep_outside_brain, min_cortex_contrast=args.min_cortex_contrast,
        workers=worker_processes(args.num_processes))
    print(f"deepwml_find_best_configuration: {len(found.record['cases'])} validation case(s) of folds "
          f"{' '.join(found.record['folds'])}, each predicted by its own fold{_stripped(found.record)}; case means (own "
          f"threshold -> postprocessed):")
    tests = {c["name"]: c["against_chosen"] for c in found.record["configurations"]}
    for r in found.ranked:
        before, after = r.result.before, r.result.after
        mark = "*" if r is found.best else " "
        test = tests[r.configuration.name]
        versus = "" if test is None else f"; against the chosen: Wilcoxon p {test['p_value']:.3g}"
        print(f" {mark} {r.configuration.name:<32} Dice {before['dice']:.3f} -> {after['dice']:.3f}, lesion F1 "
              f"{before['lesion_f1']:.3f} -> {after['lesion_f1']:.3f}  ({r.result.chosen.describe()}{versus})")
    out = found.written[0].parent
    print(f"deepwml_find_best_configuration: best: {found.best.configuration.name}; how to predict with it: "
          f"{out / INSTRUCTIONS}")
    print(found.instructions, end="")
    return 0


def _stripped(record: dict) -> str:
    """Which plans saw the scans skull-stripped, for the terminal ('' when none did)."""
    plans = [plan for plan, seen in record.get("segmented_as", {}).items() if seen["skull_strip"]]
    return f" (skull-stripped for {', '.join(plans)}, as deepwml_predict shows them)" if plans else ""


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point."""
    return run(_main, argv)


def entry() -> None:
    """The installed command (and ``python -m``): main(), then exit without the interpreter's teardown
    (deepwml.cli.common.run_installed)."""
    run_installed(main)


if __name__ == "__main__":
    entry()
