"""Find reference and prediction masks by case id and pair them; missing, extra and ambiguous files are named."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from deepwml.imageio import has_image_ending, split_ending, unreadable_reason
from deepwml.imageio.dicom_seg_masks import is_dicom_seg
from deepwml.utils.errors import DeepWMLError

#: Suffix of the probability maps deepwml_predict writes beside the masks (CASE_prob<ending>).
PROBABILITY_SUFFIX = "_prob"
#: Suffix of the anatomy maps deepwml_predict --save-anatomy writes beside the masks (CASE_anatomy<ending>).
ANATOMY_SUFFIX = "_anatomy"


def _derived_suffixes() -> Tuple[str, ...]:
    """Suffixes of every image deepwml_predict may write beside a mask (probabilities, uncertainty, anatomy map,
    lesion ids), taken from its own output names so the two cannot drift apart."""
    from deepwml.inference.bids_names import output_names

    names = output_names("CASE")
    return tuple(getattr(names, f)[len("CASE"):] for f in ("probabilities", "uncertainty", "anatomy", "lesion_ids"))


#: Suffixes of every map deepwml_predict may write beside a mask; never masks themselves.
DERIVED_MAP_SUFFIXES = _derived_suffixes()


@dataclass(frozen=True)
class CasePair:
    """One case to evaluate: its reference mask and its prediction (None: missing, scored as empty)."""

    case_id: str
    reference: Path
    prediction: Optional[Path]
    #: an anatomy label map on the case's grid (deepwml_predict --save-anatomy): lesions are located with it
    anatomy: Optional[Path] = None


#: a reference mask may be a DICOM SEG (CASE.dcm): a reader's outlines kept in a PACS or drawn in a viewer
SEG_ENDING = ".dcm"


def is_seg_reference(path: Path) -> bool:
    """True for a reference mask given as a DICOM SEG file (CASE.dcm)."""
    return Path(path).name.lower().endswith(SEG_ENDING)


def list_masks(folder: Union[str, Path], role: str, dicom_seg: bool = False) -> Dict[str, Path]:
    """Map case id to mask file for every image file directly in ``folder`` (hidden and non-image files skipped;
    with ``dicom_seg`` also CASE.dcm files, each of which must be a DICOM SEG)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DeepWMLError(f"{role} folder does not exist", folder)
    found: Dict[str, List[Path]] = {}
    unreadable: List[str] = []
    for path in sorted(folder.iterdir()):
        # atomic writers leave hidden '.NAME.tmp...' files behind only while they run; never read them
        seg = dicom_seg and is_seg_reference(path)
        if path.name.startswith(".") or not (has_image_ending(path) or seg):
            continue
        reason = unreadable_reason(path)
        if seg and not reason and not is_dicom_seg(path):
            reason = "is not a DICOM SEG (a .dcm reference must hold a Segmentation)"
        if reason:
            # a broken link or an empty file named like a mask must not silently drop its case from the scores
            unreadable.append(f"{path.name} {reason}")
            continue
        stem = path.name[: -len(SEG_ENDING)] if seg else split_ending(path.name)[0]
        found.setdefault(stem, []).append(path)
    if unreadable:
        raise DeepWMLError(f"{len(unreadable)} {role} entr{'y' if len(unreadable) == 1 else 'ies'} cannot be read: "
                           f"{'; '.join(unreadable)}; fix or remove them", folder)
    duplicates = {cid: paths for cid, paths in found.items() if len(paths) > 1}
    if duplicates:
        cid, paths = sorted(duplicates.items())[0]
        names = ", ".join(p.name for p in paths)
        raise DeepWMLError(f"case {cid!r} has {len(paths)} {role} files ({names}); keep one", folder)
    return {cid: paths[0] for cid, paths in found.items()}


def find_case_maps(folder: Union[str, Path], case_ids: Sequence[str], suffix: str, role: str) -> Dict[str, Path]:
    """The CASE<suffix><ending> images in ``folder`` (deepwml_predict's maps beside its masks) of the given cases, by
    case id; unreadable or doubled entries are errors as for masks."""
    wanted = set(case_ids)
    return {stem[: -len(suffix)]: path for stem, path in list_masks(folder, role).items()
            if stem.endswith(suffix) and stem[: -len(suffix)] in wanted}


def pair_cases(
    ref_dir: Union[str, Path], pred_dir: Union[str, Path], missing_as_empty: bool = False
) -> Tuple[List[CasePair], List[str]]:
    """Pair every reference mask with its prediction; returns the pairs and the ids of missing predictions."""
    references = list_masks(ref_dir, "reference", dicom_seg=True)
    if not references:
        raise DeepWMLError("reference folder holds no mask files", ref_dir)
    predictions = list_masks(pred_dir, "prediction")
    extra = sorted(
        cid
        for cid in predictions
        if cid not in references and not _is_probability_map(cid, references)
    )
    if extra:
        raise DeepWMLError(
            f"{len(extra)} prediction(s) without a reference mask: {_first(extra)}; "
            "remove them or add their reference masks",
            pred_dir,
        )
    missing = sorted(cid for cid in references if cid not in predictions)
    if missing and not missing_as_empty:
        raise DeepWMLError(
            f"{len(missing)} case(s) have no prediction: {_first(missing)}; "
            "predict them, or pass --missing-as-empty to score them as empty predictions",
            pred_dir,
        )
    if missing:
        print(
            f"[deepwml_evaluate] warning: {len(missing)} case(s) have no prediction and are scored as empty: {_first(missing)}",
            file=sys.stderr,
        )
    pairs = [CasePair(cid, references[cid], predictions.get(cid)) for cid in sorted(references)]
    return pairs, missing


def _is_probability_map(stem: str, references: Dict[str, Path]) -> bool:
    """True for 'CASE_prob', 'CASE_uncertainty', 'CASE_anatomy' and 'CASE_lesionids' when CASE is a reference case
    (deepwml_predict's other maps)."""
    return any(stem.endswith(s) and stem[: -len(s)] in references for s in DERIVED_MAP_SUFFIXES)


def _first(ids: List[str], n: int = 5) -> str:
    """Comma-separated ids, shortened when there are many."""
    shown = ", ".join(ids[:n])
    return shown + (f" and {len(ids) - n} more" if len(ids) > n else "")
