"""The anatomy model on real anatomy: brain and lateral ventricles of the real development scans as thick-slice stacks.

Lesion locations, the McDonald region counts and the Fazekas estimates of deepwml_predict all read the anatomy
model's map (docs/prediction.md), and that model learned synthetic anatomy only. No anatomy labels exist for the real
development scans (MSLUB: 3D 1 mm FLAIR, skull-stripped, MNI space; ../shared/real_dev/mslub), so two references are
read from each 1 mm scan itself, before it is made into stacks exactly as benchmarks/real_dev.py makes them (a
reference pixel where at least half of its slab is):

- **brain**: the stripped brain (voxels above a tenth of the brain median; sulcal CSF included), scored by Dice
  against the map's every class but background (which leaves sulcal and outer CSF out: a Dice near 0.9 is the ceiling);
- **clear ventricles** (:func:`clear_ventricles`): dark CSF (under 0.4 × the brain median) in components that never
  come within 6 mm of the brain's closed outline, so sulci, fissures and cisterns are left out, grown back 2 voxels
  into CSF. It is conservative: slit-like ventricles and horns thinner than about 3 mm are missed, so the map's
  **recall** of it (its voxels the map calls ventricle) is the figure to read; precision against it (counted with a
  one-pixel tolerance in-plane) is a lower bound, and the volume ratio says how much more the map calls ventricle.

These scans measure the model on real anatomy: do not tune anything on them.

    python benchmarks/real_dev_anatomy.py                      # the shipped anatomy model, 5 / 6.5 / 8 mm stacks
    python benchmarks/real_dev_anatomy.py --add-head --tilt 12 --inplane 0.9 --thickness 6.5 8   # the MS site's way
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
from scipy import ndimage

from deepwml.anatomy.labels import VENTRICLE
from deepwml.cli.common import run
from deepwml.imageio import read_image, read_label, write_image
from deepwml.inference.model_loading import check_model, resolve_model_dir
from deepwml.inference.run import PredictRequest, predict
from deepwml.pretrained import ANATOMY_DIR
from deepwml.synthetic.thick_slices import SlabSpec
from deepwml.utils.errors import DeepWMLError
from machine_load import load_line  # benchmarks/machine_load.py, next to this script
from real_dev import DEFAULT_DATA, Scan, StackCase, check_work_folder, find_scans, make_stacks, stripped_brain

#: CSF on FLAIR: darker than this share of the brain median (white matter and cortex sit near 1)
CSF_RATIO = 0.4
#: a ventricle component never comes nearer than this to the closed brain outline (mm = voxels at 1 mm)
MIN_DEPTH_MM = 6.0
#: components of the eroded CSF smaller than this are left out (voxels at 1 mm): specks, not ventricles
MIN_VOXELS = 200


def clear_ventricles(flair: np.ndarray) -> np.ndarray:
    """The lateral (and third) ventricles' clear CSF of a skull-stripped 1 mm FLAIR (see the module docstring)."""
    brain = flair > 0
    if not brain.any():
        return np.zeros(flair.shape, bool)
    median = float(np.median(flair[brain]))
    envelope = ndimage.binary_fill_holes(ndimage.binary_closing(brain, iterations=4))
    depth = ndimage.distance_transform_edt(envelope)
    csf = envelope & (flair < CSF_RATIO * median)
    core = ndimage.binary_erosion(csf)  # cuts the thin CSF bridges between ventricles, cisterns and sulci
    labels, n = ndimage.label(core)
    if n == 0:
        return np.zeros(flair.shape, bool)
    index = np.arange(1, n + 1)
    sizes = ndimage.sum(core, labels, index)
    shallowest = ndimage.minimum(depth, labels, index)
    ventricles = np.isin(labels, index[(sizes > MIN_VOXELS) & (shallowest > MIN_DEPTH_MM)])
    return ndimage.binary_dilation(ventricles, iterations=2, mask=csf)


def write_references(scans: Sequence[Scan], root: Path) -> Dict[str, List[Scan]]:
    """Each scan's two 1 mm references as the mask of a scan folder below ``root``/brain and ``root``/ventricle."""
    out: Dict[str, List[Scan]] = {"brain": [], "ventricle": []}
    for scan in scans:
        flair = read_image(scan.flair)
        for name, reference in (("brain", stripped_brain(flair.array)), ("ventricle", clear_ventricles(flair.array))):
            mask = root / name / scan.scan_id / "reference.nii.gz"
            write_image(reference.astype(np.uint8), flair.geometry, mask)
            out[name].append(Scan(scan.scan_id, scan.flair, mask))
    return out


def score_stack(anatomy: np.ndarray, brain: np.ndarray, ventricle: np.ndarray, voxel_ml: float) -> Dict[str, float]:
    """Brain Dice, ventricle recall, precision (one pixel of tolerance in-plane), volume ratio and the reference's
    volume in ml of one stack, arrays in (slice, y, x) order."""
    predicted_brain, predicted_ventricle = anatomy > 0, anatomy == VENTRICLE
    tolerant = ndimage.binary_dilation(ventricle, structure=np.array([np.zeros((3, 3)), np.ones((3, 3)), np.zeros((3, 3))], bool))
    n_ref, n_pred = int(ventricle.sum()), int(predicted_ventricle.sum())
    nan = float("nan")
    return {
        "brain_dice": 2.0 * float((brain & predicted_brain).sum()) / max(int(brain.sum() + predicted_brain.sum()), 1),
        "recall": float((ventricle & predicted_ventricle).sum()) / n_ref if n_ref else nan,
        "precision": float((tolerant & predicted_ventricle).sum()) / n_pred if n_pred else nan,
        "volume_ratio": n_pred / n_ref if n_ref else nan,
        "reference_ml": n_ref * voxel_ml,
    }


