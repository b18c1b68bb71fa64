"""Which 2D slices (and where in them) a training batch is drawn from.

A fraction ``foreground_oversampling`` of every batch is forced to hold lesion. Those samples pick a lesion
*component* (2D, 8-connected, within one slice) uniformly over all components of the training cases and
centre the patch on it, so that slices with one tiny lesion are drawn as often per lesion as slices with a
large confluent one (sampling by lesion pixels would starve small lesions). The other samples are uniform
over all slices.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

#: 8-connected within a slice, never across slices (thick slices are segmented one at a time)
_IN_SLICE = np.zeros((3, 3, 3), dtype=bool)
_IN_SLICE[1] = True


@dataclass
class SliceIndex:
    """Every training slice and every lesion component, as flat arrays (small, cheap to send to workers)."""

    case_ids: List[str]
    slice_case: np.ndarray  # [N] case index of each slice
    slice_z: np.ndarray  # [N] index of the slice within its case
    component_slice: np.ndarray  # [M] global slice index of each lesion component
    component_centre: np.ndarray  # [M, 2] (y, x) centroid of each lesion component

    @property
    def n_slices(self) -> int:
        """Number of slices."""
        return len(self.slice_case)

    @property
    def n_components(self) -> int:
        """Number of 2D lesion components."""
        return len(self.component_slice)


def lesion_components(label: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(slice index [M], centroid (y, x) [M, 2]) of every 2D lesion component of a label [S, H, W]."""
    components, n = ndimage.label(np.asarray(label) == 1, structure=_IN_SLICE)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros((0, 2))
    z, y, x = np.nonzero(components)
    ids = components[z, y, x] - 1
    counts = np.bincount(ids, minlength=n)
    centre = np.stack([np.bincount(ids, y, n) / counts, np.bincount(ids, x, n) / counts], axis=1)
    slice_of = np.zeros(n, np.int64)
    slice_of[ids] = z  # every pixel of a component lies in the same slice
    return slice_of, centre


def build_slice_index(cases: Iterable[Tuple[str, np.ndarray]]) -> SliceIndex:
    """Index the slices and lesion components of (case id, label [S, H, W]) pairs."""
    case_ids, slice_case, slice_z, comp_slice, comp_centre = [], [], [], [], []
    offset = 0
    for k, (cid, label) in enumerate(cases):
        s = label.shape[0]
        case_ids.append(cid)
        slice_case.append(np.full(s, k))
        slice_z.append(np.arange(s))
        z, centre = lesion_components(label)
        comp_slice.append(z + offset)
        comp_centre.append(centre)
        offset += s
    cat = (lambda parts, empty: np.concatenate(parts) if parts else empty)  # noqa: E731
    return SliceIndex(
        case_ids,
        cat(slice_case, np.zeros(0, np.int64)).astype(np.int64),
        cat(slice_z, np.zeros(0, np.int64)).astype(np.int64),
        cat(comp_slice, np.zeros(0, np.int64)).astype(np.int64),
        cat(comp_centre, np.zeros((0, 2))).reshape(-1, 2),
    )


def n_foreground(batch_size: int, fraction: float, rng: np.random.Generator) -> int:
    """How many samples of a batch are forced to hold lesion; a fractional remainder is drawn at random."""
    exact = batch_size * fraction
    whole = int(np.floor(exact))
    return min(batch_size, whole + int(rng.random() < exact - whole))


def sample_slices(index: SliceIndex, batch_size: int, fraction: float,
                  rng: np.random.Generator) -> List[Tuple[int, Optional[np.ndarray]]]:
    """(global slice index, lesion centre or None) for each sample of one batch."""
    n_fg = n_foreground(batch_size, fraction, rng) if index.n_components else 0
    picks: List[Tuple[int, Optional[np.ndarray]]] = []
    for comp in rng.integers(0, max(index.n_components, 1), size=n_fg):
        picks.append((int(index.component_slice[comp]), index.component_centre[comp]))
    for s in rng.integers(0, index.n_slices, size=batch_size - n_fg):
        picks.append((int(s), None))
    return picks


def crop_box(shape: Sequence[int], patch: Sequence[int], centre: Optional[np.ndarray],
             rng: np.random.Generator) -> List[Tuple[int, int]]:
    """Per axis (start, stop) of the patch window in slice coordinates; may reach outside the slice (padded later).

    A slice smaller than the patch is centred; a larger one is cropped at random, keeping ``centre`` inside.
    """
    box = []
    for axis, (size, p) in enumerate(zip(shape, patch)):
        if size <= p:
            start = -((p - size) // 2)
        elif centre is None:
            start = int(rng.integers(0, size - p + 1))
        else:
            c = int(round(float(centre[axis])))
            # the lesion lands anywhere in the patch's inner part, but the window stays inside the slice
            lo = max(0, c - p + p // 8 + 1)
            hi = min(size - p, c - p // 8)
            start = int(rng.integers(lo, hi + 1)) if hi >= lo else int(np.clip(c - p // 2, 0, size - p))
        box.append((start, start + p))
    return box


def extract_patch(array: np.ndarray, box: Sequence[Tuple[int, int]], pad_value: float) -> np.ndarray:
    """The window ``box`` of a 2D array, padded with ``pad_value`` where it leaves the array."""
    (y0, y1), (x0, x1) = box
    h, w = array.shape
    out = np.full((y1 - y0, x1 - x0), pad_value, dtype=array.dtype)
    sy0, sy1, sx0, sx1 = max(y0, 0), min(y1, h), max(x0, 0), min(x1, w)
    out[sy0 - y0: sy1 - y0, sx0 - x0: sx1 - x0] = array[sy0:sy1, sx0:sx1]
    return out
