"""White-matter lesions by disease, placed where each disease puts them, and rendered as partial-volume fractions.

- MS: ovoid periventricular lesions whose long axis points away from the ventricles (Dawson's fingers),
  juxtacortical and deep white-matter lesions, a few infratentorial ones; heavy loads become confluent.
- NMOSD: fewer, small punctate lesions and periependymal lesions that hug the ventricle walls.
- CSVD: periventricular caps and bands, punctate deep lesions that become confluent with severity; at the highest
  severity (Fazekas 3) a broad continuous band along the ventricle walls thickening into confluent deep lesions.
- all: small punctate foci, 1-3 mm across and elongated along the medullary vessels, that a thick slice still shows.

Every lesion has its own contrast; some are subtle, as on real scans.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np

from deepwml.synthetic.anatomy import Anatomy, Tissues
from deepwml.synthetic.fields import CoarseField
from deepwml.synthetic.grid import Grid
from deepwml.synthetic.shapes import ellipsoid_sdf, frame_from_axis, inside
from deepwml.synthetic import template_brain

#: Share of lesions whose contrast is only about half of the subject's usual lesion contrast.
SUBTLE_FRACTION = 0.10
#: The lateral-ventricle capsules lesions grow from (frontal horn, body, atrium, occipital horn; both sides).
_WALL_CAPSULES = (0, 1, 2, 3, 6, 7, 8, 9)


@dataclass
class Lesions:
    """Ellipsoidal lesions (anatomy mm) plus the diffuse periventricular and confluent deep components."""

    centres: List[np.ndarray] = field(default_factory=list)
    axes: List[Tuple[float, float, float]] = field(default_factory=list)
    rotations: List[np.ndarray] = field(default_factory=list)
    contrasts: List[float] = field(default_factory=list)
    #: periventricular band thickness (mm; 0: none) and extra thickness of the caps at the horn tips
    band_mm: float = 0.0
    band_cap_mm: float = 0.0
    #: how much of the ventricle wall the band covers: 0.3 patchy (about a third bare) .. 0.9 continuous
    band_cover: float = 0.3
    #: threshold of the confluence field in deep white matter (None: no confluent lesions)
    confluence: Optional[float] = None
    diffuse_contrast: float = 1.0
    load_ml: float = 0.0

    def add(self, centre: np.ndarray, axes: Tuple[float, float, float], rotation: np.ndarray, contrast: float) -> None:
        """Append one ellipsoidal lesion."""
        self.centres.append(np.asarray(centre, float))
        self.axes.append(tuple(float(a) for a in axes))  # type: ignore[arg-type]
        self.rotations.append(rotation)
        self.contrasts.append(float(contrast))

    def __len__(self) -> int:
        """Number of ellipsoidal lesions."""
        return len(self.centres)


def sample_lesions(disease: str, anatomy: Anatomy, rng: np.random.Generator, severity: float, pixel_mm: float = 0.47) -> Lesions:
    """Lesions for one patient; ``severity`` in [0, 1] sets the load; ``pixel_mm`` the smallest focus worth outlining."""
    sampler = {"MS": _ms, "NMOSD": _nmosd, "CSVD": _csvd}[disease]
    return sampler(anatomy, rng, severity, pixel_mm)


def _axes_for(volume_ul: float, aspect: float) -> Tuple[float, float, float]:
    """Semi-axes (long, short, short) of an ellipsoid of ``volume_ul`` mm³ with long/short = ``aspect``."""
    short = (3.0 * volume_ul / (4.0 * np.pi * aspect)) ** (1.0 / 3.0)
    return aspect * short, short, short


#: Signal of periventricular bands and confluent lesions relative to the focal lesions of the same scan (before v11
#: 0.75-0.95): real halos are often much fainter than the plaques beside them (on the real development scans a
#: confluent periventricular mass at 1.20 x the brain median next to focal lesions at 1.37 x, about 0.55 of their
#: excess), and readers outline them all the same.
DIFFUSE_CONTRAST = (0.5, 0.95)
#: MS severity above which the plaques along the ventricles merge into a band (generator v11)
MS_BAND_SEVERITY = 0.6


def _contrast(rng: np.random.Generator) -> float:
    """Per-lesion contrast multiplier; a share of lesions is subtle."""
    return float(rng.uniform(0.45, 0.65) if rng.random() < SUBTLE_FRACTION else rng.uniform(0.85, 1.12))


def _volumes(rng: np.random.Generator, budget_ul: float, median_ul: float, sigma: float, cap: int) -> List[float]:
    """Lesion volumes drawn log-normally until they add up to ``budget_ul`` (at most ``cap`` lesions, at least one)."""
    out: List[float] = []
    total = 0.0
    while (total < budget_ul or not out) and len(out) < cap:
        v = float(np.clip(rng.lognormal(np.log(median_ul), sigma), 8.0, 12000.0))
        out.append(v)
        total += v
    return out


def _wall_site(anatomy: Anatomy, rng: np.random.Generator, capsules=_WALL_CAPSULES) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A random point on a ventricle wall: (surface point, outward normal, capsule axis direction)."""
    if anatomy.warp is not None:
        return template_brain.wall_site(anatomy, rng)
    lengths = np.array([np.linalg.norm(anatomy.capsules[i][1] - anatomy.capsules[i][0]) for i in capsules])
    idx = capsules[int(rng.choice(len(capsules), p=lengths / lengths.sum()))]
    a, b, radius, stretch = anatomy.capsules[idx]
    axis = (b - a) / max(np.linalg.norm(b - a), 1e-6)
    medial = -np.sign(a[0] + b[0]) if abs(a[0] + b[0]) > 1e-6 else 0.0
    for _ in range(20):
        r = rng.standard_normal(3)
        u = r - (r @ axis) * axis
        u /= max(np.linalg.norm(u), 1e-9)
        # the medial wall faces the septum and the other ventricle: lesions grow outwards and upwards instead
        if medial == 0.0 or u[0] * medial < 0.3:
            break
    surface = a + rng.uniform(0, 1) * (b - a) + radius * np.array([u[0], u[1], u[2] * stretch])
    normal = np.array([u[0], u[1], u[2] / stretch])
    return surface, normal / np.linalg.norm(normal), axis


