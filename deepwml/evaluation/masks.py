"""Read a reference and a prediction mask onto one grid and binarise them explicitly (label 1 = lesion)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from deepwml.evaluation.cases import is_seg_reference
from deepwml.imageio import Geometry, read_image
from deepwml.imageio.files import INTERPOLATED_MASK_HINT
from deepwml.utils.errors import ImageError


def scored_lesions(reference: np.ndarray, prediction: np.ndarray, ignore_label: Optional[int] = None
                   ) -> Tuple[np.ndarray, np.ndarray]:
    """(reference lesion, predicted lesion) as booleans, each > 0, with the ``ignore_label`` voxels of the reference
    taken out of both (they count for neither side, as the MICCAI-2017 WMH evaluator leaves out its label 2)."""
    reference, prediction = np.asarray(reference), np.asarray(prediction)
    if ignore_label is None:
        return reference > 0, prediction > 0
    scored = reference != ignore_label
    return (reference > 0) & scored, (prediction > 0) & scored


@dataclass
class CaseMasks:
    """Binary lesion masks of one case in numpy (z, y, x) order, ignore region already removed from both."""

    case_id: str
    reference: np.ndarray
    prediction: np.ndarray
    geometry: Geometry
    n_ignored: int = 0


def binarise(
    array: np.ndarray, ignore_label: Optional[int], role: str, case_id: str, path: Path
) -> Tuple[np.ndarray, np.ndarray]:
    """Return (lesion, ignore) boolean masks; any value other than 0, 1 and the ignore value is an error."""
    allowed = [0, 1] if ignore_label is None else [0, 1, ignore_label]
    lesion = array == 1
    ignore = array == ignore_label if ignore_label is not None else np.zeros_like(lesion)
    # comparisons work for any dtype, so float masks holding exact 0/1 are accepted as they are
    valid = lesion | ignore | (array == 0)
    if not valid.all():
        bad = np.unique(array[~valid])
        shown = ", ".join(f"{v:g}" for v in bad[:5].astype(float)) + (" ..." if len(bad) > 5 else "")
        hint = _hint(bad, role)
        raise ImageError(
            f"case {case_id!r}: {role} mask has values other than {', '.join(map(str, allowed))} "
            f"({int((~valid).sum())} voxels: {shown}); {hint}",
            path,
        )
    return lesion, ignore


def _hint(bad: np.ndarray, role: str) -> str:
    """What to do about a mask holding the values ``bad``."""
    if not np.array_equal(bad, np.round(bad)):
        if role == "prediction":
            return "threshold probability maps into a 0/1 mask first"
        return INTERPOLATED_MASK_HINT
    if role == "prediction":
        return "a prediction marks lesion 1, nothing else 0"
    return ("if they mark lesion (a 0/255 mask, or lesions numbered one by one), make it a 0/1 mask; if they mark "
            "neither lesion nor not (the WMH challenge's 2 for other pathology), declare that value in dataset.json "
            "labels.ignore (or pass --ignore-label)")


def load_case_masks(
    case_id: str, reference_path: Path, prediction_path: Optional[Path], ignore_label: Optional[int] = None
) -> CaseMasks:
    """Read both masks, check they share a grid, and remove the ignore region from both (a DICOM SEG reference is
    placed on the prediction's grid by its frames' positions)."""
    if prediction_path is None:
        if is_seg_reference(reference_path):
            raise ImageError(f"case {case_id!r}: a DICOM SEG reference is read onto its prediction's grid, and the case "
                             "has no prediction", reference_path)
        ref_image = read_image(reference_path, dtype=None)
        reference, ignore = binarise(ref_image.array, ignore_label, "reference", case_id, reference_path)
        return CaseMasks(case_id, reference, np.zeros_like(reference), ref_image.geometry, int(ignore.sum()))
    pred_image = read_image(prediction_path, dtype=None)
    reference, ignore, geometry = reference_on_grid(case_id, reference_path, ignore_label, pred_image.geometry,
                                                    prediction_path, "prediction")
    # a prediction cannot declare regions unscored: its ignore-valued voxels simply carry no lesion
    prediction, _ = binarise(pred_image.array, ignore_label, "prediction", case_id, prediction_path)
    del pred_image
    # the WMH challenge's rule: voxels the reference marks as ignore are removed from both masks
    prediction &= ~ignore
    return CaseMasks(case_id, reference, prediction, geometry, int(ignore.sum()))


def reference_on_grid(case_id: str, reference_path: Path, ignore_label: Optional[int], grid: Geometry, grid_path: Path,
                      grid_role: str) -> Tuple[np.ndarray, np.ndarray, Geometry]:
    """The reference's (lesion, ignore) masks and grid, for comparison with the ``grid_role`` at ``grid_path`` on
    ``grid``: a mask file must be on that grid; a DICOM SEG is placed on it by its frames' positions (it marks
    nothing ignored)."""
    if is_seg_reference(reference_path):
        from deepwml.imageio.dicom_seg_masks import seg_mask_on_grid

        reference = seg_mask_on_grid(reference_path, grid) > 0
        return reference, np.zeros_like(reference), grid
    ref_image = read_image(reference_path, dtype=None)
    reference, ignore = binarise(ref_image.array, ignore_label, "reference", case_id, reference_path)
    problems = ref_image.geometry.mismatches(grid)
    if problems:
        raise ImageError(f"case {case_id!r}: {grid_role} is not on the reference grid ({'; '.join(problems)}); "
                         f"reference: {reference_path}", grid_path)
    return reference, ignore, ref_image.geometry
