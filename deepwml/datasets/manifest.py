"""CSV manifests (one row per case: image, label, centre, disease, ...) parsed into the cases of a raw dataset;
the columns are described in docs/dataset_format.md and in ``python -m dataset_conversion.csv_manifest --help``."""
from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from deepwml.constants import DISEASES
from deepwml.datasets.dataset_json import CaseMeta, case_id_problem
from deepwml.datasets.dataset_writer import SourceCase, safe_case_id
from deepwml.datasets.seg_label import DicomSegLabel
from deepwml.imageio import is_image_file, split_ending
from deepwml.imageio.dicom_seg_masks import is_dicom_seg
from deepwml.utils.errors import DatasetError, DeepWMLError

STANDARD_COLUMNS = ("case_id", "image", "label", "centre", "disease", "vendor", "scanner", "field_strength", "split", "series_uid")
COLUMN_ALIASES = {"center": "centre", "case": "case_id", "id": "case_id", "mask": "label", "seg": "label"}
SPLIT_NAMES = {"tr": "Tr", "train": "Tr", "training": "Tr", "ts": "Ts", "test": "Ts"}

_FIELD_STRENGTH = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:t|tesla)?\s*$", re.IGNORECASE)


def read_manifest(csv_path: Path) -> List[SourceCase]:
    """Parse the manifest into cases; raises one DatasetError listing every bad row."""
    csv_path = Path(csv_path)
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:  # utf-8-sig: Excel's byte-order mark
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise DatasetError("manifest not found", csv_path) from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise DatasetError(f"not a readable CSV file ({e})", csv_path) from None
    if not rows:
        raise DatasetError("manifest has no rows", csv_path)
    columns = {name: _column_name(name) for name in rows[0] if name}
    if "image" not in columns.values():
        raise DatasetError(f"manifest needs an 'image' column; found {', '.join(columns) or 'none'}", csv_path)

    problems: List[str] = []
    cases = []
    for line, raw in enumerate(rows, start=2):  # line 1 is the header
        row = {columns[k]: (v or "").strip() for k, v in raw.items() if k in columns}
        case, row_problems = _case_from_row(row, csv_path.parent)
        problems += [f"line {line}: {p}" for p in row_problems]
        if case is not None:
            cases.append((line, case))
    seen: Dict[str, int] = {}
    for line, case in cases:
        first = seen.setdefault(case.case_id.lower(), line)
        if first != line:
            problems.append(f"line {line}: case id {case.case_id!r} is already used on line {first}")
    if problems:
        raise DatasetError(f"{len(problems)} problem(s) in the manifest: " + "; ".join(problems), csv_path)
    return [case for _, case in cases]


def _column_name(header: str) -> str:
    """Normalised column name: lower case, spaces as '_', common aliases mapped."""
    name = re.sub(r"\s+", "_", header.strip().lower())
    return COLUMN_ALIASES.get(name, name)


def _case_from_row(row: Dict[str, str], base: Path) -> Tuple[Optional[SourceCase], List[str]]:
    """One case from one manifest row, or None and the row's problems."""
    problems = []
    image = _resolve(row.get("image", ""), base)
    if image is None:
        return None, ["no image given"]
    # a folder is taken for a DICOM series; it is read, and any problem reported, when the dataset is written
    if not image.exists():
        problems.append(f"image not found: {image}")
    elif not image.is_dir() and not is_image_file(image):
        problems.append(f"image is neither an image file nor a DICOM folder: {image}")
    label = _resolve(row.get("label", ""), base)
    if label is not None and is_dicom_seg(label):
        # a reader's outlines kept as a DICOM SEG of the row's DICOM series: made a mask on the series' grid
        if image.is_dir():
            label = DicomSegLabel(label, image, row.get("series_uid") or None)
        else:
            problems.append(f"a DICOM SEG label needs its DICOM series folder as the image: {label}")
    elif label is not None and not is_image_file(label):
        problems.append(f"label must be an image file or a DICOM SEG: {label}" + ("" if label.exists() else " (not found)"))

    case_id = row.get("case_id") or safe_case_id(image.name if image.is_dir() else _stem(image))
    why = case_id_problem(case_id)
    if why:
        problems.append(why)
    split = row.get("split", "")
    if split:
        if split.lower() not in SPLIT_NAMES:
            problems.append(f"split must be train or test, got {split!r}")
        split = SPLIT_NAMES.get(split.lower(), "Tr")
    else:
        split = "Tr" if label is not None else "Ts"
    if split == "Tr" and label is None:
        problems.append("a training case needs a label")
    meta, meta_problems = _meta_from_row(row)
    problems += meta_problems
    if problems:
        return None, problems
    return SourceCase(case_id, image, label, meta, split, row.get("series_uid") or None), []


def _resolve(text: str, base: Path) -> Optional[Path]:
    """An absolute path for a manifest entry (relative entries are relative to the CSV's folder)."""
    if not text:
        return None
    path = Path(text).expanduser()
    return path if path.is_absolute() else base / path


def _stem(path: Path) -> str:
    """File name without its image ending (or without its last suffix for unknown endings)."""
    try:
        return split_ending(path)[0]
    except DeepWMLError:
        return path.stem


def _meta_from_row(row: Dict[str, str]) -> Tuple[CaseMeta, List[str]]:
    """Case metadata: the standard fields checked and normalised, other columns kept."""
    problems = []
    by_lower = {d.lower(): d for d in DISEASES}
    disease = row.get("disease") or "other"
    if disease.lower() not in by_lower:
        problems.append(f"disease {disease!r} is not one of {', '.join(DISEASES)}")
    field_strength = None
    if row.get("field_strength"):
        match = _FIELD_STRENGTH.match(row["field_strength"])
        if match:
            field_strength = float(match.group(1))
        else:
            problems.append(f"field_strength {row['field_strength']!r} is not a number of tesla (e.g. 1.5, 3, 3T)")
    extra = {k: _number_or_text(v) for k, v in row.items() if k not in STANDARD_COLUMNS and v}
    meta = CaseMeta(
        centre=row.get("centre") or "unknown",
        disease=by_lower.get(disease.lower(), "other"),
        vendor=row.get("vendor") or "unknown",
        scanner=row.get("scanner") or "unknown",
        field_strength=field_strength,
        extra=extra,
    )
    return meta, problems


def _number_or_text(value: str) -> Any:
    """'6' -> 6, '6.5' -> 6.5, anything else unchanged."""
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            continue
    return value


def default_file_ending(cases: List[SourceCase]) -> str:
    """The most common ending among the image files (so most are copied unchanged); .nii.gz for DICOM-only."""
    endings = Counter(split_ending(c.image)[1].lower() for c in cases if not c.image.is_dir())
    return endings.most_common(1)[0][0] if endings else ".nii.gz"
