"""deepwml_verify_dataset: list every problem of a raw dataset at once, or print a one-line summary when clean."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from deepwml.cli.common import add_dataset_argument, add_version_argument, run, run_installed
from deepwml.datasets import find_dataset_folder
from deepwml.datasets.verify import dataset_summary, verify_dataset
from deepwml.paths import add_root_arguments, raw_root

#: Exit code when the dataset has problems (2 stays reserved for errors that stop the check itself).
EXIT_PROBLEMS = 1


def build_parser() -> argparse.ArgumentParser:
    """Arguments of deepwml_verify_dataset."""
    parser = argparse.ArgumentParser(
        prog="deepwml_verify_dataset",
        description="Check a raw dataset (files, dataset.json, geometry, voxel values, labels) and list every "
        "problem, each with its file. Exit code 0 when clean, 1 when there are problems.",
    )
    add_dataset_argument(parser)
    add_root_arguments(parser, kinds=("raw",))
    parser.add_argument("-np", "--num-processes", type=int, default=1, metavar="N",
                        help="check N cases in parallel (default: 1)")
    parser.add_argument("--progress", action="store_true", help="show a progress bar even when stderr is not a terminal")
    add_version_argument(parser)
    return parser


def _main(argv: Optional[List[str]]) -> int:
    """Parse the arguments and run; user errors propagate to deepwml.cli.common.run."""
    args = build_parser().parse_args(argv)
    folder = find_dataset_folder(raw_root(args.raw_root), args.dataset)
    problems = verify_dataset(folder, n_jobs=max(1, args.num_processes), progress=args.progress or sys.stderr.isatty())
    if not problems:
        print(dataset_summary(folder))
        return 0
    for problem in problems:
        print(problem.relative_to(folder.parent))
    files = len({p.file for p in problems})
    print(f"{folder.name}: {len(problems)} problem(s) in {files} file(s)", file=sys.stderr)
    return EXIT_PROBLEMS


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point."""
    return run(_main, argv)


def entry() -> None:
    """The installed command (and ``python -m``): main(), then exit without the interpreter's teardown
    (deepwml.cli.common.run_installed)."""
    run_installed(main)


if __name__ == "__main__":
    entry()
