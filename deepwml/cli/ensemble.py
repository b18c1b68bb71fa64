"""deepwml_ensemble: average the probability maps of several deepwml_predict runs (any models, any plans)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from deepwml.cli.common import add_version_argument, cortex_contrast_setting, run, run_installed
from deepwml.constants import MIN_CORTEX_CONTRAST


def build_parser() -> argparse.ArgumentParser:
    """Arguments of deepwml_ensemble."""
    p = argparse.ArgumentParser(
        prog="deepwml_ensemble",
        description=(
            "Average the lesion probability maps that several deepwml_predict --save-probabilities runs wrote (models "
            "of any plan: every map is on its input's own grid) and threshold the average: masks, CASE_lesions.csv and "
            "summary.csv as deepwml_predict writes them. Every input folder must hold the same cases. Run the same "
            "command again after an interruption and it resumes."
        ),
    )
    p.add_argument("-i", "--inputs", type=Path, nargs="+", required=True,
                   help="two or more deepwml_predict output folders holding CASE_prob<ending> maps")
    p.add_argument("-o", "--output", type=Path, required=True, help="folder for the ensemble's outputs")
    p.add_argument("--weights", type=float, nargs="+",
                   help="one weight per input folder, e.g. 2 1 (normalised to sum to one; default: equal)")
    p.add_argument("--threshold", type=float, default=None,
                   help="lesion where the averaged probability is at or above this, in (0, 1) (default: the threshold "
                        "the input runs recorded, else 0.5)")
    p.add_argument("--min-lesion-ml", type=float, default=0.0, metavar="ML",
                   help="drop lesions smaller than this volume in ml from the masks, as deepwml_predict --min-lesion-ml "
                        "(default 0: keep all)")
    p.add_argument("--min-lesion-peak", type=float, default=0.0, metavar="P",
                   help="drop lesions whose most probable voxel of the averaged map stays under this probability, as "
                        "deepwml_predict --min-lesion-peak (default 0: keep all)")
    p.add_argument("--min-lesion-contrast", type=float, default=0.0, metavar="C",
                   help="drop lesions less than C times as bright as the tissue around them, as deepwml_predict "
                        "--min-lesion-contrast; needs --images (default 0: keep all)")
    p.add_argument("--min-lesion-spread", type=float, default=0.0, metavar="S",
                   help="with --min-lesion-contrast: drop a faint lesion only when also under S ring spreads above the "
                        "tissue around it, as deepwml_predict --min-lesion-spread (default 0: the ratio alone)")
    p.add_argument("--keep-outside-brain", action="store_true",
                   help="keep the lesions with no voxel in the brain of the first folder's anatomy maps (when it holds "
                        "them, from deepwml_predict --save-anatomy, such lesions are dropped as deepwml_predict drops them)")
    p.add_argument("--min-cortex-contrast", type=cortex_contrast_setting, default=MIN_CORTEX_CONTRAST, metavar="K",
                   help="with the first folder's anatomy maps and --images: drop the lesions the maps place in or against the cortex "
                        "under K times the cortex's median intensity, as deepwml_predict does (default %(default)g; 0 keeps them)")
    p.add_argument("--images", type=Path,
                   help="the scans the runs predicted (deepwml_predict's -i): also write qc/CASE.png, the mask outlined")
    p.add_argument("--save-probabilities", action="store_true", help="also write the averaged CASE_prob<ending>")
    p.add_argument("--overwrite", action="store_true", help="average every case anew, even finished ones")
    p.add_argument("--progress", action="store_true", help="show a progress bar even when output is not a terminal")
    add_version_argument(p)
    return p


def _main(argv: Optional[List[str]]) -> int:
    args = build_parser().parse_args(argv)
    # torch comes with these: imported once the arguments are known, so that --help answers at once
    from deepwml.inference.ensemble import ensemble

    report = ensemble(args.inputs, args.output, weights=args.weights, threshold=args.threshold,
                      save_probabilities=args.save_probabilities, overwrite=args.overwrite,
                      progress=True if args.progress else None, images=args.images,
                      min_lesion_ml=args.min_lesion_ml, min_lesion_peak=args.min_lesion_peak,
                      keep_outside_brain=args.keep_outside_brain, min_lesion_contrast=args.min_lesion_contrast,
                      min_lesion_spread=args.min_lesion_spread, min_cortex_contrast=args.min_cortex_contrast)
    print(report.describe())
    for row in report.failed:
        print(f"failed: {row.case_id}: {row.error}", file=sys.stderr)
    return 1 if report.failed else 0


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point: user errors print one line and exit 2."""
    return run(_main, argv)


def entry() -> None:
    """The installed command (and ``python -m``): main(), then exit without the interpreter's teardown
    (deepwml.cli.common.run_installed)."""
    run_installed(main)


if __name__ == "__main__":
    entry()
