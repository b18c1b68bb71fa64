"""The smooth map from one synthetic subject's anatomy millimetres to the brain template's (deepwml.synthetic.template_brain).

An affine part (head size, a few per cent of anisotropy, a few degrees of rotation) plus a sum of a few long
sinusoidal displacements (40-90 mm wavelengths, a few mm): every subject drawn from the one template brain has its
own shape, while the map stays smooth enough to be interpolated linearly from a 2 mm grid.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np

from deepwml.synthetic.shapes import Points, rotation_matrix

#: number of sinusoidal displacement components
N_WAVES = 6


@dataclass(frozen=True)
class TemplateWarp:
    """p_template = matrix @ (p - centre) + centre + sum_k amplitude_k sin(wave_k . p + phase_k) (mm, X Y Z)."""

    matrix: np.ndarray
    centre: np.ndarray
    waves: np.ndarray
    phases: np.ndarray
    amplitudes: np.ndarray
    #: how far (mm) the ventricle walls move out (atrophy) or in
    ventricle_mm: float
    #: 0..1: how much the sulci widen (atrophy)
    sulcal_widening: float

    def to_template(self, p: Points) -> Points:
        """Template coordinates of anatomy points ``p`` (arrays X, Y, Z of one shape, float32)."""
        rel = [c - np.float32(o) for c, o in zip(p, self.centre)]
        out = [sum(np.float32(self.matrix[i, j]) * rel[j] for j in range(3)) + np.float32(self.centre[i]) for i in range(3)]
        for wave, phase, amplitude in zip(self.waves, self.phases, self.amplitudes):
            s = np.sin(sum(np.float32(wave[j]) * p[j] for j in range(3)) + np.float32(phase))
            for i in range(3):
                out[i] = out[i] + np.float32(amplitude[i]) * s
        return tuple(out)  # type: ignore[return-value]

    def to_anatomy(self, q: np.ndarray, iterations: int = 6) -> np.ndarray:
        """Anatomy coordinates (N, 3) of template points ``q`` (N, 3): the affine inverse, corrected by fixed-point steps."""
        q = np.atleast_2d(np.asarray(q, float))
        inverse = np.linalg.inv(self.matrix)
        # the first guess corrects by the displacement at the origin (kept: the shipped models' data were drawn so)
        p = (q - self.centre - self._displacement(np.zeros_like(q))) @ inverse.T + self.centre
        for _ in range(iterations):
            # the displacement is a few mm over tens of mm, so this contraction converges quickly
            p = (q - self.centre - self._displacement(p)) @ inverse.T + self.centre
        return p

    def direction_to_anatomy(self, v: np.ndarray) -> np.ndarray:
        """A template direction (3,) as an anatomy direction, unit length (the affine part's inverse)."""
        d = np.linalg.solve(self.matrix, np.asarray(v, float))
        return d / max(np.linalg.norm(d), 1e-9)

    def _displacement(self, p: np.ndarray) -> np.ndarray:
        """The sinusoidal displacement (N, 3) at anatomy points (N, 3)."""
        return np.sin(p @ self.waves.T + self.phases) @ self.amplitudes


def sample_warp(rng: np.random.Generator, size: float, centre: Tuple[float, float, float], ventricle_scale: float, atrophy: float) -> TemplateWarp:
    """A subject's warp: ``size`` scales the head, ``ventricle_scale`` (0.7-1.9) moves the ventricle walls."""
    stretch = rng.uniform(0.94, 1.06, 3)
    rotation = rotation_matrix(rng.normal(0, 3.0), rng.normal(0, 3.0), rng.normal(0, 2.0))
    # anatomy -> template is the inverse of template -> anatomy = rotation @ diag(size * stretch)
    matrix = np.diag(1.0 / (size * stretch)) @ rotation.T
    directions = rng.standard_normal((N_WAVES, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    wavelengths = rng.uniform(40.0, 90.0, N_WAVES)
    waves = directions * (2 * np.pi / wavelengths)[:, None]
    phases = rng.uniform(0, 2 * np.pi, N_WAVES)
    amplitudes = rng.normal(0, 1.3, (N_WAVES, 3))
    # the template's ventricles are those of a young adult; they grow with age and disease
    ventricle_mm = float(np.clip(3.5 * (ventricle_scale - 1.0), -1.0, 4.0))
    return TemplateWarp(matrix, np.asarray(centre, float), waves, phases, amplitudes, ventricle_mm, float(np.clip(atrophy, 0.0, 1.0)))
