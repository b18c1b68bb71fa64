"""DeepWML's outputs as a BIDS-derivatives dataset: each scan's files in its participant's and session's folder.

::

    OUTPUT/dataset_description.json                          DatasetType derivative, GeneratedBy DeepWML, DatasetLinks raw
    OUTPUT/desc-wmh_lesions.json                             what the lesion tables' columns mean (inherited by all)
    OUTPUT/sub-01/ses-1/anat/sub-01_ses-1_desc-wmh_mask.nii.gz   lesion mask on the FLAIR's grid
    OUTPUT/sub-01/ses-1/anat/sub-01_ses-1_desc-wmh_mask.json     Type Lesion, Sources, the model, the case's figures
    OUTPUT/sub-01/ses-1/anat/sub-01_ses-1_desc-wmh_lesions.tsv   one row per lesion
    OUTPUT/sub-01/ses-1/anat/sub-01_ses-1_label-WMH_probseg.nii.gz, _desc-wmh_uncertainty, _desc-anatomy_dseg,
        _desc-lesionids_dseg (+ .tsv naming each lesion id)                                   if asked
    OUTPUT/sub-01/figures/sub-01_ses-1_desc-wmh_FLAIR.png     QC picture (and _desc-wmhreport_FLAIR.html/.pdf)

The mask's JSON sidecar is written last, so a scan whose sidecar exists was published whole. Files are hard links
to the prediction kept in ``OUTPUT/.deepwml_bids/predict`` (copies where links cannot be made), so keeping both
costs no disk space and a resumed run finds the prediction done.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pandas as pd

import deepwml
from deepwml.anatomy.labels import ANATOMY_LABELS
from deepwml.bids.layout import DESCRIPTION_NAME, BidsScan
from deepwml.inference.bids_names import output_names
from deepwml.inference.lesion_ids import lesion_name
from deepwml.inference.outputs import CaseOutputs
from deepwml.bids.tables import write_tsv
from deepwml.utils.atomic import atomic_path, read_json, write_json
from deepwml.utils.errors import DeepWMLError

GENERATOR_NAME = "DeepWML"
BIDS_VERSION = "1.9.0"
#: the dataset-level sidecar describing every lesion table's columns (BIDS inheritance)
LESIONS_DICTIONARY = "desc-wmh_lesions.json"
#: the dataset-level look-up table of the anatomy label maps' values (BIDS dseg)
ANATOMY_LOOKUP = "desc-anatomy_dseg.tsv"
#: lesion-table columns and what they mean (other columns of the table are left undescribed)
LESION_COLUMNS: Dict[str, Dict[str, str]] = {
    "lesion_id": {"Description": "lesion number, largest lesion first (26-connected components of the mask)"},
    "volume_ml": {"Description": "lesion volume", "Units": "ml"},
    "voxels": {"Description": "lesion size in voxels of the FLAIR's grid"},
    "first_slice": {"Description": "first slice holding the lesion, 0-based along the slice axis of the FLAIR file"},
    "last_slice": {"Description": "last slice holding the lesion, 0-based along the slice axis of the FLAIR file"},
    "centroid_x_mm": {"Description": "lesion centre, world coordinate x (DICOM LPS)", "Units": "mm"},
    "centroid_y_mm": {"Description": "lesion centre, world coordinate y (DICOM LPS)", "Units": "mm"},
    "centroid_z_mm": {"Description": "lesion centre, world coordinate z (DICOM LPS)", "Units": "mm"},
    "location": {"Description": "location class from the anatomy map (rules: docs/prediction.md 'Lesion location')",
                 "Levels": {"infratentorial": "brainstem or cerebellum", "periventricular": "touches a lateral ventricle",
                            "cortical": "mostly in the cortex", "juxtacortical": "touches the cortex",
                            "deep": "deep white matter", "unclassified": "no voxel in the brain parenchyma"}},
    "ventricle_distance_mm": {"Description": "distance to the nearest ventricle voxel; n/a when farther than 5 mm", "Units": "mm"},
    "cortex_distance_mm": {"Description": "distance to the nearest cortex voxel; n/a when farther than 5 mm", "Units": "mm"},
    "long_axis_mm": {"Description": "longest in-plane axis on any slice", "Units": "mm"},
    "periventricular_extent_mm": {"Description": "periventricular lesions: reach from the ventricle wall, capped at 10 mm",
                                  "Units": "mm"},
    "mean_probability": {"Description": "mean lesion probability over the lesion's voxels"},
    "confidence": {"Description": "how sure the model is of the lesion (docs/prediction.md 'Confidence')"},
    "contrast": {"Description": "mean FLAIR intensity over the median of the tissue within 3 mm in-plane on the lesion's "
                              "own slices (what --min-lesion-contrast judges); n/a when no tissue surrounds the lesion"},
}


@dataclass(frozen=True)
class DerivativePaths:
    """Where one scan's outputs go in the derivatives dataset."""

    mask: Path
    sidecar: Path
    lesions: Path
    probabilities: Path
    uncertainty: Path
    anatomy: Path
    #: each lesion under its lesion_id, and the per-file look-up table naming the ids (BIDS dseg)
    lesion_ids: Path
    lesion_ids_lookup: Path
    qc: Path
    report_html: Path
    report_pdf: Path


