"""Approximate signed distances (mm, negative inside) of the few shapes the phantom is built from."""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

Points = Tuple[np.ndarray, np.ndarray, np.ndarray]


def ellipsoid_sdf(p: Points, centre: Sequence[float], axes: Sequence[float], rotation: np.ndarray = None) -> np.ndarray:
    """Signed distance to an ellipsoid (first-order bound, exact on spheres); ``rotation`` columns are its axes."""
    q = _local(p, centre, rotation)
    axes = [float(a) for a in axes]
    k0 = np.sqrt(sum((qi / a) ** 2 for qi, a in zip(q, axes)))
    k1 = np.sqrt(sum((qi / (a * a)) ** 2 for qi, a in zip(q, axes)))
    # the bound is 0 / 0 at the centre itself, whose distance is the shortest semi-axis
    return np.where(k1 > 0, k0 * (k0 - 1.0) / np.maximum(k1, 1e-6), -min(axes))


def capsule_sdf(p: Points, a: Sequence[float], b: Sequence[float], radius: float, z_stretch: float = 1.0) -> np.ndarray:
    """Distance to the segment a-b minus ``radius``; ``z_stretch`` > 1 makes the cross-section taller than wide."""
    a = np.asarray(a, float)
    ab = np.asarray(b, float) - a
    ab[2] /= z_stretch
    abl = [float(v) for v in ab]
    rel = (p[0] - float(a[0]), p[1] - float(a[1]), (p[2] - float(a[2])) / float(z_stretch))
    t = np.clip((rel[0] * abl[0] + rel[1] * abl[1] + rel[2] * abl[2]) / max(float(ab @ ab), 1e-9), 0.0, 1.0)
    ab = abl
    d2 = (rel[0] - t * ab[0]) ** 2 + (rel[1] - t * ab[1]) ** 2 + (rel[2] - t * ab[2]) ** 2
    return np.sqrt(d2) - float(radius)


def smooth_min(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Union of two distance fields with a fillet of width ``k`` mm (polynomial smooth minimum)."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def inside(sdf: np.ndarray, width: float) -> np.ndarray:
    """Soft inside-indicator: 1 deep inside, 0 outside, a linear ramp ``width`` mm wide across the surface."""
    return np.clip(0.5 - sdf / width, 0.0, 1.0)


def rotation_matrix(yaw_deg: float = 0.0, pitch_deg: float = 0.0, roll_deg: float = 0.0) -> np.ndarray:
    """Rotation about z (yaw), then x (pitch, nodding), then y (roll)."""
    cz, sz = np.cos(np.deg2rad(yaw_deg)), np.sin(np.deg2rad(yaw_deg))
    cx, sx = np.cos(np.deg2rad(pitch_deg)), np.sin(np.deg2rad(pitch_deg))
    cy, sy = np.cos(np.deg2rad(roll_deg)), np.sin(np.deg2rad(roll_deg))
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    return ry @ rx @ rz


def frame_from_axis(axis: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A rotation whose first column is ``axis`` (normalised) and whose other two are random but orthonormal."""
    u = np.asarray(axis, float)
    u = u / max(np.linalg.norm(u), 1e-9)
    helper = rng.standard_normal(3)
    v = helper - (helper @ u) * u
    if np.linalg.norm(v) < 1e-6:
        v = np.array([1.0, 0.0, 0.0]) if abs(u[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
        v -= (v @ u) * u
    v /= np.linalg.norm(v)
    return np.stack([u, v, np.cross(u, v)], axis=1)


def _local(p: Points, centre: Sequence[float], rotation: np.ndarray = None) -> Points:
    """Coordinates of points p relative to ``centre`` in the frame whose axes are the columns of ``rotation``."""
    # python floats keep float32 arrays float32 (numpy scalars of float64 would promote them)
    d = (p[0] - float(centre[0]), p[1] - float(centre[1]), p[2] - float(centre[2]))
    if rotation is None:
        return d
    r = np.asarray(rotation, np.float32)
    return tuple(r[0, i] * d[0] + r[1, i] * d[1] + r[2, i] * d[2] for i in range(3))
