"""The -o folder of deepwml_predict: refused up front when it cannot or must not be used, marked as DeepWML's own
output so a later run never reads it as input, and cleared of the temporaries of killed runs.
"""
from __future__ import annotations

import errno
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

import deepwml
from deepwml.imageio import is_image_file
from deepwml.imageio.archives import is_archive
from deepwml.utils.atomic import read_json, remove_dead_temporaries, write_json
from deepwml.utils.errors import DeepWMLError

#: written into every output folder deepwml_predict uses; input discovery skips folders holding it
MARKER_NAME = ".deepwml_output.json"
QC_FOLDER = "qc"
#: the marker's record of what made the folder's masks (:func:`producer_record`)
PRODUCER_KEY = "predicted_with"

PathLike = Union[str, Path]


def _existing_ancestors(path: Path) -> Iterator[Path]:
    """``path`` and its parents, nearest first, that exist (as anything; symlinks are followed)."""
    for p in (path, *path.parents):
        if os.path.lexists(p):
            yield p


def _inside(path: Path, folder: Path) -> bool:
    """True when ``path`` is ``folder`` or lies below it, through symlinks, bind mounts or case-insensitive names."""
    real, real_folder = Path(os.path.realpath(path)), Path(os.path.realpath(folder))
    if real.is_relative_to(real_folder):
        return True
    folder_stat = os.stat(folder)
    return any(os.path.samestat(os.stat(p), folder_stat) for p in _existing_ancestors(real) if p.exists())


def _same(path: Path, folder: Path) -> bool:
    """True when ``path`` exists and is ``folder`` itself (by inode: symlinks, bind mounts, letter case)."""
    return path.exists() and os.path.samefile(path, folder)


def _probe_writable(folder: Path) -> None:
    """Create and remove a file in ``folder`` (permission bits say nothing for root or read-only mounts)."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".deepwml_probe.", dir=folder)
    except OSError as e:
        reason = e.strerror or errno.errorcode.get(e.errno or 0, type(e).__name__)
        raise DeepWMLError(
            f"cannot write here ({reason}); choose an output folder you can write to with -o", folder
        ) from None
    os.close(fd)
    os.unlink(probe)


def check_output_folder(out_dir: Path, input_path: Optional[Path]) -> None:
    """Refuse an -o that is a file, lies below a file, cannot be written, or lies inside the input (None: a scan in
    memory, which no file holds); creates nothing."""
    out_dir = Path(out_dir)
    input_path = None if input_path is None else Path(input_path).expanduser()
    if out_dir.is_symlink() and not out_dir.exists():
        raise DeepWMLError(f"output is a broken symbolic link (to {os.readlink(out_dir)}); choose another -o", out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DeepWMLError("output exists and is a file, not a folder; choose a folder path for -o", out_dir)
    nearest = next(_existing_ancestors(out_dir.absolute()))
    if not nearest.is_dir():
        raise DeepWMLError(f"is a file, so the output folder {out_dir} cannot be made below it; choose another -o", nearest)
    qc = out_dir / QC_FOLDER
    if os.path.lexists(qc) and not qc.is_dir():
        raise DeepWMLError("is in the way of the QC folder (not a folder); move it or choose another -o", qc)
    if input_path is not None and input_path.is_dir() and _inside(out_dir, input_path):
        where = "is the input folder" if _same(out_dir, input_path) else f"lies inside the input folder {input_path}"
        raise DeepWMLError(
            f"output folder {where}, where a later run would read its files as inputs; choose an -o outside it",
            out_dir,
        )
    # an archive's cases are read from the folder it is unpacked into: their masks never overwrite it
    if input_path is not None and input_path.is_file() and not is_archive(input_path) and _same(out_dir, input_path.parent):
        raise DeepWMLError(
            f"output folder is the folder of the input file {input_path.name}, where its mask would overwrite the input; choose another -o",
            out_dir,
        )
    _probe_writable(nearest)


def is_output_folder(folder: Path) -> bool:
    """True for a folder deepwml_predict wrote: it holds the marker, or (outputs from before the marker) it holds
    summary*.csv plus qc/ or *_lesions.csv, and no other files than images and those tables."""
    if (folder / MARKER_NAME).is_file():
        return True
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    summaries = [p for p in files if p.name.startswith("summary") and p.suffix == ".csv"]
    lesions = [p for p in files if p.name.endswith("_lesions.csv")]
    if not summaries or not (lesions or (folder / QC_FOLDER).is_dir()):
        return False
    return all(p in summaries or p in lesions or is_image_file(p) for p in files)


#: the lesion locations the cortex bound judges (deepwml.inference.cortex_contrast.RULE_LOCATIONS, as a marker says it;
#: kept here as text so that reading a marker imports no image code)
CORTEX_RULE_LOCATIONS = "cortical, juxtacortical"
#: the options beside the weights that decide a run's masks, as producer_record names them
MASK_OPTIONS = ("threshold", "tta", "white_matter_only", "min_lesion_ml", "min_lesion_peak", "skull_strip",
                "outside_brain_dropped", "min_lesion_contrast", "thin_slab_mm", "min_lesion_spread", "min_cortex_contrast",
                "cortex_rule_locations", "lesion_masks")
#: what a marker written before an option existed did: kept every lesion, and the skull, and showed thin slices as given
PRODUCER_DEFAULTS = {"min_lesion_ml": 0.0, "min_lesion_peak": 0.0, "skull_strip": False, "outside_brain_dropped": False,
                     "min_lesion_contrast": 0.0, "thin_slab_mm": 0.0, "min_lesion_spread": 0.0, "min_cortex_contrast": 0.0,
                     "cortex_rule_locations": "cortical", "lesion_masks": None}


def producer_record(
    model_dir: Path, folds: Sequence[str], checkpoint: str, weights: Sequence[str], threshold: float, tta: bool,
    white_matter_only: bool, min_lesion_ml: float = 0.0, min_lesion_peak: float = 0.0, skull_strip: bool = False,
    anatomy_weights: Sequence[str] = (), outside_brain_dropped: bool = False, min_lesion_contrast: float = 0.0,
    thin_slab_mm: float = 0.0, min_lesion_spread: float = 0.0, min_cortex_contrast: float = 0.0,
    lesion_masks: Optional[str] = None,
) -> Dict[str, Any]:
    """What decides a run's masks: the networks' weights (``weights``: their digests, so a moved model is the same one
    and a re-trained one is not), the folds and checkpoint it names, the options that change a mask, and the anatomy
    model's weights (``anatomy_weights``) when the masks depend on it (--white-matter-only, --skull-strip, lesions
    outside the brain dropped; recorded only then, so other folders resume across a new anatomy model).
    ``lesion_masks``: the folder or file of the reviewed masks the outputs describe (--lesion-masks), None for the
    model's masks."""
    record = {
        "model": str(model_dir), "folds": [str(f) for f in folds], "checkpoint": checkpoint,
        "weights_sha256": list(weights),
        "threshold": float(threshold), "tta": bool(tta), "white_matter_only": bool(white_matter_only),
        "min_lesion_ml": float(min_lesion_ml), "min_lesion_peak": float(min_lesion_peak), "skull_strip": bool(skull_strip),
        "outside_brain_dropped": bool(outside_brain_dropped), "min_lesion_contrast": float(min_lesion_contrast),
        "thin_slab_mm": float(thin_slab_mm), "min_lesion_spread": float(min_lesion_spread),
        "min_cortex_contrast": float(min_cortex_contrast),
        # the lesions the cortex bound judges (deepwml.inference.cortex_contrast): juxtacortical ones too since 2026-12-07
        "cortex_rule_locations": CORTEX_RULE_LOCATIONS,
        "lesion_masks": lesion_masks,
    }
    if anatomy_weights:
        record["anatomy_weights_sha256"] = sorted(anatomy_weights)
    return record


