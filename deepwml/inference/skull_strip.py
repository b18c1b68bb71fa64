"""Skull stripping, deepwml_predict's default whenever the anatomy model runs and the lesion model learned
skull-stripped scans (``--skull-strip`` insists on it, ``--no-skull-strip`` turns it off): the lesion model sees only
the brain the anatomy model finds, so a scan with its skull and the same scan skull-stripped get the same lesions. (An
option from 2026-12-02, the default since 2026-12-07: benchmarks/README.md, "Skull stripping by default".)

Why: the lesion network's normalisation takes statistics over the whole slice, so what lies outside the brain (scalp
fat, bone, orbits) shifts how bright the brain looks to it. The model shipped until 2026-12-05 called 20-30 % more
lesion on real brains wrapped in a synthetic skull than on the same brains stripped (benchmarks/README.md, real-data
development check, `--add-head`), while an affine change of its input moved its mask by a few per cent
(benchmarks/input_scaling.py): the fix is what the network sees, not how it is scaled. With the model shipped since,
the generator's paired scans with and without skull differ in lesion volume by an IQR of 0.86-1.08 unstripped and
1.00-1.01 stripped (benchmarks/skull_pairs.py).

Everything outside the brain region (the anatomy map's parenchyma and ventricles, holes filled within each slice,
grown by STRIP_MARGIN_MM in plane so the cortex's edge and juxtacortical lesions stay) is set to 0, the background
of a skull-stripped scan, in every channel before the lesion model's own preprocessing. A scan that is skull-stripped
already (:func:`already_stripped`) is left as it is: there is nothing left to remove, and the anatomy map of a stripped
brain is what can be wrong (the v8 anatomy model's region left out up to 17 % of the lesion voxels of the generator's
stripped scans; the one shipped since, trained on half stripped scans, finds them about as well as brains with skull).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from deepwml.anatomy.labels import BACKGROUND
from deepwml.imageio import Geometry, Image
from deepwml.inference.lesion_report import SKULL_STRIP_COLUMN
from deepwml.preprocessing.head_mask import constant_background, fill_holes_in_plane, head_mask
from deepwml.preprocessing.outliers import suppress_outliers
from deepwml.utils.errors import DeepWMLError

#: the brain region is grown by this much in plane: the anatomy map is coarse (1.5 mm) and trained on synthetic brains
STRIP_MARGIN_MM = 3.0
#: a brain region under this share of the scan's voxels is no brain the model found (a phantom, a wrong series)
MIN_BRAIN_SHARE = 0.005
#: a stripped scan's head is its brain: at most this share of the head mask lies outside the brain region (a scan
#: with its skull has scalp, skull, orbits and face there: 0.43-0.58 of the head on the generator's scans, 0.01-0.11
#: stripped)
STRIPPED_HEAD_OUTSIDE_SHARE = 0.25
#: the pixel size (mm) at which a scan is judged stripped already
JUDGED_PIXEL_MM = 0.9
#: summary.csv's lesion_model_input (SKULL_STRIP_COLUMN): stripped to the brain region; left as it came, being
#: stripped already; left as it came, no brain found
STRIPPED, ALREADY_STRIPPED, NO_BRAIN = "skull-stripped", "already skull-stripped", "as given: no brain found"


def brain_region(anatomy: np.ndarray, geometry: Geometry, margin_mm: float = STRIP_MARGIN_MM) -> np.ndarray:
    """Boolean brain region of an anatomy map on its input's grid: every class but background, holes filled within
    each slice, grown by ``margin_mm`` in plane (never across slices)."""
    axis = geometry.slice_axis_numpy
    region = np.moveaxis(np.asarray(anatomy) != BACKGROUND, axis, 0)
    region = fill_holes_in_plane(region)
    if margin_mm > 0:
        sampling = list(geometry.in_plane_pixels.values())
        # slice by slice: one 3D transform with the slice axis made far away gives the same and takes 10x as long
        region = np.stack([_grown(plane, margin_mm, sampling) for plane in region])
    return np.moveaxis(region, 0, axis)


def _grown(plane: np.ndarray, margin_mm: float, sampling: Sequence[float]) -> np.ndarray:
    """``plane`` grown by ``margin_mm``: the distance transform over its bounding box widened by the margin only (a
    pixel beyond that box lies farther than the margin from every pixel of the plane), half the time of the whole."""
    if not plane.any():
        return plane
    reach = [int(np.ceil(margin_mm / s)) + 1 for s in sampling]
    box = tuple(slice(max(int(i.min()) - r, 0), int(i.max()) + r + 1) for i, r in zip(np.nonzero(plane), reach))
    grown = np.zeros_like(plane)
    grown[box] = ndimage.distance_transform_edt(~plane[box], sampling=sampling) <= margin_mm
    return grown


def strip_images(images: Sequence[Image], region: np.ndarray) -> List[Image]:
    """Each channel with everything outside ``region`` set to 0; a region with (almost) no brain is refused."""
    if region.mean() < MIN_BRAIN_SHARE:
        raise DeepWMLError(f"--skull-strip: the anatomy model finds no brain in this scan ({100 * region.mean():.2f} % of "
                           "its voxels): is it an axial head FLAIR? Predict it with --no-skull-strip", images[0].path)
    return [replace(image, array=np.where(region, image.array, 0).astype(image.array.dtype, copy=False)) for image in images]


def run_skull_strip(asked: Optional[bool], anatomy: bool, learned_stripped: Optional[int]) -> Tuple[bool, str]:
    """(does the run strip, why not when the default leaves a scan as given although the anatomy model runs): ``asked``
    is --skull-strip (True), --no-skull-strip (False) or neither (None: the default); ``learned_stripped`` how many
    skull-stripped scans the lesion model learned (deepwml.inference.acquisition.learned_stripped_scans; None: not
    recorded). A model is shown what it learned: one that learned only scans with their skull, or does not say, sees
    the scan as given unless stripping is asked for."""
    if not anatomy or asked is False:
        return False, ""
    if asked or learned_stripped:
        return True, ""
    why = ("the model learned no skull-stripped scans" if learned_stripped == 0
           else "the model does not record whether it learned skull-stripped scans")
    return False, f"not skull-stripped: {why} (--skull-strip strips anyway)"


def lesion_model_channels(image: Image, channels: Sequence[Image], region: np.ndarray,
                          required: bool) -> Tuple[List[Image], str]:
    """(the channels the lesion model sees, what was done: STRIPPED, ALREADY_STRIPPED or NO_BRAIN): stripped to
    ``region`` unless the scan is stripped already. When the anatomy model finds (almost) no brain, ``required`` (the
    user asked for --skull-strip) refuses the scan; otherwise (the default) it is predicted as given and flagged: there
    the map, not the scan's surroundings, is what is wrong."""
    if region.mean() < MIN_BRAIN_SHARE and not required:
        return list(channels), NO_BRAIN
    if already_stripped(image, region):
        return list(channels), ALREADY_STRIPPED
    return strip_images(channels, region), STRIPPED


