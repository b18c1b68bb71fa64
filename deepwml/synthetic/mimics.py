"""Bright things that are not lesions: orbital fat and eyes, sinus mucosa at the skull base, CSF inflow signal.

Real FLAIR shows all of them and a model trained without them marks them as lesion. They are placed in anatomy
millimetres (X left, Y posterior, Z superior), computed on the coarse grid of the smooth anatomy fields and only
inside the small boxes where they can be, and are never part of the label (lesions live in white matter only).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

import numpy as np

from deepwml.synthetic.anatomy import Anatomy, block_fields
from deepwml.synthetic.fields import AlignedField, CoarseField
from deepwml.synthetic.grid import Grid, is_empty
from deepwml.synthetic.shapes import ellipsoid_sdf, inside

#: Retro-orbital fat (per side: X is mirrored): centre and half-axes (mm at head size 1).
_ORBIT = ((31.0, -58.0, -34.0), (15.0, 19.0, 13.0))
#: The globe sits at the front of the orbit: centre and radius.
_EYE = ((31.0, -70.0, -31.0), 11.5)
#: Paranasal air cells whose mucosal lining is often thickened and bright: centre, half-axes.
_SINUSES = (
    ((0.0, -84.0, -8.0), (13.0, 6.0, 9.0)),  # frontal
    ((0.0, -58.0, -36.0), (8.0, 15.0, 11.0)),  # ethmoid, between the orbits
    ((0.0, -20.0, -44.0), (12.0, 11.0, 9.0)),  # sphenoid, below the sella
    ((-29.0, -50.0, -66.0), (13.0, 16.0, 15.0)),  # maxillary
    ((29.0, -50.0, -66.0), (13.0, 16.0, 15.0)),
)
#: Anatomy boxes (lo, hi; mm) the face and the CSF-flow zone can reach.
_FACE_BOX = ((-52.0, -102.0, -90.0), (52.0, -2.0, 6.0))
_FLOW_BOX = ((-22.0, -22.0, -95.0), (22.0, 80.0, 10.0))


@dataclass(frozen=True)
class MimicParams:
    """Per-subject look of the mimics: mucosa thickness, how much CSF inflow signal, and where."""

    mucosa_mm: float
    #: 0: no flow signal; else the share of the flow zone that lights up (threshold of a noise field)
    flow_amount: float


def sample_mimics(rng: np.random.Generator) -> MimicParams:
    """Mucosal thickening of 0.5-5 mm; CSF inflow signal in about two thirds of scans."""
    mucosa = float(rng.uniform(0.5, 5.0))
    flow = float(rng.uniform(0.15, 0.8)) if rng.random() < 0.65 else 0.0
    return MimicParams(mucosa, flow)


def mimic_fields(
    anatomy: Anatomy, coarse: Grid, noise: Dict[str, CoarseField], factor: int, fine_size: Tuple[int, int], params: MimicParams
) -> Dict[str, AlignedField]:
    """Signed distances of orbit, eye and sinuses and the CSF-flow weight, on the parts of ``coarse`` they reach."""
    out: Dict[str, AlignedField] = {}
    s = anatomy.size
    face = _block(coarse, _FACE_BOX, s)
    if not is_empty(face):
        p = coarse.points(face)
        orbit = eye = sinus = None
        for side in (-1.0, 1.0):
            (cx, cy, cz), axes = _ORBIT
            o = ellipsoid_sdf(p, (side * cx * s, cy * s, cz * s), tuple(a * s for a in axes))
            (ex, ey, ez), radius = _EYE
            e = ellipsoid_sdf(p, (side * ex * s, ey * s, ez * s), (radius * s,) * 3)
            orbit = o if orbit is None else np.minimum(orbit, o)
            eye = e if eye is None else np.minimum(eye, e)
        for centre, axes in _SINUSES:
            d = ellipsoid_sdf(p, tuple(c * s for c in centre), tuple(a * s for a in axes))
            sinus = d if sinus is None else np.minimum(sinus, d)
        # mucosa is thickened in patches, not as an even lining
        patch = noise["band"].sample(coarse.z[face[0]], coarse.y[face[1]], coarse.x[face[2]])
        thickness = params.mucosa_mm * np.clip(0.6 + 0.8 * patch, 0.0, None)
        values = {"orbit": orbit, "eye": eye, "sinus": sinus, "mucosa": sinus + thickness}
        out.update(block_fields(values, coarse, face, factor, fine_size))
    if params.flow_amount > 0:
        flow_block = _block(coarse, _FLOW_BOX, s)
        if not is_empty(flow_block):
            q = coarse.points(flow_block)
            pattern = noise["band"].sample(coarse.z[flow_block[0]], coarse.y[flow_block[1]], coarse.x[flow_block[2]])
            # inflow shows near the midline: third and fourth ventricles, aqueduct, prepontine and posterior-fossa
            # cisterns; it fades out smoothly so that no box edge shows
            ramp = lambda v, w: np.clip(v / w, 0.0, 1.0)  # noqa: E731
            zone = ramp(14.0 * s - np.abs(q[0]), 8.0) * ramp(q[1] + 12.0 * s, 8.0) * ramp(70.0 * s - q[1], 8.0) * ramp(2.0 * s - q[2], 6.0)
            weight = zone * np.clip((pattern + 1.5 * params.flow_amount - 1.0) / 0.6, 0.0, 1.0)
            out.update(block_fields({"flow": weight}, coarse, flow_block, factor, fine_size))
    return out


def _block(coarse: Grid, box: Tuple[Tuple[float, ...], Tuple[float, ...]], size: float) -> Tuple[slice, slice, slice]:
    """Index block of ``coarse`` that may fall in the anatomy box scaled by head ``size``."""
    lo, hi = (np.asarray(b) * size for b in box)
    return coarse.block_around(lo, hi)


@dataclass
class Mimics:
    """Fractions of the mimics on a fine block (zeros where a structure cannot be)."""

    orbit_fat: np.ndarray
    eye: np.ndarray
    sinus_air: np.ndarray
    mucosa: np.ndarray
    #: 0..1: how far CSF here is from being nulled (inflowing CSF)
    flow: np.ndarray


def render_mimics(fields: Dict[str, AlignedField], z: np.ndarray, shape: Tuple[int, int, int], head: np.ndarray, width: float) -> Mimics:
    """The mimic fractions at fine z positions ``z`` of a block of ``shape``, restricted to the ``head``."""
    zeros = lambda: np.zeros(shape, np.float32)  # noqa: E731
    orbit_fat, eye, air, mucosa, flow = zeros(), zeros(), zeros(), zeros(), zeros()
    if "orbit" in fields:
        block = (slice(None),) + fields["orbit"].block
        within = head[block]
        eye[block] = inside(fields["eye"].sample(z), width) * within
        orbit_fat[block] = inside(fields["orbit"].sample(z), width) * within * (1.0 - eye[block])
        air[block] = inside(fields["sinus"].sample(z), width) * within
        mucosa[block] = inside(fields["mucosa"].sample(z), width) * within * (1.0 - air[block])
    if "flow" in fields:
        block = (slice(None),) + fields["flow"].block
        flow[block] = fields["flow"].sample(z)
    return Mimics(orbit_fat, eye, air, mucosa, flow)


def mimic_truth(m: Mimics, csf_fraction: np.ndarray) -> np.ndarray:
    """Fraction of a voxel taken by a bright mimic: orbital fat, mucosa, or CSF with inflow signal."""
    return np.maximum(np.maximum(m.orbit_fat, m.mucosa), csf_fraction * (m.flow > 0.5))
