"""deepwml_calibrate: fit a lesion model's probability temperature on labelled scans and store it in the model."""
from __future__ import annotations

import argparse
import math
import sys
from typing import List, Optional

from deepwml.cli.common import add_version_argument, run, run_installed
from deepwml.cli.labelled_scans import (add_model_and_scan_arguments, fitting_device, model_folder, shown_to_model,
                                        store_in_model, validation_roots)

POSTPROCESSING_REMOVED = ("deepwml_calibrate: note: removed the model's stored postprocessing (its threshold was chosen on "
                          "the old probabilities); choose it again with deepwml_find_postprocessing")


def build_parser() -> argparse.ArgumentParser:
    """Arguments of deepwml_calibrate."""
    p = argparse.ArgumentParser(
        prog="deepwml_calibrate",
        description=(
            "Make a lesion model's probabilities mean what they say: fit two temperatures (probability = "
            "sigmoid(logit / T), one T for logits below the 0.5 threshold, one above) on labelled scans the model did "
            "not learn from, and store them in the model's fold checkpoints, where deepwml_predict (probability and uncertainty maps, lesion confidence), "
            "deepwml_export_model and deepwml_install_model find it. A single network's mask at the 0.5 threshold "
            "does not change. Calibrate again after any further training."
        ),
    )
    add_model_and_scan_arguments(p, "folds to calibrate together (default: every fold; they are averaged as "
                                    "deepwml_predict averages them)", masks=False)
    p.add_argument("--tta", action="store_true",
                   help="fit the temperatures to left-right flip-averaged probabilities (as deepwml_predict --tta "
                   "makes them), for a model that predicts with TTA; then run deepwml_find_postprocessing --tta")
    p.add_argument("--dry-run", action="store_true", help="fit and print, change nothing")
    p.add_argument("--reset", action="store_true", help="remove stored temperatures (back to the raw probabilities)")
    add_version_argument(p)
    return p


def _main(argv: Optional[List[str]]) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    # torch comes with these: imported once the arguments are known, so that --help answers at once
    from deepwml.calibration.fit import calibrate, write_calibration
    from deepwml.calibration.temperature import T_RANGE
    from deepwml.inference.postprocessing import POSTPROCESSING

    folder = model_folder(args)
    written_to = args.output or folder
    if args.reset:
        removed, folds = store_in_model(args, folder, "deepwml_calibrate", lambda spec: write_calibration(spec, None))
        print(f"deepwml_calibrate: removed the temperatures of {written_to} (folds {' '.join(folds)})")
        if POSTPROCESSING in removed:
            print(POSTPROCESSING_REMOVED, file=sys.stderr)
        return 0
    roots = validation_roots(args)
    held_out = bool(roots)
    setup = fitting_device(args)
    shown = shown_to_model(args, folder)
    progress = sys.stderr.isatty()
    # fitted on the model as it is (its folds' records name their validation cases), stored where it is to go
    result = calibrate(folder, args.images, args.labels, setup, args.folds, args.checkpoint, args.ignore_label, progress,
                       write=False, tta=True if args.tta else None,
                       shown=shown, **roots)
    if not args.dry_run:
        removed, _ = store_in_model(args, folder, "deepwml_calibrate", lambda spec: write_calibration(spec, result))
        result.removed_postprocessing = POSTPROCESSING in removed
    r = result.record
    below, above = result.temperatures
    cases = "validation case(s) of its folds, each predicted by its own fold" if held_out else "case(s)"
    print(f"deepwml_calibrate: temperatures {below:.3f} below and {above:.3f} above the threshold, from {len(r['cases'])} {cases} "
          f"({r['lesion_voxels']} lesion voxels; {shown.describe(masks=False)}); ECE over voxels with probability >= 0.05: "
          f"{r['candidate_ece_before']} -> {r['candidate_ece_after']}"
          + ("; dry run, nothing written" if args.dry_run else f"; stored in {written_to}"))
    if result.removed_postprocessing:
        print(POSTPROCESSING_REMOVED, file=sys.stderr)
    if any(abs(math.log(t / bound)) < 1e-3 for t in result.temperatures for bound in T_RANGE):
        print(f"deepwml_calibrate: warning: a temperature is at the end of its range {T_RANGE}: the model's "
              "probabilities and these labels disagree far more than calibration can mend; check that the labels belong "
              "to the scans and that the model suits them", file=sys.stderr)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point."""
    return run(_main, argv)


def entry() -> None:
    """The installed command (and ``python -m``): main(), then exit without the interpreter's teardown
    (deepwml.cli.common.run_installed)."""
    run_installed(main)


if __name__ == "__main__":
    entry()
