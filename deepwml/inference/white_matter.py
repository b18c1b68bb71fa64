"""``--white-matter-only``: keep the lesions the anatomy map places in white matter, as WMH tools do with a white-matter
mask (BIANCA's, LST's). A lesion the map puts mostly in the cortex, or outside the parenchyma, is dropped whole.

Models trained on synthetic scans mark faint cortex folded into thick slices as lesion; on real MS FLAIR
(benchmarks/real_dev.py) most of the components this removes are false positives.
"""
from __future__ import annotations

import numpy as np

from deepwml.anatomy.location import CORTICAL, UNCLASSIFIED, locate_lesions
from deepwml.imageio import Geometry
from deepwml.inference.lesion_report import label_lesions

#: the location classes (deepwml.anatomy.location) whose lesions --white-matter-only removes; periventricular,
#: juxtacortical, deep and infratentorial lesions stay
NOT_WHITE_MATTER = (CORTICAL, UNCLASSIFIED)


def white_matter_lesions(mask: np.ndarray, anatomy: np.ndarray, geometry: Geometry) -> np.ndarray:
    """The mask (uint8, same grid) without its lesions located in the cortex or outside the parenchyma."""
    labels, count = label_lesions(mask)
    if count == 0:
        return np.asarray(mask, np.uint8)
    location = locate_lesions(labels, count, (0,) * labels.ndim, anatomy, geometry).location
    keep = np.concatenate([[False], ~np.isin(location, NOT_WHITE_MATTER)])
    return keep[labels].astype(np.uint8)