def _deep_site(anatomy: Anatomy, rng: np.random.Generator, z_min: float = -5.0) -> np.ndarray:
    """A random point in the deep white matter of the centrum semiovale or corona radiata."""
    if anatomy.warp is not None:
        return template_brain.deep_site(anatomy, rng, z_min)
    centre = np.asarray(anatomy.brain_centre)
    axes = np.asarray(anatomy.brain_axes)
    lo, hi = anatomy.ventricle_box
    for _ in range(50):
        d = rng.standard_normal(3)
        d /= np.linalg.norm(d)
        p = centre + d * axes * rng.uniform(0.3, 0.72)
        near_ventricles = np.all(p > lo - 3.0) and np.all(p < hi + 3.0) and abs(p[0]) < 26
        if p[2] > z_min and not near_ventricles:
            return p
    return p


def _juxtacortical_site(anatomy: Anatomy, rng: np.random.Generator, depth_mm: float) -> np.ndarray:
    """A point ``depth_mm`` below the brain surface, above the temporal lobes."""
    if anatomy.warp is not None:
        return template_brain.juxtacortical_site(anatomy, rng, depth_mm)
    centre = np.asarray(anatomy.brain_centre)
    axes = np.asarray(anatomy.brain_axes)
    while True:
        d = rng.standard_normal(3)
        d /= np.linalg.norm(d)
        if d[2] > -0.2:
            break
    surface = centre + d * axes
    normal = d / axes
    normal /= np.linalg.norm(normal)
    return surface - depth_mm * normal


