"""deepwml_compare on real anatomy: how many new and enlarging lesions it finds, and how many it invents.

Each MSLUB development scan (3D 1 mm, ../shared/real_dev/mslub, never copied into this repository) is the baseline;
its follow-up is the same head with ``--new`` lesions inserted in normal white matter (spheres 5-10 mm across with
the scan's own median lesion brightness and a soft 1 mm edge) and ``--enlarge`` of its own lesions grown by 2 mm,
then moved rigidly (by default rotated 4 / -2 / 3 degrees about x / y / z and shifted 3 / -4 / 2.5 mm; ``--rotation``,
``--shift``) as a patient lies differently on the next visit. Both are made into thick-slice stacks (``--thickness``
baseline and follow-up; the slab averaging of real_dev.py), segmented by the model (or, with ``--reference``, given
their slab reference masks) and compared with deepwml_compare's library code. Everything the follow-up shows beyond the inserted and grown lesions is
noise, since the head is the same: false new and false enlarging lesions are what deepwml_compare reports on a
stable patient. Prints one row per scan and the sums, with the registration's error at brain voxels.

    python benchmarks/longitudinal.py [-m PLAN_DIR] [--reference] [--thickness 6.5 6.5] [--new 4] [--enlarge 2]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from deepwml.cli.common import run
from deepwml.imageio import Geometry, Image, read_image, read_label, write_image
from deepwml.longitudinal.change import NEW, ENLARGING, ChangeRules, LesionSet, compare_lesions
from deepwml.longitudinal.registration import register_rigid, to_sitk
from deepwml.longitudinal.run import align_baseline
from deepwml.synthetic.thick_slices import SlabSpec, thick_slice_stack
from real_dev import DEFAULT_DATA, check_work_folder, find_scans, stripped_brain  # benchmarks/real_dev.py, next to this script

#: the follow-up visit's head position relative to the baseline's: rotations (degrees) about x, y, z and shift (mm)
ROTATION_DEG = (4.0, -2.0, 3.0)
SHIFT_MM = (3.0, -4.0, 2.5)
#: inserted lesions: radius range (mm), and how far from any lesion and the brain's edge their centres stay (mm)
RADIUS_MM = (2.5, 5.0)
CLEARANCE_MM = 10.0
EDGE_MM = 12.0
GROW_MM = 2.0
#: lesions grown must have this many 1 mm voxels (0.03-0.6 ml): small enough to be one plaque
GROW_VOXELS = (30, 600)


def soft_ball(distance: np.ndarray, radius: float) -> np.ndarray:
    """Share of each 1 mm voxel inside a ball of ``radius`` given its centre's distance (a 1 mm linear edge)."""
    return np.clip(radius + 0.5 - distance, 0.0, 1.0)


def paint(image: np.ndarray, share: np.ndarray, value: float) -> np.ndarray:
    """Blend ``value`` into ``image`` by ``share`` where it is brighter (a lesion never darkens tissue)."""
    return np.where(share > 0, np.maximum(image, (1 - share) * image + share * value), image)


