"""Real brain anatomy for the synthetic generator: the ICBM 2009a template's tissue maps, warped per subject.

The procedural brain (deepwml.synthetic.anatomy) has a made-up cortex; a model trained on it alone takes real
cortex, insula and deep grey nuclei for lesion. A template brain has real gyri, ventricles, basal ganglia and
posterior fossa. Each subject gets its own smooth warp (deepwml.synthetic.warp), ventricle size and sulcal width;
skull, scalp, face and artefacts are still drawn procedurally around the template's brain surface, and lesions are
placed at sites read from the template (ventricle walls, deep and juxtacortical white matter, posterior fossa).

The template file is built by ``python -m dataset_conversion.icbm152_template`` (see there and template/NOTICE.md).
"""
from __future__ import annotations

import io
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Callable, Dict, Tuple

import numpy as np
from scipy import ndimage

from deepwml.synthetic.anatomy import (
    Anatomy, Tissues, block_fields, whole_block, cranium_sdf, deep_cortex_fields, head_tissues, horn_tip_weight, sample_anatomy, ventricle_block,
    ventricle_tissues,
)
from deepwml.synthetic import fields as fields_module
from deepwml.synthetic.fields import AlignedField, CoarseField
from deepwml.synthetic.folding import sample_folding
from deepwml.synthetic.grid import Grid, is_empty
from deepwml.synthetic.choroid import choroid_sdf, temporal_horn_sdf
from deepwml.synthetic.limbic import limbic_weight, terminal_weight
from deepwml.synthetic.shapes import inside
from deepwml.synthetic.warp import sample_warp
from deepwml.utils.errors import DeepWMLError
from deepwml.utils.user_cache import cached_arrays, content_key

TEMPLATE_FILE = Path(__file__).resolve().parent / "template" / "icbm152_2009a.npz"
#: how far (mm) beyond the brain its surface distance is known: skull and scalp are built on it
HULL_MARGIN_MM = 40.0
#: grey matter deeper than this below the brain surface (mm) is deep grey (basal ganglia, thalamus); a ramp
DEEP_GREY_DEPTH_MM = (12.0, 18.0)
#: how much atrophy (0..1) widens the sulci: the CSF share c of a voxel becomes 1 - (1 - c) ** (1 + k * atrophy)
SULCAL_WIDENING = 2.5


@dataclass(frozen=True)
class Template:
    """The template's maps (template mm at head size 1, X left, Y posterior, Z superior) and lesion sites."""

    #: grey- and white-matter probability (0..255) packed as gm * 256 + wm, on the template grid (origin z y x, spacing)
    tissue: np.ndarray
    origin: np.ndarray
    spacing: float
    #: signed distance to the brain surface (mm, positive outside), on a 2-voxel grid with a margin
    hull: CoarseField
    #: signed distance to the lateral and third ventricles (mm), around the ventricles
    ventricle: CoarseField
    infratentorial: CoarseField
    #: candidate lesion sites (N, 3; X Y Z mm): ventricle wall points and their outward normals; deep white matter;
    #: white matter near cortex with its distance to the cortex (mm); cerebellar and brainstem white matter
    sites: Dict[str, np.ndarray]
    horn_tips: np.ndarray
    ventricle_box: Tuple[np.ndarray, np.ndarray]
    cerebrum_centre: np.ndarray
    cerebrum_half: np.ndarray

    def tissue_at(self, q) -> Tuple[np.ndarray, np.ndarray]:
        """Grey- and white-matter probabilities (0..1) at template points (z, y, x mm arrays), trilinear.

        One gather of the packed map per corner serves both maps: half the work of two map_coordinates calls.
        """
        n = self.tissue.shape
        gm = np.zeros(q[0].shape, np.float32)
        wm = np.zeros(q[0].shape, np.float32)
        base = np.zeros(q[0].shape, np.intp)
        frac = []
        for axis in range(3):
            u = np.clip((q[axis] - np.float32(self.origin[axis])) / np.float32(self.spacing), 0.0, n[axis] - 1.001)
            i = u.astype(np.intp)
            frac.append((u - i).astype(np.float32))
            base = base * n[axis] + i
        flat = self.tissue.ravel()
        strides = (n[1] * n[2], n[2], 1)
        for corner in range(8):
            bits = [(corner >> (2 - axis)) & 1 for axis in range(3)]
            w = np.ones(q[0].shape, np.float32)
            for axis, bit in enumerate(bits):
                w *= frac[axis] if bit else 1.0 - frac[axis]
            v = flat[base + sum(b * st for b, st in zip(bits, strides))]
            gm += w * (v >> 8)
            wm += w * (v & 255)
        return gm * np.float32(1 / 255.0), wm * np.float32(1 / 255.0)


