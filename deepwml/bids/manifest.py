"""A BIDS dataset's T2-FLAIRs and their lesion masks as manifest rows (dataset_conversion.bids, deepwml_finetune).

A row per FLAIR: ``case_id`` its entities, ``image``, ``label`` (its mask found in ``masks`` by the scan's entities
and the first of ``mask_suffix`` that exists, deepwml.bids.layout.find_mask; empty without one), ``centre`` and
``disease`` (participants.tsv columns, when named), ``vendor``, ``scanner`` and ``field_strength`` from its JSON
sidecar (the dataset's top-level FLAIR.json when it has none), the other participants.tsv columns as ``bids_*``
metadata, and ``bids_source``: the CSV manifest of deepwml.datasets.manifest.
"""
from __future__ import annotations

import csv
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from deepwml.bids.layout import MASK_SUFFIXES, BidsScan, find_flair_scans, find_mask
from deepwml.bids.tables import read_tsv
from deepwml.utils.errors import DeepWMLError


@dataclass(frozen=True)
class BidsSelection:
    """Which scans, where their masks are, and which participants.tsv columns give centre and disease."""

    participant_label: Optional[Sequence[str]] = None
    session_label: Optional[Sequence[str]] = None
    masks: Optional[Path] = None
    mask_suffix: Sequence[str] = MASK_SUFFIXES
    centre_column: Optional[str] = None
    disease_column: Optional[str] = None


SIDECAR_FIELDS = {"vendor": "Manufacturer", "scanner": "ManufacturersModelName", "field_strength": "MagneticFieldStrength"}


def _sidecar(root: Path, scan: BidsScan) -> Dict[str, object]:
    """The FLAIR's JSON sidecar, else the dataset's top-level FLAIR.json (BIDS inheritance), else nothing."""
    for path in (scan.path.with_name(scan.stem + ".json"), root / "FLAIR.json"):
        if path.is_file():
            try:
                content = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise DeepWMLError(f"is not a readable JSON sidecar ({e})", path) from None
            return content if isinstance(content, dict) else {}
    return {}


def manifest_rows(root: Path, args: BidsSelection) -> List[Dict[str, object]]:
    """One manifest row per FLAIR."""
    root = Path(root)
    scans = find_flair_scans(root, args.participant_label, args.session_label)
    participants = read_tsv(root / "participants.tsv")
    by_id = {} if participants is None or "participant_id" not in participants else \
        {r["participant_id"]: r for r in participants.to_dict("records")}
    for column in (args.centre_column, args.disease_column):
        if column and (participants is None or column not in participants):
            raise DeepWMLError(f"participants.tsv has no column {column!r}", root / "participants.tsv")
    description = json.loads((root / "dataset_description.json").read_text(encoding="utf-8"))
    rows = []
    for scan in scans:
        info = {k: v for k, v in by_id.get(scan.participant_id, {}).items() if isinstance(v, str) and v}
        sidecar = _sidecar(root, scan)
        mask = find_mask(Path(args.masks), scan, list(args.mask_suffix)) if args.masks else None
        row: Dict[str, object] = {
            "case_id": scan.prefix, "image": str(scan.path.resolve()),
            "label": str(mask.resolve()) if mask else "",
            "centre": info.get(args.centre_column) if args.centre_column else str(description.get("Name") or "unknown"),
            "disease": info.get(args.disease_column, "other") if args.disease_column else "other",
        }
        row.update({k: str(sidecar.get(field, "")) for k, field in SIDECAR_FIELDS.items()})
        row.update({f"bids_{k}": v for k, v in info.items() if k not in (args.centre_column, args.disease_column, "participant_id")})
        row["bids_source"] = scan.relative
        rows.append(row)
    if args.masks and not any(r["label"] for r in rows):
        raise DeepWMLError(f"holds no mask for any of the {len(rows)} FLAIR(s) (looked for "
                           f"{scans[0].folder}/{scans[0].prefix}_<{'|'.join(args.mask_suffix)}>.nii[.gz] and alike)", args.masks)
    return rows


def write_manifest(rows: List[Dict[str, object]], path: Path) -> None:
    """The rows as a CSV manifest, written atomically."""
    columns = list(dict.fromkeys(k for r in rows for k in r))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
