"""deepwml_calibrate: fit a lesion model's probability temperature on labelled scans and store it in the model."""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import List, Optional

from deepwml.cli.common import add_dataset_argument, add_device_argument, run
from deepwml.paths import add_root_arguments
from deepwml.pretrained import BUILTIN_ALIAS, builtin_model_dir


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
    p.add_argument("-m", "--model",
                   help=f"the model's PLAN folder (trained or installed), or '{BUILTIN_ALIAS}' for the shipped model")
    add_dataset_argument(p, required=False)
    p.add_argument("-p", "--plan", help="plan name: with -d, the model trained by deepwml_train in $DEEPWML_RESULTS")
    p.add_argument("-i", "--images", type=Path, help="folder of labelled scans (CASE_0000<ending> or CASE<ending>). "
                   "Without -i/-l, each fold of a model trained here is calibrated on its own validation cases (the "
                   "scans it never trained on, from the dataset's raw folder), each predicted by its fold alone")
    p.add_argument("-l", "--labels", type=Path, help="folder of their lesion masks (CASE<ending>: 0/1)")
    p.add_argument("-f", "--folds", nargs="+", help="folds to calibrate together (default: every fold; they are "
                   "averaged as deepwml_predict averages them)")
    p.add_argument("--checkpoint", choices=("best", "latest"), default="best",
                   help="which checkpoint of each fold (default: best; an installed model has one)")
    p.add_argument("--ignore-label", type=int, default=None, help="label value that marks voxels to leave out")
    p.add_argument("--dry-run", action="store_true", help="fit and print, change nothing")
    p.add_argument("--reset", action="store_true", help="remove stored temperatures (back to the raw probabilities)")
    add_device_argument(p)
    add_root_arguments(p)
    return p


def _main(argv: Optional[List[str]]) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    # torch comes with these: imported once the arguments are known, so that --help answers at once
    from deepwml.calibration.fit import calibrate, write_calibration
    from deepwml.calibration.temperature import T_RANGE
    from deepwml.inference.model_loading import check_model, resolve_model_dir
    from deepwml.paths import preprocessed_root, raw_root, results_root
    from deepwml.training.device import setup_device
    from deepwml.utils.errors import DeepWMLError

    if args.model == BUILTIN_ALIAS:
        folder = builtin_model_dir()
    else:
        results = results_root(args.results_root) if args.dataset is not None else None
        folder = resolve_model_dir(args.model, args.dataset, args.plan, results)
    if args.reset:
        spec = check_model(folder, args.folds, args.checkpoint)
        write_calibration(spec, None)
        print(f"deepwml_calibrate: removed the temperatures of {folder} (folds {' '.join(spec.folds)})")
        return 0
    if (args.images is None) != (args.labels is None):
        raise DeepWMLError("give both -i IMAGES and -l LABELS, or neither (then each fold's validation cases are used)")
    held_out = args.images is None
    if held_out and args.model == BUILTIN_ALIAS:
        raise DeepWMLError("the shipped model's validation cases are not on this machine: give labelled scans with -i IMAGES -l LABELS")
    setup = setup_device(args.device)
    progress = sys.stderr.isatty()
    roots = {"raw_root": raw_root(args.raw_root), "preprocessed_root": preprocessed_root(args.preprocessed_root)} if held_out else {}
    result = calibrate(folder, args.images, args.labels, setup, args.folds, args.checkpoint, args.ignore_label, progress,
                       write=not args.dry_run, **roots)
    r = result.record
    below, above = result.temperatures
    cases = "validation case(s) of its folds, each predicted by its own fold" if held_out else "case(s)"
    print(f"deepwml_calibrate: temperatures {below:.3f} below and {above:.3f} above the threshold, from {len(r['cases'])} {cases} "
          f"({r['lesion_voxels']} lesion voxels); ECE over voxels with probability >= 0.05: "
          f"{r['candidate_ece_before']} -> {r['candidate_ece_after']}"
          + ("; dry run, nothing written" if args.dry_run else f"; stored in {folder}"))
    if any(abs(math.log(t / bound)) < 1e-3 for t in result.temperatures for bound in T_RANGE):
        print(f"deepwml_calibrate: warning: a temperature is at the end of its range {T_RANGE}: the model's "
              "probabilities and these labels disagree far more than calibration can mend; check that the labels belong "
              "to the scans and that the model suits them", file=sys.stderr)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point."""
    return run(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
