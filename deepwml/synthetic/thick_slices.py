"""Thick-slice axial stacks from a fine 3D volume, as a 2D acquisition would record them.

Each slab averages the source voxels it covers along the superior-inferior axis (partial voxels weighted by
their overlap, so 6.5 mm slabs of 1 mm voxels are exact); a pixel is lesion when at least ``lesion_fraction``
of its slab is lesion. Slabs start at the lower edge of the first source voxel, one every ``thickness + gap``
mm; a last slab that would run past the end of the volume is dropped (never padded), so every slab holds
only measured tissue. In-plane the grid is kept, or resampled to ``inplane_mm`` keeping the field of view.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from deepwml.imageio import Geometry
from deepwml.preprocessing.orientation import nearest_world_axes
from deepwml.preprocessing.resample import resize_slices_reference as resize_slices
from deepwml.utils.errors import DeepWMLError

#: Spare the ≥ 40 % rule from float rounding (2 of 5 voxels must count as 40 %).
_FRACTION_TOLERANCE = 1e-5


@dataclass(frozen=True)
class SlabSpec:
    """How the simulated 2D acquisition samples the volume."""

    thickness_mm: float
    gap_mm: float = 0.0
    inplane_mm: Optional[float] = None
    lesion_fraction: float = 0.4


@dataclass
class ThickStack:
    """A simulated 2D stack: image (float32), lesion mask (uint8) and lesion fraction, numpy (slab, y, x) order."""

    image: np.ndarray
    label: np.ndarray
    fraction: np.ndarray
    geometry: Geometry


def slab_weights(n_source: int, spacing_mm: float, thickness_mm: float, gap_mm: float = 0.0) -> np.ndarray:
    """(n_slabs, n_source) weights: the share of each slab that each source voxel covers (rows sum to 1)."""
    if thickness_mm <= 0 or gap_mm < 0:
        raise DeepWMLError(f"slice thickness must be > 0 and gap >= 0 mm, got {thickness_mm} and {gap_mm}")
    extent = n_source * spacing_mm
    pitch = thickness_mm + gap_mm
    n_slabs = int(np.floor((extent - thickness_mm) / pitch + 1e-9)) + 1 if extent >= thickness_mm - 1e-9 else 0
    if n_slabs < 1:
        raise DeepWMLError(f"a {thickness_mm} mm slab does not fit in {extent:g} mm of volume")
    start = np.arange(n_slabs)[:, None] * pitch
    lo = np.arange(n_source)[None, :] * spacing_mm
    overlap = np.clip(np.minimum(start + thickness_mm, lo + spacing_mm) - np.maximum(start, lo), 0.0, None)
    return (overlap / thickness_mm).astype(np.float32)


def superior_axis_first(array: np.ndarray, geometry: Geometry) -> Tuple[np.ndarray, Geometry]:
    """Reorder a (z, y, x) array and its geometry so that ITK axes x, y, z are those nearest world x, y, z (LPS).

    Numpy axis 0 then runs superior-inferior, the axis the slabs are taken along. Axes are only permuted, never
    flipped or interpolated: every voxel keeps its world position.
    """
    world = nearest_world_axes(geometry.direction_matrix)
    order = tuple(world.index(w) for w in range(3))  # the ITK index axis that becomes x, y, z
    if order == (0, 1, 2):
        return array, geometry
    new = Geometry(
        tuple(geometry.size[i] for i in order),
        tuple(geometry.spacing[i] for i in order),
        geometry.origin,
        tuple(geometry.direction_matrix[:, list(order)].ravel()),
    )
    return np.transpose(array, tuple(2 - i for i in reversed(order))), new


def thick_slice_stack(image: np.ndarray, label: np.ndarray, geometry: Geometry, spec: SlabSpec) -> ThickStack:
    """Average ``image`` across axial slabs and label each pixel lesion when ≥ ``spec.lesion_fraction`` of its slab is."""
    if image.shape != label.shape or image.shape != tuple(reversed(geometry.size)):
        raise DeepWMLError(f"image {image.shape}, label {label.shape} and geometry size {geometry.size} disagree")
    lesion, _ = superior_axis_first(label == 1, geometry)
    image, geometry = superior_axis_first(image, geometry)
    weights = slab_weights(image.shape[0], geometry.spacing[2], spec.thickness_mm, spec.gap_mm)
    stack = np.tensordot(weights, image.astype(np.float32, copy=False), axes=(1, 0))
    fraction = np.tensordot(weights, lesion.astype(np.float32), axes=(1, 0))
    spacing = list(geometry.spacing)
    offset = [0.0, 0.0, spec.thickness_mm / 2 / spacing[2] - 0.5]  # continuous source index of slab 0's centre
    if spec.inplane_mm:
        extent = np.asarray(image.shape[1:], dtype=float) * [spacing[1], spacing[0]]  # (y, x) in mm
        out_hw = np.maximum(1, np.round(extent / spec.inplane_mm)).astype(int)
        stack = resize_slices(stack, out_hw, order=1)
        fraction = resize_slices(fraction, out_hw, order=1)
        new_yx = extent / out_hw
        # outer pixel edges stay put (resize_slices aligns edges): the first centre moves by half the size change
        for axis, new in ((1, new_yx[0]), (0, new_yx[1])):
            offset[axis] = 0.5 * new / spacing[axis] - 0.5
            spacing[axis] = float(new)
    origin = geometry.index_to_world(np.asarray([offset]))[0]
    spacing[2] = spec.thickness_mm + spec.gap_mm
    size = (stack.shape[2], stack.shape[1], stack.shape[0])
    out_geometry = Geometry(size, tuple(spacing), tuple(origin), geometry.direction)
    mask = (fraction >= spec.lesion_fraction - _FRACTION_TOLERANCE).astype(np.uint8)
    return ThickStack(stack.astype(np.float32), mask, fraction.astype(np.float32), out_geometry)
