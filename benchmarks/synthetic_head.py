"""A synthetic head around a real skull-stripped brain, for benchmarks/real_dev.py --add-head.

The development scans are brain-extracted, but one site of issue #12 scans heads with skull, scalp and fat. This
wraps the stripped brain in the extra-cerebral layers a FLAIR shows, shell by shell outward from the brain's edge
(distances in mm), at the signal the synthetic generator gives them for a Siemens 3 T scanner relative to the
brain's median (deepwml.synthetic.acquisition): subarachnoid CSF, the inner table, diploe, the outer table, scalp
fat (brighter than white matter), skin; then air with noise. Shells are smoothed by ~0.5 mm (partial volume) and the
outside gets Rician-like noise. No face, orbits, sinuses or neck: it tests the skull and scalp ring, not the skull
base. The brain's own voxels and the lesion mask are untouched.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
from scipy import ndimage

#: (outer edge in mm from the brain, FLAIR signal relative to the brain median), innermost first
SHELLS: Tuple[Tuple[float, float], ...] = (
    (2.5, 0.22),  # subarachnoid CSF
    (4.5, 0.05),  # inner table
    (8.0, 0.60),  # diploe (marrow)
    (10.0, 0.05),  # outer table
    (15.0, 1.35),  # scalp fat
    (17.0, 0.70),  # skin
)
#: noise of the added outside, relative to the brain median (about the generator's 3 T noise at 1 mm)
NOISE = 0.04


def wrap_in_head(image: np.ndarray, spacing_zyx: Sequence[float], seed: int = 0) -> np.ndarray:
    """``image`` (z, y, x; background exactly 0 outside the stripped brain) with a head painted around its brain."""
    image = np.asarray(image, np.float32)
    brain = ndimage.binary_fill_holes(image > 0)
    if not brain.any():
        return image
    reference = float(np.median(image[brain]))
    distance = ndimage.distance_transform_edt(~brain, sampling=spacing_zyx).astype(np.float32)
    outside = np.zeros(image.shape, np.float32)
    inner = 0.0
    for edge, signal in SHELLS:
        outside[(distance > inner) & (distance <= edge)] = signal
        inner = edge
    # partial volume between shells (and with the brain's edge), about half a millimetre: the slabs add their own
    sigma = [0.5 / max(float(s), 1e-3) for s in spacing_zyx]
    outside = ndimage.gaussian_filter(outside, sigma) * reference
    rng = np.random.default_rng(seed)
    noisy = np.hypot(outside + rng.normal(0, NOISE * reference, image.shape),
                     rng.normal(0, NOISE * reference, image.shape)).astype(np.float32)
    return np.where(brain, image, noisy)
