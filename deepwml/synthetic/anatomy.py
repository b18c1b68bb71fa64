"""A procedural head: scalp, skull, CSF, folded cortex, white matter, deep grey nuclei and ventricles.

Coordinates are anatomy millimetres: X towards the patient's left, Y posterior, Z superior, origin near the
centre of the lateral ventricles. Every structure is an approximate signed distance turned into a tissue
fraction with a ramp one fine voxel wide, so that averaging over a slice gives honest partial volume.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from deepwml.synthetic.fields import AlignedField, CoarseField
from deepwml.synthetic.grid import Grid, is_empty
from deepwml.synthetic.shapes import Points, capsule_sdf, ellipsoid_sdf, inside, smooth_min
from deepwml.synthetic.warp import TemplateWarp

#: Ventricle capsules at enlargement 1: (start, end, radius mm, height/width of the cross-section).
_LATERAL_VENTRICLE = (
    ((9, -30, 10), (13, -12, 14), 3.6, 2.0),  # frontal horn
    ((13, -12, 14), (16, 12, 17), 3.0, 2.3),  # body
    ((16, 12, 17), (22, 28, 8), 4.5, 1.6),  # atrium
    ((22, 28, 8), (18, 46, 5), 2.6, 1.3),  # occipital horn
    ((22, 28, 8), (30, 12, -12), 2.4, 1.2),  # temporal horn
    ((30, 12, -12), (29, -6, -20), 2.0, 1.2),
)
_MIDLINE_VENTRICLES = (
    ((0, -8, 2), (0, 14, 0), 1.6, 3.0),  # third ventricle
    ((0, 36, -36), (0, 41, -45), 2.6, 1.5),  # fourth ventricle
)
#: Radius (mm) of the sphere that carries the folding pattern; noise fields named 'fold' must cover it.
FOLD_RADIUS_MM = 72.0
#: Weight of the free 3D folding field against the surface-bound one.
MEANDER = 1.0
#: Deep grey nuclei per hemisphere: (centre, half-axes); thalamus, lentiform nucleus, head of caudate.
_DEEP_NUCLEI = (((11, 8, 3), (8, 14, 9)), ((24, -4, 0), (6, 13, 9)), ((15, -17, 11), (5, 8, 8)))
#: The insula per hemisphere: the lateral cap (beyond INSULA_CAP_X mm from the midline) of an ellipsoid around
#: the deep grey nuclei, (centre, half-axes) at size 1. Its surface is the insular cistern, a thin CSF sheet lined by
#: the insular cortex medially and the opercula laterally; on thick slices these make the curved bright grey band
#: lateral to the putamen that a lesion model must not take.
_INSULA = ((18, -4, 4), (19, 24, 15))
INSULA_CAP_X = 30.0
#: The insula's own short gyri make its grey matter a plate this much thicker than the cortex elsewhere (mm).
INSULA_EXTRA_MM = 2.0
#: Hippocampus and amygdala: grey matter at FLAIR brightness in the medial temporal lobe.
_HIPPOCAMPUS = ((27, 8, -20), (5, 18, 4.5))
#: Corticospinal tract from the cerebral peduncle through the posterior limb of the internal capsule into the corona
#: radiata: mildly hyperintense on many FLAIR scans (a classic normal finding, not lesion).
_TRACT = ((12, 16, -22), (19, 4, 6), (23, 8, 32))


@dataclass
class Anatomy:
    """One subject's head, sampled by :func:`sample_anatomy`."""

    brain_axes: Tuple[float, float, float]
    brain_centre: Tuple[float, float, float]
    size: float
    atrophy: float
    ventricle_scale: float
    csf_mm: float
    skull_mm: float
    scalp_mm: float
    cortex_mm: float
    sulcus_depth_mm: float
    sulcus_width_mm: float
    deformation_mm: float
    midline_mm: float
    rim_mm: float
    rim_cap_mm: float
    capsules: List[Tuple[np.ndarray, np.ndarray, float, float]] = field(default_factory=list)
    horn_tips: List[np.ndarray] = field(default_factory=list)
    #: set for a brain drawn from the template (deepwml.synthetic.template_brain): its map to the template and the
    #: bounding box of its ventricles (the capsules are then unused)
    warp: Optional[TemplateWarp] = None
    ventricle_bounds: Optional[Tuple[np.ndarray, np.ndarray]] = None

    @property
    def ventricle_box(self) -> Tuple[np.ndarray, np.ndarray]:
        """Anatomy-space bounding box of the ventricles (mm)."""
        if self.ventricle_bounds is not None:
            return self.ventricle_bounds
        pts = np.array([p for a, b, r, s in self.capsules for p in (a, b)])
        reach = max(r * s for a, b, r, s in self.capsules)
        return pts.min(0) - reach, pts.max(0) + reach

    @property
    def head_half_extent(self) -> np.ndarray:
        """Half-size of the head's bounding box around the anatomy origin (mm, X Y Z), generous."""
        margin = self.csf_mm + self.skull_mm + self.scalp_mm + self.deformation_mm + 6
        ax, ay, az = self.brain_axes
        return np.array([ax + margin, ay + abs(self.brain_centre[1]) + margin, az + margin + 40])


