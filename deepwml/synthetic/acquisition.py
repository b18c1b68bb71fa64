"""The scanner: FLAIR contrast per vendor and field strength, slice stack geometry, bias field, noise level.

Intensities are relative to normal white matter (1.0) until :func:`deepwml.synthetic.intensity.store` scales them
to the stored range.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Tuple

import numpy as np

from deepwml.imageio import Geometry
from deepwml.synthetic.anatomy import Tissues
from deepwml.synthetic.centres import Centre, matrix_for_spacing
from deepwml.synthetic.mimics import Mimics
from deepwml.synthetic.shapes import rotation_matrix


@dataclass(frozen=True)
class Contrast:
    """FLAIR signal of each tissue relative to white matter, and the scanner's noise, bias and storage."""

    grey: float
    deep_grey: float
    csf: float
    lesion: float
    rim: float
    fat: float
    skin: float
    bone: float
    marrow: float
    soft: float
    #: Gaussian noise of each complex channel relative to white matter, for a 0.94 × 0.94 × 6.5 mm voxel
    noise: float
    #: standard deviation of the log bias field, and how much brighter the centre of the head is (3T dielectric effect)
    bias: float
    centre_brightening: float
    #: stored value of white matter (int16, as DICOM stores it; vendors differ by an order of magnitude)
    scale: float
    #: CSF whose inflow defeats the inversion pulse (posterior fossa, third and fourth ventricle), and sinus mucosa
    flow: float = 1.2
    mucosa: float = 1.45
    #: corticospinal tract and brainstem relative to white matter (normal, never lesion)
    tract: float = 1.0
    stem: float = 1.0
    #: limbic grey matter relative to other grey matter, and peritrigonal white matter relative to white matter
    #: (normal, never lesion; template brains only, generator v10: deepwml.synthetic.limbic)
    limbic: float = 1.0
    terminal: float = 1.0
    #: the choroid plexus relative to white matter (normal, never lesion; template brains only, generator v12)
    choroid: float = 1.0


#: Typical contrasts; each patient's scan varies around these.
_BASE = {
    ("GE", 3.0): Contrast(1.18, 1.07, 0.24, 1.68, 1.36, 1.25, 0.75, 0.06, 0.55, 0.65, 0.065, 0.13, 0.12, 1000.0),
    ("Siemens", 3.0): Contrast(1.21, 1.09, 0.22, 1.70, 1.38, 1.35, 0.70, 0.05, 0.60, 0.60, 0.060, 0.15, 0.15, 330.0),
    ("Philips", 1.5): Contrast(1.13, 1.05, 0.34, 1.66, 1.30, 1.50, 0.80, 0.08, 0.65, 0.70, 0.085, 0.10, 0.0, 190.0),
    ("GE", 1.5): Contrast(1.13, 1.05, 0.35, 1.66, 1.30, 1.40, 0.80, 0.08, 0.60, 0.70, 0.090, 0.09, 0.0, 650.0),
}

#: Share of scans with the grey/white contrast of 3D and some 3 T FLAIR protocols (generator v7): normal cortex as
#: bright as many lesions, so that a model cannot call every bright blob a lesion (real 3D FLAIR: cortex at the
#: 97th brain percentile is about 1.2 x the brain median, lesions 1.20-1.34 x; benchmarks/real_dev.py --contrast).
HIGH_GREY_SHARE = 0.3

#: Range of the limbic grey matter's signal relative to other cortex, and of the peritrigonal white matter's relative
#: to white matter (generator v10). Healthy limbic cortex is brighter than neocortex on FLAIR (Hirai et al. 2000);
#: the v9 model's false positives near there on the real development scans are 1.17-1.31 x the brain median.
LIMBIC_RANGE = (1.03, 1.2)
TERMINAL_RANGE = (1.0, 1.12)
#: Range of the choroid plexus's signal relative to white matter (generator v12): on FLAIR it is iso- to clearly
#: hyperintense, brighter with the cysts and xanthogranulomas common in older adults, so some glomera are as bright as
#: lesions (real_dev.py --errors: the v11 model's largest false positives on patient07, 1.25 x the brain median).
CHOROID_RANGE = (0.9, 1.5)