def _read_marker(out_dir: Path) -> Dict[str, Any]:
    """The marker of ``out_dir``; empty when there is none or a crash or a hand left it unreadable."""
    try:
        content = read_json(out_dir / MARKER_NAME)
    except (DeepWMLError, OSError, ValueError):
        return {}
    return content if isinstance(content, dict) else {}


def resume_differences(out_dir: Path, record: Dict[str, Any], finished: int) -> List[str]:
    """What made the folder's ``finished`` cases otherwise than ``record`` (another model, other mask options), in
    words; [] when nothing differs or nothing is finished."""
    earlier = _read_marker(out_dir).get(PRODUCER_KEY) if finished else None
    if not isinstance(earlier, dict):  # nothing finished, or a marker from before the record
        return []
    what = []
    # an ensemble is the same in any fold order
    if sorted(earlier.get("weights_sha256") or []) != sorted(record["weights_sha256"]):
        what.append(f"model {earlier.get('model')} (folds {', '.join(map(str, earlier.get('folds', [])))}, "
                    f"checkpoint {earlier.get('checkpoint')}) -> {record['model']} (folds {', '.join(record['folds'])}, "
                    f"checkpoint {record['checkpoint']})")
    what += [f"{key} {earlier.get(key, PRODUCER_DEFAULTS.get(key))!r} -> {record[key]!r}"
             for key in MASK_OPTIONS if earlier.get(key, PRODUCER_DEFAULTS.get(key)) != record[key]]
    if not what and earlier.get("anatomy_weights_sha256") != record.get("anatomy_weights_sha256"):
        # the same options make both runs' masks depend on the anatomy model, and it is another one
        what.append("the anatomy model's weights (the masks depend on its map)")
    return what


def check_resume_matches(out_dir: Path, record: Dict[str, Any], finished: int) -> None:
    """Refuse to add cases to a folder whose ``finished`` cases another model or other mask options made: the
    folder would mix two models' masks in one summary.csv without a word."""
    what = resume_differences(out_dir, record, finished)
    if what:
        raise DeepWMLError(
            f"holds {finished} case(s) predicted with other settings ({'; '.join(what)}); resuming would mix the two "
            "in one folder: choose another -o, add --overwrite to predict every case anew, or --overwrite-if-changed to "
            "predict anew only a folder made with other settings", out_dir)


def prepare_output_folder(out_dir: Path, record: Dict[str, Any]) -> List[Path]:
    """Make the output folder with its marker (holding ``record``, what makes this run's masks) and remove
    temporaries left by killed runs; returns those removed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    content = _read_marker(out_dir)
    if content.get(PRODUCER_KEY) != record:
        write_json(out_dir / MARKER_NAME, {
            "written_by": "deepwml_predict", "deepwml_version": deepwml.__version__,
            "created": content.get("created") or time.strftime("%Y-%m-%dT%H:%M:%S%z"), PRODUCER_KEY: record,
        })
    return remove_dead_temporaries(out_dir) + remove_dead_temporaries(out_dir / QC_FOLDER)