def sample_anatomy(rng: np.random.Generator, age: float, atrophy_extra: float = 0.0) -> Anatomy:
    """Draw a head: size and shape vary; atrophy widens CSF spaces and enlarges the ventricles with age and disease."""
    size = float(np.clip(rng.normal(1.0, 0.045), 0.88, 1.12))
    axes = tuple(float(a * size * rng.uniform(0.95, 1.05)) for a in (66.0, 83.0, 60.0))
    atrophy = float(np.clip((age - 25) / 60 * rng.uniform(0.6, 1.3) + atrophy_extra + rng.normal(0, 0.06), 0.0, 1.0))
    vscale = float(np.clip(0.85 + 0.8 * atrophy + rng.normal(0, 0.1), 0.7, 1.9))
    a = Anatomy(
        brain_axes=axes,  # type: ignore[arg-type]
        brain_centre=(0.0, float(rng.uniform(-2, 4)), float(rng.uniform(6, 12))),
        size=size,
        atrophy=atrophy,
        ventricle_scale=vscale,
        csf_mm=float(1.5 + 3.0 * atrophy + rng.uniform(0, 1)),
        skull_mm=float(rng.uniform(5.5, 8.5)),
        scalp_mm=float(rng.uniform(4.5, 8.0)),
        cortex_mm=float(rng.uniform(2.5, 3.4)),
        sulcus_depth_mm=float(rng.uniform(10, 16)),
        sulcus_width_mm=float(0.6 + 1.6 * atrophy + rng.uniform(0, 0.5)),
        deformation_mm=float(rng.uniform(2.0, 4.5)),
        midline_mm=float(rng.normal(0, 1.0)),
        rim_mm=float(rng.uniform(1.3, 2.2)),
        rim_cap_mm=float(rng.uniform(1.5, 3.0)),
    )
    lateral = vscale**0.35
    jitter = lambda: rng.normal(0, 1.2, 3)  # noqa: E731 - a fresh wobble of each vertex
    for side in (-1, 1):
        verts: Dict[Tuple[int, int, int], np.ndarray] = {}
        for start, end, radius, stretch in _LATERAL_VENTRICLE:
            ends = []
            for v in (start, end):
                if v not in verts:
                    verts[v] = np.array([side * v[0] * lateral, v[1] * size, v[2] * size], float) + jitter()
                ends.append(verts[v])
            a.capsules.append((ends[0], ends[1], radius * vscale * size * rng.uniform(0.85, 1.15), stretch))
        a.horn_tips += [verts[_LATERAL_VENTRICLE[0][0]], verts[_LATERAL_VENTRICLE[3][1]]]
    for start, end, radius, stretch in _MIDLINE_VENTRICLES:
        a.capsules.append((np.array(start, float) * size, np.array(end, float) * size, radius * vscale**0.8 * size, stretch))
    return a


def ellipsoid_radius(p: Points, centre: Sequence[float], axes: Sequence[float]) -> np.ndarray:
    """Normalised ellipsoidal radius: 0 at the centre, 1 on the surface."""
    return np.sqrt(sum(((c - float(o)) / float(r)) ** 2 for c, o, r in zip(p, centre, axes)))


def ventricle_sdf(anatomy: Anatomy, p: Points) -> np.ndarray:
    """Signed distance to the ventricular system (mm), capsules blended with small fillets."""
    d = None
    for a, b, r, s in anatomy.capsules:
        c = capsule_sdf(p, a, b, r, s)
        d = c if d is None else smooth_min(d, c, 2.0)
    return d


