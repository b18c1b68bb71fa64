"""Where a scan's intensities start: the value of no signal, which deepwml_predict measures from.

Three steps of prediction read intensities as ratios or fill with 0: skull stripping sets everything outside the brain
to 0 (the background of the skull-stripped scans the lesion model learned), and the lesion contrast filter and the
cortex bound compare a lesion's brightness with its surroundings as a ratio. They assume what a scanner stores, a
magnitude image whose 0 is no signal; the networks z-score their input and care only that a stripped scan's
background lies below its brain, as it did in training. A scan stored with an offset,
or shared z-scored (intensities around 0, the background negative), broke them: measured before this module, adding
1000 to a real brain's 22-slice stack moved its lesion volume from 12.15 to 8.49 ml, subtracting 2000 (every voxel
negative) left 0.01 ml, and its z-scored copy gave 14.21 ml. So a scan whose background (the air around the head,
found by Otsu's threshold) lies clearly off 0 is shifted to start there when read; a scan whose air lies near 0,
stored as magnitude (noise above 0) or signed (noise around 0), as every scanner's and every generator scan do
(within 3 % of the intensity range), is left exactly as stored (benchmarks/README.md, "Intensities as stored"). A
skull-stripped scan normalised within its brain (its background 0 among the brain's values) keeps no level of no
signal at all: its brain's lowest values stand in for it, and its background is set there.
"""
from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple, Optional, Union

import numpy as np
from skimage.filters import threshold_otsu

from deepwml.imageio import Image

#: the intensity range runs from this percentile of the scan to HIGH_PERCENTILE
LOW_PERCENTILE = 1.0
HIGH_PERCENTILE = 99.0
#: a background level within this share of the range of 0 is 0: no offset
NEAR_ZERO_SHARE = 0.05
#: the lowest value held by at least this share of the voxels is a fill: a skull-stripped scan's background, or
#: padding outside the field of view; the rest of the scan decides whether it starts at 0
FILL_SHARE = 0.01
#: at least this share of the voxels on the planes' edges must be background for a level other than 0 (a scan with
#: air around the head: all of them; a scan cropped to the brain: its tissue)
EDGE_SHARE = 0.8
#: a most frequent value with at least this share of the rest below it is a background fill among the brain's values
#: (a stripped brain normalised within itself: about half its voxels lie below its 0)
INNER_SHARE = 0.05
#: the percentile of such a brain's values that stands in for its no signal
LOWEST_BRAIN_PERCENTILE = 0.5
#: at most this many voxels are read; a strided sample keeps it deterministic and fast
_SAMPLE = 200_000


class NoSignal(NamedTuple):
    """Where a scan's intensities start (``level``: subtracted when read) and, for a skull-stripped scan normalised
    within its brain, the fill of its background, which lies among the brain's values (set to the level when read)."""

    level: float
    fill: Optional[float] = None


