"""MICCAI 2017 WMH Segmentation Challenge → DeepWML raw dataset.

Expected layout (the public release; site folders may be nested, e.g. ``Amsterdam/GE3T``)::

    ROOT/[training|test/]SITE/ID/pre/FLAIR.nii.gz
    ROOT/[training|test/]SITE/ID/wmh.nii.gz        0 background, 1 WMH, 2 other pathology

Label 2 ("other pathology", ignored by the challenge's evaluation) becomes the dataset's declared ignore
value: ``"labels": {"background": 0, "lesion": 1, "ignore": 2}``; label files are copied unchanged.
The site is the centre; the disease is CSVD (WMH of presumed vascular origin).

Example::

    python -m dataset_conversion.wmh2017 ~/downloads/WMH --id 510 --name WMH2017
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from dataset_conversion import add_output_arguments, write_from_args
from deepwml.cli.common import run
from deepwml.datasets import CaseMeta
from deepwml.datasets.dataset_writer import SourceCase, safe_case_id
from deepwml.utils.errors import DatasetError

LABELS = {"background": 0, "lesion": 1, "ignore": 2}
DEFAULT_ID, DEFAULT_NAME = 510, "WMH2017"

#: Scanner per site as the challenge describes its data: folder-name prefix -> (vendor, scanner, field strength in T).
SITE_SCANNERS: Dict[str, Tuple[str, str, float]] = {
    "utrecht": ("Philips", "Achieva", 3.0),
    "singapore": ("Siemens", "TrioTim", 3.0),
    "ge3t": ("GE", "Signa HDxt", 3.0),
    "ge1t5": ("GE", "Signa HDxt", 1.5),
    "philips": ("Philips", "Ingenuity PET/MR", 3.0),  # Amsterdam's 'Philips_VU .PETMR_01.' test site
}

SPLIT_FOLDERS = {"training": "Tr", "train": "Tr", "test": "Ts"}


def scanner_of_site(site_parts: Tuple[str, ...]) -> Tuple[str, str, Optional[float]]:
    """(vendor, scanner, field strength) from the most specific site folder the table knows, else unknown."""
    for part in reversed(site_parts):
        for prefix, scanner in SITE_SCANNERS.items():
            if part.lower().startswith(prefix):
                return scanner
    return "unknown", "unknown", None


def find_cases(root: Path) -> List[SourceCase]:
    """Every case below ``root``: a folder with pre/FLAIR.nii.gz; wmh.nii.gz beside ``pre`` is its label."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError("source folder does not exist", root)
    cases = []
    for flair in sorted(root.rglob("pre/FLAIR.nii.gz")):
        case_dir = flair.parent.parent
        parts = case_dir.relative_to(root).parts
        split = "Tr"
        if len(parts) > 1 and parts[0].lower() in SPLIT_FOLDERS:
            split, parts = SPLIT_FOLDERS[parts[0].lower()], parts[1:]
        site_parts = parts[:-1] or (root.name,)
        centre = safe_case_id("_".join(site_parts))
        vendor, scanner, field_strength = scanner_of_site(site_parts)
        label = case_dir / "wmh.nii.gz"
        meta = CaseMeta(centre=centre, disease="CSVD", vendor=vendor, scanner=scanner, field_strength=field_strength,
                        extra={"source": "WMH2017", "source_case": "/".join(case_dir.relative_to(root).parts)})
        cases.append(SourceCase(safe_case_id(f"{centre}_{parts[-1]}"), flair, label if label.exists() else None, meta,
                                split if label.exists() else "Ts"))
    if not cases:
        raise DatasetError("no WMH 2017 cases found (expected SITE/ID/pre/FLAIR.nii.gz below it)", root)
    return cases


def build_parser() -> argparse.ArgumentParser:
    """Arguments of the WMH 2017 converter."""
    parser = argparse.ArgumentParser(
        prog="python -m dataset_conversion.wmh2017",
        description="Convert the MICCAI 2017 WMH Segmentation Challenge folders (SITE/ID/pre/FLAIR.nii.gz + wmh.nii.gz) "
        "into a DeepWML raw dataset. Label 2 (other pathology) is declared as the ignore label.",
    )
    parser.add_argument("source", type=Path, help="folder holding the site folders (or training/ and test/)")
    add_output_arguments(parser, defaults=f"{DEFAULT_ID} and {DEFAULT_NAME}")
    return parser


def _main(argv: Optional[List[str]]) -> int:
    """Parse the arguments and run; user errors propagate to deepwml.cli.common.run."""
    args = build_parser().parse_args(argv)
    args.dataset_id = DEFAULT_ID if args.dataset_id is None else args.dataset_id
    args.name = args.name or DEFAULT_NAME
    cases = find_cases(args.source)
    description = "MICCAI 2017 WMH Segmentation Challenge (pre/FLAIR.nii.gz); label 2 = other pathology, ignored"
    return write_from_args(cases, args, ".nii.gz", LABELS, description)


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point."""
    return run(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