def brain_sdf(anatomy: Anatomy, p: Points, deformation: np.ndarray, cerebellum: np.ndarray) -> np.ndarray:
    """Outer surface of the brain (cerebrum with temporal lobes, ``cerebellum`` distance, brainstem), smoothly deformed."""
    X, Y, Z = p
    s = anatomy.size
    cerebrum = ellipsoid_sdf(p, anatomy.brain_centre, anatomy.brain_axes)
    # the frontal lobes sit on the orbital roofs; the temporal lobes reach lower into the middle fossae
    floor = (-22.0 + 10.0 * np.clip((-Y - 30.0) / 40.0, 0.0, 1.0)) * s
    cerebrum = np.maximum(cerebrum, floor - Z)
    temporal = np.minimum(
        ellipsoid_sdf(p, (-44.0 * s, -2.0 * s, -24.0 * s), (20.0 * s, 36.0 * s, 17.0 * s)),
        ellipsoid_sdf(p, (44.0 * s, -2.0 * s, -24.0 * s), (20.0 * s, 36.0 * s, 17.0 * s)),
    )
    cerebrum = smooth_min(cerebrum, temporal, 8.0)
    hull = smooth_min(smooth_min(cerebrum, cerebellum, 6.0), stem_sdf(anatomy, p), 5.0)
    return hull + float(anatomy.deformation_mm) * deformation


def cerebellum_sdf(anatomy: Anatomy, p: Points) -> np.ndarray:
    """The cerebellum: a flattened ellipsoid below the occipital lobes."""
    s = anatomy.size
    return ellipsoid_sdf(p, (0.0, 46.0 * s, -42.0 * s), (50.0 * s, 29.0 * s, 20.0 * s))


def stem_sdf(anatomy: Anatomy, p: Points) -> np.ndarray:
    """The brainstem: a slanted capsule from the midbrain down through the foramen magnum."""
    s = anatomy.size
    return capsule_sdf(p, (0.0, 14.0 * s, -10.0 * s), (0.0, 24.0 * s, -80.0 * s), 11.0 * s)


def cranium_sdf(anatomy: Anatomy, p: Points, hull: np.ndarray) -> np.ndarray:
    """The skull's inner outline: the brain hull, smoothed, plus the skull base and face below it."""
    s = anatomy.size
    base = ellipsoid_sdf(p, (0.0, 4.0 * s, -66.0 * s), (62.0 * s, 84.0 * s, 40.0 * s))
    return smooth_min(hull, base, 12.0)


