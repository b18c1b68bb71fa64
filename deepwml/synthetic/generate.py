"""One synthetic patient: anatomy, lesions and scanner drawn from a per-case seed, rendered slice block by slice block.

The head is synthesised on a grid of about 1 mm in-plane and 1-1.3 mm through-plane, averaged over each slice's
thickness (partial volume), then zero-fill interpolated to the stored matrix together with complex noise. Memory
is bounded by the block size, not by the matrix or the number of slices.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Dict, Optional, Tuple

import numpy as np

from deepwml.datasets import CaseMeta
from deepwml.imageio import Geometry
from deepwml.synthetic.acquisition import Contrast, Stack, bias_field, mix, noise_sigma, sample_contrast, sample_stack
from deepwml.synthetic.anatomy import FOLD_RADIUS_MM, Anatomy, anatomy_fields, render_tissues, sample_anatomy
from deepwml.synthetic.artefacts import Artefacts, apply_artefacts, sample_artefacts
from deepwml.synthetic.centres import CENTRES
from deepwml.synthetic.fields import AlignedField, CoarseField, noise_field, upsample_inplane
from deepwml.synthetic.grid import Grid, Pose
from deepwml.synthetic.intensity import Storage, lesion_level, sample_iqr_target, sample_storage, store
from deepwml.synthetic.lesions import Lesions, drawn_fazekas, render_lesions, sample_lesions
from deepwml.synthetic.mimics import MimicParams, mimic_fields, mimic_truth, render_mimics, sample_mimics
from deepwml.synthetic.shapes import inside, rotation_matrix
from deepwml.synthetic.template_brain import render_template_tissues, sample_template_anatomy, template_fields
from deepwml.utils.errors import DeepWMLError

#: A pixel is lesion when at least this share of its slice's thickness is lesion (what a reader would outline).
LABEL_FRACTION = 0.4
#: height (mm) a thin-slice volume covers (generate_case's ``thin_slices_mm``): foramen magnum to vertex and a margin
THIN_COVERAGE_MM = 150.0
#: Upper bound of fine voxels synthesised at once (sets the memory of one worker).
BLOCK_VOXELS = 300_000
#: Spacing (mm) of the grid on which the smooth anatomy fields are computed before sampling.
COARSE_MM = 2.0
#: Bump when the generator changes what it writes for a given seed (each case's stream is keyed by it, so every case
#: is drawn anew). v9: template brains get their own cortex (deepwml.synthetic.folding); v10: their limbic grey
#: matter and peritrigonal white matter are brighter, never lesion (deepwml.synthetic.limbic); v11: periventricular
#: bands and confluent lesions as faint as half the focal lesions' contrast, and bands in heavy MS loads; v12: template
#: brains get temporal horns and a bright choroid plexus, never lesion (deepwml.synthetic.choroid).
GENERATOR_VERSION = 12
#: Wavelengths (mm) of the surface-bound and the free 3D folding fields: sulci about every half wavelength. Generator
#: v7 folds more densely (v6: 22 and 20 mm), so that cortex fills the outer brain on a slice as it does in real brains
#: (gyri 8-12 mm apart) instead of a few wide gyri of white matter.
FOLD_WAVELENGTH_MM = 16.0
MEANDER_WAVELENGTH_MM = 15.0
#: Share of patients (generator v8) whose brain is the warped ICBM template (deepwml.synthetic.template_brain) rather
#: than the procedural one: real cortex, insula and deep grey nuclei, while the procedural brains keep shape variety.
TEMPLATE_SHARE = 0.7
#: Share of cases written skull-stripped when it is drawn per case.
SKULL_STRIPPED_SHARE = 0.25
#: Truth masks of ``generate_case(..., truth=True)``.
TRUTH_MASKS = ("brain", "ventricle", "rim", "cortex", "infratentorial", "mimic")


@dataclass
class SyntheticCase:
    """One generated patient: image and label in numpy (z, y, x) order, their geometry and metadata."""

    case_id: str
    image: np.ndarray
    label: np.ndarray
    geometry: Geometry
    meta: CaseMeta
    #: with ``truth=True``: boolean masks on the image grid: 'brain' (parenchyma), 'ventricle', 'rim' (bright normal
    #: lining), 'cortex' (cortical ribbon), 'infratentorial' (cerebellum and brainstem parenchyma), 'mimic' (bright
    #: extra-cerebral structures, CSF inflow signal and, since v12, the choroid plexus; never lesion)
    truth: Optional[Dict[str, np.ndarray]] = None


@dataclass(frozen=True)
class Scan:
    """Everything drawn for one case besides anatomy and lesions: how it was acquired, disturbed and stored."""

    stack: Stack
    contrast: Contrast
    pose: Pose
    mimics: MimicParams
    artefacts: Artefacts
    storage: Storage
    #: (lesion median - brain median) / brain IQR this scan is given
    iqr_target: float
    #: random stream of the skull-stripping mask; None: not skull-stripped
    strip: Optional[np.random.Generator]


def case_rng(seed: int, centre: str, index: int, stream: int = 0) -> np.random.Generator:
    """The random stream of one case: depends on the seed, the centre and the case number only.

    Stream 1 draws the skull stripping alone, so a case differs between ``skull_stripped`` True and False only in it.
    """
    centre_number = list(CENTRES).index(centre)
    key = [int(seed), centre_number, int(index), GENERATOR_VERSION] + ([int(stream)] if stream else [])
    return np.random.default_rng(np.random.SeedSequence(key))


def skull_stripped_drawn(seed: int, centre: str, index: int, share: float = SKULL_STRIPPED_SHARE) -> bool:
    """Whether patient ``index`` of ``centre`` is skull-stripped when it is drawn per case with this ``share`` of
    stripped cases (cheap: nothing is rendered)."""
    return _strip_stream(seed, centre, index, share)[1]


def _strip_stream(seed: int, centre: str, index: int, share: float = SKULL_STRIPPED_SHARE) -> Tuple[np.random.Generator, bool]:
    """The skull-stripping random stream of a case and its first draw: stripped or not. One uniform draw against the
    share, so a larger share strips every case a smaller one strips, and the case is otherwise the same."""
    rng = case_rng(seed, centre, index, stream=1)
    return rng, bool(rng.random() < share)


def template_drawn(seed: int, centre: str, index: int) -> bool:
    """Whether patient ``index`` of ``centre`` gets the template brain when it is drawn (cheap: nothing is rendered)."""
    return _draw_subject(case_rng(seed, centre, index), centre)[4]


def _draw_subject(rng: np.random.Generator, centre: str) -> Tuple[str, float, float, float, bool]:
    """The first draws of a case: scanner, age, severity, extra atrophy and whether the brain is the template."""
    c = CENTRES[centre]
    scanner = str(rng.choice(c.scanners))
    age, severity, atrophy_extra = sample_subject(c.disease, rng)
    return scanner, age, severity, atrophy_extra, bool(rng.random() < TEMPLATE_SHARE)


def case_id_for(centre: str, index: int) -> str:
    """'MS1_007' for the 7th patient of MS#1."""
    return f"{CENTRES[centre].case_prefix}_{index:03d}"