def insert_new(image: np.ndarray, mask: np.ndarray, n: int, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Insert ``n`` round lesions into normal white matter; returns the image and their 1 mm mask."""
    brain = stripped_brain(image)
    lesion_value = float(np.median(image[mask]))
    inner = ndimage.distance_transform_edt(brain) > EDGE_MM
    clear = ndimage.distance_transform_edt(~mask) > CLEARANCE_MM
    smooth = ndimage.gaussian_filter(image, 2.0)
    # white matter on FLAIR: darker than grey matter, brighter than CSF; the middle band of the inner brain
    lo, hi = np.percentile(smooth[inner], [35, 65])
    candidates = np.argwhere(inner & clear & (smooth > lo) & (smooth < hi))
    inserted = np.zeros(image.shape, bool)
    centres: List[np.ndarray] = []
    for index in rng.permutation(len(candidates)):
        if len(centres) == n:
            break
        c = candidates[index]
        if any(np.linalg.norm(c - p) < 2 * CLEARANCE_MM for p in centres):
            continue
        radius = float(rng.uniform(*RADIUS_MM))
        box = tuple(slice(max(0, int(v - radius - 2)), int(v + radius + 3)) for v in c)
        grid = np.stack(np.meshgrid(*[np.arange(s.start, min(s.stop, dim)) for s, dim in zip(box, image.shape)], indexing="ij"))
        share = soft_ball(np.sqrt(((grid - c[:, None, None, None]) ** 2).sum(axis=0)), radius)
        image[box] = paint(image[box], share, lesion_value)
        inserted[box] |= share >= 0.5
        centres.append(c)
    return image, inserted


def enlarge(image: np.ndarray, mask: np.ndarray, n: int, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grow ``n`` of the scan's own plaques by GROW_MM; returns the image, the grown lesions' mask and the new mask."""
    labels, count = ndimage.label(mask)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    chosen = rng.permutation(np.flatnonzero((sizes >= GROW_VOXELS[0]) & (sizes <= GROW_VOXELS[1])) + 1)
    lesion_value = float(np.median(image[mask]))
    grown_mask = np.zeros(mask.shape, bool)
    picked = 0
    for lesion in chosen:
        if picked == n:
            break
        region = labels == lesion
        distance = ndimage.distance_transform_edt(~region)
        share = soft_ball(distance, GROW_MM) * stripped_brain(image)
        # another lesion within reach would merge with it: pick plaques that stand alone
        if (mask & ~region & (distance <= GROW_MM + CLEARANCE_MM / 2)).any():
            continue
        image = paint(image, share, lesion_value)
        grown_mask |= share >= 0.5
        picked += 1
    return image, grown_mask, mask | grown_mask


def moved(volume: np.ndarray, geometry: Geometry, rotation_deg=ROTATION_DEG, shift_mm=SHIFT_MM) -> Tuple[np.ndarray, sitk.Euler3DTransform]:
    """The volume as the next visit sees it: the follow-up world point x shows the baseline's point A(x), A turning
    about the volume's centre."""
    image = to_sitk(volume.astype(np.float32), geometry)
    transform = sitk.Euler3DTransform()
    transform.SetCenter(image.TransformContinuousIndexToPhysicalPoint([s / 2 for s in image.GetSize()]))
    transform.SetRotation(*np.deg2rad(rotation_deg))
    transform.SetTranslation(tuple(shift_mm))
    out = sitk.GetArrayFromImage(sitk.Resample(image, image, transform, sitk.sitkLinear, 0.0))
    return out, transform


def overlapping(labels: np.ndarray, count: int, target: np.ndarray) -> np.ndarray:
    """Which of lesions 1..count touch ``target`` (bool per lesion)."""
    return np.bincount(labels[target], minlength=count + 1)[1:] > 0


def segment(image: np.ndarray, geometry: Geometry, work: Path, name: str, model: Optional[str]) -> np.ndarray:
    """The model's mask of one stack (deepwml_predict's library entry point)."""
    from deepwml.inference.run import PredictRequest, predict

    path = work / "images" / f"{name}.nii.gz"
    write_image(image, geometry, path)
    # overwrite: a kept --work folder holds the stacks of an earlier seed or pose under the same names
    report = predict(PredictRequest(input=path, output=work / "predictions", model_dir=Path(model) if model else None,
                                    write_qc=False, anatomy=False, overwrite=True))
    if report.failed:
        raise SystemExit(f"{name}: {report.failed[0].error}")
    return read_label(work / "predictions" / f"{name}.nii.gz").array > 0


def one_scan(scan, args: argparse.Namespace, work: Path, rules: ChangeRules) -> Dict[str, float]:
    """Make one baseline / follow-up pair, compare it and count what was found."""
    rng = np.random.default_rng(args.seed)
    flair, reference = read_image(scan.flair), read_label(scan.mask).array > 0
    geometry = flair.geometry
    follow_volume, inserted = insert_new(flair.array.copy(), reference, args.new, rng)
    follow_volume, grown, follow_mask = enlarge(follow_volume, reference, args.enlarge, rng)
    follow_mask |= inserted
    pose = (args.rotation, args.shift)
    follow_volume, transform = moved(follow_volume, geometry, *pose)
    follow_mask = moved(follow_mask, geometry, *pose)[0] >= 0.5
    inserted, grown = moved(inserted, geometry, *pose)[0] >= 0.5, moved(grown, geometry, *pose)[0] >= 0.5
    base = thick_slice_stack(flair.array, reference.astype(np.uint8), geometry, SlabSpec(args.thickness[0]))
    follow = thick_slice_stack(follow_volume, follow_mask.astype(np.uint8), geometry, SlabSpec(args.thickness[1]))
    new_slab = thick_slice_stack(follow_volume, inserted.astype(np.uint8), geometry, SlabSpec(args.thickness[1])).label > 0
    grown_slab = thick_slice_stack(follow_volume, grown.astype(np.uint8), geometry, SlabSpec(args.thickness[1])).label > 0
    if args.reference:
        base_mask, follow_lesions = base.label > 0, follow.label > 0
    else:
        base_mask = segment(base.image, base.geometry, work, f"{scan.scan_id}_baseline", args.model)
        follow_lesions = segment(follow.image, follow.geometry, work, f"{scan.scan_id}_followup", args.model)
    start = time.perf_counter()
    registration = register_rigid(follow.image, follow.geometry, base.image, base.geometry)
    register_s = time.perf_counter() - start
    # the registration's error at brain voxels of the follow-up stack, against the transform that made it
    points = follow.geometry.index_to_world(np.argwhere(stripped_brain(follow.image))[::97][:, ::-1].astype(float))
    truth = np.array([transform.TransformPoint(p) for p in points])
    error = np.linalg.norm(registration.transform.followup_to_baseline(points) - truth, axis=1)
    images = align_baseline(Image(base.image, base.geometry), base_mask, Image(follow.image, follow.geometry), registration)
    change = compare_lesions(base_mask, base.geometry, follow_lesions, follow.geometry, registration.transform, rules,
                             None if args.masks_only else images)
    lesions = LesionSet.from_mask(follow_lesions, follow.geometry)
    status, counted = change.followup["status"].to_numpy(), change.followup["counted"].to_numpy(bool)
    on_new = overlapping(lesions.labels, lesions.count, new_slab)
    on_grown = overlapping(lesions.labels, lesions.count, grown_slab)
    called_new, called_grown = (status == NEW) & counted, status == ENLARGING
    new_labels, n_new = ndimage.label(new_slab, np.ones((3, 3, 3)))
    grown_labels, n_grown = ndimage.label(grown_slab, np.ones((3, 3, 3)))
    found_new = overlapping(new_labels, n_new, np.isin(lesions.labels, np.flatnonzero(called_new) + 1))
    if args.verbose:
        signal = change.followup["signal_change"].to_numpy()
        on_each = [np.unique(lesions.labels[new_labels == k]) for k in range(1, n_new + 1)]
        print(scan.scan_id, "inserted lesions, statuses of the follow-up lesions on each:",
              [sorted(set(status[ids[ids > 0] - 1])) for ids in on_each], file=sys.stderr)
        other = (status == NEW) & ~on_new & ~on_grown
        print(scan.scan_id, "signal change of the inserted lesions:", np.round(signal[(status == NEW) & on_new], 2),
              "of the other new lesions:", np.round(signal[other], 2),
              "their long axes:", np.round(change.followup["long_axis_mm"].to_numpy()[other], 1), file=sys.stderr)
    found_grown = overlapping(grown_labels, n_grown, np.isin(lesions.labels, np.flatnonzero(called_new | called_grown) + 1))
    return {
        "new made": n_new, "new found": int(found_new.sum()), "false new": int((called_new & ~on_new & ~on_grown).sum()),
        "new not counted": int(((status == NEW) & ~counted).sum()),
        "grown made": n_grown, "grown found": int(found_grown.sum()),
        "false enlarging": int((called_grown & ~on_grown & ~on_new).sum()),
        "resolved": change.summary["resolved_baseline_lesions"], "baseline lesions": change.summary["baseline_lesion_count"],
        "volume change %": float(change.summary["volume_change_percent"] or 0.0),
        "registration r": registration.correlation, "registration error mm": float(np.median(error)),
        "registration s": register_s,
    }


def build_parser() -> argparse.ArgumentParser:
    """Arguments."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"folder of patientNN/flair.nii.gz + wmh.nii.gz (default {DEFAULT_DATA})")
    p.add_argument("-m", "--model", help="the segmenting model's PLAN folder (default: the shipped model)")
    p.add_argument("--reference", action="store_true", help="compare the slab reference masks instead of segmenting")
    p.add_argument("--thickness", type=float, nargs=2, default=[6.5, 6.5], metavar=("BASELINE", "FOLLOWUP"))
    p.add_argument("--rotation", type=float, nargs=3, default=list(ROTATION_DEG), metavar=("X", "Y", "Z"),
                   help="the follow-up head's rotation about x, y, z in degrees (default %(default)s)")
    p.add_argument("--shift", type=float, nargs=3, default=list(SHIFT_MM), metavar=("X", "Y", "Z"),
                   help="and its shift in mm (default %(default)s)")
    p.add_argument("--new", type=int, default=4, help="lesions inserted per scan (default 4)")
    p.add_argument("--enlarge", type=int, default=2, help="plaques grown per scan (default 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--enlarge-min-ml", type=float, default=ChangeRules().enlarge_min_ml)
    p.add_argument("--masks-only", action="store_true",
                   help="compare the masks alone, without the signal-change rule (AlignedImages) deepwml_compare applies")
    p.add_argument("--verbose", action="store_true", help="also print each unmatched lesion's signal change")
    p.add_argument("--work", type=Path, help="keep stacks and predictions here (default: a temporary folder)")
    return p


def _main(argv: Optional[List[str]]) -> int:
    args = build_parser().parse_args(argv)
    rules = ChangeRules(enlarge_min_ml=args.enlarge_min_ml)
    if args.work is not None:
        check_work_folder(args.work)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        rows = {scan.scan_id: one_scan(scan, args, work, rules) for scan in find_scans(args.data)}
    keys = list(next(iter(rows.values())))
    print(f"segmentation: {'slab reference masks' if args.reference else args.model or 'the shipped model'}; "
          f"{'masks alone' if args.masks_only else 'with the signal-change rule'}; "
          f"thickness {args.thickness[0]:g} -> {args.thickness[1]:g} mm; follow-up rotated {args.rotation} degrees, "
          f"shifted {args.shift} mm; seed {args.seed}\n")
    print("| scan | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for scan_id, row in rows.items():
        print(f"| {scan_id} | " + " | ".join(_cell(row[k]) for k in keys) + " |")
    sums = {k: sum(r[k] for r in rows.values()) for k in keys if not k.startswith(("registration", "volume"))}
    print("| all | " + " | ".join(_cell(sums[k]) if k in sums else "" for k in keys) + " |")
    return 0


def _cell(value: float) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point."""
    return run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
