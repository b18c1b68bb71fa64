"""Normal FLAIR brightness that is not lesion (generator v10): limbic grey matter and the peritrigonal white matter.

On FLAIR the limbic grey matter (hippocampus, amygdala, parahippocampal and cingulate gyri, insula) is brighter
than the rest of the cortex in healthy subjects (Hirai et al., Radiology 2000), and the white matter above and behind
the trigones of the lateral ventricles (the late-myelinating "terminal zones") is often faintly bright. Until v9 the
template brains drew both as ordinary tissue, and worse: grey matter more than 12-18 mm below the brain surface was
painted as deep grey nuclei, so the hippocampus and insula came out darker than the cortex. The v9 model's largest
false positives on real scans (benchmarks/real_dev.py) sit near these regions, bilateral and symmetric: beside the
temporal horns, in the posterior insula and behind the trigones. Their centroids mostly fall on the template's white
matter there (optic radiation, sagittal stratum, arcuate fasciculus), which the limbic regions do not brighten; the
v10-trained model keeps the largest of them, smaller (benchmarks/README.md).

Regions are capsules in MNI millimetres (RAS, right hemisphere; the template is symmetric, so |x| is used),
mapped into the template's anatomy frame with the scale and centre dataset_conversion/icbm152_template.py used.
They are coarse on purpose: the limbic weight only brightens grey matter inside them, the peritrigonal one only
white matter, so they need not follow a gyrus exactly.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

from deepwml.synthetic.shapes import capsule_sdf, inside

#: template anatomy mm per MNI mm, and the MNI point (LPS z, y) the template's cerebrum centre came from; both as
#: dataset_conversion/icbm152_template.py built icbm152_2009a.npz (its CEREBRUM_CENTRE is the target)
TEMPLATE_SCALE = 166.0 / 180.0
MNI_CENTRE_LPS_ZY = (15.5, 16.5)
TEMPLATE_CENTRE_ZY = (9.0, 1.0)

Capsule = Tuple[Tuple[float, float, float], Tuple[float, float, float], float]

#: (end a, end b, radius), MNI RAS mm of the right hemisphere
LIMBIC_MNI: Sequence[Capsule] = (
    ((25.0, -9.0, -19.0), (30.0, -38.0, -2.0), 5.5),  # hippocampus, head to tail (it rises as it runs back)
    ((23.0, -3.0, -18.0), (23.0, -5.0, -17.0), 7.0),  # amygdala
    ((24.0, -14.0, -27.0), (24.0, -40.0, -12.0), 5.0),  # parahippocampal gyrus
    ((35.0, 18.0, 0.0), (40.0, -28.0, 6.0), 7.0),  # insula, anterior to posterior
    ((38.0, 2.0, -8.0), (38.0, 0.0, 18.0), 6.0),  # insula, inferior to superior
    ((6.0, 40.0, 4.0), (6.0, 20.0, 32.0), 6.0),  # cingulate gyrus: pregenual
    ((6.0, 20.0, 32.0), (6.0, -22.0, 40.0), 6.0),  # mid-cingulate
    ((6.0, -22.0, 40.0), (7.0, -50.0, 18.0), 6.0),  # posterior cingulate and isthmus
)
#: white matter above and behind each trigone
TERMINAL_MNI: Sequence[Capsule] = (((24.0, -38.0, 20.0), (26.0, -58.0, 24.0), 7.0),)

#: width (mm) of the ramp at each region's border
EDGE_MM = 4.0


def mni_to_template(point: Sequence[float]) -> Tuple[float, float, float]:
    """Template anatomy coordinates (X from the midline, Y posterior, Z superior; mm at head size 1) of an MNI RAS
    point of the right hemisphere (as |X|: the template is symmetric)."""
    x, y, z = (float(v) for v in point)
    return (abs(x) * TEMPLATE_SCALE,
            (-y - MNI_CENTRE_LPS_ZY[1]) * TEMPLATE_SCALE + TEMPLATE_CENTRE_ZY[1],
            (z - MNI_CENTRE_LPS_ZY[0]) * TEMPLATE_SCALE + TEMPLATE_CENTRE_ZY[0])


def capsules_sdf(q: Tuple[np.ndarray, np.ndarray, np.ndarray], capsules: Sequence[Capsule]) -> np.ndarray:
    """Signed distance (template mm) to the union of MNI ``capsules`` of both hemispheres at template points ``q``
    (X, Y, Z arrays)."""
    p = (np.abs(q[0]), q[1], q[2])
    sdf = None
    for a, b, radius in capsules:
        d = capsule_sdf(p, mni_to_template(a), mni_to_template(b), radius * TEMPLATE_SCALE)
        sdf = d if sdf is None else np.minimum(sdf, d)
    return sdf


def _weight(q: Tuple[np.ndarray, np.ndarray, np.ndarray], capsules: Sequence[Capsule]) -> np.ndarray:
    """0..1: inside the union of ``capsules`` at template points ``q`` (X, Y, Z arrays), a ramp at the border."""
    return inside(capsules_sdf(q, capsules), EDGE_MM).astype(np.float32)


def limbic_weight(q: Tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """Where grey matter is limbic (hippocampus, amygdala, parahippocampal and cingulate gyri, insula)."""
    return _weight(q, LIMBIC_MNI)


def terminal_weight(q: Tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """Where white matter is peritrigonal (the terminal zones of myelination)."""
    return _weight(q, TERMINAL_MNI)
