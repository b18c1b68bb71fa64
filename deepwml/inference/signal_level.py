"""Where a scan's intensities start: the value of no signal, which deepwml_predict measures from.

Three steps of prediction read intensities as ratios or fill with 0: skull stripping sets everything outside the brain
to 0 (the background of the skull-stripped scans the lesion model learned), and the lesion contrast filter and the
cortex bound compare a lesion's brightness with its surroundings as a ratio. They assume what a scanner stores, a
magnitude image whose 0 is no signal; the networks z-score their input and do not care. A scan stored with an offset,
or shared z-scored (intensities around 0, the background negative), broke them: measured before this module, adding
1000 to a real brain's 22-slice stack moved its lesion volume from 12.15 to 8.49 ml, subtracting 2000 (every voxel
negative) left 0.01 ml, and its z-scored copy gave 14.21 ml. So a scan whose background (the air around the head,
found by Otsu's threshold) lies clearly off 0 is shifted to start there when read; a scan whose air lies near 0,
stored as magnitude (noise above 0) or signed (noise around 0), as every scanner's and every generator scan do
(within 3 % of the intensity range), is left exactly as stored (benchmarks/README.md, "Intensities as stored").
"""
from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple, Optional

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
#: at most this many voxels are read; a strided sample keeps it deterministic and fast
_SAMPLE = 200_000


def no_signal_level(array: np.ndarray) -> float:
    """The intensity of no signal in ``array``: 0 when its background lies near 0 or cannot be told (no background
    around the head), else the background's level (a stored offset, a z-scored scan's air, a stripped scan's fill)."""
    array = np.asarray(array)
    flat = array.ravel()
    sample = flat[:: max(1, flat.size // _SAMPLE)].astype(np.float64)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return 0.0
    lowest = float(sample.min())
    fill = sample == lowest
    if FILL_SHARE <= fill.mean() < 1.0:
        return _fill_level(array, lowest, sample[~fill])
    background = background_level(sample)
    # near 0, or no background around the head: in a scan cropped to the brain the dark class is the darkest tissue,
    # whose level is no zero of anything
    if background is None or background.near_zero or not surrounds(array, background.threshold):
        return 0.0
    # off 0 (an offset or z-scored copy of a magnitude image, as shared data are): the air's floor is where 0 was
    return background.floor


def _fill_level(array: np.ndarray, fill: float, rest: np.ndarray) -> float:
    """no_signal_level of a scan whose lowest value ``fill`` is held by many voxels: a skull-stripped scan's background
    (its no signal, wherever it lies), or padding outside the field of view (-1024 around a magnitude image, whose
    own air, near 0 and around the head where the padding leaves the edges or just inside a padding that frames
    them all, is its no signal)."""
    background = background_level(rest)
    if background is not None and background.near_zero and (
            surrounds(array, background.threshold, without=fill) or borders(array, fill, background.threshold)):
        return 0.0
    span = background.span if background is not None else 0.0
    # a fill that does not surround the head is the darkest tissue of a scan cropped to it (or of a phantom)
    return 0.0 if abs(fill) <= NEAR_ZERO_SHARE * span or not surrounds(array, fill) else fill


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
    longest = sorted(np.argsort(array.shape)[-2:])
    values = np.concatenate([np.take(array, index, axis=axis).ravel() for axis in longest for index in (0, -1)])
    keep = np.isfinite(values) if without is None else np.isfinite(values) & (values != without)
    values = values[keep]
    return values.size > 0 and float(np.mean(values <= threshold)) >= EDGE_SHARE


def borders(array: np.ndarray, fill: float, threshold: float) -> bool:
    """Whether ``fill`` frames every edge of ``array``'s planes and at least EDGE_SHARE of the voxels next to it in
    those planes lie at or below ``threshold``: padding around a scan's own air (a stripped brain meets its fill
    with tissue); False when an edge voxel holds anything else (surrounds judges those)."""
    longest = sorted(np.argsort(array.shape)[-2:])
    if any(np.any(np.take(array, index, axis=axis) != fill) for axis in longest for index in (0, -1)):
        return False
    padding = array == fill
    inside = np.zeros_like(padding)
    for axis in longest:  # voxels one step from the padding within a plane, not padding themselves
        ahead = [slice(None)] * array.ndim
        behind = [slice(None)] * array.ndim
        ahead[axis], behind[axis] = slice(1, None), slice(None, -1)
        inside[tuple(ahead)] |= padding[tuple(behind)]
        inside[tuple(behind)] |= padding[tuple(ahead)]
    values = array[inside & ~padding]
    return values.size > 0 and float(np.mean(values <= threshold)) >= EDGE_SHARE


def from_no_signal(image: Image) -> Image:
    """``image`` with its no-signal level moved to 0 (float32); the same object when it starts at 0 already."""
    return shifted(image, no_signal_level(image.array))


def shifted(image: Image, level: float) -> Image:
    """``image`` with ``level`` subtracted (float32); the same object for a level of 0."""
    if level == 0.0:
        return image
    return replace(image, array=np.asarray(image.array, dtype=np.float32) - np.float32(level))


#: how level_note begins: a resumed run finds the note of its earlier run by it (kept_level_note)
LEVEL_NOTE_START = "intensities start at "


def level_note(level: float) -> str:
    """What summary.csv's acquisition_warning says of a scan measured from ``level`` rather than 0; '' for 0."""
    if level == 0.0:
        return ""
    return (f"{LEVEL_NOTE_START}{level:.4g}, not 0 (stored with an offset, or z-scored?): the lesion filters and "
            "skull stripping measured them from there")


def kept_level_note(warning: object) -> str:
    """The level_note within an earlier run's acquisition_warning ``warning`` (its parts are '; '-separated; the note
    holds none); '' when it has none or is no text (an empty cell)."""
    if not isinstance(warning, str):
        return ""
    return next((part for part in warning.split("; ") if part.startswith(LEVEL_NOTE_START)), "")