@lru_cache(maxsize=1)
def load_template(path: Path = TEMPLATE_FILE) -> Template:
    """Load the template file with its distances and lesion sites (derived in a few seconds once, then cached)."""
    try:
        raw = path.read_bytes()  # read once: its bytes are part of the cache key and its arrays are loaded from them
        with np.load(io.BytesIO(raw)) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise DeepWMLError(f"{path}: cannot read the brain template: {exc}; rebuild it with "
                           "python -m dataset_conversion.icbm152_template") from exc
    import scipy

    # everything the derived arrays depend on: a change to any of these is a new key, so a stale entry is never read
    try:
        sources = [Path(__file__).read_bytes(), Path(fields_module.__file__).read_bytes()]
    except OSError:  # no source files (a frozen application): no key to trust, so no cache
        d = _derive(arrays)
    else:
        d = cached_arrays("template-derived", content_key([raw, *sources, scipy.__version__, np.__version__]),
                          lambda: _derive(arrays))
    sp = float(arrays["spacing"])
    origin = np.asarray(arrays["origin"], float)
    field = lambda values, o, s: CoarseField(values, tuple(float(v) for v in o), (s, s, s))  # noqa: E731
    packed = arrays["gm"].astype(np.uint16) * np.uint16(256) + arrays["wm"].astype(np.uint16)
    return Template(
        tissue=packed, origin=origin, spacing=sp,
        hull=field(d["hull"], d["hull_origin"], float(d["hull_spacing"])), ventricle=field(d["ventricle"], d["ventricle_origin"], sp),
        infratentorial=field(arrays["infratentorial"].astype(np.float32), origin, sp),
        sites={k[len("site_"):]: v for k, v in d.items() if k.startswith("site_")},
        horn_tips=d["horn_tips"], ventricle_box=(d["ventricle_lo"], d["ventricle_hi"]),
        cerebrum_centre=d["cerebrum_centre"], cerebrum_half=d["cerebrum_half"],
    )


