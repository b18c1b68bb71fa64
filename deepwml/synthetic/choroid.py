"""The temporal horns of the lateral ventricles and the choroid plexus in them and in the atria (generator v12).

On FLAIR the choroid plexus is a bright, lumpy structure in CSF that is nulled: its glomus in each atrium and its
strand along the temporal horn are often as bright as white-matter lesions (cysts and xanthogranulomas are common in
older adults), and they are never lesion. The ICBM template's ventricle map holds the lateral ventricles down to the
atria but hardly any temporal horn, and until v11 the template brains drew no choroid plexus: the v11 model's
largest false positives on a real scan with few lesions (benchmarks/real_dev.py --errors, patient07) are a bright
blob on each side beside the atrium / temporal horn junction, with a dark CSF slit next to it.

Regions are capsules in MNI millimetres (RAS, right hemisphere, mirrored), mapped into the template frame as
deepwml.synthetic.limbic does. The temporal horn follows the upper surface of the template's hippocampus (checked on
its grey-matter map: tests/test_synthetic_v12.py); the glomus sits in the template's atrium. Fields are signed
distances in template millimetres, so the partial-volume ramp is applied at the fine grid.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

from deepwml.synthetic.limbic import TEMPLATE_SCALE, Capsule, capsules_sdf

#: centre line of the temporal horn, from the atrium forwards and down to its tip (MNI RAS mm, right hemisphere)
TEMPORAL_HORN_MNI: Sequence[Tuple[float, float, float]] = (
    (33.0, -40.0, -1.0), (33.0, -30.0, -7.0), (33.0, -18.0, -12.0), (30.0, -8.0, -16.0),
)
#: radius of the temporal horn (template mm) of a subject whose ventricles are the template's; it widens with them
TEMPORAL_HORN_RADIUS_MM = 1.5
#: temporal-horn widening per mm of lateral-ventricle enlargement (deepwml.synthetic.warp.TemplateWarp.ventricle_mm)
TEMPORAL_HORN_WIDENING = 0.6
#: the choroid plexus: glomus in the atrium, strand along the temporal horn's medial side
CHOROID_MNI: Sequence[Capsule] = (
    ((26.0, -36.0, 12.0), (28.0, -42.0, 8.0), 3.5),
    ((32.0, -38.0, -1.0), (31.0, -24.0, -9.0), 1.6),
)


def temporal_horn_sdf(q: Tuple[np.ndarray, np.ndarray, np.ndarray], ventricle_mm: float) -> np.ndarray:
    """Signed distance (template mm) to both temporal horns of a subject whose lateral ventricles are enlarged by
    ``ventricle_mm`` (negative: smaller)."""
    radius = max(0.6, TEMPORAL_HORN_RADIUS_MM + TEMPORAL_HORN_WIDENING * ventricle_mm) / TEMPLATE_SCALE
    chain = [(a, b, radius) for a, b in zip(TEMPORAL_HORN_MNI[:-1], TEMPORAL_HORN_MNI[1:])]
    return capsules_sdf(q, chain).astype(np.float32)


def choroid_sdf(q: Tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """Signed distance (template mm) to the choroid plexus of both atria and temporal horns."""
    return capsules_sdf(q, CHOROID_MNI).astype(np.float32)
