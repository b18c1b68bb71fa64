"""A list of scans as deepwml_predict's input: a CSV file with an ``image`` (or ``path``) column (an image file, or a
DICOM series or study folder, per row) and an optional ``case_id`` column, header names in any letter case: the
columns of the manifest deepwml_finetune and dataset_conversion/csv_manifest.py read, so a manifest is a case list too
(its other columns, a label among them, are left alone).

For a cohort whose scans lie in folders of their own under one name (``sub-01/flair.nii.gz``, ``sub-02/flair.nii.gz``:
a folder of them would be one case id twice), or a selection of scans from several places. Relative paths are read
from the list's folder; other columns (a subject's age, a site) are left alone. A row whose scan is missing or cannot
be read is a failed case in summary.csv, as in a folder; a list that cannot name its cases (no ``path`` column, an
empty path, a case id that is no file name, the same case id twice, a folder of several scans) is refused, naming the
row, before anything runs.
"""
from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List

from deepwml.imageio import has_image_ending, split_ending
from deepwml.constants import IMAGE_ENDINGS
from deepwml.utils.errors import DeepWMLError

if TYPE_CHECKING:  # inputs imports this module: its names are read when a list is
    from deepwml.inference.inputs import InputCase

LIST_ENDING = ".csv"
#: a case id names output files: letters, digits, '.', '_' and '-', not starting with '.'
CASE_ID = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")


def is_case_list(path: Path) -> bool:
    """True for a file whose name ends in .csv (any case)."""
    return path.name.lower().endswith(LIST_ENDING) and path.is_file()


def read_case_list(path: Path) -> List[Dict[str, str]]:
    """The rows of the list, each as {'path', 'case_id'} (a BOM, as spreadsheet programs write it, is allowed); refuses
    a list without an ``image`` or ``path`` column or without rows."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = [(c or "").strip() for c in reader.fieldnames or []]
            rows = [{(k or "").strip().lower(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DeepWMLError(f"unreadable case list ({e})", path) from None
    names = {c.lower() for c in columns}
    column = "image" if "image" in names else "path" if "path" in names else None
    if column is None:
        raise DeepWMLError(f"a case list needs an 'image' (or 'path') column, and may have 'case_id'; its columns are "
                           f"{columns}", path)
    if not rows:
        raise DeepWMLError("the case list names no scans", path)
    return [{"path": row.get(column, ""), "case_id": row.get("case_id", "")} for row in rows]


def listed_cases(path: Path, n_channels: int = 1) -> List["InputCase"]:
    """The cases a case list names, sorted by case id (deepwml.inference.inputs.discover_cases for a .csv input)."""
    from deepwml.imageio.archives import is_archive
    from deepwml.inference.inputs import DICOM_OUTPUT_ENDING, InputCase, discover_cases

    if n_channels > 1:
        raise DeepWMLError(f"a case list names one file per scan, and this model takes {n_channels} channels: give a "
                           "folder of CASE_0000.. files instead", path)
    cases, rows_of = [], {}
    for number, row in enumerate(read_case_list(path), start=2):  # row 1 is the header
        where = f"row {number}"
        if not row.get("path"):
            raise DeepWMLError(f"{where}: empty path", path)
        scan = Path(row["path"]).expanduser()
        scan = scan if scan.is_absolute() else path.parent / scan
        if is_archive(scan):
            raise DeepWMLError(f"{where}: {scan} is an archive; a case list names scans (give the archive to -i "
                               "on its own, or unpack it)", path)
        if scan.is_dir():
            found = discover_cases(scan)
            if len(found) != 1:
                raise DeepWMLError(f"{where}: {scan} holds {len(found)} scans; a case list names one scan per row", path)
            case = found[0]
        elif has_image_ending(scan):
            stem, ending = split_ending(scan)
            case = InputCase(stem, scan, "file", ending)  # a missing file fails as its case, by name
        elif scan.exists():
            raise DeepWMLError(f"{where}: {scan.name} is not a scan DeepWML reads (image endings: {', '.join(IMAGE_ENDINGS)}; "
                               "or a DICOM series folder)", path)
        else:  # no image ending: a DICOM folder that is not there, which fails as its case
            case = InputCase(scan.name, scan, "dicom", DICOM_OUTPUT_ENDING)
        given = row.get("case_id", "")
        if given:
            if not CASE_ID.match(given):
                raise DeepWMLError(f"{where}: case id {given!r} cannot name output files (letters, digits, '.', '_' and "
                                   "'-', not starting with '.')", path)
            case = InputCase(given, case.source, case.kind, case.output_ending)
        cases.append(case)
        rows_of.setdefault(case.case_id, []).append(number)
    twice = sorted(cid for cid, n in Counter(c.case_id for c in cases).items() if n > 1)
    if twice:
        named = "; ".join(f"{cid} (rows {', '.join(map(str, rows_of[cid]))})" for cid in twice)
        raise DeepWMLError(f"several rows give the case id(s) {named}; give each scan its own in a 'case_id' column", path)
    return sorted(cases, key=lambda c: c.case_id)