def sample_subject(disease: str, rng: np.random.Generator) -> Tuple[float, float, float]:
    """(age, lesion severity 0..1, extra atrophy) of a patient with ``disease``."""
    if disease == "MS":
        age = rng.uniform(20, 56)
        severity = rng.beta(2.2, 2.4)
        return float(age), float(severity), float(0.12 * severity)
    if disease == "NMOSD":
        return float(rng.uniform(20, 65)), float(rng.beta(1.8, 2.2)), 0.0
    age = rng.uniform(50, 88)
    severity = float(np.clip(rng.beta(1.4, 1.4) + (age - 70) / 120, 0.15, 1.0))
    return float(age), severity, float(0.2 * severity)


def generate_case(
    centre: str,
    index: int = 1,
    seed: int = 0,
    case_id: Optional[str] = None,
    truth: bool = False,
    skull_stripped: Optional[bool] = None,
    brain: Optional[str] = None,
    strip_share: float = SKULL_STRIPPED_SHARE,
    thin_slices_mm: Optional[float] = None,
) -> SyntheticCase:
    """Generate patient ``index`` (1-based) of ``centre`` (e.g. 'MS#1') for ``seed``; the same inputs give the same case.

    ``skull_stripped``: None draws it per case (a ``strip_share`` of the cases, by default
    :data:`SKULL_STRIPPED_SHARE`), True/False forces it. ``brain``: None draws it per case (:data:`TEMPLATE_SHARE`),
    'template' or 'procedural' forces it. ``thin_slices_mm``: the same brain, lesions and scanner contrast acquired in
    slices this thin covering :data:`THIN_COVERAGE_MM` (a 3D-like volume, e.g. 1 mm, with its mask on that grid)
    instead of the centre's thick protocol; the head's place in the stack and the artefacts are drawn for it.
    """
    if brain not in (None, "template", "procedural"):
        raise DeepWMLError(f"brain must be 'template' or 'procedural', got {brain!r}")
    if centre not in CENTRES:
        raise DeepWMLError(f"unknown centre {centre!r}; choose from {', '.join(CENTRES)}")
    c = CENTRES[centre]
    rng = case_rng(seed, centre, index)
    strip_rng, drawn = _strip_stream(seed, centre, index, strip_share)
    stripped = drawn if skull_stripped is None else bool(skull_stripped)
    scanner, age, severity, atrophy_extra, drawn_template = _draw_subject(rng, centre)
    from_template = drawn_template if brain is None else brain == "template"
    anatomy = (sample_template_anatomy if from_template else sample_anatomy)(rng, age, atrophy_extra)
    stack = sample_stack(c, rng, 2 * float(anatomy.head_half_extent[0]))
    if thin_slices_mm is not None:
        if not 0.3 <= thin_slices_mm <= 3.0:
            raise DeepWMLError(f"thin_slices_mm must lie in 0.3..3 mm, got {thin_slices_mm}")
        stack = replace(stack, thickness=float(thin_slices_mm), n_slices=int(round(THIN_COVERAGE_MM / thin_slices_mm)))
    lesions = sample_lesions(c.disease, anatomy, rng, severity, stack.spacing)
    contrast = sample_contrast(c, rng)
    pose = _sample_pose(rng, anatomy, stack)
    scan = Scan(stack, contrast, pose, sample_mimics(rng), sample_artefacts(rng, stack.n_slices), sample_storage(rng),
                sample_iqr_target(rng), strip_rng if stripped else None)
    image, label, masks = _render(anatomy, lesions, scan, rng, truth)
    geometry = stack.geometry()
    meta = CaseMeta(
        centre=c.name,
        disease=c.disease,
        vendor=c.vendor,
        scanner=scanner,
        field_strength=c.field_strength,
        extra={
            "slice_thickness": stack.thickness,
            "pixel_spacing": stack.spacing,
            "age": int(round(age)),
            "severity": round(severity, 3),
            "tilt_deg": round(stack.tilt_deg, 2),
            "lesion_volume_ml": round(float(label.sum()) * geometry.voxel_volume_ml, 3),
            "skull_stripped": stripped,
            "brain": "template" if from_template else "procedural",
            "intensity_storage": scan.storage.mode,
        },
    )
    grades = drawn_fazekas(c.disease, lesions)
    if grades is not None:
        # the truth a Fazekas estimate is tested against: what was drawn, not what an estimator reads back
        meta.extra["fazekas_pv"], meta.extra["fazekas_deep"] = grades
    return SyntheticCase(case_id or case_id_for(centre, index), image, label, geometry, meta, masks)


