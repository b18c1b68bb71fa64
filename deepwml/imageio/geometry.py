"""Image geometry (ITK convention) and the slice axis of a 2D-acquired stack."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import numpy as np


#: a volume whose every spacing is at most this (mm) is a 3D acquisition (2D FLAIR slices are 3 mm or more): it has
#: no slice axis of its own, and is read in axial planes whatever plane it was acquired in, as the 2D models learned
#: them (a sagittal 3D FLAIR of 1.2 mm partitions is not read sagittally)
THREE_D_MAX_SPACING_MM = 1.5


@dataclass(frozen=True)
class Geometry:
    """Size, spacing, origin and direction in ITK (x, y, z) index order; direction is row-major 3×3."""

    size: Tuple[int, int, int]
    spacing: Tuple[float, float, float]
    origin: Tuple[float, float, float]
    direction: Tuple[float, ...] = field(default=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", tuple(int(s) for s in self.size))
        object.__setattr__(self, "spacing", tuple(float(s) for s in self.spacing))
        object.__setattr__(self, "origin", tuple(float(s) for s in self.origin))
        object.__setattr__(self, "direction", tuple(float(s) for s in self.direction))

    @property
    def direction_matrix(self) -> np.ndarray:
        """Direction cosines as a 3×3 matrix whose columns are the index axes in world (LPS) space."""
        return np.asarray(self.direction, dtype=float).reshape(3, 3)

    @property
    def slice_axis(self) -> int:
        """ITK index axis (0=x, 1=y, 2=z) with the coarsest spacing; ties, and every axis of a 3D acquisition (no
        spacing over THREE_D_MAX_SPACING_MM), go to the axis closest to world z."""
        spacing = np.asarray(self.spacing)
        if spacing.max() <= THREE_D_MAX_SPACING_MM:
            candidates = np.arange(3)
        else:
            candidates = np.flatnonzero(np.isclose(spacing, spacing.max(), rtol=1e-3))
        if len(candidates) == 1:
            return int(candidates[0])
        # isotropic, tied or 3D: the axis pointing most along the world's superior-inferior axis (axial slices)
        alignment = np.abs(self.direction_matrix[2, candidates])
        return int(candidates[int(np.argmax(alignment))])

    @property
    def slice_axis_numpy(self) -> int:
        """The slice axis in the numpy (z, y, x) order that SimpleITK arrays use."""
        return 2 - self.slice_axis

    @property
    def numpy_spacing(self) -> Tuple[float, float, float]:
        """Spacing (mm) along the numpy (z, y, x) axes of the image's array."""
        return self.spacing[::-1]

    @property
    def in_plane_pixels(self) -> Dict[int, float]:
        """The pixel size (mm) by numpy axis for the two axes that are not the slice axis (``inplane_spacing``: the
        same two in ITK order), as the in-plane filters of an array take them."""
        axis = self.slice_axis_numpy
        return {dim: s for dim, s in enumerate(self.numpy_spacing) if dim != axis}

    @property
    def slice_thickness(self) -> float:
        """Spacing along the slice axis, in mm."""
        return self.spacing[self.slice_axis]

    @property
    def inplane_spacing(self) -> Tuple[float, float]:
        """The two in-plane spacings (ITK order, slice axis removed), in mm."""
        return tuple(s for i, s in enumerate(self.spacing) if i != self.slice_axis)  # type: ignore[return-value]

    @property
    def n_slices(self) -> int:
        """Number of slices along the slice axis."""
        return self.size[self.slice_axis]

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres."""
        return float(np.prod(self.spacing)) / 1000.0

    def index_to_world(self, index_xyz: np.ndarray) -> np.ndarray:
        """Map (N, 3) continuous ITK indices (x, y, z) to world coordinates in mm."""
        index_xyz = np.asarray(index_xyz, dtype=float)
        return (index_xyz * np.asarray(self.spacing)) @ self.direction_matrix.T + np.asarray(self.origin)

    def mismatches(self, other: "Geometry", tol: float = 1e-3) -> List[str]:
        """Describe every way ``other`` is not on the same grid as ``self`` (empty list: same grid)."""
        problems = []
        if self.size != other.size:
            problems.append(f"size {other.size} != {self.size}")
        if not np.allclose(self.spacing, other.spacing, rtol=tol, atol=tol):
            problems.append(f"spacing {_fmt(other.spacing)} != {_fmt(self.spacing)}")
        # origin tolerance scales with the voxel size: headers round positions differently
        if not np.allclose(self.origin, other.origin, atol=tol * max(1.0, max(self.spacing)) * 10):
            problems.append(f"origin {_fmt(other.origin)} != {_fmt(self.origin)}")
        if not np.allclose(self.direction, other.direction, atol=tol):
            problems.append(f"direction {_fmt(other.direction)} != {_fmt(self.direction)}")
        return problems

    def to_dict(self) -> Dict[str, list]:
        """JSON-ready form."""
        return {
            "size": list(self.size),
            "spacing": list(self.spacing),
            "origin": list(self.origin),
            "direction": list(self.direction),
        }

    @classmethod
    def from_dict(cls, d: Dict[str, list]) -> "Geometry":
        """Inverse of :meth:`to_dict`."""
        return cls(tuple(d["size"]), tuple(d["spacing"]), tuple(d["origin"]), tuple(d["direction"]))

    @classmethod
    def from_sitk(cls, image) -> "Geometry":
        """Geometry of a 3D SimpleITK image (or of an ImageFileReader after ReadImageInformation)."""
        return cls(tuple(image.GetSize()), tuple(image.GetSpacing()), tuple(image.GetOrigin()), tuple(image.GetDirection()))

    def apply_to(self, image) -> None:
        """Stamp spacing, origin and direction onto a SimpleITK image of the same size."""
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"
