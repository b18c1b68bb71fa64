"""A template brain's own cortex (generator v9): individual folding and a crisp grey/white boundary.

The ICBM template is an average of many brains: its gyri are those of no one and its cortex is blurred, so about
a third of its tissue is a grey/white mixture. A model trained on it saw neither a sharp cortical ribbon nor the
bright islands that real folded cortex leaves when a thick slab cuts it tangentially, and called those lesions on
real scans (six false components per true one at the cortex). Here each subject's cortical shell is displaced by
short sinusoidal waves (12-24 mm, so gyri bend and split differently in each subject), its CSF is gathered
into the sulci, and the grey share is sharpened around the grey/white boundary.

The parameters are drawn from a stream seeded by the subject's warp, not from the case's own stream: the folding
is a property of the subject's brain, and tuning it changes no other draw of a case (lesions, acquisition).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np

from deepwml.synthetic.warp import TemplateWarp

#: number of short displacement waves
N_FOLD_WAVES = 10
FOLD_WAVELENGTH_MM = (12.0, 24.0)
#: standard deviation (mm) of each wave's amplitude per axis; ten of them sum to about 2 mm
FOLD_AMPLITUDE_MM = 0.6
#: the displacement is full down to the first depth below the brain surface (mm) and gone beyond the second, so
#: ventricles and deep grey nuclei keep the template's shape (their distance fields are not displaced)
FOLD_DEPTH_MM = (10.0, 20.0)
#: range of the grey-share contrast about 0.5 (1 = the template as it is)
SHARPNESS = (1.5, 3.0)
#: the template's CSF share c becomes clip(0.5 + k (c - CSF_LEVEL), 0, 1), k drawn from CSF_SHARPNESS (so under
#: 0.10-0.17 it is 0, over 0.43-0.5 it is 1): averaging spread
#: each sulcus's CSF thinly over the cortex around it (a quarter of the template's grey matter holds over 18 % CSF),
#: which darkens the whole ribbon; an individual brain has CSF in the sulcus and pure grey matter beside it
CSF_LEVEL = 0.3
CSF_SHARPNESS = (2.5, 4.0)


@dataclass(frozen=True)
class Folding:
    """One subject's cortical displacement (template mm) and grey/white sharpness."""

    waves: np.ndarray
    phases: np.ndarray
    amplitudes: np.ndarray
    sharpness: float
    csf_sharpness: float

    def displace(self, q: Tuple[np.ndarray, np.ndarray, np.ndarray], hull: np.ndarray) -> Tuple[np.ndarray, ...]:
        """Template points ``q`` (z, y, x arrays) moved by the folding, weighted by depth below the surface ``hull``
        (signed distance in mm, positive outside)."""
        near, far = FOLD_DEPTH_MM
        weight = np.clip((np.float32(far) + hull) / np.float32(far - near), 0.0, 1.0).astype(np.float32)
        z, y, x = q
        out = [z.copy(), y.copy(), x.copy()]
        for wave, phase, amplitude in zip(self.waves, self.phases, self.amplitudes):
            s = weight * np.sin(np.float32(wave[0]) * x + np.float32(wave[1]) * y + np.float32(wave[2]) * z + np.float32(phase))
            for axis, a in zip((2, 1, 0), amplitude):  # amplitude is X, Y, Z
                out[axis] += np.float32(a) * s
        return tuple(out)

    def sharpen(self, grey_share: np.ndarray) -> np.ndarray:
        """The grey share (0..1) with its contrast about 0.5 raised: a crisp cortical ribbon."""
        return np.clip(np.float32(0.5) + np.float32(self.sharpness) * (grey_share - np.float32(0.5)), 0.0, 1.0)

    def gather_csf(self, csf_share: np.ndarray) -> np.ndarray:
        """The template's CSF share (0..1) gathered into the sulci: thin films gone, sulcal cores full."""
        return np.clip(np.float32(0.5) + np.float32(self.csf_sharpness) * (csf_share - np.float32(CSF_LEVEL)), 0.0, 1.0)


def sample_folding(warp: TemplateWarp) -> Folding:
    """The folding of the subject whose warp is ``warp``, from a stream seeded by the warp's phases."""
    seed = np.frombuffer(np.ascontiguousarray(warp.phases, np.float64).tobytes(), np.uint32)
    rng = np.random.default_rng(seed)
    directions = rng.standard_normal((N_FOLD_WAVES, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    wavelengths = rng.uniform(*FOLD_WAVELENGTH_MM, N_FOLD_WAVES)
    waves = directions * (2 * np.pi / wavelengths)[:, None]
    phases = rng.uniform(0, 2 * np.pi, N_FOLD_WAVES)
    amplitudes = rng.normal(0, FOLD_AMPLITUDE_MM, (N_FOLD_WAVES, 3))
    return Folding(waves, phases, amplitudes, float(rng.uniform(*SHARPNESS)), float(rng.uniform(*CSF_SHARPNESS)))