def _derive(arrays: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """The template's surface and ventricle distances, lesion sites and landmarks (the costly part of loading it)."""
    sp = float(arrays["spacing"])
    origin = np.asarray(arrays["origin"], float)  # z y x of voxel 0
    gm = arrays["gm"].astype(np.float32) / 255.0
    wm = arrays["wm"].astype(np.float32) / 255.0
    envelope = arrays["envelope"].astype(bool)
    ventricle = arrays["ventricle"].astype(bool)
    infra = arrays["infratentorial"].astype(np.float32)
    shape = np.array(gm.shape)
    coords = lambda idx: np.asarray(idx, float)[:, ::-1] * sp + origin[::-1]  # noqa: E731 - (N, z y x) -> X Y Z mm

    # the brain surface distance on a 2-voxel grid padded by the margin: smooth, so coarse is enough
    pad = int(np.ceil(HULL_MARGIN_MM / (2 * sp)))
    small = np.pad(envelope[::2, ::2, ::2], pad)
    hull = _signed_distance(small, 2 * sp)
    hull_origin = origin - pad * 2 * sp
    hull_field = CoarseField(hull, tuple(float(v) for v in hull_origin), (2 * sp,) * 3)

    # ventricle distance in a box around the ventricles (lesion bands and the ependymal lining are read near them)
    nz = np.nonzero(ventricle)
    margin = int(np.ceil(32.0 / sp))
    lo = np.maximum(np.array([i.min() for i in nz]) - margin, 0)
    hi = np.minimum(np.array([i.max() for i in nz]) + margin + 1, shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    vb = ventricle[box]
    vdist = _signed_distance(vb, sp)

    grid = np.indices(gm.shape, np.float32) * np.float32(sp) + origin.astype(np.float32)[:, None, None, None]
    depth = -hull_field.sample_points(grid[0], grid[1], grid[2])
    del grid
    sites = _lesion_sites(gm, wm, vb, vdist, box, depth, infra > 0.5, sp, coords)
    vz = coords(np.argwhere(ventricle))
    tips = []
    for side in (-1, 1):
        half = vz[vz[:, 0] * side > 2.0]
        tips += [half[np.argmin(half[:, 1])], half[np.argmax(half[:, 1])]]  # frontal and occipital horn tips
    supra = envelope & (infra < 0.5)
    ext = coords(np.array([[i.min() for i in np.nonzero(supra)], [i.max() for i in np.nonzero(supra)]]))
    return {
        "hull": hull, "hull_origin": hull_origin, "hull_spacing": np.float64(2 * sp),
        "ventricle": vdist, "ventricle_origin": origin + lo * sp,
        **{f"site_{k}": v for k, v in sites.items()},
        "horn_tips": np.array(tips), "ventricle_lo": vz.min(0), "ventricle_hi": vz.max(0),
        "cerebrum_centre": ext.mean(0), "cerebrum_half": 0.5 * (ext[1] - ext[0]),
    }


def _signed_distance(mask: np.ndarray, voxel_mm: float) -> np.ndarray:
    """Signed distance (mm, positive outside) to a binary mask on an isotropic grid, float32."""
    return (ndimage.distance_transform_edt(~mask) - ndimage.distance_transform_edt(mask)).astype(np.float32) * np.float32(voxel_mm)


def _lesion_sites(
    gm: np.ndarray, wm: np.ndarray, vb: np.ndarray, vdist: np.ndarray, box: Tuple[slice, ...],
    depth: np.ndarray, infra: np.ndarray, sp: float, coords: Callable[[np.ndarray], np.ndarray],
) -> Dict[str, np.ndarray]:
    """Candidate lesion sites of the template (see :class:`Template`): ``vb``/``vdist`` are the ventricle mask and
    distance in ``box``, ``depth`` the depth below the brain surface, ``coords`` maps voxel indices to mm."""
    # ventricle walls: the outermost ventricle voxels, with the outward normal from the distance gradient
    wall = vb & ~ndimage.binary_erosion(vb)
    idx = np.argwhere(wall)
    grad = np.stack(np.gradient(ndimage.gaussian_filter(vdist, 1.0)), axis=-1)[tuple(idx.T)][:, ::-1]  # X Y Z
    normals = grad / np.maximum(np.linalg.norm(grad, axis=1, keepdims=True), 1e-6)
    points = coords(idx + np.array([s.start for s in box]))
    # no lesions grow from the septum or the third ventricle: the medial walls face the other ventricle
    lateral = (np.abs(points[:, 0]) > 4.0) & (normals[:, 0] * -np.sign(points[:, 0]) < 0.3)
    dist_to_ventricle = np.full(gm.shape, 99.0, np.float32)
    dist_to_ventricle[box] = vdist
    cortex = gm >= 0.5
    to_cortex = ndimage.distance_transform_edt(~cortex).astype(np.float32) * np.float32(sp)
    white = wm >= 0.5
    z = coords(np.array([[i, 0, 0] for i in range(gm.shape[0])]))[:, 2][:, None, None]
    deep = (wm >= 0.75) & (depth > 10.0) & (dist_to_ventricle > 4.0) & ~infra & (z > -5.0)
    juxta = white & (to_cortex > 0.5) & (to_cortex < 9.0) & ~infra & (z > -10.0) & (dist_to_ventricle > 6.0)
    return {
        "wall": points[lateral].astype(np.float32),
        "wall_normal": normals[lateral].astype(np.float32),
        "deep": coords(np.argwhere(deep)).astype(np.float32),
        "juxta": coords(np.argwhere(juxta)).astype(np.float32),
        "juxta_mm": to_cortex[juxta],
        "infra": coords(np.argwhere((wm >= 0.6) & infra)).astype(np.float32),
    }


def sample_template_anatomy(rng: np.random.Generator, age: float, atrophy_extra: float = 0.0) -> Anatomy:
    """A subject whose brain is the template, warped: head and scalp as :func:`sample_anatomy` draws them."""
    a = sample_anatomy(rng, age, atrophy_extra)
    tpl = load_template()
    warp = sample_warp(rng, a.size, tuple(tpl.cerebrum_centre), a.ventricle_scale, a.atrophy)
    inverse = np.linalg.inv(warp.matrix)
    lo, hi = tpl.ventricle_box
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    mapped = warp.to_anatomy(corners)
    reach = 4.0 + max(0.0, warp.ventricle_mm)
    return replace(
        a,
        brain_centre=tuple(float(v) for v in tpl.cerebrum_centre),
        brain_axes=tuple(float(v) for v in np.abs(inverse) @ tpl.cerebrum_half),
        capsules=[],
        horn_tips=list(warp.to_anatomy(tpl.horn_tips)),
        warp=warp,
        ventricle_bounds=(mapped.min(0) - reach, mapped.max(0) + reach),
    )


def template_fields(
    anatomy: Anatomy, coarse: Grid, noise: Dict[str, CoarseField], factor: int, fine_size: Tuple[int, int]
) -> Dict[str, AlignedField]:
    """The smooth fields of a template subject on ``coarse`` (as :func:`deepwml.synthetic.anatomy.anatomy_fields`),
    including the template coordinates of every coarse point, from which the fine tissue maps are read."""
    a, tpl = anatomy, load_template()
    z, y, x = coarse.z, coarse.y, coarse.x
    p = coarse.points()
    q = a.warp.to_template(p)
    hull = tpl.hull.sample_points(q[2], q[1], q[0]) * np.float32(a.size)
    extra = deep_cortex_fields(a, p)
    # the tissue maps are read at folded points; the hull, ventricles and lesion sites keep the warp alone
    folded = sample_folding(a.warp).displace((q[2], q[1], q[0]), hull)
    full = {
        "hull": hull,
        "cranium": cranium_sdf(a, p, hull),
        "infratentorial": tpl.infratentorial.sample_points(q[2], q[1], q[0]),
        "texture": noise["band"].sample(z, y, x),
        "deep": np.clip((-hull - DEEP_GREY_DEPTH_MM[0]) / (DEEP_GREY_DEPTH_MM[1] - DEEP_GREY_DEPTH_MM[0]), 0.0, 1.0),
        "tract": extra["tract"],
        "stem": extra["stem"],
        "limbic": limbic_weight(q),
        "terminal": terminal_weight(q),
        "horn": temporal_horn_sdf(q, a.warp.ventricle_mm),
        "choroid": choroid_sdf(q),
        "tpl_z": folded[0],
        "tpl_y": folded[1],
        "tpl_x": folded[2],
    }
    out = block_fields(full, coarse, whole_block(coarse), factor, fine_size)
    block = ventricle_block(a, coarse, margin_mm=22.0)
    if is_empty(block):
        return out
    qb = tuple(c[block] for c in q)
    pb = tuple(c[block] for c in p)
    vdist = tpl.ventricle.sample_points(qb[2], qb[1], qb[0]) * np.float32(a.size) - np.float32(a.warp.ventricle_mm)
    # the template is symmetric about X = 0: its X is the distance from the midline
    near = {"ventricle": vdist, "tips": horn_tip_weight(a, pb), "near_midline": qb[0]}
    out.update(block_fields(near, coarse, block, factor, fine_size))
    return out


def render_template_tissues(anatomy: Anatomy, fields: Dict[str, AlignedField], z: np.ndarray, width: float) -> Tissues:
    """All tissue fractions at fine z positions ``z`` from :func:`template_fields` (as ``render_tissues``)."""
    a, tpl = anatomy, load_template()
    hull, (head, fat, skull, diploe, intracranial, soft, texture, brain) = head_tissues(a, fields, z, width)
    shape = hull.shape
    gm, wm = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    # the tissue maps are only read where there is brain (about half of the head's box)
    where = brain > 0
    q = [fields[k].sample(z)[where] for k in ("tpl_z", "tpl_y", "tpl_x")]
    gm[where], wm[where] = tpl.tissue_at(q)
    del q, where
    ventricle, rim, near, vdist, tips = ventricle_tissues(a, fields, z, width, shape)
    tissue = gm + wm
    folding = sample_folding(a.warp)
    # what the template's tissue maps leave is CSF; atrophy widens the sulci where there is some already
    csf_share = folding.gather_csf(np.clip(1.0 - tissue, 0.0, 1.0))
    csf = (1.0 - (1.0 - csf_share) ** np.float32(1.0 + SULCAL_WIDENING * a.warp.sulcal_widening)) * (1.0 - ventricle)
    # the template hardly has temporal horns (generator v12): drawn as CSF, with the choroid plexus in them and the atria
    size = np.float32(a.size)
    horn = inside(fields["horn"].sample(z) * size, width) * (1.0 - ventricle)
    csf = np.maximum(csf, horn)
    choroid = inside(fields["choroid"].sample(z) * size, width) * np.maximum(ventricle, horn)
    del horn
    grey_share = folding.sharpen(gm / np.maximum(tissue, np.float32(1e-3)))
    limbic = fields["limbic"].sample(z)
    # limbic cortex lies deep below the surface but is cortex, not a grey nucleus (until v9 it was painted as one)
    deep = fields["deep"].sample(z) * (1.0 - limbic)
    tract = inside(fields["tract"].sample(z), 2.0)
    return Tissues(
        head, fat, skull, diploe, intracranial, soft, texture, brain, grey_share * (1.0 - deep), grey_share * deep,
        csf, ventricle, rim, tract, fields["stem"].sample(z), -hull, near, vdist, tips,
        limbic=limbic, terminal=fields["terminal"].sample(z), choroid=choroid,
    )


def wall_site(anatomy: Anatomy, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A point on a lateral ventricle wall of a template subject: (point, outward normal, direction along the wall)."""
    tpl, warp = load_template(), anatomy.warp
    i = int(rng.integers(len(tpl.sites["wall"])))
    normal = warp.direction_to_anatomy(tpl.sites["wall_normal"][i])
    # the ventricles run front to back: the wall direction is the sagittal axis made perpendicular to the normal
    along = np.array([0.0, 1.0, 0.0]) - normal[1] * normal
    along /= max(np.linalg.norm(along), 1e-6)
    # the ventricles of this subject are larger or smaller than the template's
    point = warp.to_anatomy(tpl.sites["wall"][i])[0] + normal * warp.ventricle_mm
    return point, normal, along


def deep_site(anatomy: Anatomy, rng: np.random.Generator, z_min: float = -5.0) -> np.ndarray:
    """A point of deep white matter (centrum semiovale, corona radiata) above ``z_min`` (template mm)."""
    pts = load_template().sites["deep"]
    for _ in range(20):
        p = pts[int(rng.integers(len(pts)))]
        if p[2] > z_min:
            break
    return anatomy.warp.to_anatomy(p)[0]


def juxtacortical_site(anatomy: Anatomy, rng: np.random.Generator, depth_mm: float) -> np.ndarray:
    """A white-matter point about ``depth_mm - cortex_mm`` from the cortex (the procedural sites' depth is below
    the brain surface, through the cortex)."""
    sites = load_template().sites
    target = float(np.clip(depth_mm - anatomy.cortex_mm, 1.0, 8.0))
    candidates = np.flatnonzero(np.abs(sites["juxta_mm"] - target) < 0.75)
    if candidates.size == 0:
        candidates = np.arange(len(sites["juxta"]))
    return anatomy.warp.to_anatomy(sites["juxta"][int(rng.choice(candidates))])[0]


def infratentorial_site(anatomy: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """A point of brainstem or cerebellar white matter."""
    pts = load_template().sites["infra"]
    return anatomy.warp.to_anatomy(pts[int(rng.integers(len(pts)))])[0]
