"""Lesions in or against the cortex no brighter than bright normal cortex are dropped by default (deepwml_predict
--min-cortex-contrast).

Normal cortex is brighter than white matter on FLAIR, and not evenly: on the real development stacks
(benchmarks/real_dev.py) its own 95th percentile lies at 1.14 x its median, and a thick slab that folds cortex and
white matter together shows such parts as bright patches beside darker sulci. The lesion contrast filter
(deepwml.inference.lesion_contrast) compares a lesion with the tissue within 3 mm, which for a patch of cortex holds
sulcal CSF and white matter, and so lets it pass. There most of the shipped model's false lesions lie where the
anatomy map places the cortex (left-right pairs at the orbitofrontal cortex and along the parietal convexity among
them), at a median 1.17 x the scan's cortex against 1.26 x for the true lesions there; on synthetic scans, whose
cortex has no such patches, the two do not differ (benchmarks/README.md, "Bright normal cortex"). A lesion the lesion
table would call cortical or juxtacortical (deepwml.anatomy.location: RULE_LOCATIONS) whose mean intensity stays under
``min_contrast`` x the median of the scan's cortex (outside the predicted lesions) is dropped whole; lesions elsewhere
are never touched, and without an anatomy map nothing is dropped.

Juxtacortical lesions (white matter touching the cortex) are judged too since 2026-12-07: on the real development
stacks the false ones lay at a median 1.15 x the cortex, 6 of 8 (2.5 ml) under the bound, against 1.22 x and 1 of 8
(0.2 ml) for the true ones; on the recipe's synthetic calibration sets 1 of 118 true ones (0.04 ml) lies under it
(benchmarks/README.md, "Juxtacortical lesions against bright cortex").
"""
from __future__ import annotations

from typing import Tuple

import numpy as np
from scipy import ndimage

from deepwml.anatomy.labels import CORTEX
from deepwml.anatomy.location import CORTICAL, JUXTACORTICAL, lesion_classes
from deepwml.constants import MAX_CORTEX_CONTRAST, MIN_CORTEX_CONTRAST
from deepwml.imageio import Geometry
from deepwml.inference.lesion_report import label_lesions, lesion_box
from deepwml.utils.errors import DeepWMLError

# MIN_CORTEX_CONTRAST (deepwml_predict's default) is the strongest bound that costs the recipe's two synthetic
# calibration sets no more than 0.001 lesion F1 (1.2 costs 0.004-0.006; benchmarks/README.md)

#: the lesion locations (deepwml.anatomy.location) the bound judges: in the cortex, and white matter against it
RULE_LOCATIONS = (CORTICAL, JUXTACORTICAL)


def drop_faint_cortical(mask: np.ndarray, anatomy: np.ndarray, image: np.ndarray, geometry: Geometry,
                        min_contrast: float = MIN_CORTEX_CONTRAST) -> Tuple[np.ndarray, int]:
    """(the mask, uint8 on the same grid, without the cortical and juxtacortical lesions under ``min_contrast`` x the
    cortex's median intensity in ``image``, the number dropped); the mask as it is when ``min_contrast`` is 0 or the map
    has no cortex outside the lesions."""
    mask = np.asarray(mask, np.uint8)
    box = lesion_box(mask)
    if min_contrast <= 0 or box is None:
        return mask, 0
    anatomy, image = np.asarray(anatomy), np.asarray(image)
    labels, count = label_lesions(mask[box])
    cortical = np.isin(lesion_classes(labels, count, tuple(b.start for b in box), anatomy, geometry), RULE_LOCATIONS)
    if not cortical.any():  # spares the cortex's median (tens of ms on a 512² scan)
        return mask, 0
    cortex = (anatomy == CORTEX) & (mask == 0)
    if not cortex.any():
        return mask, 0
    reference = float(np.median(image[cortex]))
    if not np.isfinite(reference) or reference <= 0:
        return mask, 0
    means = ndimage.mean(image[box], labels, np.arange(1, count + 1))
    drop = cortical & (np.asarray(means) < min_contrast * reference)
    if not drop.any():
        return mask, 0
    keep = np.concatenate([[False], ~drop])
    out = np.zeros_like(mask)
    out[box] = keep[labels]
    return out, int(drop.sum())


def check_cortex_contrast(value: float) -> float:
    """``value`` when it is a usable bound (0: off, else 1 to MAX_CORTEX_CONTRAST); a DeepWMLError otherwise."""
    if not np.isfinite(value) or not (value == 0 or 1.0 <= value <= MAX_CORTEX_CONTRAST):
        raise DeepWMLError(f"--min-cortex-contrast must be 0 (off) or between 1 and {MAX_CORTEX_CONTRAST:g}, not {value}")
    return float(value)