def no_signal(array: np.ndarray) -> NoSignal:
    """Where ``array``'s intensities start: 0 when its background lies near 0 or cannot be told (no background around
    the head), else the background's level (a stored offset, a z-scored scan's air, a stripped scan's fill); for a
    stripped scan whose background fill lies among the brain's values (normalised within the brain), the brain's
    lowest values, and that fill."""
    array = np.asarray(array)
    flat = array.ravel()
    sample = flat[:: max(1, flat.size // _SAMPLE)].astype(np.float64)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return NoSignal(0.0)
    lowest = float(sample.min())
    fill = sample == lowest
    if FILL_SHARE <= fill.mean() < 1.0:
        return NoSignal(_fill_level(array, lowest, sample))
    inner = _inner_fill(array, sample)
    if inner is not None:
        return inner
    return NoSignal(_air_level(array, sample))


def _inner_fill(array: np.ndarray, sample: np.ndarray) -> Optional[NoSignal]:
    """NoSignal of a skull-stripped scan normalised within its brain (z-scored there, its background left at 0, as
    research pipelines share it): the most frequent value fills the background (FILL_SHARE of the voxels, EDGE_SHARE
    of the planes' edges) while INNER_SHARE of the rest lies below it. Its no signal is not stored anywhere; the
    brain's LOWEST_BRAIN_PERCENTILE (partial volume at the stripped brain's border, within a few % of a magnitude
    brain's median of 0 on three real stripped brains) stands in for it, and the fill is set there. None otherwise."""
    # the edges first: a scan with air around the head has no one value there, and is done with at little cost
    edges = edge_values(array)
    values, counts = np.unique(edges, return_counts=True)
    top = int(np.argmax(counts))
    if counts[top] < EDGE_SHARE * edges.size or not np.isfinite(values[top]):
        return None
    fill = float(values[top])
    held = sample == fill
    rest = sample[~held]
    if held.mean() < FILL_SHARE or rest.size == 0 or np.mean(rest < fill) < INNER_SHARE:
        return None
    return NoSignal(float(np.percentile(rest, LOWEST_BRAIN_PERCENTILE)), fill)


def _air_level(array: np.ndarray, sample: np.ndarray) -> float:
    """no_signal's level of a scan without a fill: its air's floor when that lies off 0 around the head, else 0."""
    background = background_level(sample)
    # near 0, or no background around the head: in a scan cropped to the brain the dark class is the darkest tissue,
    # whose level is no zero of anything
    if background is None or background.near_zero or not surrounds(array, background.threshold):
        return 0.0
    # off 0 (an offset or z-scored copy of a magnitude image, as shared data are): the air's floor is where 0 was
    return background.floor


def _fill_level(array: np.ndarray, fill: float, sample: np.ndarray) -> float:
    """no_signal's level of a scan whose lowest value ``fill`` is held by many voxels of ``sample``: a skull-stripped
    scan's background (its no signal, wherever it lies), or padding outside the field of view (-1024 around a
    magnitude image, whose own air, near 0 and around the head where the padding leaves the edges or just inside a
    padding that frames them all, is its no signal), or neither (below)."""
    rest = sample[sample != fill]
    background = background_level(rest)
    if background is not None and background.near_zero and (
            surrounds(array, background.threshold, without=fill) or borders(array, fill, background.threshold)):
        return 0.0
    span = background.span if background is not None else 0.0
    if abs(fill) <= NEAR_ZERO_SHARE * span:
        return 0.0
    if surrounds(array, fill):
        return fill
    # a lowest value that does not surround the head is the floor of an integer scan's air noise (0 on many of its
    # voxels, stored so and then z-scored), or the darkest tissue of a scan cropped to it: judged as any scan's air
    return _air_level(array, sample)


class Background(NamedTuple):
    """The dark class Otsu's threshold separates (the air of a scan with its head, the darkest tissue of a stripped
    brain): its median and LOW_PERCENTILE, the scan's LOW_PERCENTILE to HIGH_PERCENTILE range and the threshold."""

    centre: float
    floor: float
    span: float
    threshold: float

    @property
    def near_zero(self) -> bool:
        """Whether it lies near 0: a magnitude image's air (noise above 0: its floor near 0) or a signed one's (noise
        around 0: its centre)."""
        return min(abs(self.centre), abs(self.floor)) <= NEAR_ZERO_SHARE * self.span


def background_level(values: np.ndarray) -> Optional[Background]:
    """The Background of ``values`` (clipped to their range first: a hot voxel does not squeeze the histogram); None
    for values without a range."""
    low, high = np.percentile(values, [LOW_PERCENTILE, HIGH_PERCENTILE])
    if not high > low:
        return None
    clipped = np.clip(values, low, high)
    threshold = float(threshold_otsu(clipped))
    dark = clipped[clipped <= threshold]
    return Background(float(np.median(dark)), float(np.percentile(dark, LOW_PERCENTILE)), float(high - low), threshold)


def surrounds(array: np.ndarray, threshold: float, without: Optional[float] = None) -> bool:
    """Whether at least EDGE_SHARE of the voxels on the edges of ``array``'s planes (the two longest axes: a slice's
    rows and columns), those holding ``without`` left out, lie at or below ``threshold``: air (or a stripped scan's
    fill) around the head; False when no edge voxel is left."""
    values = edge_values(array)
    keep = np.isfinite(values) if without is None else np.isfinite(values) & (values != without)
    values = values[keep]
    return values.size > 0 and float(np.mean(values <= threshold)) >= EDGE_SHARE


def edge_values(array: np.ndarray) -> np.ndarray:
    """The voxels on the edges of ``array``'s planes (the two longest axes: a slice's first and last rows and
    columns), flat."""
    longest = sorted(np.argsort(array.shape)[-2:])
    return np.concatenate([np.take(array, index, axis=axis).ravel() for axis in longest for index in (0, -1)])


def borders(array: np.ndarray, fill: float, threshold: float) -> bool:
    """Whether ``fill`` frames ``array``'s planes (every edge voxel, and nothing within the box of the rest of each
    plane: padding around a field of view, not a stripped scan's background) and at least EDGE_SHARE of the voxels
    next to it in those planes lie at or below ``threshold``: padding around a scan's own air; False when an edge
    voxel holds anything else (surrounds judges those)."""
    if np.any(edge_values(array) != fill):
        return False
    longest = sorted(np.argsort(array.shape)[-2:])
    padding = array == fill
    if not _frames(padding, longest):
        return False
    inside = np.zeros_like(padding)
    for axis in longest:  # voxels one step from the padding within a plane, not padding themselves
        ahead = [slice(None)] * array.ndim
        behind = [slice(None)] * array.ndim
        ahead[axis], behind[axis] = slice(1, None), slice(None, -1)
        inside[tuple(ahead)] |= padding[tuple(behind)]
        inside[tuple(behind)] |= padding[tuple(ahead)]
    values = array[inside & ~padding]
    return values.size > 0 and float(np.mean(values <= threshold)) >= EDGE_SHARE


def _frames(padding: np.ndarray, plane_axes) -> bool:
    """Whether ``padding`` leaves a rectangle in every plane (of ``plane_axes``) that it does not enter: the box of a
    plane's other voxels holds under FILL_SHARE of padding (a stripped brain's box holds its background's corners)."""
    inside = total = 0
    slice_axis = next(a for a in range(padding.ndim) if a not in plane_axes)
    for plane in np.moveaxis(padding, slice_axis, 0):
        rows, cols = np.flatnonzero(~plane.all(axis=1)), np.flatnonzero(~plane.all(axis=0))
        if rows.size:
            box = plane[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
            inside, total = inside + int(box.sum()), total + box.size
    return total > 0 and inside < FILL_SHARE * total


def from_no_signal(image: Image) -> Image:
    """``image`` with its no-signal level moved to 0 (float32); the same object when it starts at 0 already."""
    return shifted(image, no_signal(image.array))


def shifted(image: Image, start: Union[float, NoSignal]) -> Image:
    """``image`` with its no signal ``start`` (a NoSignal, or a level) subtracted and a NoSignal's fill set to 0
    (float32); the same object for a level of 0 without a fill."""
    start = start if isinstance(start, NoSignal) else NoSignal(float(start))
    if start.level == 0.0 and start.fill is None:
        return image
    array = np.asarray(image.array, dtype=np.float32)
    out = array - np.float32(start.level)
    if start.fill is not None:
        out[array == np.float32(start.fill)] = 0.0
    return replace(image, array=out)


#: how level_note begins: a resumed run finds the note of its earlier run by it (kept_level_note)
LEVEL_NOTE_START = "intensities start at "


def level_note(start: Union[float, NoSignal]) -> str:
    """What summary.csv's acquisition_warning says of a scan measured from ``start`` (a NoSignal, or a level) rather
    than 0; '' for 0."""
    start = start if isinstance(start, NoSignal) else NoSignal(float(start))
    if start.fill is not None:
        return (f"{LEVEL_NOTE_START}{start.level:.4g}, not 0 (a skull-stripped scan normalised within the brain? its "
                f"background {start.fill:.4g} lies among the brain's values): the lesion filters and skull stripping "
                "measured them from the brain's lowest values, the background set there")
    if start.level == 0.0:
        return ""
    return (f"{LEVEL_NOTE_START}{start.level:.4g}, not 0 (stored with an offset, or z-scored?): the lesion filters and "
            "skull stripping measured them from there")


def kept_level_note(warning: object) -> str:
    """The level_note within an earlier run's acquisition_warning ``warning`` (its parts are '; '-separated; the note
    holds none); '' when it has none or is no text (an empty cell)."""
    if not isinstance(warning, str):
        return ""
    return next((part for part in warning.split("; ") if part.startswith(LEVEL_NOTE_START)), "")