def _sample_pose(rng: np.random.Generator, anatomy: Anatomy, stack: Stack) -> Pose:
    """Head position in the image frame, and which part of the head the slab covers."""
    rotation = rotation_matrix(rng.normal(0, 4), rng.normal(0, 4), rng.normal(0, 2.5))
    height = stack.n_slices * stack.thickness
    top = anatomy.brain_centre[2] + anatomy.brain_axes[2] + rng.uniform(0, 8)
    bottom = -62 * anatomy.size + rng.uniform(-8, 8)
    if height >= top - bottom:
        # spare slices mostly go above the vertex: stacks start near the foramen magnum
        centre_z = 0.5 * (top + bottom) + rng.uniform(-0.1, 0.5) * (height - (top - bottom))
    else:
        centre_z = top - rng.uniform(0, 5) - 0.5 * height  # short stacks cover the cerebrum and drop the posterior fossa
    shift = -rotation @ np.array([0.0, anatomy.brain_centre[1], centre_z]) + np.array([rng.normal(0, 3), rng.normal(0, 3), 0.0])
    return Pose(rotation, shift)


def _axis(n: int, step: float) -> np.ndarray:
    """Pixel-centre coordinates (mm) of n pixels of size ``step`` centred on 0."""
    return (np.arange(n) - (n - 1) / 2.0) * step


def _noise_fields(rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray) -> Dict[str, CoarseField]:
    """All smooth random fields of one case, on coarse grids covering the image box lo..hi (mm, z y x)."""
    sphere = FOLD_RADIUS_MM + 16.0
    return {
        "shape": noise_field(rng, lo, hi, 8.0, 70.0),
        "depth": noise_field(rng, lo, hi, 6.0, 40.0),
        "fold": noise_field(rng, (-sphere,) * 3, (sphere,) * 3, 2.0, FOLD_WAVELENGTH_MM, bandpass=True),
        "lesion": noise_field(rng, lo, hi, 2.0, 6.0),
        "band": noise_field(rng, lo, hi, 3.0, 14.0),
        "confluence": noise_field(rng, lo, hi, 3.0, 22.0),
        "bias": noise_field(rng, lo, hi, 16.0, 160.0),
        "meander": noise_field(rng, lo, hi, 2.0, MEANDER_WAVELENGTH_MM, bandpass=True),
    }