#: Reference voxel volume (mm³) for :attr:`Contrast.noise`.
_REFERENCE_VOXEL = 0.9375 * 0.9375 * 6.5


def sample_contrast(centre: Centre, rng: np.random.Generator) -> Contrast:
    """The FLAIR contrast of one scan at ``centre``: the vendor's typical values with patient-to-patient spread."""
    base = _BASE[(centre.vendor, centre.field_strength)]
    j = lambda v, sd: float(v + rng.normal(0, sd))  # noqa: E731
    # grey/white contrast varies more between protocols (and 2D vs 3D FLAIR) than between patients of one site
    high_grey = rng.random() < HIGH_GREY_SHARE
    return replace(
        base,
        grey=float(base.grey + (rng.uniform(0.16, 0.40) if high_grey else rng.uniform(-0.02, 0.16))),
        deep_grey=j(base.deep_grey, 0.02),
        csf=float(np.clip(j(base.csf, 0.07), 0.18, 0.65)),
        lesion=j(base.lesion, 0.07),
        rim=j(base.rim, 0.04),
        fat=j(base.fat, 0.1),
        noise=float(base.noise * rng.uniform(0.85, 1.15)),
        bias=float(base.bias * rng.uniform(0.75, 1.25)),
        centre_brightening=float(base.centre_brightening * rng.uniform(0.5, 1.5)),
        scale=float(base.scale * rng.uniform(0.75, 1.3)),
        flow=float(rng.uniform(0.8, 1.6)),
        mucosa=float(rng.uniform(1.15, 1.75)),
        tract=float(rng.uniform(0.98, 1.16)),
        stem=float(rng.uniform(0.97, 1.12)),
        limbic=float(rng.uniform(*LIMBIC_RANGE)),
        terminal=float(rng.uniform(*TERMINAL_RANGE)),
        choroid=float(rng.uniform(*CHOROID_RANGE)),
    )


@dataclass(frozen=True)
class Stack:
    """How the slices were acquired and stored."""

    n_slices: int
    thickness: float
    spacing: float
    matrix: Tuple[int, int]  # (ny, nx)
    tilt_deg: float
    centre_world: Tuple[float, float, float]
    storage: str

    @property
    def work_factor(self) -> int:
        """Integer in-plane factor between the synthesis grid (about 1 mm) and the stored matrix."""
        return max(1, int(round(0.95 / self.spacing)))

    @property
    def sub_slices(self) -> int:
        """Thin sub-slices averaged into one stored slice (at most 1.6 mm each)."""
        return max(2, int(np.ceil(self.thickness / 1.6)))

    def geometry(self) -> Geometry:
        """Geometry of the stored image, with the oblique direction cosines and the centre's voxel order."""
        ny, nx = self.matrix
        size = np.array([nx, ny, self.n_slices])
        spacing = np.array([self.spacing, self.spacing, self.thickness])
        direction = rotation_matrix(pitch_deg=self.tilt_deg)
        origin = np.asarray(self.centre_world) - direction @ ((size - 1) / 2 * spacing)
        if self.storage == "RAS":
            # converters such as dcm2niix store x and y reversed: index 0 is the patient's right-anterior corner
            origin = origin + direction @ (np.array([nx - 1, ny - 1, 0]) * spacing)
            direction = direction @ np.diag([-1.0, -1.0, 1.0])
        return Geometry(tuple(size), tuple(spacing), tuple(origin), tuple(direction.ravel()))


