"""Zero-shot figures of a model on real MS FLAIR made into thick-slice 2D stacks (issue #12 point 4).

The scans (MSLUB, three patients, 3D 1 mm, skull-stripped, MNI space; ../shared/real_dev/mslub, never copied
into this repository) are each turned into axial stacks as a 2D acquisition records them: every slab of the
given thickness averages the 1 mm voxels it covers along superior-inferior, and a pixel is lesion when at
least 40 % of its slab is (deepwml/synthetic/thick_slices.py; a last partial slab is dropped). The stacks are
written as NIfTI with their geometry into a temporary folder (or --work DIR), segmented by deepwml_predict's
library entry point, and scored against the slab labels with the MICCAI-2017 WMH case metrics of
deepwml.evaluation. Prints a Markdown table per scan × thickness, means per thickness and overall, and times.

These scans measure progress on real anatomy: do not tune anything on them.

Another tool's masks are scored the same way: --stacks-only --work DIR writes the stacks to DIR/images and stops;
segment them with the other tool (masks named as the stacks, on their grids), then --predictions MASKS scores them.

    python benchmarks/real_dev.py -m RESULTS/Dataset501_Synth/cpu_fast
    python benchmarks/real_dev.py -d 501 -p cpu_fast --thickness 6.5 --inplane 0.9 --work /tmp/realdev
    python benchmarks/real_dev.py --stacks-only --work /tmp/stacks   # then: other tool, /tmp/stacks/images -> /tmp/masks
    python benchmarks/real_dev.py --predictions /tmp/masks
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from deepwml.cli.common import add_skull_strip_options, add_tta_options, cortex_contrast_setting, run, thin_slab_setting
from deepwml.constants import MIN_CORTEX_CONTRAST
from deepwml.evaluation.case_metrics import case_metrics
from deepwml.evaluation.lesions import label_lesions
from deepwml.imageio import Geometry, read_image, read_label, write_image
from deepwml.inference.model_loading import check_model, resolve_model_dir
from deepwml.inference.ensemble import ensemble
from deepwml.inference.run import PredictReport, PredictRequest, predict
from deepwml.paths import results_root
from deepwml.synthetic.realism import lesion_contrast
from deepwml.synthetic.thick_slices import SlabSpec, superior_axis_first, thick_slice_stack
from deepwml.utils.errors import DeepWMLError
from machine_load import load_line  # benchmarks/machine_load.py, next to this script
from lesion_conspicuity import both_ways, conspicuity_table, filter_table, predicted_table  # benchmarks/lesion_conspicuity.py, next to this script
from synthetic_head import wrap_in_head  # benchmarks/synthetic_head.py, next to this script

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "real_dev" / "mslub"
#: (column, case_metrics key, format) of the table, in order
COLUMNS = [("Dice", "dice", "{:.3f}"), ("HD95 mm", "hd95_mm", "{:.1f}"), ("AVD %", "avd_percent", "{:.0f}"),
           ("lesion recall", "lesion_recall", "{:.2f}"), ("lesion F1", "lesion_f1", "{:.2f}")]


@dataclass
class Scan:
    """One real scan: its id and its FLAIR and consensus mask files."""

    scan_id: str
    flair: Path
    mask: Path


@dataclass
class StackCase:
    """One simulated 2D stack to predict and score."""

    scan_id: str
    thickness: float
    case_id: str
    label: np.ndarray
    geometry: Geometry
    #: intensity figures of the stack (:func:`contrast_figures`), to set beside docs/synthetic.md's realism table
    contrast: Optional[Dict[str, float]] = None
    #: voxels the reference leaves out of scoring (a mask's ignore value, e.g. the WMH challenge's "other pathology")
    ignore: Optional[np.ndarray] = None
    #: the stack's brain when its image holds more than the stripped brain (--add-head), else found from the image
    brain: Optional[np.ndarray] = None


def find_scans(data: Path, flair: str = "flair.nii.gz", mask: str = "wmh.nii.gz") -> List[Scan]:
    """Every subfolder of ``data`` holding ``flair`` and ``mask`` (paths inside it, e.g. pre/FLAIR.nii.gz in the
    WMH challenge's layout); a clear error when there are none."""
    hint = (f"the real development scans are not in the repository (issue #12 point 4): expected "
            f"patientNN/{flair} and patientNN/{mask} below it; give their folder with --data DIR")
    if not data.is_dir():
        raise DeepWMLError(f"folder not found; {hint}", data)
    scans = [Scan(p.name, p / flair, p / mask) for p in sorted(data.iterdir())
             if (p / flair).is_file() and (p / mask).is_file()]
    for p in sorted(data.iterdir()):
        missing = [n for n in (flair, mask) if not (p / n).is_file()]
        if p.is_dir() and not p.name.startswith(".") and len(missing) == 1:
            # a scan without its mask (or a mask without its scan, or a broken link) is left out, and said so
            print(f"note: {p} is left out: it has no {missing[0]} (or it is a broken link)", file=sys.stderr)
    if not scans:
        raise DeepWMLError(f"holds no scans; {hint}", data)
    return scans


def check_work_folder(work: Path) -> None:
    """Refuse a work folder inside the repository: files derived from the scans must never be committed."""
    resolved = work.expanduser().resolve()
    if resolved == REPO_ROOT or REPO_ROOT in resolved.parents:
        raise DeepWMLError("is inside the repository; stacks derived from the real scans must stay outside it", work)


def model_dir(args: argparse.Namespace) -> Path:
    """The PLAN folder to evaluate: -m, -d/-p, or the model shipped in the package (--builtin)."""
    if args.builtin:
        if args.model or args.dataset or args.plan:
            raise DeepWMLError("give --builtin or a model (-m, or -d/-p), not both")
        from deepwml.pretrained import builtin_model_dir

        return builtin_model_dir()
    root = results_root(args.results_root) if args.dataset else None
    return resolve_model_dir(args.model, args.dataset, args.plan, root)


def stack_id(scan_id: str, thickness: float) -> str:
    """File stem of a stack, e.g. patient07_6p5mm (no dot inside the id)."""
    return f"{scan_id}_{thickness:g}mm".replace(".", "p")


def _nod(arrays: Sequence[np.ndarray], geometry: Geometry, degrees: float) -> Tuple[List[np.ndarray], Geometry]:
    """Arrays (superior axis first, on ``geometry``) resampled trilinearly, as float32, with the head nodded by
    ``degrees`` about the left-right axis through the volume centre."""
    a = np.deg2rad(degrees)
    sz, sy = float(geometry.spacing[2]), float(geometry.spacing[1])
    # output (z, y) voxel -> mm about the centre -> rotated -> input voxel
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    matrix = np.eye(3)
    matrix[:2, :2] = np.diag([1 / sz, 1 / sy]) @ rot @ np.diag([sz, sy])
    centre = (np.array(arrays[0].shape, float) - 1) / 2
    offset = centre - matrix @ centre
    return [ndimage.affine_transform(x.astype(np.float32), matrix, offset, order=1, mode="constant", cval=0.0)
            for x in arrays], geometry


def pitch_volume(image: np.ndarray, mask: np.ndarray, geometry: Geometry, degrees: float) -> Tuple[np.ndarray, np.ndarray, Geometry]:
    """Image, mask and geometry of a head nodded by ``degrees`` about the left-right axis through the volume centre
    (trilinear; the mask is lesion where its interpolated fraction is >= 0.5; arrays reordered superior axis first)."""
    if degrees == 0:
        return image, mask, geometry
    mask, _ = superior_axis_first(mask, geometry)
    image, geometry = superior_axis_first(image, geometry)
    (out, frac), geometry = _nod([image, mask], geometry, degrees)
    return out, (frac >= 0.5).astype(np.uint8), geometry


def pitch_mask(mask: np.ndarray, geometry: Geometry, degrees: float) -> np.ndarray:
    """``mask`` nodded as :func:`pitch_volume` nods it, without resampling an image beside it."""
    if degrees == 0:
        return mask
    mask, geometry = superior_axis_first(mask, geometry)
    return (_nod([mask], geometry, degrees)[0][0] >= 0.5).astype(np.uint8)


def pad_field(image: np.ndarray, mask: np.ndarray, geometry: Geometry, field_mm: float) -> Tuple[np.ndarray, np.ndarray, Geometry]:
    """Image, mask and geometry padded with zeros, centred, to a square in-plane field of ``field_mm`` (never cropped;
    arrays reordered superior axis first; every voxel keeps its world position)."""
    mask, _ = superior_axis_first(mask, geometry)
    image, geometry = superior_axis_first(image, geometry)
    pad_y = max(math.ceil(field_mm / geometry.spacing[1] - 1e-6) - image.shape[1], 0)
    pad_x = max(math.ceil(field_mm / geometry.spacing[0] - 1e-6) - image.shape[2], 0)
    widths = ((0, 0), (pad_y // 2, pad_y - pad_y // 2), (pad_x // 2, pad_x - pad_x // 2))
    shift = geometry.direction_matrix @ (np.array([pad_x // 2, pad_y // 2, 0]) * np.array(geometry.spacing))
    padded = Geometry((image.shape[2] + pad_x, image.shape[1] + pad_y, image.shape[0]), geometry.spacing,
                      tuple(np.array(geometry.origin) - shift), geometry.direction)
    return np.pad(image, widths), np.pad(mask, widths), padded


#: a 3D acquisition's partition plane -> (numpy axis of a superior-first volume it partitions, the file's
#: in-plane axes in ITK order): a scanner stores a sagittal series with its first axis anterior-posterior and its
#: second superior-inferior, a coronal one with its first left-right and its second superior-inferior
PARTITION_PLANES = {"sagittal": (2, (1, 0)), "coronal": (1, (2, 0))}


def partitioned_volume(image: np.ndarray, mask: np.ndarray, geometry: Geometry, partition_mm: float,
                       plane: str = "sagittal") -> Tuple[np.ndarray, np.ndarray, Geometry]:
    """A 3D scan re-acquired in ``plane`` ('sagittal': left-right; 'coronal': anterior-posterior) partitions of
    ``partition_mm`` (linear interpolation, the mask by nearest neighbour) and stored as a scanner stores such a
    series: the file's third axis across the partitions, its first and second as :data:`PARTITION_PLANES` says.
    Every voxel keeps its world position."""
    across, (first, second) = PARTITION_PLANES[plane]
    mask, _ = superior_axis_first(mask, geometry)
    image, geometry = superior_axis_first(image, geometry)  # numpy (S-I, A-P, L-R)
    itk = lambda axis: 2 - axis  # noqa: E731  (numpy axis -> ITK axis)
    n, step = image.shape[across], geometry.spacing[itk(across)]
    count = max(1, int(round(n * step / partition_mm)))
    where = np.minimum(np.arange(count) * partition_mm / step, n - 1)
    low = np.floor(where).astype(int)
    high = np.minimum(low + 1, n - 1)
    weight = np.expand_dims((where - low).astype(np.float32), tuple(a for a in range(3) if a != across))
    resliced = np.take(image, low, across) * (1 - weight) + np.take(image, high, across) * weight
    labels = np.take(mask, np.minimum(np.round(where).astype(int), n - 1), across)
    # numpy order of the stored file: partitions, then its second ITK axis, then its first
    order = (across, second, first)
    stored = Geometry((image.shape[first], image.shape[second], count),
                      (geometry.spacing[itk(first)], geometry.spacing[itk(second)], partition_mm), geometry.origin,
                      tuple(geometry.direction_matrix[:, [itk(first), itk(second), itk(across)]].ravel()))
    return (np.ascontiguousarray(resliced.transpose(order), dtype=np.float32),
            np.ascontiguousarray(labels.transpose(order)), stored)


def make_stacks(scans: Sequence[Scan], spec_for: Dict[float, SlabSpec], images_dir: Path,
                labels_dir: Optional[Path] = None, suffix: str = "", contrast: bool = False, tilt: float = 0.0,
                native: bool = False, add_head: bool = False, field: Optional[float] = None,
                sagittal: Optional[float] = None, coronal: Optional[float] = None) -> List[StackCase]:
    """Write every scan × thickness stack into ``images_dir``; keep the slab labels in memory for scoring.

    ``labels_dir``: also write each slab label there (to train on); ``suffix``: appended to every case id (to tell
    apart stacks of one scan and thickness made with different in-plane spacings); ``contrast``: also measure each
    stack's :func:`contrast_figures`; ``tilt``: nod each head by this many degrees first (:func:`pitch_volume`);
    ``native``: also each scan as it comes (3D, 1 mm), scored against its own mask (case id ..._native);
    ``add_head``: wrap each stripped brain in a synthetic skull and scalp first (benchmarks/synthetic_head.py);
    ``field``: pad each scan in-plane to a square field of view of this many mm first (:func:`pad_field`);
    ``sagittal`` / ``coronal``: also each scan re-acquired in sagittal / coronal partitions of this many mm
    (:func:`partitioned_volume`), scored against its mask resliced alike (case id ..._sagittal / ..._coronal).
    """
    cases = []
    for k, scan in enumerate(scans):
        flair, mask = read_image(scan.flair), read_label(scan.mask)
        problems = flair.geometry.mismatches(mask.geometry)
        if problems:
            raise DeepWMLError(f"mask is not on the FLAIR's grid: {'; '.join(problems)}", scan.mask)
        if field:
            image, label, geometry = pad_field(flair.array, mask.array, flair.geometry, field)
            flair, mask = replace(flair, array=image, geometry=geometry), replace(mask, array=label, geometry=geometry)
        # the stripped brain, taken before the head's noisy air and scalp make it unfindable from the image
        brain = stripped_brain(flair.array) if add_head else None
        if native:
            case_id = f"{scan.scan_id}_native{suffix}"
            image = wrap_in_head(flair.array, flair.geometry.spacing[::-1], seed=k) if add_head else flair.array
            write_image(image, flair.geometry, images_dir / f"{case_id}.nii.gz")
            label = mask.array.astype(bool)
            figures = contrast_figures(image, label) if contrast else None
            cases.append(StackCase(scan.scan_id, flair.geometry.slice_thickness, case_id, label, flair.geometry, figures,
                                   brain=brain))
        for plane, partition_mm in (("sagittal", sagittal), ("coronal", coronal)):
            if not partition_mm:
                continue
            case_id = f"{scan.scan_id}_{plane}{suffix}"
            image, label, geometry = partitioned_volume(flair.array, mask.array, flair.geometry, partition_mm, plane)
            write_image(image, geometry, images_dir / f"{case_id}.nii.gz")
            figures = contrast_figures(image, label > 0) if contrast else None
            cases.append(StackCase(scan.scan_id, partition_mm, case_id, label > 0, geometry, figures))
        volume, lesions, geometry = pitch_volume(flair.array, mask.array, flair.geometry, tilt)
        if add_head:
            brain = pitch_mask(brain.astype(np.uint8), flair.geometry, tilt)
            # the head goes round the nodded brain, so that air fills the whole field as in a tilted acquisition
            volume = wrap_in_head(volume, geometry.spacing[::-1], seed=k)
        for thickness, spec in spec_for.items():
            stack = thick_slice_stack(volume, lesions, geometry, spec)
            case_id = stack_id(scan.scan_id, thickness) + suffix
            write_image(stack.image, stack.geometry, images_dir / f"{case_id}.nii.gz")
            if labels_dir is not None:
                write_image(stack.label.astype(np.uint8), stack.geometry, labels_dir / f"{case_id}.nii.gz")
            label = stack.label.astype(bool)
            figures = contrast_figures(stack.image, label) if contrast else None
            brain_stack = (thick_slice_stack(volume, brain, geometry, replace(spec, lesion_fraction=0.5)).label.astype(bool)
                           if brain is not None else None)
            cases.append(StackCase(scan.scan_id, thickness, case_id, label, stack.geometry, figures, brain=brain_stack))
    return cases


def contrast_figures(image: np.ndarray, label: np.ndarray) -> Dict[str, float]:
    """REAL_FLAIR_FIGURES' lesion contrast of a skull-stripped stack, and how bright its brightest normal brain is.

    Brain: voxels above a tenth of the median of the non-zero ones (the stripped background is 0), lesion excluded.
    """
    values = np.asarray(image, np.float32)
    return lesion_contrast(values, stripped_brain(values) & ~label, label)


def stripped_brain(image: np.ndarray) -> np.ndarray:
    """The brain of a skull-stripped stack: voxels above a tenth of the median of the non-zero ones (the stripped
    background is 0; all voxels when there are none)."""
    positive = image[image > 0]
    return image > 0.1 * np.median(positive) if positive.size else np.ones(image.shape, bool)


def contrast_table(cases: Sequence[StackCase]) -> str:
    """Markdown: the intensity figures of every stack (compare docs/synthetic.md, Realism)."""
    lines = ["| stack | lesion / brain median | (lesion - brain median) / brain IQR | brain p97 / median |", "|---|---|---|---|"]
    for c in cases:
        f = c.contrast or {}
        lines.append(f"| {c.case_id} | {_cell(f.get('lesion_ratio'), '{:.2f}')} | {_cell(f.get('lesion_iqr_units'), '{:.2f}')} "
                     f"| {_cell(f.get('p97_ratio'), '{:.2f}')} |")
    return "\n".join(lines)


def read_foreign_mask(path: Path, case: StackCase) -> np.ndarray:
    """Another tool's mask of a stack (lesion where > 0); one clear error when it is not a mask or not on the stack's grid."""
    mask = read_label(path)
    problems = case.geometry.mismatches(mask.geometry)
    if problems:
        raise DeepWMLError(f"mask is not on the grid of stack {case.case_id}: {'; '.join(problems)}", path)
    return mask.array > 0


def score(cases: Sequence[StackCase], pred_dir: Path, errors: int = 0,
          profile: bool = False, images_dir: Optional[Path] = None,
          foreign: bool = False, conspicuity: bool = False) -> Tuple[List[Dict], List[Dict], List[Dict], List[Dict]]:
    """Case metrics of each predicted mask against its slab label, on the stack's own grid; with ``errors``, also
    each stack's largest false-positive and missed components (:func:`error_components`); with ``profile``, every
    component's kind, size and intensity (:func:`component_profile`; its highest lesion probability when
    deepwml_predict left CASE_prob.nii.gz beside the mask); with ``conspicuity``, every reference and predicted
    lesion's volume, contrast to the tissue around it and whether it was found / is true (lesion_conspicuity.py). ``images_dir``: the
    stacks (default: beside ``pred_dir``); ``foreign``: the masks come from another tool (:func:`read_foreign_mask`)."""
    images_dir = images_dir or pred_dir.parent / "images"
    rows, components, profiles, conspicuous = [], [], [], []
    for case in cases:
        path = pred_dir / f"{case.case_id}.nii.gz"
        # along the axis DeepWML slices (a sagittal series' is not its file's third axis)
        inplane = [n for axis, n in enumerate(case.geometry.size) if axis != case.geometry.slice_axis]
        row = {"scan": case.scan_id, "thickness": case.thickness, "slabs": case.geometry.n_slices,
               "matrix": f"{inplane[1]}x{inplane[0]}"}
        if not path.is_file():
            rows.append({**row, "failed": True})
            continue
        predicted = read_foreign_mask(path, case) if foreign else read_label(path).array == 1
        if case.ignore is not None:
            predicted &= ~case.ignore  # as the MICCAI-2017 evaluator: the ignored voxels count for neither side
        rows.append({**row, **case_metrics(case.label, predicted, case.geometry), "failed": False})
        if errors or profile or conspicuity:
            image = read_image(images_dir / f"{case.case_id}.nii.gz").array
        if errors:
            components += error_components(case, image, predicted, errors)
        if profile:
            prob_path = pred_dir / f"{case.case_id}_prob.nii.gz"
            probs = read_image(prob_path).array if prob_path.is_file() and not foreign else None
            profiles += component_profile(case, image, predicted, probs)
        if conspicuity:
            spacing = tuple(reversed(case.geometry.spacing))
            conspicuous += both_ways(image, case.label, predicted, spacing, slice_axis=case.geometry.slice_axis_numpy)
    return rows, components, profiles, conspicuous


def world_ras(geometry: Geometry, index_zyx: Sequence[float]) -> Tuple[float, float, float]:
    """World RAS millimetres (MNI coordinates for MNI-registered scans such as MSLUB) of a numpy (z, y, x) index."""
    lps = np.asarray(geometry.origin) + geometry.direction_matrix @ (np.asarray(geometry.spacing) * np.asarray(index_zyx[::-1], float))
    return float(-lps[0]), float(-lps[1]), float(lps[2])


def normal_brain_median(case: StackCase, image: np.ndarray) -> float:
    """Median intensity of a stack's brain outside its reference lesions (NaN when there is none)."""
    normal = (case.brain if case.brain is not None else stripped_brain(image)) & ~case.label
    return float(np.median(image[normal])) if normal.any() else float("nan")


def error_components(case: StackCase, image: np.ndarray, predicted: np.ndarray, top: int) -> List[Dict]:
    """The ``top`` largest false-positive and missed lesion components of one stack (26-connected, as lesion F1
    counts them): voxels, volume, centre in world RAS mm and median intensity / the stack's brain median."""
    brain_median = normal_brain_median(case, image)
    voxel_ul = float(np.prod(case.geometry.spacing))
    rows = []
    for kind, mask in (("false positive", predicted & ~case.label), ("missed", case.label & ~predicted)):
        components, n = label_lesions(mask)
        if not n:
            continue
        sizes = np.bincount(components.ravel())[1:]
        largest = np.argsort(sizes)[::-1][:top] + 1
        centres = ndimage.center_of_mass(mask, components, largest)
        medians = ndimage.median(image, components, largest)
        for label, centre, median in zip(largest, centres, np.atleast_1d(medians)):
            rows.append({"stack": case.case_id, "kind": kind, "voxels": int(sizes[label - 1]),
                         "ul": sizes[label - 1] * voxel_ul, "ras": world_ras(case.geometry, centre),
                         "ratio": float(median) / brain_median})
    return rows


#: component size classes (voxels of the stack) of :func:`profile_table`
SIZE_CLASSES = ((1, 10), (11, 50), (51, None))


def left_right_axis(geometry: Geometry) -> int:
    """The numpy (z, y, x) axis of a stack nearest the world's left-right axis."""
    itk_axis = int(np.argmax(np.abs(geometry.direction_matrix[0, :])))
    return 2 - itk_axis


#: how far (voxels, in-plane and across slabs) a mirrored component may lie from one of its own kind to be its twin
TWIN_TOLERANCE = 3


def mirror_twins(mask: np.ndarray, components: np.ndarray, n: int, axis: int) -> np.ndarray:
    """Per component of ``mask``: whether the mask mirrored about the grid's centre along ``axis`` comes within
    TWIN_TOLERANCE voxels of it (a left-right twin when the head is centred in its grid, as MNI-registered scans are)."""
    near = ndimage.binary_dilation(np.flip(mask, axis), iterations=TWIN_TOLERANCE)
    return np.bincount(components[near], minlength=n + 1)[1:] > 0


def component_profile(case: StackCase, image: np.ndarray, predicted: np.ndarray,
                      probs: Optional[np.ndarray] = None) -> List[Dict]:
    """Every lesion component of one stack as lesion F1 counts them (26-connected): predicted ones touching the
    reference ('true positive') or not ('false positive'), reference ones no predicted voxel touches ('missed'); each
    with its voxels, mean intensity / the stack's brain median and whether a component of the same mask lies at its
    mirror image across the midline (``twin``: are false positives the bilateral normal bright tissue?); with the
    model's lesion ``probs`` (same grid) also the highest in each component (``peak``: did the model see a missed
    lesion at all, or did the threshold and filters take it?)."""
    brain_median = normal_brain_median(case, image)
    axis = left_right_axis(case.geometry)
    # how far each false positive lies from the reference: fragments of a true lesion sit within a voxel or two
    spacing = tuple(reversed(case.geometry.spacing))
    gap = ndimage.distance_transform_edt(~case.label.astype(bool), sampling=spacing) if case.label.any() else None
    rows = []
    for mask, other, hit_kind, miss_kind in ((predicted, case.label, "true positive", "false positive"),
                                             (case.label, predicted, None, "missed")):
        components, n = label_lesions(mask)
        if not n:
            continue
        index = np.arange(1, n + 1)
        sizes = np.bincount(components.ravel(), minlength=n + 1)[1:]
        means = np.atleast_1d(ndimage.mean(image, components, index))
        touched = np.bincount(components[other], minlength=n + 1)[1:] > 0
        twins = mirror_twins(mask, components, n, axis)
        gaps = np.atleast_1d(ndimage.minimum(gap, components, index)) if gap is not None else np.full(n, np.inf)
        peaks = np.atleast_1d(ndimage.maximum(probs, components, index)) if probs is not None else np.full(n, np.nan)
        for size, mean, hit, twin, gap_mm, peak in zip(sizes, means, touched, twins, gaps, peaks):
            kind = hit_kind if hit else miss_kind
            if kind:
                rows.append({"stack": case.case_id, "kind": kind, "voxels": int(size), "ratio": float(mean) / brain_median,
                             "twin": bool(twin), "gap_mm": float(gap_mm) if kind == "false positive" else None,
                             "peak": None if np.isnan(peak) else float(peak)})
    return rows


#: a missed lesion whose highest lesion probability stays under this was not seen by the model at all
UNSEEN_PEAK = 0.05


def profile_table(rows: Sequence[Dict]) -> str:
    """Markdown: components by kind and size class, their count, intensity / brain median quartiles, the share with a
    mirror twin, for false positives the median distance to the nearest reference lesion (mm) and, with the model's
    probabilities, the median of each component's highest one; then how many missed lesions the model never saw."""
    lines = ["| component | voxels | count | intensity / brain median: p25 / median / p75 | with a mirror twin | "
             "mm to the nearest reference lesion: median | highest lesion probability in it: median |",
             "|---|---|---|---|---|---|---|"]
    for kind in ("true positive", "false positive", "missed"):
        for lo, hi in SIZE_CLASSES:
            chosen = [r for r in rows if r["kind"] == kind and r["voxels"] >= lo and (hi is None or r["voxels"] <= hi)]
            size = f"{lo}-{hi}" if hi else f"> {lo - 1}"
            quartiles = " / ".join(f"{v:.2f}" for v in np.percentile([r["ratio"] for r in chosen], [25, 50, 75])) if chosen else "–"
            twins = f"{np.mean([r['twin'] for r in chosen]):.0%}" if chosen else "–"
            gaps = [r["gap_mm"] for r in chosen if r.get("gap_mm") is not None and np.isfinite(r["gap_mm"])]
            gap = f"{np.median(gaps):.1f}" if gaps else "–"
            peaks = [r["peak"] for r in chosen if r.get("peak") is not None]
            peak = f"{np.median(peaks):.2f}" if peaks else "–"
            lines.append(f"| {kind} | {size} | {len(chosen)} | {quartiles} | {twins} | {gap} | {peak} |")
    missed = [r["peak"] for r in rows if r["kind"] == "missed" and r.get("peak") is not None]
    if missed:
        unseen = sum(p < UNSEEN_PEAK for p in missed)
        lines += ["", f"missed lesions where the model's lesion probability stays under {UNSEEN_PEAK:g} throughout: "
                      f"{unseen} of {len(missed)} (no threshold or lesion filter would find these)"]
    return "\n".join(lines)


def error_table(rows: Sequence[Dict]) -> str:
    """Markdown of :func:`error_components` rows."""
    lines = ["| stack | component | voxels | µl | centre R A S (mm) | intensity / brain median |", "|---|---|---|---|---|---|"]
    for r in rows:
        centre = " ".join(f"{v:.0f}" for v in r["ras"])
        lines.append(f"| {r['stack']} | {r['kind']} | {r['voxels']} | {r['ul']:.0f} | {centre} | {r['ratio']:.2f} |")
    return "\n".join(lines)


def lesion_confidence(case: StackCase, pred_dir: Path) -> List[Dict]:
    """Every lesion of a stack's lesion table (deepwml_predict's, with its lesion-id map): whether it touches the
    reference (a true positive, as lesion F1 counts it), its confidence, location and voxels."""
    import pandas as pd

    ids = read_label(pred_dir / f"{case.case_id}_lesionids.nii.gz").array
    table = pd.read_csv(pred_dir / f"{case.case_id}_lesions.csv")
    touched = np.bincount(ids[case.label.astype(bool)].ravel(), minlength=int(ids.max()) + 1)
    return [{"stack": case.case_id, "true": bool(touched[int(r.lesion_id)] > 0), "confidence": float(r.confidence),
             "location": str(r.location) if "location" in table.columns else "all", "voxels": int(r.voxels)}
            for r in table.itertuples()]


def confidence_auc(true: Sequence[float], false: Sequence[float]) -> float:
    """The chance that a true lesion's confidence exceeds a false one's (ties count half): the ROC AUC."""
    if not len(true) or not len(false):
        return float("nan")
    from scipy.stats import mannwhitneyu

    return float(mannwhitneyu(true, false).statistic) / (len(true) * len(false))


def confidence_table(rows: Sequence[Dict]) -> str:
    """Markdown: predicted lesions that touch the reference or not, their median confidence and the AUC of confidence
    between them, over all lesions and per location class."""
    lines = ["| lesions | true / false | median confidence: true / false | AUC |", "|---|---|---|---|"]
    groups = [("all", list(rows))] + [(name, [r for r in rows if r["location"] == name])
                                      for name in sorted({r["location"] for r in rows} - {"all"})]
    for name, chosen in groups:
        true = [r["confidence"] for r in chosen if r["true"]]
        false = [r["confidence"] for r in chosen if not r["true"]]
        medians = " / ".join(f"{np.median(v):.2f}" if v else "–" for v in (true, false))
        lines.append(f"| {name} | {len(true)} / {len(false)} | {medians} | {_cell(confidence_auc(true, false), '{:.2f}')} |")
    return "\n".join(lines)


def _cell(value: float, fmt: str) -> str:
    """A table cell; NaN (metric undefined for this case, see case_metrics.py) prints as n/a."""
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else fmt.format(value)


def _mean(rows: Sequence[Dict], key: str) -> float:
    """Mean over the cases where the metric is defined."""
    values = [r[key] for r in rows if not r["failed"] and not math.isnan(r[key])]
    return float(np.mean(values)) if values else float("nan")


#: stacks with at least this reference load get a mean of their own: every held-back real patient of issue #12 holds
#: 11-128 ml, and one MSLUB scan holds about 1 ml, where a few false lesions decide the Dice
HEAVY_LOAD_ML = 10.0


def table(rows: Sequence[Dict], thicknesses: Sequence[float]) -> str:
    """Markdown: one row per scan × thickness, then the mean per thickness, over all stacks and over the heavy ones."""
    head = ["scan", "slice mm", "slabs", "matrix", "ref ml", "pred ml"] + [c for c, _, _ in COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r["failed"]:
            cells = ["prediction failed"] + [""] * (len(head) - 5)
        else:
            cells = [f"{r['ref_volume_ml']:.1f}", f"{r['pred_volume_ml']:.1f}"] + [_cell(r[k], f) for _, k, f in COLUMNS]
        lines.append("| " + " | ".join([r["scan"], f"{r['thickness']:g}", str(r["slabs"]), r["matrix"]] + cells) + " |")
    groups = [(f"**mean {t:g} mm**", [r for r in rows if r["thickness"] == t]) for t in thicknesses]
    heavy = [r for r in rows if not r["failed"] and r["ref_volume_ml"] >= HEAVY_LOAD_ML]
    for name, group in groups + [("**mean, all**", list(rows)), (f"**mean, ref >= {HEAVY_LOAD_ML:g} ml**", heavy)]:
        n = sum(not r["failed"] for r in group)
        cells = [_cell(_mean(group, "ref_volume_ml") if n else float("nan"), "{:.1f}"),
                 _cell(_mean(group, "pred_volume_ml") if n else float("nan"), "{:.1f}")]
        cells += [_cell(_mean(group, k), f) for _, k, f in COLUMNS]
        lines.append("| " + " | ".join([name, "", f"{n} stacks", ""] + cells) + " |")
    return "\n".join(lines)


#: --site: the stacks made as issue #12's held-back sites acquire them (../shared/REAL_FLAIR_FIGURES.md)
SITES = {
    "ms": {"add_head": True, "tilt": 12.0, "inplane": 0.9, "thickness": [6.5, 8.0], "field": 230.0},
    "svd": {"add_head": False, "tilt": 0.0, "inplane": 0.47, "thickness": [7.5, 8.0], "field": 240.0},
}


def apply_site(args: argparse.Namespace, defaults: argparse.Namespace) -> None:
    """Set the stack options of ``args.site``; an option of those given as well is refused, not silently replaced."""
    if not args.site:
        return
    for key, value in SITES[args.site].items():
        if getattr(args, key) != getattr(defaults, key):
            raise DeepWMLError(f"--site {args.site} sets --{key.replace('_', '-')}: leave it out")
        setattr(args, key, value)


def build_parser() -> argparse.ArgumentParser:
    """Arguments of the benchmark."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"folder of patientNN/flair.nii.gz + wmh.nii.gz (default {DEFAULT_DATA})")
    p.add_argument("-m", "--model", help="a trained model's PLAN folder")
    p.add_argument("-d", "--dataset", help="dataset id or name of a trained model (with -p)")
    p.add_argument("-p", "--plan", help="plan name of a trained model (with -d)")
    p.add_argument("--results", dest="results_root", metavar="DIR", help="results root for -d/-p (default: $DEEPWML_RESULTS)")
    p.add_argument("--builtin", action="store_true", help="the pretrained model shipped in the package (issue #12 point 2)")
    p.add_argument("-f", "--folds", nargs="+", help="folds to ensemble (default: every trained fold)")
    p.add_argument("--checkpoint", choices=("best", "latest"), default="best")
    p.add_argument("--thickness", type=float, nargs="+", default=[5.0, 6.5, 8.0], help="slice thicknesses in mm (default 5 6.5 8)")
    p.add_argument("--gap", type=float, default=0.0, help="gap between slabs in mm (default 0)")
    p.add_argument("--inplane", type=float, help="resample in-plane to this spacing in mm, e.g. 0.9 (default: keep 1 mm)")
    p.add_argument("--work", type=Path, help="keep stacks and predictions in this folder (default: a temporary folder)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("-np", "--num-workers", type=int, default=1, help="reader/writer threads of deepwml_predict")
    p.add_argument("--qc", action="store_true", help="also write deepwml_predict's QC pictures (with --work)")
    p.add_argument("--tilt", type=float, default=0.0,
                   help="nod each head by this many degrees before slicing (e.g. 12: clinical stacks are not MNI-aligned, "
                        "and generator v8's template brains are)")
    p.add_argument("--contrast", action="store_true", help="also print each stack's lesion contrast figures (as docs/synthetic.md's realism table)")
    add_tta_options(p)  # deepwml_predict's --tta / --no-tta; neither: the model's own choice
    p.add_argument("--threshold", type=float, default=None, help="deepwml_predict --threshold (default: the model's plan)")
    p.add_argument("--errors", type=int, default=0, metavar="N",
                   help="also list each stack's N largest false-positive and missed components: size, centre in world RAS mm "
                        "(MNI for MNI-registered scans; after --tilt, in the nodded frame) and intensity / brain median")
    p.add_argument("--components", action="store_true",
                   help="also count all stacks' true-positive, false-positive and missed components by size (1-10, 11-50, "
                        "> 50 voxels) with their intensity / brain median and the share with a twin at their mirror image "
                        "across the midline, and the median of each one's highest lesion probability, with the number of "
                        "missed lesions the model gave under 0.05 throughout: are the misses faint, the false positives "
                        "bright, bilateral; would a lower threshold find the misses?")
    p.add_argument("--conspicuity", action="store_true",
                   help="also tabulate the reference lesions found by volume (µl) and contrast to the tissue within 3 mm "
                        "around them, and the predicted lesions true and false by their contrast "
                        "(benchmarks/lesion_conspicuity.py: the same tables for any images, labels and masks)")
    p.add_argument("--confidence", action="store_true",
                   help="also tell whether each predicted lesion's confidence (CASE_lesions.csv) separates those touching the "
                        "reference from false ones: counts, median confidences and the AUC, over all and per location class")
    p.add_argument("--add-head", action="store_true",
                   help="wrap each skull-stripped brain in a synthetic skull, diploe, scalp fat and skin first "
                        "(benchmarks/synthetic_head.py): the scans of a site that does not strip the skull")
    add_skull_strip_options(p, "deepwml_predict --skull-strip: the lesion model sees only the brain the anatomy model "
                            "finds (its default; asked for, a stack in which it finds no brain fails)",
                            "deepwml_predict --no-skull-strip: the lesion model sees each stack as given, skull included")
    p.add_argument("--native", action="store_true",
                   help="also predict each scan as it comes (3D, 1 mm: outside what a thick-slice model learned; "
                        "deepwml_predict flags it) and score it against its own 1 mm mask")
    # one of the two: their rows would share the thickness column and its mean
    partitions = p.add_mutually_exclusive_group()
    partitions.add_argument("--sagittal", type=float, default=None, metavar="MM",
                            help="also predict each scan re-acquired as a sagittal 3D FLAIR of MM-thick partitions (e.g. "
                                 "1.2; in-plane kept) and stored as a sagittal series is, and score it against its mask "
                                 "resliced alike")
    partitions.add_argument("--coronal", type=float, default=None, metavar="MM",
                            help="the same with coronal (anterior-posterior) partitions, stored as a coronal series is")
    p.add_argument("--thin-slab-mm", type=thin_slab_setting, default=None, metavar="auto|0|MM",
                   help="deepwml_predict --thin-slab-mm: how the --native scans (1 mm) reach the networks (default auto; "
                        "the thick stacks are never thin)")
    p.add_argument("--white-matter-only", action="store_true",
                   help="deepwml_predict --white-matter-only: drop the lesions the shipped anatomy model places in the cortex")
    p.add_argument("--anatomy-model", type=Path, default=None, metavar="PLAN_DIR",
                   help="deepwml_predict --anatomy-model: this anatomy model's map (lesion locations, lesions outside the "
                        "brain dropped) instead of the shipped one's")
    p.add_argument("--keep-outside-brain", action="store_true",
                   help="deepwml_predict --keep-outside-brain: keep the lesions with no voxel in the anatomy model's brain")
    p.add_argument("--min-cortex-contrast", type=cortex_contrast_setting, default=None, metavar="K",
                   help="deepwml_predict --min-cortex-contrast: drop the lesions the anatomy map places in or against the cortex under "
                        f"K x the cortex's median intensity (default deepwml_predict's, {MIN_CORTEX_CONTRAST:g}; 0 keeps them)")
    p.add_argument("--min-lesion-ml", type=float, default=None, metavar="ML",
                   help="deepwml_predict --min-lesion-ml: drop lesions smaller than this from the masks (default: the "
                   "model's postprocessing, else 0)")
    p.add_argument("--min-lesion-peak", type=float, default=None, metavar="P",
                   help="deepwml_predict --min-lesion-peak: drop lesions whose most probable voxel stays under P "
                   "(default: the model's postprocessing, else 0)")
    p.add_argument("--min-lesion-contrast", type=float, default=None, metavar="C",
                   help="deepwml_predict --min-lesion-contrast: drop lesions less than C times as bright as the tissue "
                   "around them (default: the model's postprocessing, else 0)")
    p.add_argument("--no-postprocessing", action="store_true",
                   help="deepwml_predict --no-postprocessing: ignore a threshold and lesion filters stored in the model")
    p.add_argument("--with", dest="also", nargs="+", default=[], metavar="MODEL",
                   help="more models (PLAN folders, or 'builtin'; any plan) averaged with the first as deepwml_ensemble "
                        "averages them: each predicts with probability maps, the maps are averaged and thresholded")
    p.add_argument("--weights", type=float, nargs="+", help="with --with: one weight per model, the first model's first")
    p.add_argument("--field", type=float, metavar="MM",
                   help="pad each scan in-plane, centred, to a square field of view of MM first, e.g. 230 as a clinical "
                        "axial FLAIR's (default: the scan's own, 182 x 218 mm for MSLUB, where a synthetic head touches "
                        "the edges); with --add-head the padding is air")
    p.add_argument("--site", choices=sorted(SITES),
                   help="make the stacks as one of issue #12's held-back sites acquires its scans: ms = skull and scalp "
                        "(--add-head), 0.9 mm, nodded 12 degrees, 6.5 and 8 mm, a 230 mm field (256 x 256); svd = "
                        "skull-stripped, 0.47 mm, 7.5 and 8 mm, a 240 mm field (512 x 512)")
    p.add_argument("--stacks-only", action="store_true",
                   help="write the stacks to --work DIR/images and stop (no model): for another tool to segment")
    p.add_argument("--labels", action="store_true",
                   help="with --stacks-only: also write each stack's slab mask to DIR/labels, for per-lesion analyses "
                        "(benchmarks/lesion_conspicuity.py); development scans: never train or tune a model on them")
    p.add_argument("--predictions", type=Path, metavar="DIR",
                   help="score another tool's masks of the stacks instead of a model's: DIR/CASE.nii.gz, named and on the "
                        "grid of --stacks-only's DIR/images/CASE.nii.gz made with the same stack options; lesion where > 0 (masks "
                        "or label maps: threshold a probability map first)")
    return p


#: options that need a DeepWML model, refused when the masks come from elsewhere (or from no one)
MODEL_OPTIONS = {"model": "-m", "dataset": "-d", "plan": "-p", "builtin": "--builtin", "folds": "-f", "qc": "--qc",
                 "tta": "--tta", "threshold": "--threshold", "confidence": "--confidence", "skull_strip": "--skull-strip",
                 "white_matter_only": "--white-matter-only", "min_lesion_ml": "--min-lesion-ml",
                 "min_lesion_peak": "--min-lesion-peak", "min_lesion_contrast": "--min-lesion-contrast",
                 "no_postprocessing": "--no-postprocessing", "also": "--with",
                 "weights": "--weights", "keep_outside_brain": "--keep-outside-brain", "thin_slab_mm": "--thin-slab-mm",
                 "min_cortex_contrast": "--min-cortex-contrast"}


def check_without_model(args: argparse.Namespace) -> None:
    """--stacks-only and --predictions take no model: refuse model options rather than ignore them."""
    if args.stacks_only and args.predictions:
        raise DeepWMLError("give --stacks-only (write the stacks) or --predictions (score masks of them), not both")
    given = [flag for key, flag in MODEL_OPTIONS.items() if getattr(args, key)]
    given += ["--no-tta"] if args.tta is False else []
    given += ["--no-skull-strip"] if args.skull_strip is False else []
    mode = "--stacks-only" if args.stacks_only else "--predictions"
    if given:
        raise DeepWMLError(f"{mode} uses no DeepWML model: leave out {', '.join(given)}")
    if args.stacks_only:
        if not args.work:
            raise DeepWMLError("--stacks-only writes the stacks to --work DIR: give one")
        if args.errors or args.components or args.conspicuity:
            raise DeepWMLError("--stacks-only scores nothing: leave out --errors, --components and --conspicuity")
    elif not args.predictions.expanduser().is_dir():
        raise DeepWMLError("is not a folder of masks", args.predictions)


def stack_line(args: argparse.Namespace) -> str:
    """How the stacks are made, in one line."""
    site = f" (--site {args.site})" if args.site else ""
    return (f"stacks{site}: axial slabs of {', '.join(f'{t:g}' for t in args.thickness)} mm, gap {args.gap:g} mm, in-plane "
            f"{f'{args.inplane:g} mm' if args.inplane else 'kept (1 mm)'}; lesion where >= 40 % of the slab is"
            f"{f'; heads nodded {args.tilt:g} degrees first' if args.tilt else ''}"
            f"{'; a synthetic skull and scalp around each brain' if args.add_head else ''}"
            f"{f'; padded to a {args.field:g} mm square field' if args.field else ''}")


def print_tables(args: argparse.Namespace, cases: Sequence[StackCase], rows: Sequence[Dict], components: Sequence[Dict],
                 profiles: Sequence[Dict], confidences: Sequence[Dict] = (), conspicuous: Sequence[Dict] = ()) -> None:
    """The figures table, then each table the options asked for, each followed by a blank line."""
    print()
    print(table(rows, sorted({c.thickness for c in cases} - set(args.thickness)) + list(args.thickness)))
    print()
    asked = [(args.errors, lambda: error_table(components)), (args.components, lambda: profile_table(profiles)),
             (args.confidence, lambda: confidence_table(confidences)), (args.contrast, lambda: contrast_table(cases)),
             (args.conspicuity, lambda: conspicuity_table(conspicuous) + "\n\n" + predicted_table(conspicuous)
                                      + "\n\n" + filter_table(conspicuous))]
    for wanted, make in asked:
        if wanted:
            print(make())
            print()


def _main_without_model(args: argparse.Namespace, scans: Sequence[Scan], start: float) -> int:
    """--stacks-only: write the stacks; --predictions: score another tool's masks of them."""
    spec_for = {t: SlabSpec(t, args.gap, args.inplane) for t in args.thickness}
    print(f"# {load_line()}")
    print(f"data: {args.data} ({len(scans)} scans); "
          f"{'stacks only' if args.stacks_only else f'masks of another tool: {args.predictions}'}")
    print(stack_line(args))
    with tempfile.TemporaryDirectory(prefix="deepwml_realdev_") as tmp:
        work = args.work.expanduser() if args.work else Path(tmp)
        labels_dir = work / "labels" if args.stacks_only and args.labels else None
        cases = make_stacks(scans, spec_for, work / "images", labels_dir, contrast=args.contrast, tilt=args.tilt,
                            native=args.native,
                            add_head=args.add_head, field=args.field, sagittal=args.sagittal,
                            coronal=args.coronal)
        if args.stacks_only:
            print(f"wrote {len(cases)} stacks to {work / 'images'}; segment them (a mask per stack, named as it, on its "
                  f"grid), then score the masks with these stack options and --predictions MASKS")
            if args.contrast:
                print()
                print(contrast_table(cases))
            return 0
        rows, components, profiles, conspicuous = score(cases, args.predictions.expanduser(), args.errors, args.components,
                                                        images_dir=work / "images", foreign=True,
                                                        conspicuity=args.conspicuity)
    missing = [r for r in rows if r["failed"]]
    print_tables(args, cases, rows, components, profiles, conspicuous=conspicuous)
    print(f"time: {time.perf_counter() - start:.1f} s in all")
    for row, case in zip(rows, cases):
        if row["failed"]:
            print(f"no mask: {args.predictions / (case.case_id + '.nii.gz')}", file=sys.stderr)
    return 1 if missing else 0


def extra_model_dir(name: str) -> Path:
    """A --with model: 'builtin' or a PLAN folder."""
    from deepwml.pretrained import BUILTIN_ALIAS, builtin_model_dir

    return builtin_model_dir() if name == BUILTIN_ALIAS else resolve_model_dir(Path(name))


def cortex_contrast(args: argparse.Namespace) -> float:
    """The run's --min-cortex-contrast: deepwml_predict's default unless given."""
    return MIN_CORTEX_CONTRAST if args.min_cortex_contrast is None else args.min_cortex_contrast


def predict_stacks(args: argparse.Namespace, folder: Path, work: Path, extra: Sequence[Path] = ()) -> PredictReport:
    """deepwml_predict on the stacks into work/predictions; with --with, every model into its own folder with
    probability maps, then their average (deepwml_ensemble) into work/predictions; ``extra``: the --with models' folders."""
    def request(model: Path, output: Path, folds, probabilities: bool) -> PredictRequest:
        # --components reads each component's highest probability from the maps, so the single model saves them too
        return PredictRequest(input=work / "images", output=output, model_dir=model, folds=folds,
                              checkpoint=args.checkpoint, device=args.device, workers=args.num_workers,
                              overwrite=True, write_qc=args.qc, white_matter_only=args.white_matter_only, skull_strip=args.skull_strip,
                              keep_outside_brain=args.keep_outside_brain, tta=args.tta, threshold=args.threshold,
                              anatomy_model=args.anatomy_model,
                              save_probabilities=probabilities or bool(args.components),
                              min_lesion_ml=0.0 if probabilities else args.min_lesion_ml,
                              min_lesion_peak=0.0 if probabilities else args.min_lesion_peak,
                              min_lesion_contrast=0.0 if probabilities else args.min_lesion_contrast,
                              # an average's members keep every lesion: the ensemble drops them on the averaged mask
                              min_cortex_contrast=0.0 if probabilities else cortex_contrast(args),
                              postprocessing=not args.no_postprocessing, save_lesion_ids=args.confidence,
                              thin_slab_mm=args.thin_slab_mm,
                              # the ensemble takes the first member's anatomy maps, as deepwml_predict uses its own
                              save_anatomy=probabilities and not args.keep_outside_brain)

    if not extra:
        return predict(request(folder, work / "predictions", args.folds, False))
    models = [folder, *extra]
    members = [work / f"predictions_model{k}" for k in range(len(models))]
    reports = [predict(request(m, out, args.folds if k == 0 else None, True)) for k, (m, out) in enumerate(zip(models, members))]
    ensemble(members, work / "predictions", weights=args.weights, threshold=args.threshold, overwrite=True, progress=False,
             min_lesion_ml=args.min_lesion_ml or 0.0, min_lesion_peak=args.min_lesion_peak or 0.0,
             keep_outside_brain=args.keep_outside_brain, min_lesion_contrast=args.min_lesion_contrast or 0.0,
             min_cortex_contrast=cortex_contrast(args),
             images=work / "images" if args.min_lesion_contrast or cortex_contrast(args) else None)
    merged = reports[0]
    merged.seconds = sum(r.seconds for r in reports)
    merged.summaries = [s for r in reports for s in r.failed] + [s for s in merged.summaries if s.status == "ok"]
    return merged


def _main(argv: Optional[List[str]]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    apply_site(args, parser.parse_args([]))
    start = time.perf_counter()
    scans = find_scans(args.data.expanduser())
    if args.work:
        check_work_folder(args.work)
    if args.add_head and args.contrast:
        raise DeepWMLError("--contrast measures skull-stripped stacks: leave out --add-head")
    if args.labels and not args.stacks_only:
        raise DeepWMLError("--labels writes the stacks' masks beside --stacks-only's images: give --stacks-only too")
    if args.stacks_only or args.predictions:
        check_without_model(args)
        return _main_without_model(args, scans, start)
    if args.confidence and args.also:
        raise DeepWMLError("--confidence reads deepwml_predict's lesion tables, which an average of models (--with) has not")
    folder = model_dir(args)
    spec = check_model(folder, args.folds, args.checkpoint)
    if args.weights and len(args.weights) != 1 + len(args.also):
        raise DeepWMLError(f"--weights gives {len(args.weights)} weight(s) for {1 + len(args.also)} model(s); give one per model")
    print(f"# {load_line()}")
    print(f"data: {args.data} ({len(scans)} scans); model: {folder} (plan {spec.plan.name}, folds {' '.join(spec.folds)})")
    extra = [extra_model_dir(m) for m in args.also]
    if extra:
        print(f"averaged with: {', '.join(map(str, extra))} (deepwml_ensemble; weights "
              f"{' '.join(f'{w:g}' for w in args.weights) if args.weights else 'equal'})")
    spec_for = {t: SlabSpec(t, args.gap, args.inplane) for t in args.thickness}
    print(stack_line(args) +
          f"{'; --white-matter-only' if args.white_matter_only else ''}{'; --no-skull-strip' if args.skull_strip is False else ''}"
          f"{'; --keep-outside-brain' if args.keep_outside_brain else ''}"
          f"{f'; --min-cortex-contrast {args.min_cortex_contrast:g}' if args.min_cortex_contrast is not None else ''}"
          f"{'; --tta' if args.tta else '; --no-tta' if args.tta is False else ''}"
          f"{f'; --threshold {args.threshold:g}' if args.threshold is not None else ''}"
          f"{f'; --min-lesion-ml {args.min_lesion_ml:g}' if args.min_lesion_ml else ''}"
          f"{f'; --min-lesion-peak {args.min_lesion_peak:g}' if args.min_lesion_peak else ''}"
          f"{f'; --min-lesion-contrast {args.min_lesion_contrast:g}' if args.min_lesion_contrast else ''}"
          f"{'; --no-postprocessing' if args.no_postprocessing else ''}")
    with tempfile.TemporaryDirectory(prefix="deepwml_realdev_") as tmp:
        work = args.work.expanduser() if args.work else Path(tmp)
        t0 = time.perf_counter()
        cases = make_stacks(scans, spec_for, work / "images", contrast=args.contrast, tilt=args.tilt, native=args.native,
                            add_head=args.add_head, field=args.field, sagittal=args.sagittal,
                            coronal=args.coronal)
        t_stacks = time.perf_counter() - t0
        report = predict_stacks(args, folder, work, extra)
        t0 = time.perf_counter()
        rows, components, profiles, conspicuous = score(cases, work / "predictions", args.errors, args.components,
                                                        conspicuity=args.conspicuity)
        confidences = [r for c in cases if (work / "predictions" / f"{c.case_id}_lesionids.nii.gz").is_file()
                       for r in lesion_confidence(c, work / "predictions")] if args.confidence else []
        t_score = time.perf_counter() - t0
    print_tables(args, cases, rows, components, profiles, confidences, conspicuous)
    n_slices = sum(c.geometry.n_slices for c in cases)
    print(f"time: {time.perf_counter() - start:.1f} s in all; stacks {t_stacks:.1f} s, prediction {report.seconds:.1f} s "
          f"({len(cases)} stacks, {n_slices} slices, {report.seconds / max(n_slices, 1):.3f} s/slice incl. model load, "
          f"{report.device}), scoring {t_score:.1f} s")
    for row in report.failed:
        print(f"prediction failed: {row.case_id}: {row.error}", file=sys.stderr)
    return 1 if report.failed else 0


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point: user errors print one line and exit 2."""
    return run(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
