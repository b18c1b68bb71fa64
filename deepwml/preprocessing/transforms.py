"""The forward transform (raw case → normalised [C, S, H, W] slices) and its exact inverse, as prediction calls them.

Forward: reorient to the canonical layout (permutation/flips only), resample in-plane (never across slices),
compute a head mask (from channel 0), clip and z-score each channel with its own scheme. Every channel is
resampled exactly as channel 0, so all must lie on channel 0's grid. ``props`` records everything needed to go
back to the original grid (channel 0's).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from deepwml.constants import IGNORE_LABEL
from deepwml.imageio import Image
from deepwml.planning.plan import Plan
from deepwml.preprocessing.head_mask import head_mask
from deepwml.preprocessing.normalize import apply_normalization, normalization_stats
from deepwml.preprocessing.outliers import suppress_outliers
from deepwml.preprocessing.orientation import (
    Orientation,
    canonical_orientation,
    canonical_spacing,
    from_canonical,
    to_canonical,
)
from deepwml.preprocessing.resample import (
    resize_class_probabilities,
    resize_classes,
    resize_label,
    resize_slices,
    target_inplane_shape,
)
from deepwml.utils.errors import ImageError

#: version of the props layout written to CASE.json
PROPS_VERSION = 1


@dataclass
class Preprocessed:
    """One preprocessed case: image [C, S, H, W], label and head [S, H, W] (canonical layout) and the properties to undo it."""

    image: np.ndarray
    label: Optional[np.ndarray]
    head: np.ndarray
    props: Dict[str, Any]


def preprocess_arrays(image: Union[Image, Sequence[Image]], plan: Plan, label: Optional[np.ndarray] = None,
                      ignore_value: Optional[int] = None) -> Preprocessed:
    """Preprocess one case (one Image, or one per channel of the plan, channel 0 first) and keep the head mask too."""
    channels = check_channels(image, plan)
    image = channels[0]
    pp = plan.preprocessing
    geometry = image.geometry
    num_classes = plan.network.num_classes
    if label is not None:
        label = _label_to_cache_values(np.asarray(label), image, ignore_value, num_classes)
    orientation = canonical_orientation(geometry)
    spacing = canonical_spacing(geometry, orientation)
    resampled, outlier_voxels = [], 0
    for channel in channels:
        stack = to_canonical(np.asarray(channel.array, dtype=np.float32), orientation)
        stack, outliers = suppress_outliers(stack)
        outlier_voxels += 0 if outliers is None else int(outliers.sum())
        out_hw, out_spacing = target_inplane_shape(pp.inplane_mode, stack.shape[1:], spacing[1:], pp.matrix, pp.target_spacing)
        resampled.append(resize_slices(stack, out_hw, order=pp.image_order, anti_alias=pp.anti_alias))
    head = head_mask(resampled[0])
    stats = [normalization_stats(r, head, scheme, pp.clip_percentiles) for r, scheme in zip(resampled, plan.channel_schemes())]
    image_pp = np.stack([apply_normalization(r, st).astype(pp.cache_dtype) for r, st in zip(resampled, stats)])
    label_pp = None
    if label is not None:
        canonical = to_canonical(label, orientation)
        label_pp = resize_label(canonical, out_hw, pp.label_threshold) if num_classes == 2 else resize_classes(canonical, out_hw)
    props = {
        "props_version": PROPS_VERSION,
        "preprocessing_hash": plan.preprocessing_hash(),
        "geometry": geometry.to_dict(),
        "original_shape": list(image.array.shape),
        "slice_axis": geometry.slice_axis,
        "slice_axis_numpy": geometry.slice_axis_numpy,
        "orientation": orientation.to_dict(),
        "orientation_codes": orientation.codes,
        "reoriented_shape": list(stack.shape),
        "spacing_original": list(spacing),
        "shape_after_resampling": [stack.shape[0], out_hw[0], out_hw[1]],
        "spacing_after_resampling": [spacing[0], out_spacing[0], out_spacing[1]],
        "normalization": stats[0],
        "head_fraction": float(head.mean()),
        "outlier_voxels": outlier_voxels,
    }
    if len(channels) > 1:
        props["channel_normalization"] = stats
    return Preprocessed(image_pp, label_pp, head.astype(np.uint8), props)


def check_channels(image: Union[Image, Sequence[Image]], plan: Plan) -> List[Image]:
    """The plan's channels, channel 0 first; a missing or extra channel, or one off channel 0's grid, names the file."""
    channels = [image] if isinstance(image, Image) else list(image)
    if len(channels) != plan.n_channels:
        names = ", ".join(f"{i}: {c.get('name')}" for i, c in enumerate(plan.preprocessing.channels)) or "0: FLAIR"
        raise ImageError(f"{len(channels)} image channel(s) given, the plan takes {plan.n_channels} ({names})", channels[0].path)
    check_channel_grids(channels)
    return channels


def check_channel_grids(channels: Sequence[Image]) -> None:
    """Every channel lies on channel 0's grid (within rounding); the first that does not is an error naming its file."""
    for i, channel in enumerate(channels[1:], start=1):
        mismatch = channels[0].geometry.mismatches(channel.geometry)
        if mismatch:
            raise ImageError(f"channel {i} is not on the grid of channel 0 ({channels[0].path}): {'; '.join(mismatch)}; "
                             "register and resample it onto channel 0 first", channel.path)


