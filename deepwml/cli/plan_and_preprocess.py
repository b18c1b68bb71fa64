"""deepwml_plan_and_preprocess: fingerprint the training data, write the plan and splits, fill the cache."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import List, Optional

from deepwml.cli.common import add_dataset_argument, add_version_argument, run, run_installed
from deepwml.paths import add_root_arguments, preprocessed_root, raw_root


def build_parser() -> argparse.ArgumentParser:
    """Arguments of deepwml_plan_and_preprocess."""
    parser = argparse.ArgumentParser(
        prog="deepwml_plan_and_preprocess",
        description=(
            "Fingerprint a raw dataset's training cases, plan the experiment from a preset, make stratified splits "
            "(test hold-out + 5 folds, drawn from imagesTr) and preprocess every case once into a resumable cache."
        ),
    )
    add_dataset_argument(parser)
    add_root_arguments(parser, kinds=("raw", "preprocessed"))
    parser.add_argument("-np", "--n-jobs", type=int, default=2, help="worker processes, one case each (default: 2)")
    parser.add_argument("--preset", default="paper", help="plan preset name (paper, cpu_fast, cpu_resenc, cpu_fast_25d) or a preset .json (default: paper)")
    parser.add_argument("--plan-file", type=Path, default=None, help="an edited plans.json to preprocess with, as it is")
    parser.add_argument("--verify", action="store_true", help="check the raw dataset first (deepwml_verify_dataset)")
    parser.add_argument("--overwrite", action="store_true", help="recompute the fingerprint, the plan and every cached case")
    parser.add_argument("--seed", type=int, default=0, help="seed of the splits (default: 0)")
    parser.add_argument("--test-fraction", type=float, default=0.2, help="hold-out test fraction of imagesTr (default: 0.2)")
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds (default: 5)")
    parser.add_argument("--progress", action="store_true", help="show progress bars even when stderr is not a terminal")
    add_version_argument(parser)
    return parser


def _main(argv: Optional[List[str]]) -> int:
    args = build_parser().parse_args(argv)
    # imported here so that --help stays fast
    from deepwml.preprocessing.run import Options, plan_and_preprocess

    if args.n_jobs < 1:
        raise SystemExit("deepwml_plan_and_preprocess: error: -np must be at least 1")
    opts = Options(
        dataset=args.dataset,
        raw_root=raw_root(args.raw_root),
        preprocessed_root=preprocessed_root(args.preprocessed_root),
        n_jobs=args.n_jobs,
        preset=args.preset,
        plan_file=args.plan_file,
        verify=args.verify,
        overwrite=args.overwrite,
        seed=args.seed,
        test_fraction=args.test_fraction,
        n_folds=args.folds,
        progress=True if args.progress else None,
    )
    plan_and_preprocess(opts)
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