def derivative_paths(out: Path, scan: BidsScan) -> DerivativePaths:
    """The derivative files of ``scan`` below the derivatives dataset ``out``."""
    names = output_names(scan.stem, bids=True)
    anat = out / scan.folder
    figures = out / f"sub-{scan.subject}" / "figures"
    return DerivativePaths(
        mask=anat / f"{names.mask}{scan.ending}", sidecar=anat / f"{names.mask}.json", lesions=anat / f"{names.lesions}.tsv",
        probabilities=anat / f"{names.probabilities}{scan.ending}", uncertainty=anat / f"{names.uncertainty}{scan.ending}",
        anatomy=anat / f"{names.anatomy}{scan.ending}", lesion_ids=anat / f"{names.lesion_ids}{scan.ending}",
        lesion_ids_lookup=anat / f"{names.lesion_ids}.tsv", qc=figures / f"{scan.prefix}_desc-wmh_FLAIR.png",
        report_html=figures / f"{scan.prefix}_desc-wmhreport_FLAIR.html",
        report_pdf=figures / f"{scan.prefix}_desc-wmhreport_FLAIR.pdf",
    )


def _dataset_links(out: Path, bids_root: Path) -> Dict[str, str]:
    """DatasetLinks: 'raw' as a path relative to the derivatives folder when one exists, else absolute."""
    try:
        raw = os.path.relpath(bids_root.resolve(), out.resolve())
    except ValueError:  # another drive (Windows)
        raw = str(bids_root.resolve())
    return {"raw": Path(raw).as_posix()}


def check_derivatives_folder(out: Path, bids_root: Path) -> None:
    """Refuse an output folder that is the BIDS dataset itself or another tool's derivatives dataset."""
    if out.exists() and not out.is_dir():
        raise DeepWMLError("output exists and is a file, not a folder", out)
    if out.exists() and bids_root.exists() and os.path.samefile(out, bids_root):
        raise DeepWMLError("output folder is the BIDS dataset itself; write derivatives to their own folder, "
                           "e.g. BIDS_DIR/derivatives/deepwml", out)
    description = out / DESCRIPTION_NAME
    if description.is_file():
        try:
            content = read_json(description)
            names = [g.get("Name") for g in content.get("GeneratedBy", []) if isinstance(g, dict)]
        except (DeepWMLError, AttributeError):
            names = []
        if GENERATOR_NAME not in names:
            raise DeepWMLError(f"output folder holds another dataset's {DESCRIPTION_NAME} (not DeepWML's); "
                               "choose a folder of its own", out)


def write_dataset_description(out: Path, bids_root: Path, model: str) -> Path:
    """The derivatives dataset's dataset_description.json and the lesion tables' column dictionary."""
    raw = read_json(bids_root / DESCRIPTION_NAME) if (bids_root / DESCRIPTION_NAME).is_file() else {}
    source_name = raw.get("Name") if isinstance(raw, dict) else None
    description = {
        "Name": f"DeepWML white-matter hyperintensities{f' of {source_name}' if source_name else ''}",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": GENERATOR_NAME, "Version": deepwml.__version__,
                         "Description": f"2D U-Net segmentation of the T2-FLAIR scans' white-matter hyperintensities; "
                                        f"lesion model: {model}"}],
        "DatasetLinks": _dataset_links(out, bids_root),
    }
    path = out / DESCRIPTION_NAME
    write_json(path, description)
    write_json(out / LESIONS_DICTIONARY, LESION_COLUMNS)
    return path


def _place(src: Path, dst: Path) -> None:
    """``dst`` becomes ``src``'s content, atomically: a hard link where the file system allows, else a copy."""
    with atomic_path(dst) as tmp:
        tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copy2(src, tmp)


def _tsv(csv_path: Path, dst: Path) -> None:
    """The lesion table as BIDS tabular data: tab-separated, 'n/a' for missing values."""
    write_tsv(pd.read_csv(csv_path), dst)


