"""deepwml_find_postprocessing: choose a lesion model's mask threshold and lesion filters on labelled scans it did not
learn from, and store them in the model for deepwml_predict."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from deepwml.cli.common import add_version_argument, run, run_installed
from deepwml.utils.cpu import worker_processes
from deepwml.cli.labelled_scans import (add_model_and_scan_arguments, fitting_device, model_folder, shown_to_model,
                                        store_in_model, validation_roots)


def build_parser() -> argparse.ArgumentParser:
    """Arguments of deepwml_find_postprocessing."""
    p = argparse.ArgumentParser(
        prog="deepwml_find_postprocessing",
        description=(
            "Choose how a lesion model's probabilities become masks, as nnU-Net chooses its postprocessing on "
            "cross-validation: every mask threshold (0.2..0.8), smallest lesion kept (0..0.1 ml), lesion peak "
            "(0.6..0.9) and lesion contrast to the tissue around it (1.05..1.2) is scored case by case (mean Dice, "
            "mean lesion F1, or both) on labelled scans the model did not learn from, segmented as deepwml_predict "
            "segments them (its skull stripping and anatomy rules included), and the best is stored in the "
            "model's fold checkpoints when it beats the plan's threshold by --min-gain. deepwml_predict then applies "
            "it unless a run gives --threshold, --min-lesion-ml, --min-lesion-peak, --min-lesion-contrast or "
            "--no-postprocessing. Run it after deepwml_calibrate: calibrating again removes it."
        ),
    )
    add_model_and_scan_arguments(p, "folds to choose for together (default: every fold)")
    p.add_argument("--objective", choices=("both", "dice", "f1"), default="both",
                   help="what to maximise over the cases: mean Dice, mean lesion F1, or their average, never lowering either "
                        "by more than --min-gain (default: both)")
    p.add_argument("--min-gain", type=float, default=0.005,
                   help="keep the plan's threshold unless the best settings beat it by this much (default 0.005)")
    p.add_argument("--tta", action="store_true",
                   help="predict the scans with left-right flip TTA (as deepwml_predict --tta) and record it with the "
                   "choice, so that deepwml_predict predicts with TTA by default; calibrate with --tta first")
    p.add_argument("--table", type=Path, help="also write every candidate's settings and scores here (CSV, best first)")
    p.add_argument("-np", "--num-processes", type=int, default=None, metavar="N",
                   help="processes that count the cases' candidates while the next case is predicted (default: one per "
                        "core, at most 8; 1: everything in this process)")
    p.add_argument("--dry-run", action="store_true", help="choose and print, change nothing")
    p.add_argument("--reset", action="store_true", help="remove a stored postprocessing (back to the plan's threshold)")
    add_version_argument(p)
    return p


def _scores(means: dict) -> str:
    """Case means for the terminal."""
    return (f"mean Dice {means['dice']:.3f}, lesion F1 {means['lesion_f1']:.3f} (recall {means['lesion_recall']:.3f}, "
            f"precision {means['lesion_precision']:.3f})")


def _main(argv: Optional[List[str]]) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    # torch comes with these: imported once the arguments are known, so that --help answers at once
    from deepwml.calibration.fit import store_in_checkpoints
    from deepwml.calibration.postprocessing_fit import find_postprocessing, store_postprocessing
    from deepwml.inference.postprocessing import POSTPROCESSING

    folder = model_folder(args)
    written_to = args.output or folder
    if args.reset:
        removed, folds = store_in_model(args, folder, "deepwml_find_postprocessing",
                                        lambda spec: store_in_checkpoints(spec, {POSTPROCESSING: None}))
        print(f"deepwml_find_postprocessing: {'removed the' if removed else 'there was no'} stored postprocessing of "
              f"{written_to} (folds {' '.join(folds)})")
        return 0
    roots = validation_roots(args)
    held_out = bool(roots)
    shown = shown_to_model(args, folder)
    # chosen on the model as it is (its folds' records name their validation cases), stored where it is to go
    choice = find_postprocessing(folder, args.images, args.labels, fitting_device(args), args.folds, args.checkpoint,
                                 args.ignore_label, sys.stderr.isatty(), write=False, objective=args.objective,
                                 min_gain=args.min_gain, table=args.table, tta=True if args.tta else None,
                                 shown=shown, workers=worker_processes(args.num_processes), **roots)
    if not args.dry_run:
        store_in_model(args, folder, "deepwml_find_postprocessing", lambda spec: store_postprocessing(spec, choice))
        if args.output is None:  # the model's checkpoints changed: the counts kept under their old key are stale
            choice.forget_cases()
    result, record = choice.result, choice.record
    cases = "validation case(s) of its folds, each predicted by its own fold" if held_out else "labelled case(s)"
    verdict = (f"chose {result.chosen.describe()}" if result.changed else
               f"kept the plan's {result.default.describe()}: nothing beat it by {args.min_gain:g}")
    print(f"deepwml_find_postprocessing: on {len(record['cases'])} {cases} ({shown.describe()}): {verdict}; "
          f"plan's threshold: {_scores(result.before)}" + (f"; chosen: {_scores(result.after)}" if result.changed else "")
          + ("; dry run, nothing written" if args.dry_run else f"; stored in {written_to}"))
    if result.passed_over is not None:
        settings, means = result.passed_over
        print(f"deepwml_find_postprocessing: note: passed over {settings.describe()}, of a higher average ({_scores(means)}): "
              f"it lowers Dice or lesion F1 by more than --min-gain {args.min_gain:g}; --objective dice or f1 would "
              "choose for that figure alone", file=sys.stderr)
    fitted = calibration_tta(folder, args)
    if fitted is not None and fitted != record["tta"]:
        print(f"deepwml_find_postprocessing: note: the model's temperatures were fitted {'with' if fitted else 'without'} "
              f"TTA and this choice {'with' if record['tta'] else 'without'} it; run deepwml_calibrate "
              f"{'--tta ' if record['tta'] else ''}and then this command again for settings that match", file=sys.stderr)
    return 0


def calibration_tta(folder, args: argparse.Namespace) -> Optional[bool]:
    """Whether the model's stored calibration was fitted with TTA (None: no calibration, or no record of it)."""
    from deepwml.inference.model_loading import check_model
    from deepwml.training.checkpoint import read_checkpoint

    spec = check_model(folder, args.folds, args.checkpoint)
    record = read_checkpoint(spec.checkpoints[0]).get("calibration")
    fitted = record.get("tta") if isinstance(record, dict) else None
    return fitted if isinstance(fitted, bool) else None


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point."""
    return run(_main, argv)


def entry() -> None:
    """The installed command (and ``python -m``): main(), then exit without the interpreter's teardown
    (deepwml.cli.common.run_installed)."""
    run_installed(main)


if __name__ == "__main__":
    entry()
