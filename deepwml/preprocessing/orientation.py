"""Exact reorientation of a stack to [slice, row, column] by axis permutation and flips only.

The canonical layout (``Orientation``) puts the slice axis first. In-plane, the column axis is the one
closest to the patient's left-right axis (for axial and coronal stacks; the anterior-posterior axis for a
sagittal stack) and runs from patient right to patient left, as radiologists view images, so that a
horizontal flip of a slice is a left-right flip. Rows run anterior→posterior or superior→inferior.
Nothing is interpolated: an oblique stack is assigned to the nearest world axes and kept as it is.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np

from deepwml.imageio import Geometry

#: world axes in ITK's LPS convention: 0 = x (to patient left), 1 = y (to posterior), 2 = z (to superior)
WORLD_CODES = ("LR", "PA", "SI")  # (positive, negative) letter per world axis


@dataclass(frozen=True)
class Orientation:
    """How a (z, y, x) array maps onto the canonical [S, H, W] layout."""

    #: numpy axes of the original array that become S, H, W
    transpose: Tuple[int, int, int]
    #: after transposing, which of S, H, W are reversed
    flip: Tuple[bool, bool, bool]
    #: world axis (0=x, 1=y, 2=z) nearest to each of S, H, W
    world_axes: Tuple[int, int, int]

    def to_dict(self) -> Dict[str, List]:
        """JSON-ready form."""
        return {"transpose": list(self.transpose), "flip": list(self.flip), "world_axes": list(self.world_axes)}

    @classmethod
    def from_dict(cls, d: Dict[str, List]) -> "Orientation":
        """Inverse of :meth:`to_dict`."""
        return cls(tuple(int(a) for a in d["transpose"]), tuple(bool(f) for f in d["flip"]), tuple(d["world_axes"]))

    @property
    def codes(self) -> str:
        """Letters of the directions S, H, W increase toward, e.g. 'SPL' for a canonical axial stack."""
        letters = []
        for axis, name in zip(self.world_axes, "SHW"):
            positive = _desired_sign(name, axis) > 0
            letters.append(WORLD_CODES[axis][0 if positive else 1])
        return "".join(letters)


def _desired_sign(role: str, world_axis: int) -> int:
    """+1 when the canonical axis ``role`` should increase along +world_axis (LPS)."""
    # rows run toward inferior (superior at the top of the picture); everything else toward +LPS
    return -1 if role == "H" and world_axis == 2 else 1


def nearest_world_axes(direction: np.ndarray) -> Tuple[int, int, int]:
    """World axis closest to each ITK index axis, as a one-to-one assignment (handles oblique stacks)."""
    weights = np.abs(direction)
    # 3! candidates: the permutation with the largest total alignment; the first wins ties, so it is deterministic
    best = max(itertools.permutations(range(3)), key=lambda p: sum(weights[p[i], i] for i in range(3)))
    return tuple(int(a) for a in best)  # type: ignore[return-value]


def canonical_orientation(geometry: Geometry) -> Orientation:
    """The permutation and flips that bring an image of ``geometry`` to the canonical [S, H, W] layout."""
    direction = geometry.direction_matrix
    world = nearest_world_axes(direction)
    s = geometry.slice_axis
    inplane = [i for i in range(3) if i != s]
    # columns take the in-plane index axis nearest the lowest world axis: x (left-right) before y before z
    w = min(inplane, key=lambda i: world[i])
    h = inplane[0] if inplane[1] == w else inplane[1]
    roles = (("S", s), ("H", h), ("W", w))
    flip = tuple(bool(np.sign(direction[world[i], i]) != _desired_sign(role, world[i])) for role, i in roles)
    # ITK index axis i is numpy axis 2 - i
    return Orientation(transpose=(2 - s, 2 - h, 2 - w), flip=flip, world_axes=(world[s], world[h], world[w]))  # type: ignore[arg-type]


def to_canonical(array: np.ndarray, orientation: Orientation) -> np.ndarray:
    """Reorient a (z, y, x) array to [S, H, W] (a view when possible; exact)."""
    out = np.transpose(array, orientation.transpose)
    flips = tuple(k for k, f in enumerate(orientation.flip) if f)
    return np.flip(out, axis=flips) if flips else out


def from_canonical(array: np.ndarray, orientation: Orientation) -> np.ndarray:
    """Undo :func:`to_canonical`: [S, H, W] back to the original (z, y, x) order."""
    flips = tuple(k for k, f in enumerate(orientation.flip) if f)
    out = np.flip(array, axis=flips) if flips else array
    return np.transpose(out, np.argsort(orientation.transpose))


def canonical_spacing(geometry: Geometry, orientation: Orientation) -> Tuple[float, float, float]:
    """Spacing (mm) along S, H, W."""
    # numpy axis a is ITK axis 2 - a
    return tuple(geometry.spacing[2 - a] for a in orientation.transpose)  # type: ignore[return-value]


def canonical_shape(shape_zyx: Sequence[int], orientation: Orientation) -> Tuple[int, int, int]:
    """Shape of the reoriented array."""
    return tuple(int(shape_zyx[a]) for a in orientation.transpose)  # type: ignore[return-value]
