"""Lesion boundaries by in-plane erosion and the 95th-percentile Hausdorff distance in world millimetres.

As in the WMH challenge: boundary = mask minus its per-slice 3×3 erosion (the image border counts as foreground,
ITK's default, so a lesion cut by the border has no boundary there); boundary voxel centres are mapped to world
coordinates with the full geometry (anisotropic spacing and oblique direction); HD95 is the larger of the two
directed 95th percentiles of nearest-neighbour distances.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from deepwml.imageio import Geometry


def inplane_structure(slice_axis: int) -> np.ndarray:
    """A 3×3 square in the slice plane, one voxel thick along numpy axis ``slice_axis``."""
    shape = [3, 3, 3]
    shape[slice_axis] = 1
    return np.ones(shape, dtype=bool)


def boundary(mask: np.ndarray, slice_axis: int) -> np.ndarray:
    """Voxels of ``mask`` removed by one in-plane 3×3 erosion (per slice, never across slices)."""
    eroded = ndimage.binary_erosion(mask, structure=inplane_structure(slice_axis), border_value=1)
    return mask & ~eroded


def boundary_points_mm(mask: np.ndarray, geometry: Geometry) -> np.ndarray:
    """World coordinates (N, 3) in mm of the boundary voxel centres of ``mask``."""
    index_zyx = np.argwhere(boundary(mask, geometry.slice_axis_numpy))
    if len(index_zyx) == 0:
        # a mask filling whole slices has no boundary inside the image; its voxels stand in so HD stays defined
        index_zyx = np.argwhere(mask)
    return geometry.index_to_world(index_zyx[:, ::-1])


def directed_distances(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Distance from every point of ``source`` to its nearest point of ``target``."""
    distances, _ = cKDTree(target).query(source, k=1)
    return distances


def hausdorff_percentile(reference: np.ndarray, prediction: np.ndarray, geometry: Geometry, q: float = 95.0) -> float:
    """Max of the two directed q-th percentile boundary distances (mm); NaN when either mask is empty."""
    if not reference.any() or not prediction.any():
        return float("nan")
    ref_points = boundary_points_mm(reference, geometry)
    pred_points = boundary_points_mm(prediction, geometry)
    return float(
        max(
            np.percentile(directed_distances(ref_points, pred_points), q),
            np.percentile(directed_distances(pred_points, ref_points), q),
        )
    )
