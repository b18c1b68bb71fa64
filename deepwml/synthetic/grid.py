"""The fine sampling grid of one block of slices, and the map from image millimetres to head (anatomy) millimetres."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

import numpy as np

from deepwml.synthetic.shapes import Points


@dataclass
class Pose:
    """Where the head sits in the image frame: p_image = rotation @ p_anatomy + shift (mm, x y z)."""

    rotation: np.ndarray
    shift: np.ndarray


@dataclass
class Grid:
    """A tensor grid in image millimetres: 1D coordinates along z, y, x (numpy order) plus the head pose."""

    z: np.ndarray
    y: np.ndarray
    x: np.ndarray
    pose: Pose

    @property
    def shape(self) -> Tuple[int, int, int]:
        """(nz, ny, nx)."""
        return len(self.z), len(self.y), len(self.x)

    def points(self, block: Tuple[slice, slice, slice] = (slice(None),) * 3) -> Points:
        """Anatomy coordinates (X left, Y posterior, Z superior; mm) of the grid points in ``block``, float32."""
        r = self.pose.rotation
        dz = (self.z[block[0]] - self.pose.shift[2]).astype(np.float32)[:, None, None]
        dy = (self.y[block[1]] - self.pose.shift[1]).astype(np.float32)[None, :, None]
        dx = (self.x[block[2]] - self.pose.shift[0]).astype(np.float32)[None, None, :]
        # p_anatomy = rotation.T @ (p_image - shift): row i of rotation.T is column i of rotation
        return tuple(float(r[0, i]) * dx + float(r[1, i]) * dy + float(r[2, i]) * dz for i in range(3))  # type: ignore

    def block_around(self, lo: Sequence[float], hi: Sequence[float]) -> Tuple[slice, slice, slice]:
        """Index slices (z, y, x) of the grid points that may fall in the anatomy box lo..hi (mm, X Y Z)."""
        corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])], float)
        img = corners @ self.pose.rotation.T + self.pose.shift
        out = []
        for coords, axis in ((self.z, 2), (self.y, 1), (self.x, 0)):
            i0 = int(np.searchsorted(coords, img[:, axis].min(), side="left"))
            i1 = int(np.searchsorted(coords, img[:, axis].max(), side="right"))
            out.append(slice(max(0, i0 - 1), min(len(coords), i1 + 1)))
        return tuple(out)  # type: ignore[return-value]


def is_empty(block: Tuple[slice, slice, slice]) -> bool:
    """True when an index block holds no points."""
    return any(s.stop <= s.start for s in block)
