"""A CSV manifest (one row per case) → DeepWML raw dataset, so a clinic's export needs no code.

Columns (header names are case-insensitive; only ``image`` is required)::

    case_id         optional; derived from the image file (or DICOM folder) name when empty
    image           image file, or a folder holding a DICOM series (converted losslessly to --file-ending)
    label           optional lesion mask file, or a DICOM SEG of the row's DICOM series; rows without one go to the test split
    centre          (or center) site / hospital; default "unknown"
    disease         MS, NMOSD, CSVD or other (any letter case); default "other"
    vendor, scanner optional strings; default "unknown"
    field_strength  optional, in tesla: 1.5, 3, "3T"
    split           optional: train/Tr or test/Ts; default: train when a label is given, else test
    series_uid      optional: which series to take from a DICOM folder that holds several

Any other column is kept as per-case metadata (numbers stay numbers). Relative paths are relative to the
CSV file's folder. Every problem in the manifest is reported at once, with its line number.

Example::

    python -m dataset_conversion.csv_manifest export.csv --id 601 --name ClinicA
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import List, Optional

from dataset_conversion import add_output_arguments, write_from_args
from deepwml.cli.common import run
from deepwml.datasets.manifest import (  # noqa: F401 - the parser's names, importable from here as before
    COLUMN_ALIASES,
    SPLIT_NAMES,
    STANDARD_COLUMNS,
    default_file_ending,
    read_manifest,
)


def build_parser() -> argparse.ArgumentParser:
    """Arguments of the CSV manifest converter."""
    parser = argparse.ArgumentParser(
        prog="python -m dataset_conversion.csv_manifest",
        description="Turn a CSV manifest (case_id, image, label, centre, disease, vendor, scanner, field_strength, "
        "split) into a DeepWML raw dataset. Images may be files or DICOM series folders.",
    )
    parser.add_argument("manifest", type=Path, help="the CSV file")
    add_output_arguments(parser, required=True)
    return parser


def _main(argv: Optional[List[str]]) -> int:
    """Parse the arguments and run; user errors propagate to deepwml.cli.common.run."""
    args = build_parser().parse_args(argv)
    cases = read_manifest(args.manifest)
    return write_from_args(cases, args, default_file_ending(cases), description=f"from manifest {args.manifest.name}")


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point."""
    return run(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
