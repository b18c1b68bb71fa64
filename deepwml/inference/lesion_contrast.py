"""How much brighter each predicted lesion is than the tissue around it (deepwml_predict --min-lesion-contrast).

A reader calls a white-matter lesion on FLAIR because it is brighter than the tissue next to it. A lesion's contrast
here is its mean intensity over the median of its ring: the voxels within RING_MM in-plane on its own slices that are
neither predicted lesion nor background (at most a tenth of the median positive intensity: air, or the zero of a
stripped scan). On the real development stacks most of the shipped model's false lesions are normal tissue that is
bright over a wide area and hardly brighter than its surroundings, while the lesions it finds stand out
(benchmarks/README.md, "A lesion must stand out from the tissue around it"); a lesion with no ring is never dropped.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
from scipy import ndimage

#: width (mm, in-plane) of the ring of tissue each lesion is compared with
RING_MM = 3.0
#: background: voxels at or below this fraction of the median positive intensity
BACKGROUND_FRACTION = 0.1


def background_floor(image: np.ndarray) -> float:
    """The intensity at or below which a voxel is background (air, a stripped scan's zero); -inf when nothing is
    positive."""
    positive = image[image > 0]
    return float(BACKGROUND_FRACTION * np.median(positive)) if positive.size else -np.inf


def ring_radius(spacing_zyx: Sequence[float], slice_axis: int, ring_mm: float = RING_MM) -> Tuple[int, int, int]:
    """The ring's reach in voxels along each numpy axis: none along the slice axis, at least one voxel in-plane."""
    return tuple(0 if axis == slice_axis else max(1, int(round(ring_mm / float(s))))
                 for axis, s in enumerate(spacing_zyx))


def widen_box(box: Tuple[slice, ...], shape: Sequence[int], radius: Sequence[int]) -> Tuple[slice, ...]:
    """``box`` grown by ``radius`` voxels per axis, inside an array of ``shape``: a crop that holds every ring."""
    return tuple(slice(max(0, b.start - r), min(n, b.stop + r)) for b, n, r in zip(box, shape, radius))


def _disk(radius: Sequence[int]) -> np.ndarray:
    """An ellipse of the in-plane radii, one voxel thick along the slice axis (the axis whose radius is 0)."""
    grids = np.ogrid[tuple(slice(-r, r + 1) for r in radius)]
    inside = sum((g / r) ** 2 for g, r in zip(grids, radius) if r > 0)
    return np.asarray(inside <= 1.0)


def lesion_contrasts(image: np.ndarray, labels: np.ndarray, count: int, radius: Sequence[int],
                     floor: float = -np.inf) -> np.ndarray:
    """Per lesion 1..count of ``labels`` (on ``image``'s grid): mean intensity over its ring's median (float64;
    NaN when it has no ring). ``radius``: :func:`ring_radius`; ``floor``: :func:`background_floor` of the whole scan,
    since ``image`` may be a crop of it."""
    image = np.asarray(image, np.float32)
    out = np.full(count, np.nan)
    if count == 0:
        return out
    tissue = (image > floor) & (labels == 0)
    disk = _disk(radius)
    means = np.atleast_1d(ndimage.mean(image, labels, np.arange(1, count + 1)))
    for index, box in enumerate(ndimage.find_objects(labels, max_label=count), start=1):
        if box is None:
            continue
        box = widen_box(box, image.shape, radius)
        ring = ndimage.binary_dilation(labels[box] == index, disk) & tissue[box]
        if ring.any():
            out[index - 1] = means[index - 1] / max(float(np.median(image[box][ring])), 1e-12)
    return out
