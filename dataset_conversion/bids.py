"""A BIDS dataset's T2-FLAIRs and their lesion masks → a CSV manifest (for deepwml_finetune) and/or a raw dataset.

Scans: ``sub-*/[ses-*/]anat/*_FLAIR.nii[.gz]`` (deepwml.bids.layout). Masks: in ``--masks`` (a derivatives dataset, or
the BIDS dataset itself for raw ``_roi`` files), on the scan's own path with the scan's entities and one of the
``--mask-suffix`` endings, the first that exists, e.g. ``derivatives/manual/sub-01/ses-1/anat/sub-01_ses-1_label-WMH_mask.nii.gz``.
A scan without a mask is kept as an unlabelled (test) row. Per row also: vendor, scanner and field strength from the
FLAIR's JSON sidecar (Manufacturer, ManufacturersModelName, MagneticFieldStrength; the dataset's top-level
FLAIR.json when the scan has none), centre and disease from participants.tsv columns you name, and the other
participants.tsv columns as extra metadata.

    python -m dataset_conversion.bids /data/cohort --masks /data/cohort/derivatives/manual -o labelled.csv
    deepwml_finetune labelled.csv -o models/cohort
    python -m dataset_conversion.bids /data/cohort --masks /data/cohort/derivatives/manual --id 610 --name Cohort
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import List, Optional

from dataset_conversion import add_output_arguments, write_from_args
from deepwml.bids.layout import MASK_SUFFIXES
from deepwml.bids.manifest import BidsSelection, manifest_rows, write_manifest
from deepwml.cli.common import run
from deepwml.datasets.manifest import default_file_ending, read_manifest
from deepwml.utils.errors import DeepWMLError

def build_parser() -> argparse.ArgumentParser:
    """Arguments of the BIDS converter."""
    p = argparse.ArgumentParser(prog="python -m dataset_conversion.bids", description=__doc__.splitlines()[0])
    p.add_argument("bids_dir", type=Path, help="the BIDS dataset")
    p.add_argument("--masks", type=Path, default=None,
                   help="the folder holding the lesion masks in the BIDS layout (a derivatives dataset; default: none, "
                        "every scan unlabelled)")
    p.add_argument("--mask-suffix", nargs="+", default=list(MASK_SUFFIXES), metavar="ENDING",
                   help=f"mask file endings after the scan's entities, tried in order (default: {' '.join(MASK_SUFFIXES)})")
    p.add_argument("--centre-column", default=None, help="participants.tsv column naming each participant's site (default: "
                   "one centre, the dataset's name)")
    p.add_argument("--disease-column", default=None, help="participants.tsv column with MS, NMOSD, CSVD or other")
    p.add_argument("--participant-label", nargs="+", default=None, metavar="LABEL")
    p.add_argument("--session-label", nargs="+", default=None, metavar="LABEL")
    p.add_argument("-o", "--manifest", type=Path, default=None, help="write the CSV manifest here")
    add_output_arguments(p)
    return p


def _main(argv: Optional[List[str]]) -> int:
    args = build_parser().parse_args(argv)
    if args.manifest is None and args.dataset_id is None:
        raise DeepWMLError("say where to write: -o MANIFEST.csv, or --id and --name for a raw dataset, or both")
    rows = manifest_rows(args.bids_dir, BidsSelection(args.participant_label, args.session_label, args.masks, args.mask_suffix,
                                                      args.centre_column, args.disease_column))
    labelled = sum(1 for r in rows if r["label"])
    manifest = args.manifest
    with tempfile.TemporaryDirectory() as scratch:
        if manifest is None:
            manifest = Path(scratch) / "manifest.csv"
        write_manifest(rows, manifest)
        print(f"{len(rows)} FLAIR(s), {labelled} with a mask" + (f": {manifest}" if args.manifest else ""))
        if args.dataset_id is None:
            return 0
        if not args.name:
            raise DeepWMLError("--id needs --name")
        cases = read_manifest(manifest)
        return write_from_args(cases, args, default_file_ending(cases), description=f"from BIDS dataset {args.bids_dir}")


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point."""
    return run(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