def anatomy_fields(
    anatomy: Anatomy, coarse: Grid, noise: Dict[str, CoarseField], factor: int, fine_size: Tuple[int, int]
) -> Dict[str, AlignedField]:
    """The smooth geometric fields of ``anatomy`` on ``coarse`` (image mm), whose in-plane pixels are ``factor``
    fine pixels of a block ``fine_size`` (y, x) pixels large.

    Distances are nearly linear, so linear interpolation keeps their zero levels; fields with a kink (sulci,
    midline) are kept signed here and folded with abs() after sampling.
    """
    z, y, x = coarse.z, coarse.y, coarse.x
    p = coarse.points()
    a = anatomy
    cerebellum = cerebellum_sdf(a, p)
    hull = brain_sdf(a, p, noise["shape"].sample(z, y, x), cerebellum)
    in_cerebellum = inside(cerebellum, 4.0)
    # below the tentorium: cerebellum and the brainstem under the midbrain (for truth masks)
    below = np.clip((-12.0 * a.size - p[2]) * np.float32(0.25), 0.0, 1.0)
    infratentorial = np.maximum(inside(cerebellum, 2.0), inside(stem_sdf(a, p), 2.0) * below)
    del cerebellum, below
    # sulci are walls standing across the surface: the folding pattern is read from a noise field on a sphere
    # around the brain centre (partly: an exponent below 1 lets the walls lean and meander as real sulci do)
    rel = [c - float(o) for c, o in zip(p, a.brain_centre)]
    scale = (np.float32(FOLD_RADIUS_MM) / np.maximum(np.sqrt(rel[0] ** 2 + rel[1] ** 2 + rel[2] ** 2), 1.0)) ** np.float32(0.75)
    # only where sulci can be: within reach of the brain surface
    where = (hull < 4.0) & (hull > -40.0)
    fold = np.zeros(hull.shape, np.float32)
    fold[where] = noise["fold"].sample_points(rel[2][where] * scale[where], rel[1][where] * scale[where], rel[0][where] * scale[where])
    # a folding pattern that is not fixed to the surface normal makes the walls meander and branch, so that axial
    # sections cut gyri in all directions instead of a starburst of radial lines
    fold += np.float32(MEANDER) * noise["meander"].sample(z, y, x)
    grads = np.gradient(fold, *(float(c[1] - c[0]) for c in (z, y, x)))
    fold_grad = np.sqrt(grads[0] ** 2 + grads[1] ** 2 + grads[2] ** 2)
    del grads, rel, scale
    # sulci reach deeper in some places than others; the cerebellum is folded throughout (folia)
    sulcus_depth = a.sulcus_depth_mm * (1.0 + 0.3 * noise["depth"].sample(z, y, x)) + 12.0 * in_cerebellum
    X, Y, Z = p
    # the hemispheres are joined by the corpus callosum; elsewhere the interhemispheric fissure splits them
    callosum = np.maximum(np.maximum(Z - 20.0 * a.size, np.abs(Y + 4.0) - 36.0 * a.size), -Z - 12.0 * a.size)
    full = {
        "hull": hull,
        "cranium": cranium_sdf(a, p, hull),
        "cerebellum": in_cerebellum,
        # no sulcus closer to the centre than half way out: the centrum semiovale stays white matter
        "sulcus_reach": np.maximum(-hull - sulcus_depth, (0.5 - ellipsoid_radius(p, a.brain_centre, a.brain_axes)) * 60.0),
        "sulcus": fold / np.maximum(fold_grad, 0.02),
        "midline": X - float(a.midline_mm),
        "fissure": inside(-callosum, 3.0) * (1.0 - in_cerebellum),
        "infratentorial": infratentorial,
        # muscle, fat and bone of the skull base and neck are not one uniform grey
        "texture": noise["band"].sample(z, y, x),
        **deep_cortex_fields(a, p),
    }
    out = block_fields(full, coarse, whole_block(coarse), factor, fine_size)
    block = ventricle_block(a, coarse, margin_mm=22.0)
    if is_empty(block):
        return out
    q = tuple(c[block] for c in p)
    nuclei = None
    for side in (-1, 1):
        for (cx, cy, cz), axes in _DEEP_NUCLEI:
            centre = (side * cx * a.ventricle_scale**0.35, cy * a.size, cz * a.size)
            e = ellipsoid_sdf(q, centre, tuple(v * a.size for v in axes))
            nuclei = e if nuclei is None else np.minimum(nuclei, e)
    near = {"ventricle": ventricle_sdf(a, q), "nuclei": nuclei, "tips": horn_tip_weight(a, q), "near_midline": q[0] - float(a.midline_mm)}
    out.update(block_fields(near, coarse, block, factor, fine_size))
    return out


def horn_tip_weight(anatomy: Anatomy, q: Points) -> np.ndarray:
    """Gaussian weight (8 mm) of the nearest ventricular horn tips at anatomy points ``q``: where the caps thicken."""
    tips = np.zeros(q[0].shape, np.float32)
    for tip in anatomy.horn_tips:
        r2 = (q[0] - float(tip[0])) ** 2 + (q[1] - float(tip[1])) ** 2 + (q[2] - float(tip[2])) ** 2
        tips += np.exp(r2 * np.float32(-1.0 / (2 * 8.0**2)))
    return tips


def whole_block(grid: Grid) -> Tuple[slice, slice, slice]:
    """The index block of every point of ``grid``."""
    return tuple(slice(0, n) for n in grid.shape)  # type: ignore[return-value]


def block_fields(
    values: Dict[str, np.ndarray], coarse: Grid, block: Tuple[slice, slice, slice], factor: int, fine_size: Tuple[int, int]
) -> Dict[str, AlignedField]:
    """Wrap coarse values computed on ``block`` of ``coarse`` as fields aligned to the fine in-plane pixels they cover."""
    dz = float(coarse.z[1] - coarse.z[0])
    offset = (block[1].start * factor, block[2].start * factor)
    size = (min(block[1].stop * factor, fine_size[0]) - offset[0], min(block[2].stop * factor, fine_size[1]) - offset[1])
    z0 = float(coarse.z[block[0].start])
    return {k: AlignedField(v.astype(np.float32, copy=False), z0, dz, factor, offset, size) for k, v in values.items()}


