"""Patchy, mildly bright normal white matter, never lesion (generator v13).

Normal white matter on FLAIR is not one grey value: late-myelinating and fibre-crossing regions, the temporal stem,
the acoustic and optic radiations, and the "dirty-appearing" white matter of older brains are a few to twenty-odd
per cent brighter than their surroundings, with soft edges over several millimetres. Until v12 the generator drew
bright normal white matter only in named places (tracts v6, peritrigonal zones v10), so every other bright blob in
white matter was lesion, and the model learnt a brightness threshold: on the real development scans
(benchmarks/real_dev.py --components) its false components sit at 1.22-1.27 x the brain median, its true ones at
1.34 and its misses at 1.18, with the largest false positives in white matter beside the posterior insula and the
temporal horns. v13 scatters such patches anywhere in the white matter at random, so brightness alone is not
enough and the model must learn what lesions have that they do not: focal shape with a sharper edge, and location
(periventricular, juxtacortical). Patches fade out near the ventricles, where the v11 faint periventricular bands
and confluent lesions are lesion.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

#: Share of scans with bright white-matter patches, and their excess signal over white matter (drawn per scan)
PATCH_SHARE = 0.6
PATCH_EXCESS_RANGE = (0.05, 0.28)
#: Size of the patches: the wavelength (mm) of the smooth field they are cut from (patches about half of it across)
PATCH_WAVELENGTH_MM = 14.0
#: Field level (in standard deviations) above which a patch starts, drawn per scan: about 8-30 % of white matter away from the ventricles
PATCH_THRESHOLD_RANGE = (0.4, 1.1)
#: Field range (standard deviations) over which a patch rises from nothing to its full excess: soft edges
PATCH_RAMP = 0.8
#: Patches are absent within NEAR_MM of a ventricle and at full strength beyond FAR_MM
NEAR_MM, FAR_MM = 5.0, 11.0


def patch_weight(
    field: np.ndarray,
    threshold: float,
    shape: Tuple[int, int, int],
    near_ventricles: Optional[Tuple[slice, slice, slice]] = None,
    ventricle_distance: Optional[np.ndarray] = None,
) -> np.ndarray:
    """0..1: where white matter is a bright patch, from a unit-variance smooth ``field`` cut at ``threshold``; fades
    to 0 towards the ventricles (``ventricle_distance`` in mm on the ``near_ventricles`` block of ``shape``)."""
    weight = np.clip((field - np.float32(threshold)) / np.float32(PATCH_RAMP), 0.0, 1.0).astype(np.float32)
    weight = np.broadcast_to(weight, shape).copy()
    if near_ventricles is not None and ventricle_distance is not None:
        fade = np.clip((ventricle_distance - np.float32(NEAR_MM)) / np.float32(FAR_MM - NEAR_MM), 0.0, 1.0)
        weight[near_ventricles] *= fade
    return weight


def sample_patches(rng: np.random.Generator) -> Tuple[float, float]:
    """(excess over white matter, field threshold) of one scan; excess 0: no patches."""
    has = rng.random() < PATCH_SHARE
    excess = float(rng.uniform(*PATCH_EXCESS_RANGE))
    threshold = float(rng.uniform(*PATCH_THRESHOLD_RANGE))
    return (excess if has else 0.0), threshold