def _render(
    anatomy: Anatomy, lesions: Lesions, scan: Scan, rng: np.random.Generator, truth: bool
) -> Tuple[np.ndarray, np.ndarray, Optional[Dict[str, np.ndarray]]]:
    """Image (stored dtype), label (uint8) and optional truth masks, all in the stored voxel order."""
    stack, contrast, pose = scan.stack, scan.contrast, scan.pose
    k = stack.work_factor
    ny, nx = stack.matrix
    dw = stack.spacing * k
    yw, xw = _axis(ny // k, dw), _axis(nx // k, dw)
    n_sub = stack.sub_slices
    z_slices = _axis(stack.n_slices, stack.thickness)
    sub_offsets = ((np.arange(n_sub) + 0.5) / n_sub - 0.5) * stack.thickness
    z_fine = (z_slices[:, None] + sub_offsets[None, :]).ravel()

    # synthesise only inside the head's bounding box; the rest of the field of view is air
    half = anatomy.head_half_extent
    box_lo = np.array([-half[0], anatomy.brain_centre[1] - half[1], -200.0])
    box_hi = np.array([half[0], anatomy.brain_centre[1] + half[1], 200.0])
    _, ys, xs = Grid(z_fine, yw, xw, pose).block_around(box_lo, box_hi)
    y_crop, x_crop = yw[ys], xw[xs]
    lo = np.array([z_fine[0], y_crop[0], x_crop[0]]) - 6.0
    hi = np.array([z_fine[-1], y_crop[-1], x_crop[-1]]) + 6.0
    noise = _noise_fields(rng, lo, hi)
    # the anatomy's smooth fields live on a grid of f x f fine pixels in-plane (pixel-centred) and ~2 mm in z
    f = max(1, int(round(COARSE_MM / dw)))
    coarse_inplane = [c[0] + (np.arange(-(-len(c) // f)) * f + (f - 1) / 2.0) * dw for c in (y_crop, x_crop)]
    coarse = Grid(np.arange(lo[0], hi[0] + COARSE_MM, COARSE_MM), *coarse_inplane, pose)
    crop = (len(y_crop), len(x_crop))
    fields = (template_fields if anatomy.warp is not None else anatomy_fields)(anatomy, coarse, noise, f, crop)
    fields.update(mimic_fields(anatomy, coarse, noise, f, crop, scan.mimics))
    if scan.strip is not None:
        fields["strip"] = _strip_field(fields["hull"], scan.strip, coarse, lo, hi)

    width = max(dw, stack.thickness / n_sub)
    shape = (stack.n_slices, len(yw), len(xw))
    # the image is linear in the lesion signal: base (lesions as white matter) + (L - 1) * lesion part
    parts = {name: np.zeros(shape, np.float32) for name in ("base", "lesion", "lesion_frac", "parenchyma", "strip")}
    names = TRUTH_MASKS[1:] if truth else ()
    masks = {name: np.zeros(shape, np.float32) for name in names}
    flat = replace(contrast, lesion=1.0)
    per_block = max(1, BLOCK_VOXELS // (n_sub * len(y_crop) * len(x_crop)))
    for s0 in range(0, stack.n_slices, per_block):
        s1 = min(stack.n_slices, s0 + per_block)
        grid = Grid(z_fine[s0 * n_sub : s1 * n_sub], y_crop, x_crop, pose)
        t = (render_template_tissues if anatomy.warp is not None else render_tissues)(anatomy, fields, grid.z, width)
        m = render_mimics(fields, grid.z, grid.shape, t.head, width)
        les, les_contrast = render_lesions(lesions, anatomy, t, grid, noise, width)
        parenchyma = t.brain * (1.0 - t.csf) * (1.0 - t.ventricle)
        fine = {
            "base": mix(t, m, les, les_contrast, flat),
            "lesion": t.brain * les * les_contrast,
            "lesion_frac": les,
            "parenchyma": parenchyma,
        }
        if scan.strip is not None:
            fine["strip"] = inside(fields["strip"].sample(grid.z), width)
        if truth:
            csf = t.brain * np.maximum(t.ventricle, t.csf) + t.intracranial * (1.0 - t.brain) * (1.0 - t.soft)
            fine.update(
                ventricle=t.brain * t.ventricle,
                rim=t.brain * t.rim * (1.0 - les),
                cortex=parenchyma * t.grey,
                infratentorial=parenchyma * fields["infratentorial"].sample(grid.z),
                mimic=mimic_truth(m, csf) if t.choroid is None else np.maximum(mimic_truth(m, csf), t.brain * t.choroid * (1.0 - les)),
            )
        for name, values in fine.items():
            target = parts[name] if name in parts else masks[name]
            target[s0:s1, ys, xs] = values.reshape(s1 - s0, n_sub, *crop).mean(axis=1)

    base, lesion = apply_artefacts(parts["base"], scan.artefacts), apply_artefacts(parts["lesion"], scan.artefacts)
    # receive bias, evaluated at the slice centres on the synthesis grid (it is smooth)
    radius2 = (yw[None, :, None] / 90.0) ** 2 + (xw[None, None, :] / 75.0) ** 2 + (z_slices[:, None, None] / 110.0) ** 2
    bias = bias_field(noise["bias"].sample(z_slices, yw, xw), radius2.astype(np.float32), contrast)
    sigma = noise_sigma(contrast, stack)
    # complex Gaussian noise at the acquired resolution, zero-fill interpolated with the image (Rician magnitude)
    real = upsample_inplane(base * bias + rng.standard_normal(shape, dtype=np.float32) * np.float32(sigma), k)
    imag = upsample_inplane(rng.standard_normal(shape, dtype=np.float32) * np.float32(sigma), k)
    lesion = _upsample_support(lesion * bias, k)
    label = _upsample_support(parts["lesion_frac"], k) >= LABEL_FRACTION
    brain = _upsample_support(parts["parenchyma"], k) >= 0.5
    level = lesion_level(real, lesion, imag, label, brain, scan.iqr_target, contrast.lesion)
    real += np.float32(level - 1.0) * lesion
    image = np.hypot(real, imag)
    strip_mask = _upsample_support(parts["strip"], k) >= 0.5 if scan.strip is not None else None
    if strip_mask is not None:
        label &= strip_mask
    image = store(image, contrast.scale, scan.storage, sigma, strip_mask)
    out_masks = None
    if truth:
        out_masks = {"brain": _to_storage(brain, stack)}
        out_masks.update({name: _to_storage(_upsample_support(v, k) >= 0.5, stack) for name, v in masks.items()})
        # a voxel 40-50 % lesion over the choroid plexus is labelled; its truth is lesion, not mimic
        out_masks["mimic"] &= ~_to_storage(label, stack)
    return _to_storage(image, stack), _to_storage(label.astype(np.uint8), stack), out_masks


def _upsample_support(a: np.ndarray, k: int) -> np.ndarray:
    """:func:`upsample_inplane` of an array that is zero outside a box: only the box (plus one pixel) is upsampled."""
    rows, cols = np.flatnonzero(a.any(axis=(0, 2))), np.flatnonzero(a.any(axis=(0, 1)))
    out = np.zeros((a.shape[0], a.shape[1] * k, a.shape[2] * k), np.float32)
    if rows.size == 0:
        return out
    # one zero pixel on each side makes the interpolation at the box edge the same as on the whole image
    r0, r1 = max(0, rows[0] - 1), min(a.shape[1], rows[-1] + 2)
    c0, c1 = max(0, cols[0] - 1), min(a.shape[2], cols[-1] + 2)
    out[:, r0 * k : r1 * k, c0 * k : c1 * k] = upsample_inplane(a[:, r0:r1, c0:c1], k)
    return out


def _strip_field(hull: AlignedField, rng: np.random.Generator, coarse: Grid, lo: np.ndarray, hi: np.ndarray) -> AlignedField:
    """Signed distance to a skull-stripping mask: the brain surface pushed out or in by a smooth, uneven margin.

    Brain-extraction tools leave some CSF, dura or marrow here and cut into the cortex there; the margin varies
    over 15-30 mm between about -1.5 mm (cortex lost) and +4 mm (bright meninges or bone marrow kept).
    """
    margin = noise_field(rng, lo, hi, 4.0, float(rng.uniform(15.0, 30.0)))
    mean, spread = float(rng.uniform(0.8, 2.2)), float(rng.uniform(0.6, 1.6))
    offset = mean + spread * margin.sample(coarse.z, coarse.y, coarse.x)
    values = hull.values - offset.astype(np.float32)
    return AlignedField(values, hull.z0, hull.dz, hull.factor, hull.offset, hull.size)


def _to_storage(array: np.ndarray, stack: Stack) -> np.ndarray:
    """Reverse x and y for centres that store RAS-ordered voxels (see :meth:`Stack.geometry`)."""
    if stack.storage == "RAS":
        return np.ascontiguousarray(array[:, ::-1, ::-1])
    return array
