"""Converters from public and clinical folder layouts to the DeepWML raw dataset format.

Run one with ``python -m dataset_conversion.NAME --help`` from the repository root:

- ``wmh2017``: MICCAI 2017 WMH Segmentation Challenge
- ``msseg``: ISBI 2015 / MSSEG 2016-style MS folders with one or several rater masks (majority vote)
- ``csv_manifest``: any export described by a CSV file (image files or DICOM series folders)
- ``bids``: a BIDS dataset's T2-FLAIRs with lesion masks in a derivatives folder (a manifest, or the dataset)

They share the options below and :func:`deepwml.datasets.dataset_writer.write_dataset`, which copies (or links)
files that are already in the dataset's format, writes dataset.json, and verifies the result.
"""
from __future__ import annotations

import argparse
import sys
from typing import Dict, Optional, Sequence

from deepwml.constants import IMAGE_ENDINGS
from deepwml.datasets.dataset_writer import LINK_MODES, SourceCase, describe_result, write_dataset
from deepwml.paths import add_root_arguments, raw_root


def add_output_arguments(parser: argparse.ArgumentParser, required: bool = False, defaults: str = "") -> None:
    """Options every converter shares: where the dataset goes, its id and name, and how files are transferred."""
    add_root_arguments(parser, kinds=("raw",))
    suffix = f" (default: {defaults})" if defaults else ""
    parser.add_argument("--id", type=int, default=None, required=required, dest="dataset_id", help="dataset id, 0-999" + suffix)
    parser.add_argument("--name", default=None, required=required, help="dataset name: letters, digits, '_', '-'" + suffix)
    parser.add_argument("--file-ending", choices=IMAGE_ENDINGS, default=None,
                        help="file ending of the dataset (default: that of the source images, so files are copied as they are)")
    parser.add_argument("--link", choices=LINK_MODES, default="copy",
                        help="copy files (default), or hard-link / symlink them to save space; files that need "
                             "converting to the dataset's ending are always written anew")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset of the same name")
    parser.add_argument("-np", "--num-processes", type=int, default=1, metavar="N",
                        help="processes for the final verify_dataset check (default: 1)")
    parser.add_argument("--progress", action="store_true", help="show progress bars even when stderr is not a terminal")


def write_from_args(
    cases: Sequence[SourceCase],
    args: argparse.Namespace,
    file_ending: str,
    labels: Optional[Dict[str, int]] = None,
    description: str = "",
) -> int:
    """Write the dataset as the shared options ask, print the outcome; exit code 1 when verification found problems."""
    result = write_dataset(
        cases,
        raw_root(args.raw_root),
        args.dataset_id,
        args.name,
        file_ending=args.file_ending or file_ending,
        labels=labels,
        description=description,
        overwrite=args.overwrite,
        link=args.link,
        n_jobs=max(1, args.num_processes),
        progress=args.progress or sys.stderr.isatty(),
    )
    print(describe_result(result))
    return 1 if result.problems else 0
