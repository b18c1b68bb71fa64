"""How much brighter each predicted lesion is than the tissue around it (deepwml_predict --min-lesion-contrast).

A reader calls a white-matter lesion on FLAIR because it is brighter than the tissue next to it. A lesion's contrast
here is its mean intensity over the median of its ring: the voxels within RING_MM in-plane on its own slices that are
neither predicted lesion nor background (at most a tenth of the median positive intensity: air, or the zero of a
stripped scan). On the real development stacks most of the shipped model's false lesions are normal tissue that is
bright over a wide area and hardly brighter than its surroundings, while the lesions it finds stand out
(benchmarks/README.md, "A lesion must stand out from the tissue around it"); a lesion with no ring is never dropped.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

#: width (mm, in-plane) of the ring of tissue each lesion is compared with
RING_MM = 3.0
#: background: voxels at or below this fraction of the median positive intensity
BACKGROUND_FRACTION = 0.1
#: (lesion, ring voxel) pairs formed at once: bounds the memory whatever the number of lesions
PAIRS_AT_ONCE = 1 << 21
#: a lesion with at least this many (border voxel, ring voxel) pairs, and more of them than voxels in its ring's box,
#: has its ring dilated in that box instead: one wide lesion of a barely trained model (half the head at a low
#: threshold) has millions of pairs, while a dilation costs about the same per voxel of its box as a pair
DILATE_FROM_PAIRS = 1 << 16
#: pairs per voxel of the ring's box above which dilating is the cheaper way
DILATE_PAIRS_PER_VOXEL = 1.0
#: a ring of fewer voxels than this gives no spread contrast (lesion_spreads)
MIN_RING_VOXELS = 5
#: arrays of at least this many values are partitioned at two ranks for their median (_median)
ONE_RANK_MAX = 1 << 20
#: the smallest median absolute deviation (of log intensities) a spread contrast divides by
MIN_LOG_SPREAD = 1e-6


def background_floor(image: np.ndarray) -> float:
    """The intensity at or below which a voxel is background (air, a stripped scan's zero); -inf when nothing is
    positive."""
    positive = image[image > 0]
    return float(BACKGROUND_FRACTION * _median(positive)) if positive.size else -np.inf


def _median(values: np.ndarray) -> float:
    """np.median of a non-empty 1D array without NaN, the same number faster: np.partition at one middle rank (numpy's
    SIMD quickselect) is the fastest on small arrays (the lesion rings). A whole scan's values are partitioned at two
    ranks (introselect), as np.median does: the quickselect took 2.2 s against 0.09 s on a 1024x1024x22 scan
    interpolated from int16 (few distinct values in smooth runs), and only 0.01 s less on a 512x512x25 one."""
    middle = values.size // 2
    part = np.partition(values, middle if values.size < ONE_RANK_MAX else [middle - 1, middle])
    if values.size % 2:
        return part[middle]
    # np.median's mean of the two middle values, in the values' own dtype as it takes it
    return np.mean(np.array([part[:middle].max(), part[middle]], dtype=values.dtype))


def ring_radius(spacing_zyx: Sequence[float], slice_axis: int, ring_mm: float = RING_MM) -> Tuple[int, int, int]:
    """The ring's reach in voxels along each numpy axis: none along the slice axis, at least one voxel in-plane."""
    return tuple(0 if axis == slice_axis else max(1, int(round(ring_mm / float(s))))
                 for axis, s in enumerate(spacing_zyx))


def widen_box(box: Tuple[slice, ...], shape: Sequence[int], radius: Sequence[int]) -> Tuple[slice, ...]:
    """``box`` grown by ``radius`` voxels per axis, inside an array of ``shape``: a crop that holds every ring."""
    return tuple(slice(max(0, b.start - r), min(n, b.stop + r)) for b, n, r in zip(box, shape, radius))


def ring_disk(radius: Sequence[int]) -> np.ndarray:
    """An ellipse of the in-plane radii, one voxel thick along the slice axis (the axis whose radius is 0)."""
    grids = np.ogrid[tuple(slice(-r, r + 1) for r in radius)]
    inside = sum((g / r) ** 2 for g, r in zip(grids, radius) if r > 0)
    return np.asarray(inside <= 1.0)


def lesion_contrasts(image: np.ndarray, labels: np.ndarray, count: int, radius: Sequence[int],
                     floor: float = -np.inf) -> np.ndarray:
    """Per lesion 1..count of ``labels`` (on ``image``'s grid): mean intensity over its ring's median (float64;
    NaN when it has no ring). ``radius``: :func:`ring_radius`; ``floor``: :func:`background_floor` of the whole scan,
    since ``image`` may be a crop of it."""
    return lesion_measures(image, labels, count, radius, floor, spreads=False)[0]


def lesion_spreads(image: np.ndarray, labels: np.ndarray, count: int, radius: Sequence[int],
                   floor: float = -np.inf) -> np.ndarray:
    """Per lesion 1..count of ``labels``: how far its mean log intensity lies above the median log intensity of its
    ring (the ring of :func:`lesion_contrasts`), in median absolute deviations of the ring's log intensities (float64;
    NaN for a ring of fewer than MIN_RING_VOXELS voxels). Scaling the scan's intensities, or raising them to a power
    (a flatter or steeper scanner), leaves it unchanged, unlike the ratio of :func:`lesion_contrasts`."""
    return lesion_measures(image, labels, count, radius, floor, contrasts=False)[1]


def lesion_measures(image: np.ndarray, labels: np.ndarray, count: int, radius: Sequence[int], floor: float = -np.inf,
                    contrasts: bool = True, spreads: bool = True) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """(:func:`lesion_contrasts`, :func:`lesion_spreads`) of the same lesions, each None unless asked for: both read
    the same rings, which are found once (the costly part: the contrast filter with its spread bound judges every
    lesion by both, at every threshold of a postprocessing search)."""
    image = np.asarray(image, np.float32)
    raw, labels = image.ravel(), np.asarray(labels).ravel()
    voxels = np.flatnonzero((labels > 0) & (labels <= count))
    lesion = labels[voxels].astype(np.int64)
    sizes = np.bincount(lesion, minlength=count + 1)[1:]
    channels, deviations = [], []
    if contrasts:
        channels.append(raw)
        deviations.append(None)
    if spreads:
        logs = np.log(np.maximum(raw, np.finfo(np.float32).tiny))
        channels.append(logs)
        deviations.append(np.full(count, np.nan))
    ring_sizes = np.zeros(count, np.int64)
    medians = _ring_medians(channels, labels, image.shape, voxels, lesion, count, radius,
                            (raw > floor) & (labels == 0), deviations, ring_sizes)
    ratio = spread = None
    if contrasts:
        # summed voxel by voxel in the scan's order, as ndimage.mean sums them: the same float64 means
        sums = np.bincount(lesion, raw[voxels], count + 1)[1:]
        ratio = np.full(count, np.nan)
        ringed = ~np.isnan(medians[0])
        ratio[ringed] = sums[ringed] / sizes[ringed] / np.maximum(medians[0][ringed], 1e-12)
    if spreads:
        means = np.bincount(lesion, logs[voxels], count + 1)[1:] / np.maximum(sizes, 1)
        spread = (means - medians[-1]) / np.maximum(deviations[-1], MIN_LOG_SPREAD)
        spread[(ring_sizes < MIN_RING_VOXELS) | np.isnan(medians[-1])] = np.nan
    return ratio, spread


def _ring_medians(channels: Sequence[np.ndarray], labels: np.ndarray, shape: Sequence[int], voxels: np.ndarray,
                  lesion: np.ndarray, count: int, radius: Sequence[int], tissue: np.ndarray,
                  deviations: Sequence[Optional[np.ndarray]], sizes: np.ndarray) -> List[np.ndarray]:
    """Per channel (a raveled image of the scan's grid) and lesion 1..count: the median of the channel over the
    lesion's ring, as np.median takes it (NaN when empty), from the raveled ``labels`` and the lesions' ``voxels``
    (flat indices) and ``lesion`` numbers; ``tissue``: the raveled ring candidates. A channel's ``deviations`` array
    (by lesion - 1), when given, is filled with each ring's median absolute deviation, and ``sizes`` with each ring's
    voxel count."""
    # the centre lands on the lesion itself, never on tissue
    offsets = np.argwhere(ring_disk(radius)) - np.asarray(radius)
    offsets = offsets[offsets.any(axis=1)]
    in_plane = np.flatnonzero(offsets.any(axis=0))
    shape = np.asarray(shape)
    steps = np.array([int(np.prod(shape[a + 1:])) for a in range(len(shape))])
    # only the voxels on a lesion's in-plane border are shifted: a tissue voxel within reach of an inner voxel is
    # within reach of its neighbour one step towards it (same lesion, nearer), and so on until a border voxel; such
    # a step never leaves the volume, so a neighbour outside it does not make a border
    grid = labels.reshape(tuple(shape))
    edge = np.zeros(grid.shape, bool)
    for axis in in_plane:
        before, after = [slice(None)] * grid.ndim, [slice(None)] * grid.ndim
        before[axis], after[axis] = slice(None, -1), slice(1, None)
        differs = grid[tuple(before)] != grid[tuple(after)]
        edge[tuple(before)] |= differs
        edge[tuple(after)] |= differs
    border = edge.ravel()[voxels]
    medians = [np.full(count, np.nan) for _ in channels]
    dilated = _dilated_ring_medians(channels, labels, tissue, shape, lesion[border], count, radius, len(offsets), medians,
                                    deviations, sizes)
    border &= ~dilated[lesion]
    order = np.argsort(lesion[border])
    voxels, lesion = voxels[border][order], lesion[border][order]
    where = np.stack(np.unravel_index(voxels, tuple(shape)), axis=1)
    size = labels.size
    # (lesion, ring voxel) pairs as lesion * size + voxel, from a bounded number of border voxels at a time; the
    # pairs of a lesion whose border goes on in the next piece wait for it
    piece = max(1, PAIRS_AT_ONCE // max(1, len(offsets)))
    pending = np.zeros(0, np.int64)
    for start in range(0, voxels.size, piece):
        part = slice(start, start + piece)
        reached = np.ones((len(voxels[part]), len(offsets)), bool)
        for axis in in_plane:
            moved = where[part, axis, None] + offsets[:, axis]
            reached &= (moved >= 0) & (moved < shape[axis])
        target = (voxels[part, None] + offsets @ steps)[reached]
        of = np.broadcast_to(lesion[part, None], reached.shape)[reached]
        ring = tissue[target]
        # a voxel within reach of a lesion twice is in its ring once (sorted by hand: np.unique hashes, slower)
        pairs = np.sort(np.concatenate([pending, of[ring] * size + target[ring]]))
        pairs = pairs[np.diff(pairs, prepend=-1) != 0]
        last = start + piece >= voxels.size
        done = pairs < (count + 1 if last else lesion[part][-1]) * size
        for values, middle, deviation in zip(channels, medians, deviations):
            _pair_medians(pairs[done], values, middle, deviation, sizes)
        pending = pairs[~done]
    return medians


def _dilated_ring_medians(channels: Sequence[np.ndarray], labels: np.ndarray, tissue: np.ndarray, shape: np.ndarray,
                          border_lesion: np.ndarray, count: int, radius: Sequence[int], n_offsets: int,
                          medians: Sequence[np.ndarray], deviations: Sequence[Optional[np.ndarray]],
                          sizes: np.ndarray) -> np.ndarray:
    """Fill ``medians`` (per channel) of the lesions whose border voxels (``border_lesion``: their lesion numbers)
    would make more pairs than a dilation of their box costs, each ring dilated on its own; returns which lesions (by
    number, 0..count) were measured so."""
    pairs = np.bincount(border_lesion, minlength=count + 1) * n_offsets
    done = np.zeros(count + 1, bool)
    if pairs.max(initial=0) < DILATE_FROM_PAIRS:
        return done
    shape = tuple(int(n) for n in shape)
    labels, tissue = labels.reshape(shape), tissue.reshape(shape)
    disk, boxes = ring_disk(radius), ndimage.find_objects(labels, max_label=count)
    for number in np.flatnonzero(pairs >= DILATE_FROM_PAIRS):
        box = widen_box(boxes[number - 1], shape, radius)
        if pairs[number] <= DILATE_PAIRS_PER_VOXEL * np.prod([b.stop - b.start for b in box]):
            continue
        # a tissue voxel within reach of any of the lesion's voxels: the same ring as the border voxels' offsets
        ring = ndimage.binary_dilation(labels[box] == number, disk) & tissue[box]
        if ring.any():
            for values, middle, deviation in zip(channels, medians, deviations):
                ring_values = values.reshape(shape)[box][ring]
                middle[number - 1] = _median(ring_values)
                if deviation is not None:
                    deviation[number - 1] = _median(np.abs(ring_values - middle[number - 1]))
            sizes[number - 1] = np.count_nonzero(ring)
        done[number] = True
    return done


def _pair_medians(pairs: np.ndarray, values: np.ndarray, medians: np.ndarray, spreads: Optional[np.ndarray] = None,
                  sizes: Optional[np.ndarray] = None) -> None:
    """Fill ``medians`` (by lesion - 1) from sorted distinct pairs lesion * values.size + voxel; ``spreads`` /
    ``sizes``, when given, with each lesion's median absolute deviation from its median and its number of pairs."""
    lesion, value = pairs // values.size, values[pairs % values.size]
    found, first, n = np.unique(lesion, return_index=True, return_counts=True)
    middle = _grouped_medians(lesion, value, first, n)
    medians[found - 1] = middle
    if sizes is not None:
        sizes[found - 1] = n
    if spreads is not None:
        deviation = np.abs(value - np.repeat(middle, n).astype(value.dtype))
        spreads[found - 1] = _grouped_medians(lesion, deviation, first, n)


def _grouped_medians(lesion: np.ndarray, value: np.ndarray, first: np.ndarray, n: np.ndarray) -> np.ndarray:
    """The median of ``value`` within each run of equal ``lesion`` (sorted by lesion; runs at ``first``, ``n`` long),
    as np.median takes it of float32."""
    # by lesion, then by value: each value's rank sorted with its lesion (several times faster than np.lexsort)
    order = np.argsort(value)
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    value = value[order][np.sort(lesion * order.size + rank) % order.size]
    low, high = value[first + (n - 1) // 2], value[first + n // 2]
    # np.median of float32: the middle value, or the float32 mean of the two middle ones
    return np.where(n % 2 == 1, low, (low + high) / np.float32(2))
