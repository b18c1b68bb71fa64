"""Lesion masks a reader reviewed, corrected or drew (deepwml_predict --lesion-masks): the run's outputs describe them
instead of the lesion model's mask. The lesion table, locations, Fazekas and McDonald counts, QC picture, report and
DICOM SEG / SR are those of the reader's lesions, as drawn (no threshold, no lesion filter); the lesion model still
runs, and its probabilities give each of those lesions its mean probability (low for a lesion the reader added
where the model saw none) and confidence, and the report its uncertainty overlay.

A mask is found by case id (``CASE<ending>``, any image ending DeepWML reads, ``CASE.seg.nrrd`` as 3D Slicer saves a
segmentation, or ``CASE.dcm``: a DICOM SEG, as a PACS or viewer keeps a reader's outlines, of a DICOM series input or
of the series an image-file input was converted from, placed by its frames' positions); it must lie on its scan's
grid or on a window of it (a mask cropped to its segments), and any value above 0 is lesion (a 0/1 or 0/255 mask, or
lesions numbered one by one), as deepwml_compare reads a reader's mask.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np

from deepwml.constants import IMAGE_ENDINGS
from deepwml.imageio import Geometry, Image, read_label
from deepwml.imageio.files import unreadable_reason
from deepwml.inference.inputs import InputCase
from deepwml.utils.errors import DeepWMLError, ImageError

#: a DICOM SEG of the case's series (CASE.dcm)
SEG_ENDING = ".dcm"
#: 3D Slicer's segmentation file (a NRRD, often cropped to its segments' extent)
SLICER_ENDING = ".seg.nrrd"
#: the options that set the model's mask, which --lesion-masks replaces (refused beside it: they would change nothing)
MASK_FLAGS = ("--threshold", "--min-lesion-ml", "--min-lesion-peak", "--min-lesion-contrast", "--min-lesion-spread",
              "--white-matter-only")


def find_reviewed_masks(source: Path, cases: Sequence[InputCase], out_dir: Path) -> Dict[str, Path]:
    """Each case's reviewed mask by case id: ``source`` itself when it is a file (one case only), else
    ``source``/CASE<ending> or CASE.dcm. A case without one is left out (it fails, naming what was looked for); two
    for one case, a folder that is the output folder, or a file for several cases is an error before anything runs."""
    source = Path(source).expanduser()
    if source.is_file():
        if len(cases) != 1:
            raise DeepWMLError(f"--lesion-masks is one file, and the input holds {len(cases)} cases: give a folder of "
                               "masks named by case id (CASE.nii.gz)", source)
        return {cases[0].case_id: source}
    if not source.is_dir():
        raise DeepWMLError("--lesion-masks: no such file or folder", source)
    if out_dir.exists() and source.resolve() == Path(out_dir).expanduser().resolve():
        # a finished case's mask there would be the reviewed mask itself: an edited case could never be told apart
        raise DeepWMLError("--lesion-masks is the output folder (-o): copy the reviewed masks to a folder of their own, "
                           "or write the outputs elsewhere", source)
    found: Dict[str, Path] = {}
    for case in cases:
        candidates = [source / f"{case.case_id}{ending}" for ending in IMAGE_ENDINGS + (SLICER_ENDING, SEG_ENDING)]
        present = [p for p in candidates if p.exists() or p.is_symlink()]
        if len(present) > 1:
            raise DeepWMLError(f"case {case.case_id!r} has {len(present)} reviewed masks "
                               f"({', '.join(p.name for p in present)}); keep one", source)
        if present:
            found[case.case_id] = present[0]
    return found


def missing_mask_error(source: Path, case_id: str) -> DeepWMLError:
    """The error of a case that has no reviewed mask in ``source``."""
    return DeepWMLError(f"no reviewed lesion mask for case {case_id!r} ({case_id}.nii.gz, another image ending, or "
                        f"{case_id}{SEG_ENDING}, a DICOM SEG of a DICOM series)", source)


def read_reviewed_mask(path: Path, geometry: Geometry, series_folder: Optional[Path] = None,
                       series_uid: Optional[str] = None) -> np.ndarray:
    """The reader's lesions (> 0) on the scan's grid ``geometry`` as booleans in numpy (z, y, x) order. A DICOM SEG
    (CASE.dcm) outlines the DICOM series in ``series_folder`` (read with ``series_uid``, as the scan was); beside an
    image file (a conversion of that series) its frames are placed on the grid by their positions."""
    path = Path(path)
    if path.name.lower().endswith(SEG_ENDING):
        reason = unreadable_reason(path)
        if reason:
            raise ImageError(reason, path)
        from deepwml.imageio.dicom_seg_masks import is_dicom_seg, read_seg_mask, seg_mask_on_grid

        if not is_dicom_seg(path):
            raise ImageError("is not a DICOM SEG (a .dcm lesion mask must hold a Segmentation)", path)
        if series_folder is None or not Path(series_folder).is_dir():
            # a scan converted from the series the SEG outlines: its frames placed by their positions
            return seg_mask_on_grid(path, geometry) > 0
        return read_seg_mask(path, Path(series_folder), series_uid) > 0
    mask = read_label(path)
    problems = geometry.mismatches(mask.geometry)
    if not problems:
        return mask.array > 0
    placed = placed_on_grid(mask, geometry)
    if placed is None:
        raise ImageError(f"the lesion mask is not on its scan's grid ({'; '.join(problems)}): save it on the scan's "
                         "grid (as the predicted mask lies)", path)
    return placed


def placed_on_grid(mask: Image, geometry: Geometry) -> Optional[np.ndarray]:
    """``mask`` (> 0) on ``geometry`` when it lies on a window of that grid (the same voxel size and axes, its first
    voxel a whole number of voxels along them: a viewer's mask cropped to its segments, as 3D Slicer may save a
    segmentation) with every lesion voxel inside the scan; None when it does not."""
    own = mask.geometry
    if not (np.allclose(own.spacing, geometry.spacing, rtol=1e-3)
            and np.allclose(own.direction, geometry.direction, atol=1e-3)):
        return None
    # the mask's first voxel as an (x, y, z) index of the scan's grid
    index = geometry.direction_matrix.T @ (np.asarray(own.origin) - np.asarray(geometry.origin)) / np.asarray(geometry.spacing)
    start = np.round(index).astype(int)
    if np.abs(index - start).max() > 0.1:  # a tenth of a voxel: header rounding, never another voxel
        return None
    lesion = np.asarray(mask.array) > 0
    out = np.zeros(tuple(reversed(geometry.size)), dtype=bool)
    if not lesion.any():
        return out
    # in numpy (z, y, x) order: the lesions' box in the mask, and where it lands in the scan
    box = [np.flatnonzero(lesion.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    low = np.array([b[0] for b in box]) + start[::-1]
    high = np.array([b[-1] + 1 for b in box]) + start[::-1]
    if np.any(low < 0) or np.any(high > out.shape):
        return None
    out[tuple(slice(a, b) for a, b in zip(low, high))] = lesion[tuple(slice(b[0], b[-1] + 1) for b in box)]
    return out


def reviewed_note(path: Path) -> str:
    """summary.csv's lesions_from for a case whose lesions are the reader's mask ``path``."""
    return f"reviewed mask {Path(path).name}"