def deep_cortex_fields(anatomy: Anatomy, p: Points) -> Dict[str, np.ndarray]:
    """Signed distances of the insular CSF sheets, the hippocampi and the corticospinal tracts, and the
    brainstem's inside fraction (mm fields on the points ``p``)."""
    s = anatomy.size
    # deep structures follow the deep grey nuclei outwards when the ventricles are large (as _DEEP_NUCLEI do)
    spread = 24.0 * (anatomy.ventricle_scale**0.35 - 1.0)
    sheets = hippocampus = tract = None
    for side in (-1, 1):
        (cx, cy, cz), axes = _INSULA
        shell = np.abs(ellipsoid_sdf(p, (side * (cx * s + spread), cy * s, cz * s), tuple(v * s for v in axes))) - 0.6
        e = np.maximum(shell, (INSULA_CAP_X * s + spread) - side * p[0])
        sheets = e if sheets is None else np.minimum(sheets, e)
        (cx, cy, cz), axes = _HIPPOCAMPUS
        e = ellipsoid_sdf(p, (side * (cx * s + spread), cy * s, cz * s), tuple(v * s for v in axes))
        hippocampus = e if hippocampus is None else np.minimum(hippocampus, e)
        pts = [np.array([side * (x * s + spread * (i > 0)), y * s, z * s]) for i, (x, y, z) in enumerate(_TRACT)]
        for a, b in zip(pts[:-1], pts[1:]):
            c = capsule_sdf(p, a, b, 3.0 * s)
            tract = c if tract is None else np.minimum(tract, c)
    return {"deep_csf": sheets, "hippocampus": hippocampus, "tract": tract, "stem": inside(stem_sdf(anatomy, p), 2.0)}


@dataclass
class Tissues:
    """Tissue fractions on a fine block, nested from the outside in (each inner one lies within the outer)."""

    head: np.ndarray
    fat: np.ndarray
    skull: np.ndarray
    diploe: np.ndarray
    intracranial: np.ndarray
    soft: np.ndarray
    texture: np.ndarray
    brain: np.ndarray
    grey: np.ndarray
    deep_grey: np.ndarray
    csf: np.ndarray
    ventricle: np.ndarray
    rim: np.ndarray
    #: corticospinal tract (mildly bright white matter) and brainstem fractions
    tract: np.ndarray
    stem: np.ndarray
    #: depth below the brain surface (mm), for placing lesions
    depth: np.ndarray
    #: in-plane block near the ventricles, and there: signed distance to the ventricles (mm) and horn-tip weight
    near_ventricles: Optional[Tuple[slice, slice, slice]]
    ventricle_distance: Optional[np.ndarray]
    tips: Optional[np.ndarray]
    #: template brains (generator v10): where grey matter is limbic and white matter peritrigonal (deepwml.synthetic.limbic)
    limbic: Optional[np.ndarray] = None
    terminal: Optional[np.ndarray] = None
    #: template brains (generator v12): the choroid plexus in the atria and temporal horns (deepwml.synthetic.choroid)
    choroid: Optional[np.ndarray] = None


def ventricle_block(anatomy: Anatomy, grid: Grid, margin_mm: float = 25.0) -> Tuple[slice, slice, slice]:
    """Index block of ``grid`` within ``margin_mm`` of the ventricles' bounding box."""
    lo, hi = anatomy.ventricle_box
    return grid.block_around(lo - margin_mm, hi + margin_mm)


