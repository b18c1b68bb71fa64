"""Bilateral, mildly bright spots of normal white matter, never lesion (generator v13).

Normal white matter on FLAIR is not one grey value: fibre crossings, the temporal stem, the acoustic and optic
radiations and the late-myelinating zones are a few to thirty per cent brighter than their surroundings, and being
anatomy, they come in mirrored pairs. Until v12 the generator drew bright normal white matter only in named places
(tracts v6, peritrigonal zones v10), so every other bright spot in white matter was lesion and the model learnt a
brightness threshold: on the real development scans (benchmarks/real_dev.py --components) its false components sit at
1.22-1.27 x the brain median, its true ones at 1.34 and its misses at 1.18, and its largest false positives come in
left/right pairs (beside the posterior insulae, the temporal horns, the occipital horns, the third ventricle). A
first try at v13 (commit e9b3f2f: soft, one-sided patches anywhere) made the model call more, not less, on those
scans: the patches were too diffuse to look like the spots it gets wrong, and one-sided, so nothing but their
softness told them from lesions. Now the spots are drawn in the template brain's frame with the distance from the
midline, so each has its twin in the other hemisphere, as anatomy has and lesions mostly have not; template brains
only. They fade out near the ventricles, where the v11 faint periventricular bands and confluent lesions are lesion.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

#: Share of (template-brain) scans with bright white-matter spots, and their excess signal over white matter
PATCH_SHARE = 0.6
PATCH_EXCESS_RANGE = (0.08, 0.30)
#: Size of the spots: the wavelength (template mm) of the smooth field they are cut from (spots about half of it across)
PATCH_WAVELENGTH_MM = 10.0
#: Field level (in standard deviations) above which a spot starts, drawn per scan: about 5-20 % of white matter away
#: from the ventricles
PATCH_THRESHOLD_RANGE = (0.5, 1.2)
#: Field range (standard deviations) over which a spot rises from nothing to its full excess: edges of 1-2 mm
PATCH_RAMP = 0.5
#: Half-width (template mm) of the cube the spot field covers, centred on the template's origin
PATCH_FIELD_HALF_MM = 120.0
#: Patches are absent within NEAR_MM of a ventricle and at full strength beyond FAR_MM
NEAR_MM, FAR_MM = 5.0, 11.0


def patch_weight(
    field: np.ndarray,
    threshold: float,
    shape: Tuple[int, int, int],
    near_ventricles: Optional[Tuple[slice, slice, slice]] = None,
    ventricle_distance: Optional[np.ndarray] = None,
) -> np.ndarray:
    """0..1: where white matter is a bright spot, from a unit-variance smooth ``field`` cut at ``threshold``; fades
    to 0 towards the ventricles (``ventricle_distance`` in mm on the ``near_ventricles`` block of ``shape``)."""
    weight = np.clip((field - np.float32(threshold)) / np.float32(PATCH_RAMP), 0.0, 1.0).astype(np.float32)
    weight = np.broadcast_to(weight, shape).copy()
    if near_ventricles is not None and ventricle_distance is not None:
        fade = np.clip((ventricle_distance - np.float32(NEAR_MM)) / np.float32(FAR_MM - NEAR_MM), 0.0, 1.0)
        weight[near_ventricles] *= fade
    return weight


def sample_patches(rng: np.random.Generator) -> Tuple[float, float]:
    """(excess over white matter, field threshold) of one scan; excess 0: no spots."""
    has = rng.random() < PATCH_SHARE
    excess = float(rng.uniform(*PATCH_EXCESS_RANGE))
    threshold = float(rng.uniform(*PATCH_THRESHOLD_RANGE))
    return (excess if has else 0.0), threshold