def sample_stack(centre: Centre, rng: np.random.Generator, head_width_mm: float) -> Stack:
    """Thickness, spacing, matrix, slice count and tilt for one patient, from the centre's own protocol."""
    thickness = float(rng.choice(centre.thicknesses_mm))
    spacing = float(rng.choice(centre.spacings_mm))
    n_slices = int(np.clip(round(rng.normal(centre.mean_slices, 1.5)), 17, 30))
    m = matrix_for_spacing(spacing)
    k = max(1, int(round(0.95 / spacing)))
    quantum = 4 * k
    phase = float(rng.choice(centre.phase_fov))
    nx = int(round(m * phase / quantum) * quantum)
    if nx * spacing < head_width_mm + 12:
        nx = m  # a rectangular field of view must still hold the head, or it would wrap
    tilt = float(rng.uniform(6, 18) * rng.choice([-1, 1])) if rng.random() < centre.p_oblique else 0.0
    centre_world = (float(rng.normal(0, 3)), float(rng.normal(15, 5)), float(rng.normal(20, 10)))
    return Stack(n_slices, thickness, spacing, (m, nx), tilt, centre_world, centre.storage)


def mix(t: Tissues, m: Mimics, lesion: np.ndarray, lesion_contrast: np.ndarray, c: Contrast) -> np.ndarray:
    """FLAIR signal (white matter = 1) of the fine voxels: each tissue painted over the ones that enclose it."""

    def paint(img: np.ndarray, frac: np.ndarray, value) -> np.ndarray:
        """Cover ``frac`` of each voxel with a tissue of signal ``value``."""
        return img + frac * (value - img)

    img = t.head * np.float32(c.skin)
    img = paint(img, t.fat, np.float32(c.fat))
    img = paint(img, t.skull, np.float32(c.bone))
    img = paint(img, t.diploe * t.skull, np.float32(c.marrow))
    soft = np.clip(np.float32(c.soft) + np.float32(0.3) * t.texture, 0.15, 1.4)
    csf = np.float32(c.csf) + m.flow * np.float32(c.flow - c.csf)
    inner = csf + t.soft * (soft - csf)
    img = paint(img, t.intracranial, inner)
    img = paint(img, m.sinus_air, np.float32(c.bone))
    img = paint(img, m.mucosa, np.float32(c.mucosa))
    img = paint(img, m.orbit_fat, np.clip(np.float32(c.fat) + np.float32(0.15) * t.texture, 0.9, 1.9))
    img = paint(img, m.eye, np.float32(c.csf))  # the vitreous is nulled like CSF
    tissue = np.float32(1.0) + t.tract * np.float32(c.tract - 1.0) + t.stem * np.float32(c.stem - 1.0)
    grey = np.float32(c.grey)
    if t.limbic is not None:
        tissue = tissue + t.terminal * np.float32(c.terminal - 1.0)
        grey = grey * (np.float32(1.0) + t.limbic * np.float32(c.limbic - 1.0))
    tissue = paint(tissue, t.grey, grey)
    tissue = paint(tissue, t.deep_grey * (1.0 - t.grey), np.float32(c.deep_grey))
    tissue = paint(tissue, t.csf, csf)
    tissue = paint(tissue, t.ventricle, csf)
    if t.choroid is not None:
        tissue = paint(tissue, t.choroid, np.float32(c.choroid))
    tissue = paint(tissue, t.rim, np.float32(c.rim))
    tissue = paint(tissue, lesion, 1.0 + lesion_contrast * np.float32(c.lesion - 1.0))
    return paint(img, t.brain, tissue)


def bias_field(log_bias: np.ndarray, radius2: np.ndarray, c: Contrast) -> np.ndarray:
    """Multiplicative receive-coil bias: a smooth random field plus brighter centre at 3 T."""
    return np.exp(np.float32(c.bias) * log_bias + np.float32(c.centre_brightening) * np.clip(1.0 - radius2, 0.0, 1.0)).astype(np.float32)


def noise_sigma(c: Contrast, stack: Stack) -> float:
    """Noise of a voxel of the synthesis grid: smaller voxels are noisier."""
    dw = stack.spacing * stack.work_factor
    # protocols with thin slices or small pixels average more, so the dependence is weaker than sqrt(volume)
    return c.noise * float((_REFERENCE_VOXEL / (dw * dw * stack.thickness)) ** 0.25)