def _same_file(a: Path, b: Path) -> bool:
    """True when ``b`` is ``a`` as _place put it: the same inode, or a copy with its size and time stamp."""
    if not (a.is_file() and b.is_file()):
        return False
    sa, sb = a.stat(), b.stat()
    return os.path.samestat(sa, sb) or (sa.st_size == sb.st_size and sa.st_mtime_ns == sb.st_mtime_ns)


def publish(out: Path, scan: BidsScan, staged: CaseOutputs, row: Dict[str, Any], producer: Dict[str, Any]) -> DerivativePaths:
    """Place one predicted scan's files into the derivatives dataset; the sidecar, written last, holds its figures.

    A scan published before from the same prediction only gets back the files missing since: its sidecar, written
    from the run that predicted it, stays as it was (a resumed case's figures are recomputed, not new)."""
    p = derivative_paths(out, scan)
    pairs: List[Tuple[Optional[Path], Path]] = [
        (staged.mask, p.mask), (staged.probabilities, p.probabilities), (staged.uncertainty, p.uncertainty),
        (staged.anatomy, p.anatomy), (staged.lesion_ids, p.lesion_ids), (staged.qc, p.qc), (staged.report_html, p.report_html),
        (staged.report_pdf, p.report_pdf),
    ]
    unchanged = p.sidecar.is_file() and _same_file(staged.mask, p.mask)
    for src, dst in pairs:
        if src is not None and src.is_file() and not (unchanged and dst.is_file()):
            _place(src, dst)
    if staged.anatomy is not None and staged.anatomy.is_file() and not (out / ANATOMY_LOOKUP).is_file():
        # a BIDS dseg names its values in a look-up table, here one for the whole dataset (inheritance)
        write_tsv(pd.DataFrame({"index": list(ANATOMY_LABELS), "name": list(ANATOMY_LABELS.values())}), out / ANATOMY_LOOKUP)
    if staged.lesion_ids is not None and staged.lesion_ids.is_file() and not (unchanged and p.lesion_ids_lookup.is_file()):
        # BIDS names a dseg's values in a look-up table; the lesion ids differ from scan to scan, so one per file
        table = pd.read_csv(staged.lesions)
        write_tsv(pd.DataFrame({"index": table["lesion_id"].astype(int), "name": [lesion_name(r) for _, r in table.iterrows()]}),
                  p.lesion_ids_lookup)
    if unchanged and p.lesions.is_file():
        return p
    _tsv(staged.lesions, p.lesions)
    if unchanged:
        return p
    summary = {k: _plain(v) for k, v in row.items() if k not in ("case_id", "status", "error")}
    write_json(p.sidecar, {
        "Type": "Lesion",
        "Description": "white-matter hyperintensities (lesion = 1) segmented by DeepWML on the T2-FLAIR's own grid",
        "Sources": [f"bids:raw:{scan.relative}"],
        "LesionProbabilityThreshold": producer.get("threshold"),
        "DeepWML": {"version": deepwml.__version__, "predicted_with": producer, "summary": summary},
    })
    return p


def _plain(value: Any) -> Any:
    """A JSON value for a summary cell (numpy scalars to Python, NaN to null)."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value


@dataclass(frozen=True)
class Sidecar:
    """What a published mask's sidecar records."""

    summary: Dict[str, Any]  # the scan's summary.csv row
    source: str  # the FLAIR, relative to the source dataset
    producer: Dict[str, Any]  # deepwml_predict's record of the model and mask options


def read_sidecar(path: Path) -> Sidecar:
    """A published mask's sidecar; one that is not DeepWML's or not JSON is an error naming it."""
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
        ours = content["DeepWML"]
        found = Sidecar(ours["summary"], str(content["Sources"][0]).removeprefix("bids:raw:"), ours["predicted_with"])
        if not isinstance(found.summary, dict) or not isinstance(found.producer, dict):
            raise TypeError("its summary or predicted_with is not an object")
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        raise DeepWMLError(f"is not a DeepWML lesion-mask sidecar ({type(e).__name__}: {e})", path) from None
    return found


def published_sidecars(out: Path, subject: Optional[str] = None) -> List[Path]:
    """The mask sidecars of every scan published in ``out`` (of participant ``subject``'s only, given its label)."""
    return sorted(out.glob(f"sub-{subject or '*'}/**/anat/*_desc-wmh_mask.json"))


def mask_of(sidecar: Path, ending: str) -> Path:
    """The mask a sidecar describes."""
    return sidecar.with_name(sidecar.name[: -len(".json")] + ending)