def preprocess_case(image: Union[Image, Sequence[Image]], plan: Plan, label: Optional[np.ndarray] = None,
                    ignore_value: Optional[int] = None) -> Tuple[np.ndarray, Optional[np.ndarray], Dict[str, Any]]:
    """Raw image(s) (and label with values 0, 1 and ``ignore_value``) → (image [C,S,H,W], label uint8 [S,H,W] or None, props)."""
    result = preprocess_arrays(image, plan, label, ignore_value)
    return result.image, result.label, result.props


def revert_to_original(array_pp: np.ndarray, props: Dict[str, Any], order: int = 1) -> np.ndarray:
    """Map an [S, H, W] array back to the original (z, y, x) grid.

    Float arrays (probabilities) are resampled with spline ``order`` and returned as float32 (threshold them
    afterwards); integer or boolean arrays (masks) are resampled value by value, linearly as binary masks and
    thresholded at 0.5, and returned as uint8 with the same values.
    """
    array_pp = np.asarray(array_pp)
    expected = tuple(props["shape_after_resampling"])
    if array_pp.shape != expected:
        raise ValueError(f"array shape {array_pp.shape} does not match the preprocessed shape {expected}")
    out_hw = tuple(props["reoriented_shape"][1:])
    if array_pp.dtype == bool or np.issubdtype(array_pp.dtype, np.integer):
        back = resize_label(array_pp.astype(np.uint8), out_hw)
    else:
        back = resize_slices(array_pp, out_hw, order=order)
        if order > 1:
            # cubic splines overshoot; keep probabilities within the range they came in
            back = np.clip(back, float(array_pp.min()), float(array_pp.max()))
    back = from_canonical(back, Orientation.from_dict(props["orientation"]))
    return np.ascontiguousarray(back)


def revert_label_probabilities(probs_pp: np.ndarray, props: Dict[str, Any]) -> np.ndarray:
    """Class probabilities [S, C, H, W] of a multi-class model → its label map (uint8, argmax of the probabilities
    resampled linearly) on the original (z, y, x) grid."""
    probs_pp = np.asarray(probs_pp)
    expected = tuple(props["shape_after_resampling"])
    if probs_pp.ndim != 4 or (probs_pp.shape[0],) + probs_pp.shape[2:] != expected:
        raise ValueError(f"class probabilities of shape {probs_pp.shape} do not match the preprocessed shape {expected}")
    back = resize_class_probabilities(probs_pp, props["reoriented_shape"][1:])
    return np.ascontiguousarray(from_canonical(back, Orientation.from_dict(props["orientation"])))


def _label_to_cache_values(label: np.ndarray, image: Image, ignore_value: Optional[int], num_classes: int = 2) -> np.ndarray:
    """Map a raw label to uint8 {0 .. num_classes - 1, IGNORE_LABEL}; anything else is an error naming the file."""
    if label.shape != image.array.shape:
        raise ImageError(f"label shape {label.shape} does not match the image shape {image.array.shape}", image.path)
    out = np.zeros(label.shape, dtype=np.uint8)
    out[label == 1] = 1
    allowed = label == 1
    allowed |= label == 0
    for value in range(2, num_classes):
        is_class = label == value
        out[is_class] = value
        allowed |= is_class
    for ignore in {ignore_value, IGNORE_LABEL} - {None}:
        is_ignore = label == ignore
        out[is_ignore] = IGNORE_LABEL
        allowed |= is_ignore
    if not allowed.all():
        bad = sorted(int(v) for v in np.unique(label[~allowed]))[:5]
        classes = "background 0, lesion 1" if num_classes == 2 else f"the classes 0..{num_classes - 1}"
        raise ImageError(f"label holds values {bad} besides {classes} and the ignore label", image.path)
    return out