def _infratentorial_site(anatomy: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """Brainstem, middle cerebellar peduncles or cerebellar white matter."""
    if anatomy.warp is not None:
        return template_brain.infratentorial_site(anatomy, rng)
    s = anatomy.size
    choice = rng.integers(3)
    if choice == 0:
        return np.array([rng.normal(0, 3), 20 + rng.normal(0, 3), rng.uniform(-45, -15)]) * s
    side = rng.choice([-1, 1])
    if choice == 1:
        return np.array([side * rng.uniform(10, 18), rng.uniform(28, 36), rng.uniform(-38, -28)]) * s
    return np.array([side * rng.uniform(12, 30), rng.uniform(38, 55), rng.uniform(-45, -30)]) * s


def _add_small(les: Lesions, anatomy: Anatomy, rng: np.random.Generator, n: int, juxtacortical: float, pixel_mm: float) -> None:
    """``n`` small foci 1-3 mm across, elongated along the medullary vessels (radially), so thick slices keep them.

    On coarse matrices they are at least about two pixels across: readers do not outline single large pixels.
    """
    centre = np.asarray(anatomy.brain_centre)
    for _ in range(n):
        if rng.random() < juxtacortical:
            site = _juxtacortical_site(anatomy, rng, anatomy.cortex_mm + rng.uniform(2.5, 6.0))
        else:
            site = _deep_site(anatomy, rng, z_min=-2.0)
        radial = site - centre
        radius = rng.uniform(max(0.7, 1.0 * pixel_mm), max(1.6, 1.6 * pixel_mm))
        half_length = max(2.5, radius * rng.uniform(2.0, 4.0))
        les.add(site, (half_length, radius, radius * rng.uniform(0.8, 1.2)), frame_from_axis(radial + rng.normal(0, 8.0, 3), rng), _contrast(rng))


def _ms(anatomy: Anatomy, rng: np.random.Generator, severity: float, pixel_mm: float) -> Lesions:
    """Multiple sclerosis."""
    les = Lesions(load_ml=float(np.exp(np.log(12.0) + severity * np.log(50 / 12.0))))
    budget = les.load_ml * 1000.0
    for v in _volumes(rng, 0.45 * budget, 90.0, 1.0, 60):
        surface, normal, _ = _wall_site(anatomy, rng)
        long_, short, _ = _axes_for(v, rng.uniform(1.6, 3.0))
        # Dawson's finger: long axis along the outward normal, tilted a little, starting at the wall
        axis = normal + rng.normal(0, 0.25, 3)
        rot = frame_from_axis(axis, rng)
        centre = surface + rot[:, 0] * (long_ * rng.uniform(0.5, 1.0)) + rng.normal(0, 0.8, 3)
        les.add(centre, (long_, short * rng.uniform(0.8, 1.2), short), rot, _contrast(rng))
    for v in _volumes(rng, 0.3 * budget, 45.0, 0.8, 45):
        les.add(_deep_site(anatomy, rng), _axes_for(v, rng.uniform(1.0, 1.7)), frame_from_axis(rng.standard_normal(3), rng), _contrast(rng))
    for v in _volumes(rng, 0.17 * budget, 28.0, 0.7, 35):
        ax = _axes_for(v, rng.uniform(1.0, 1.8))
        site = _juxtacortical_site(anatomy, rng, anatomy.cortex_mm + ax[1] + rng.uniform(2.0, 6.0))
        les.add(site, ax, frame_from_axis(rng.standard_normal(3), rng), _contrast(rng))
    for v in _volumes(rng, 0.05 * budget, 60.0, 0.7, 6):
        les.add(_infratentorial_site(anatomy, rng), _axes_for(v, rng.uniform(1.0, 1.6)), frame_from_axis(rng.standard_normal(3), rng), _contrast(rng))
    _add_small(les, anatomy, rng, int(rng.integers(4, 16)), juxtacortical=0.4, pixel_mm=pixel_mm)
    if severity > MS_BAND_SEVERITY:
        # heavy MS loads merge along the ventricles into a patchy periventricular band, fainter than the plaques
        # around it (generator v11)
        grade = (severity - MS_BAND_SEVERITY) / (1.0 - MS_BAND_SEVERITY)
        les.band_mm = float((1.5 + 4.0 * grade) * rng.uniform(0.8, 1.2))
        les.band_cap_mm = float(2.0 + 3.0 * grade * rng.uniform(0.7, 1.2))
        les.band_cover = float(0.3 + 0.5 * grade)
        les.diffuse_contrast = float(rng.uniform(*DIFFUSE_CONTRAST))
    return les


def _nmosd(anatomy: Anatomy, rng: np.random.Generator, severity: float, pixel_mm: float) -> Lesions:
    """Neuromyelitis optica spectrum disorder."""
    les = Lesions(load_ml=float(np.exp(np.log(0.8) + severity * np.log(12 / 0.8))))
    budget = les.load_ml * 1000.0
    for v in _volumes(rng, 0.5 * budget, 30.0, 0.6, 25):
        site = _deep_site(anatomy, rng) if rng.random() < 0.6 else _juxtacortical_site(anatomy, rng, anatomy.cortex_mm + rng.uniform(3, 8))
        les.add(site, _axes_for(v, rng.uniform(1.0, 1.4)), frame_from_axis(rng.standard_normal(3), rng), _contrast(rng))
    for v in _volumes(rng, 0.35 * budget, 60.0, 0.8, 14):
        # periependymal: flat and long, lying along the wall rather than pointing away from it
        surface, normal, axis = _wall_site(anatomy, rng, capsules=_WALL_CAPSULES + (12,))
        long_, short, _ = _axes_for(v, rng.uniform(2.0, 3.5))
        out = normal - (normal @ axis) * axis
        out /= max(np.linalg.norm(out), 1e-9)
        rot = np.stack([axis, np.cross(out, axis), out], axis=1)
        thin = short * rng.uniform(0.5, 0.8)
        les.add(surface + out * (thin * 0.6), (long_, short**2 / thin, thin), rot, _contrast(rng))
    for v in _volumes(rng, 0.15 * budget, 60.0, 0.7, 5):
        les.add(_infratentorial_site(anatomy, rng), _axes_for(v, rng.uniform(1.0, 2.0)), frame_from_axis(rng.standard_normal(3), rng), _contrast(rng))
    _add_small(les, anatomy, rng, int(rng.integers(2, 9)), juxtacortical=0.4, pixel_mm=pixel_mm)
    return les


def _csvd(anatomy: Anatomy, rng: np.random.Generator, severity: float, pixel_mm: float) -> Lesions:
    """Cerebral small-vessel disease (vascular white-matter hyperintensities)."""
    les = Lesions()
    if severity > 0.25:
        # Fazekas 2-3: a halo along the lateral ventricles with thick caps at the horns; patchy at first, at the
        # highest grades a broad band that covers the walls and merges with the confluent deep lesions
        grade = (severity - 0.25) / 0.75
        les.band_mm = float(1.5 + 5.5 * grade**1.4 * rng.uniform(0.8, 1.2))
        les.band_cap_mm = float(3.0 + 6.0 * severity * rng.uniform(0.7, 1.2))
        les.band_cover = float(0.3 + 0.6 * np.clip((severity - 0.5) / 0.45, 0.0, 1.0))
    n_punctate = int(round(10 + 30 * severity * rng.uniform(0.6, 1.3)))
    for _ in range(n_punctate):
        v = float(np.clip(rng.lognormal(np.log(25.0 + 40 * severity), 0.8), 6.0, 2500.0))
        site = _deep_site(anatomy, rng, z_min=-2.0) if rng.random() < 0.85 else _juxtacortical_site(anatomy, rng, anatomy.cortex_mm + rng.uniform(4, 9))
        les.add(site, _axes_for(v, rng.uniform(1.0, 1.5)), frame_from_axis(rng.standard_normal(3), rng), _contrast(rng))
    _add_small(les, anatomy, rng, int(round(rng.uniform(4, 14) + 14 * severity)), juxtacortical=0.15, pixel_mm=pixel_mm)
    if severity > 0.55:
        les.confluence = float(2.8 - 1.25 * (severity - 0.55) / 0.45)
    les.diffuse_contrast = float(rng.uniform(*DIFFUSE_CONTRAST) + 0.1 * severity)
    return les


#: nominal halo thickness (mm) from which the drawn periventricular band is a smooth halo, not a pencil-thin lining
FAZEKAS_HALO_BAND_MM = 2.5
#: threshold of the confluence field at or below which the drawn confluent lesions form large areas that the
#: broad periventricular band runs into (severity above about 0.77); above it they only begin to be confluent
FAZEKAS_LARGE_CONFLUENCE = 2.2


def drawn_fazekas(disease: str, lesions: Lesions) -> Optional[Tuple[int, int]]:
    """(periventricular, deep) Fazekas grades of what was drawn for a CSVD patient, from the lesion types placed:
    no band 0, caps with a thin lining 1, a halo 2, a halo running into large confluent deep lesions 3; punctate
    foci 1, beginning confluence 2, large confluent areas 3. None for other diseases (Fazekas grades vascular
    lesions). Reads the drawn parameters only: no random number is used.
    """
    if disease != "CSVD":
        return None
    large = lesions.confluence is not None and lesions.confluence <= FAZEKAS_LARGE_CONFLUENCE
    if lesions.band_mm <= 0:
        pv = 0
    elif large:
        pv = 3
    else:
        pv = 2 if lesions.band_mm >= FAZEKAS_HALO_BAND_MM else 1
    # every CSVD patient has punctate deep foci; confluence adds to them
    deep = 1 if lesions.confluence is None else (3 if large else 2)
    return pv, deep


def _lesion_blocks(lesions: Lesions, grid: Grid) -> Iterator[Tuple[int, Tuple[slice, slice, slice]]]:
    """(lesion index, grid index block) of every lesion that reaches into ``grid``, from bounding spheres."""
    if not len(lesions):
        return
    centres = np.array(lesions.centres) @ grid.pose.rotation.T + grid.pose.shift  # image mm, x y z
    reach = np.array([max(a) for a in lesions.axes]) + 2.0
    bounds = []
    for coords, axis in ((grid.z, 2), (grid.y, 1), (grid.x, 0)):
        i0 = np.searchsorted(coords, centres[:, axis] - reach, side="left")
        i1 = np.searchsorted(coords, centres[:, axis] + reach, side="right")
        bounds.append((i0, i1))
    for i in np.flatnonzero(np.all([i1 > i0 for i0, i1 in bounds], axis=0)):
        yield int(i), tuple(slice(int(i0[i]), int(i1[i])) for i0, i1 in bounds)  # type: ignore[misc]


def render_lesions(
    lesions: Lesions, anatomy: Anatomy, tissues: Tissues, grid: Grid, noise: Dict[str, CoarseField], width: float
) -> Tuple[np.ndarray, np.ndarray]:
    """Lesion fraction (0..1) and contrast multiplier on ``grid``; white matter only, never in CSF or cortex."""
    frac = np.zeros(grid.shape, np.float32)
    contrast = np.ones(grid.shape, np.float32)
    for i, block in _lesion_blocks(lesions, grid):
        centre, axes, rot = lesions.centres[i], lesions.axes[i], lesions.rotations[i]
        q = grid.points(block)
        bumpy = noise["lesion"].sample(grid.z[block[0]], grid.y[block[1]], grid.x[block[2]])
        # irregular borders, but small lesions stay compact
        f = inside(ellipsoid_sdf(q, centre, axes, rot) + min(0.35 * min(axes), 1.2) * bumpy, width)
        old = frac[block]
        contrast[block] = np.where(f > old, np.float32(lesions.contrasts[i]), contrast[block])
        frac[block] = np.maximum(old, f)
    block = tissues.near_ventricles
    if block is not None and (lesions.band_mm > 0 or lesions.confluence is not None):
        vdist = tissues.ventricle_distance
        diffuse = np.zeros(vdist.shape, np.float32)
        if lesions.band_mm > 0:
            band = noise["band"].sample(grid.z[block[0]], grid.y[block[1]], grid.x[block[2]])
            # patchy: about a third of the walls has no halo; none around the temporal horns and third ventricle
            q = grid.points(block)
            supratentorial = np.clip((q[2] + 2.0) * np.float32(0.25), 0.0, 1.0) * np.clip((np.abs(q[0]) - 4.0) * np.float32(0.25), 0.0, 1.0)
            thickness = (lesions.band_mm * np.clip(lesions.band_cover + 0.9 * band, 0.0, None) + lesions.band_cap_mm * tissues.tips) * supratentorial
            # the halo fades into normal white matter over a few millimetres
            diffuse = inside(vdist - thickness, 2.5) * (vdist > -width)
        if lesions.confluence is not None:
            conf = noise["confluence"].sample(grid.z[block[0]], grid.y[block[1]], grid.x[block[2]])
            # confluent lesions favour the deep white matter between the ventricles and the cortex, and grow
            # out of the periventricular band when it is broad
            prior = 0.9 - 0.045 * np.abs(vdist - max(14.0, lesions.band_mm + 8.0))
            deep = inside(anatomy.cortex_mm + 5.0 - tissues.depth[block], 3.0)
            diffuse = np.maximum(diffuse, np.clip((conf + prior - lesions.confluence) / 0.25, 0, 1) * deep)
        diffuse *= 1.0 - tissues.deep_grey[block]
        old = frac[block]
        contrast[block] = np.where(diffuse > old, np.float32(lesions.diffuse_contrast), contrast[block])
        frac[block] = np.maximum(old, diffuse)
    # lesions live in white matter: sulcal CSF, ventricles and cortex stay what they are
    frac *= tissues.brain * (1.0 - tissues.csf) * (1.0 - tissues.ventricle) * (1.0 - 0.7 * tissues.grey)
    return frac, contrast