def table(cases: Sequence[StackCase], rows: Dict[str, Dict[str, float]]) -> str:
    """Markdown: one row per stack, then the mean over stacks."""
    lines = ["| stack | brain Dice | ventricle reference ml | recall | precision (lower bound) | predicted / reference volume |",
             "|---|---|---|---|---|---|"]
    for c in cases:
        r = rows[c.case_id]
        lines.append(f"| {c.case_id} | {r['brain_dice']:.3f} | {r['reference_ml']:.1f} | {r['recall']:.2f} | "
                     f"{r['precision']:.2f} | {r['volume_ratio']:.2f} |")
    mean = {k: float(np.nanmean([rows[c.case_id][k] for c in cases])) for k in ("brain_dice", "recall", "precision", "volume_ratio")}
    lines.append(f"| **mean, {len(cases)} stacks** | {mean['brain_dice']:.3f} |  | {mean['recall']:.2f} | "
                 f"{mean['precision']:.2f} | {mean['volume_ratio']:.2f} |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """Arguments of the benchmark."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"folder of patientNN/flair.nii.gz (default {DEFAULT_DATA})")
    p.add_argument("-m", "--model", help="an anatomy model's PLAN folder (default: the one shipped in the package)")
    p.add_argument("--thickness", type=float, nargs="+", default=[5.0, 6.5, 8.0], help="slice thicknesses in mm (default 5 6.5 8)")
    p.add_argument("--inplane", type=float, help="resample in-plane to this spacing in mm, e.g. 0.9 (default: keep 1 mm)")
    p.add_argument("--tilt", type=float, default=0.0, help="nod each head by this many degrees before slicing")
    p.add_argument("--add-head", action="store_true", help="wrap each stripped brain in a synthetic skull and scalp first")
    p.add_argument("--field", type=float, metavar="MM", help="pad each scan to a square in-plane field of view of MM first, "
                   "as real_dev.py --field (e.g. 230)")
    p.add_argument("--work", type=Path, help="keep stacks, references and maps in this folder (default: a temporary one)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--tta", action="store_true", help="predict with left-right flip TTA (each slice averaged with its mirror image)")
    return p


def _main(argv: Optional[List[str]]) -> int:
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    # the scans' own lesion masks are not needed: any folder holding flair.nii.gz counts
    scans = find_scans(args.data.expanduser(), mask="flair.nii.gz")
    if args.work:
        check_work_folder(args.work)
    folder = resolve_model_dir(Path(args.model)) if args.model else ANATOMY_DIR
    spec = check_model(folder, None, "best")
    if spec.plan.network.num_classes <= VENTRICLE:
        raise DeepWMLError("is not an anatomy model (it has no ventricle class)", folder)
    print(f"# {load_line()}")
    print(f"data: {args.data} ({len(scans)} scans); anatomy model: {folder}")
    print(f"stacks: axial slabs of {', '.join(f'{t:g}' for t in args.thickness)} mm, in-plane "
          f"{f'{args.inplane:g} mm' if args.inplane else 'kept (1 mm)'}; references where >= 50 % of the slab is"
          f"{f'; heads nodded {args.tilt:g} degrees first' if args.tilt else ''}"
          f"{'; a synthetic skull and scalp around each brain' if args.add_head else ''}"
          f"{f'; padded to a {args.field:g} mm square field' if args.field else ''}"
          f"{'; the model with flip TTA' if args.tta else ''}")
    spec_for = {t: SlabSpec(t, 0.0, args.inplane, lesion_fraction=0.5) for t in args.thickness}
    with tempfile.TemporaryDirectory(prefix="deepwml_realdev_anatomy_") as tmp:
        work = args.work.expanduser() if args.work else Path(tmp)
        references = write_references(scans, work / "references")
        options = dict(tilt=args.tilt, add_head=args.add_head, field=args.field)
        cases = make_stacks(references["ventricle"], spec_for, work / "images", **options)
        # the same stacks again with the brain as their label (the images come out identical; kept apart)
        brains = {c.case_id: c.label for c in make_stacks(references["brain"], spec_for, work / "brain_stacks", **options)}
        report = predict(PredictRequest(input=work / "images", output=work / "anatomy", model_dir=folder, device=args.device,
                                        overwrite=True, write_qc=False, anatomy=False, tta=args.tta or None))
        rows = {c.case_id: score_stack(read_label(work / "anatomy" / f"{c.case_id}.nii.gz").array, brains[c.case_id], c.label,
                                       float(np.prod(c.geometry.spacing)) / 1000.0)
                for c in cases if (work / "anatomy" / f"{c.case_id}.nii.gz").is_file()}
    done = [c for c in cases if c.case_id in rows]
    print()
    print(table(done, rows))
    print()
    print(f"time: {time.perf_counter() - start:.1f} s in all; anatomy maps {report.seconds:.1f} s ({len(done)} stacks, {report.device})")
    for row in report.failed:
        print(f"prediction failed: {row.case_id}: {row.error}", file=sys.stderr)
    return 1 if report.failed else 0


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point: user errors print one line and exit 2."""
    return run(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