def head_tissues(anatomy: Anatomy, fields: Dict[str, AlignedField], z: np.ndarray, width: float) -> Tuple[np.ndarray, Tuple[np.ndarray, ...]]:
    """The brain-surface distance and the fractions of (head, fat, skull, diploe, intracranial, soft, texture, brain)."""
    a = anatomy
    hull = fields["hull"].sample(z)
    cranium = fields["cranium"].sample(z)
    t_ic = a.csf_mm
    t_sk = t_ic + a.skull_mm
    head = inside(cranium - (t_sk + a.scalp_mm), width)
    fat = inside(cranium - (t_sk + a.scalp_mm - 1.8), width)
    skull = inside(cranium - t_sk, width)
    diploe = inside(np.abs(cranium - (t_ic + 0.5 * a.skull_mm)) - 0.22 * a.skull_mm, width)
    intracranial = inside(cranium - t_ic, width)
    del cranium
    soft = np.clip((hull - 4.0) * np.float32(1 / 8.0), 0.0, 1.0)
    return hull, (head, fat, skull, diploe, intracranial, soft, fields["texture"].sample(z), inside(hull, width))


def ventricle_tissues(
    anatomy: Anatomy, fields: Dict[str, AlignedField], z: np.ndarray, width: float, shape: Tuple[int, int, int]
) -> Tuple[np.ndarray, np.ndarray, Optional[Tuple[slice, slice, slice]], Optional[np.ndarray], Optional[np.ndarray]]:
    """Ventricle and bright-lining fractions on a fine block of ``shape``, and the near-ventricle block with its
    ventricle distance and horn-tip weight (None when the block does not reach the ventricles)."""
    ventricle = np.zeros(shape, np.float32)
    rim = np.zeros(shape, np.float32)
    if "ventricle" not in fields:
        return ventricle, rim, None, None, None
    near = (slice(None),) + fields["ventricle"].block
    vdist = fields["ventricle"].sample(z)
    tips = fields["tips"].sample(z)
    inner = inside(vdist, width)
    ventricle[near] = inner
    # the bright ependymal lining ("caps" at the horn tips, a pencil-thin rim elsewhere) that is NOT lesion;
    # only the lateral ventricles have it, not the slit of the third ventricle
    lateral = np.clip((np.abs(fields["near_midline"].sample(z)) - 3.0) * np.float32(1 / 3.0), 0.0, 1.0)
    rim[near] = inside(vdist - (anatomy.rim_mm + anatomy.rim_cap_mm * tips), width) * (1.0 - inner) * lateral
    return ventricle, rim, near, vdist, tips


def render_tissues(anatomy: Anatomy, fields: Dict[str, AlignedField], z: np.ndarray, width: float) -> Tissues:
    """All tissue fractions at fine z positions ``z`` from :func:`anatomy_fields`; ``width`` is the partial-volume ramp."""
    a = anatomy
    hull, (head, fat, skull, diploe, intracranial, soft, texture, brain) = head_tissues(a, fields, z, width)

    cerebellum = fields["cerebellum"].sample(z)
    half_width = 0.5 * a.sulcus_width_mm * (1.0 - 0.5 * cerebellum)
    cortex = a.cortex_mm * (1.0 + 0.4 * cerebellum)
    del cerebellum
    to_sulcus = np.abs(fields["sulcus"].sample(z)) - half_width
    reach = fields["sulcus_reach"].sample(z)
    csf = inside(to_sulcus, width) * inside(reach, 2.0)
    depth = -hull
    grey = np.maximum(inside(to_sulcus - cortex, width) * inside(reach - cortex, 2.0), inside(depth - cortex, width))
    gap = np.abs(fields["midline"].sample(z)) - (0.6 + 0.5 * a.sulcus_width_mm)
    fissure = fields["fissure"].sample(z)
    csf = np.maximum(csf, inside(gap, width) * fissure)
    grey = np.maximum(grey, inside(gap - cortex, width) * fissure)
    deep_csf = fields["deep_csf"].sample(z)
    csf = np.maximum(csf, inside(deep_csf, width))
    grey = np.maximum(grey, inside(deep_csf - a.cortex_mm - INSULA_EXTRA_MM, width))
    grey = np.maximum(grey, inside(fields["hippocampus"].sample(z), width))
    del deep_csf
    tract = inside(fields["tract"].sample(z), 2.0)
    stem = fields["stem"].sample(z)

    deep_grey = np.zeros(hull.shape, np.float32)
    ventricle, rim, near, vdist, tips = ventricle_tissues(a, fields, z, width, hull.shape)
    if near is not None:
        deep_grey[near] = inside(fields["nuclei"].sample(z), 2.5)
    return Tissues(
        head, fat, skull, diploe, intracranial, soft, texture, brain, grey, deep_grey, csf, ventricle, rim, tract, stem, depth, near, vdist, tips
    )