def strip_warning(anatomy_fields: Dict[str, Any]) -> str:
    """What summary.csv's acquisition_warning adds for a scan the run meant to strip and could not; '' otherwise."""
    if anatomy_fields.get(SKULL_STRIP_COLUMN) != NO_BRAIN:
        return ""
    return ("not skull-stripped for the lesion model: the anatomy model finds almost no brain in it (is it an axial "
            "head FLAIR?)")


def already_stripped(image: Image, region: np.ndarray) -> bool:
    """Whether a scan is skull-stripped already: the background outside its head mask is one constant value (a
    scanner's background is noise) and its head lies (almost) inside the brain region. Judged on pixels of about
    JUDGED_PIXEL_MM (every other pixel of a 0.47 mm grid): the shares it compares lie far apart (module constants), and
    the head mask of a full 512² grid took 0.16 s a 25-slice case, the largest part of what stripping adds."""
    axis = image.geometry.slice_axis_numpy
    pixels = image.geometry.in_plane_pixels  # numpy axis -> mm, the slice axis left out
    step = tuple(slice(None, None, max(1, int(round(JUDGED_PIXEL_MM / pixels[a])))) if a in pixels else slice(None)
                 for a in range(image.array.ndim))
    array, region = np.moveaxis(np.asarray(image.array)[step], axis, 0), np.moveaxis(np.asarray(region)[step], axis, 0)
    values, _ = suppress_outliers(array.astype(np.float32, copy=False))
    head = head_mask(values)
    if not head.any() or not constant_background(array, head):
        return False
    return bool((head & ~region).sum() <= STRIPPED_HEAD_OUTSIDE_SHARE * head.sum())
