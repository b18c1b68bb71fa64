"""Which reference lesions a model finds, by their size and by how much brighter they are than the tissue around them.

Lesion F1 counts every reference lesion alike, and most of those a thick-slice model misses are small and faint.
This table tells whether a set of scans holds more of them than another (real development stacks against the
synthetic held-out set, say) and whether, at the same size and contrast, the model finds them as often. Each
reference lesion is a 26-connected component (as lesion F1 counts them); its contrast is its mean intensity over the
median of the ring around it, as deepwml_predict --min-lesion-contrast measures it (deepwml.inference.lesion_contrast):
the voxels within ``--ring-mm`` in-plane on its slices that are neither reference lesion nor background (at most a
tenth of the median positive intensity: the air, or a stripped scan's zero); it is found when any predicted voxel
touches it. A second table sorts the predicted lesions the same way (their ring
leaves out the predicted lesions, as deepwml_predict --min-lesion-contrast measures them): true when they touch the
reference, false when not.

    python benchmarks/lesion_conspicuity.py -i RAW/imagesTr -l RAW/labelsTr -p PREDICTIONS
    python benchmarks/real_dev.py --builtin --conspicuity   # the same table on the real development stacks
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from deepwml.cli.common import run
from deepwml.evaluation.lesions import label_lesions
from deepwml.imageio import read_image, read_label
from deepwml.inference.lesion_contrast import RING_MM, background_floor, lesion_contrasts, lesion_spreads, ring_radius
from deepwml.utils.errors import DeepWMLError

#: thresholds of the filter table: the ratio deepwml_predict --min-lesion-contrast compares, and the spread contrast
RATIO_THRESHOLDS = (1.1, 1.15, 1.2)
SPREAD_THRESHOLDS = (1.5, 1.75, 2.0, 2.25)
#: both at once: a lesion dropped only when under the ratio and under the spread threshold
BOTH_THRESHOLDS = ((1.15, 2.0), (1.15, 2.25), (1.2, 2.0), (1.2, 2.25))
#: the contrast rules --rules scores: (name, ratio below which, spread below which a lesion is dropped; 0: no bound)
RULES = (("none", 0.0, 0.0), ("ratio < 1.15 (shipped 2026-12-05)", 1.15, 0.0), ("spread < 2.25", 0.0, 2.25),
         ("ratio < 1.15 and spread < 2.25", 1.15, 2.25), ("ratio < 1.2 and spread < 2.25 (shipped 2026-12-06)", 1.2, 2.25),
         ("ratio < 1.2 and spread < 2", 1.2, 2.0))
#: lesion volume classes (µl) and contrast bins (lesion mean / ring median) of the table
VOLUME_CLASSES_UL = (0.0, 30.0, 100.0, 500.0, math.inf)
CONTRAST_BINS = (0.0, 1.05, 1.10, 1.15, 1.20, 1.30, math.inf)


def reference_conspicuity(image: np.ndarray, label: np.ndarray, predicted: np.ndarray, spacing_zyx: Sequence[float],
                          ring_mm: float = RING_MM, slice_axis: int = 0) -> List[Dict]:
    """One row per lesion of ``label``: volume (µl), contrast to its ring as deepwml_predict --min-lesion-contrast
    measures it (deepwml.inference.lesion_contrast; NaN without a ring) and whether ``predicted`` touches it."""
    image = np.asarray(image, np.float32)
    labels, n = label_lesions(np.asarray(label, bool))
    radius, floor = ring_radius(spacing_zyx, slice_axis, ring_mm), background_floor(image)
    contrast = lesion_contrasts(image, labels, n, radius, floor)
    spread = lesion_spreads(image, labels, n, radius, floor)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    found = np.bincount(labels[np.asarray(predicted, bool)], minlength=n + 1)[1:] > 0
    voxel_ul = float(np.prod(spacing_zyx))
    return [{"ul": float(size * voxel_ul), "contrast": float(c), "spread": float(z), "found": bool(f)}
            for size, c, z, f in zip(sizes, contrast, spread, found)]


def both_ways(image: np.ndarray, label: np.ndarray, predicted: np.ndarray, spacing_zyx: Sequence[float],
              ring_mm: float = RING_MM, slice_axis: int = 0) -> List[Dict]:
    """Rows of a stack's reference lesions (kind 'reference', found or not) and of its predicted lesions (kind
    'predicted', ``found``: touching the reference)."""
    return ([{**r, "kind": "reference"} for r in reference_conspicuity(image, label, predicted, spacing_zyx, ring_mm, slice_axis)]
            + [{**r, "kind": "predicted"} for r in reference_conspicuity(image, predicted, label, spacing_zyx, ring_mm, slice_axis)])


def predicted_table(rows: Sequence[Dict]) -> str:
    """Markdown: predicted lesions by contrast to their ring, true (touching the reference) and false."""
    predicted = [r for r in rows if r.get("kind") == "predicted"]
    bins = list(zip(CONTRAST_BINS, CONTRAST_BINS[1:]))
    names = [f"{lo:g}–{hi:g}" if math.isfinite(hi) else f">= {lo:g}" for lo, hi in bins]
    cells = []
    for a, b in bins:
        inside = [r for r in predicted if a <= r["contrast"] < b]
        cells.append(f"{sum(r['found'] for r in inside)} / {sum(not r['found'] for r in inside)}")
    unringed = [r for r in predicted if not math.isfinite(r["contrast"])]
    return "\n".join(["| predicted lesions, true / false | " + " | ".join(f"contrast {n}" for n in names) + " | no ring |",
                      "|---" * (len(bins) + 2) + "|",
                      "| count | " + " | ".join(cells) + f" | {sum(r['found'] for r in unringed)} / "
                      f"{sum(not r['found'] for r in unringed)} |"])


def pair_auc(true: Sequence[float], false: Sequence[float]) -> float:
    """The chance that a true lesion's figure exceeds a false one's (ties count half; NaN figures left out)."""
    t, f = np.asarray(true, float), np.asarray(false, float)
    t, f = t[np.isfinite(t)], f[np.isfinite(f)]
    if not (t.size and f.size):
        return float("nan")
    return float(np.mean(t[:, None] > f[None, :]) + 0.5 * np.mean(t[:, None] == f[None, :]))


def filter_table(rows: Sequence[Dict]) -> str:
    """Markdown: what a contrast filter would drop of the predicted lesions, true and false, by the ratio
    (--min-lesion-contrast's figure) and by the spread contrast, with each figure's AUC of true against false. Give
    masks made without the filter (deepwml_predict --min-lesion-contrast 0) to read it."""
    predicted = [r for r in rows if r.get("kind") == "predicted"]
    true, false = [r for r in predicted if r["found"]], [r for r in predicted if not r["found"]]
    lines = [f"| filter ({len(true)} true / {len(false)} false predicted lesions) | true dropped | of their volume | "
             "false dropped |", "|---|---|---|---|"]
    rules = ([(f"ratio < {t:g}", lambda r, t=t: r["contrast"] < t) for t in RATIO_THRESHOLDS]
             + [(f"spread < {t:g}", lambda r, t=t: r["spread"] < t) for t in SPREAD_THRESHOLDS]
             + [(f"ratio < {a:g} and spread < {b:g}", lambda r, a=a, b=b: r["contrast"] < a and r["spread"] < b)
                for a, b in BOTH_THRESHOLDS])
    for name, drops in rules:
        dropped = [r for r in true if drops(r)]
        volume = sum(r["ul"] for r in dropped) / max(sum(r["ul"] for r in true), 1e-12)
        share_false = np.mean([drops(r) for r in false]) if false else float("nan")
        share_true = len(dropped) / len(true) if true else float("nan")
        lines.append(f"| {name} | {share_true:.2f} | {volume:.2f} | {share_false:.2f} |")
    lines.append(f"| AUC, true against false | ratio {pair_auc([r['contrast'] for r in true], [r['contrast'] for r in false]):.3f} "
                 f"| spread {pair_auc([r['spread'] for r in true], [r['spread'] for r in false]):.3f} | |")
    return "\n".join(lines)


def _cell(rows: Sequence[Dict]) -> str:
    """'recall (n)' of some lesions, '–' for none."""
    return f"{np.mean([r['found'] for r in rows]):.2f} ({len(rows)})" if rows else "–"


def conspicuity_table(rows: Sequence[Dict]) -> str:
    """Markdown: recall (count) of reference lesions by volume class (rows) and contrast to their ring (columns), with
    every lesion of a class and its median contrast in the last columns."""
    rows = [r for r in rows if r.get("kind", "reference") == "reference"]
    bins = list(zip(CONTRAST_BINS, CONTRAST_BINS[1:]))
    names = [f"{lo:g}–{hi:g}" if math.isfinite(hi) else f">= {lo:g}" for lo, hi in bins]
    lines = ["| reference lesions, µl | " + " | ".join(f"contrast {n}: recall (n)" for n in names)
             + " | all: recall (n) | median contrast |", "|---" * (len(bins) + 3) + "|"]
    for lo, hi in zip(VOLUME_CLASSES_UL, VOLUME_CLASSES_UL[1:]):
        size = [r for r in rows if lo <= r["ul"] < hi]
        cells = [_cell([r for r in size if a <= r["contrast"] < b]) for a, b in bins]
        contrasts = [r["contrast"] for r in size if math.isfinite(r["contrast"])]
        median = f"{np.median(contrasts):.2f}" if contrasts else "–"
        name = f"{lo:g}–{hi:g}" if math.isfinite(hi) else f">= {lo:g}"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {_cell(size)} | {median} |")
    lines.append("| all | " + " | ".join(_cell([r for r in rows if a <= r["contrast"] < b]) for a, b in bins)
                 + f" | {_cell(rows)} | "
                 + (f"{np.median([r['contrast'] for r in rows if math.isfinite(r['contrast'])]):.2f}"
                    if any(math.isfinite(r["contrast"]) for r in rows) else "–") + " |")
    return "\n".join(lines)


def rule_scores(image: np.ndarray, reference: np.ndarray, predicted: np.ndarray, geometry) -> Dict[str, Dict[str, float]]:
    """Case Dice and lesion F1 (deepwml_evaluate's) of ``predicted`` after each of RULES drops its lesions: deepwml_predict's
    own filter (filter_lesions) for the rules it can apply, the spread alone (not a filter setting) here."""
    from deepwml.evaluation.case_metrics import case_metrics
    from deepwml.inference.lesion_report import filter_lesions

    image, predicted = np.asarray(image, np.float32), np.asarray(predicted, bool)
    out = {}
    for name, below_ratio, below_spread in RULES:
        if below_ratio or not below_spread:
            kept = filter_lesions(predicted, geometry, image=image, min_contrast=below_ratio, min_spread=below_spread) > 0
        else:
            labels, n = label_lesions(predicted)
            radius = ring_radius(geometry.numpy_spacing, geometry.slice_axis_numpy)
            spread = lesion_spreads(image, labels, n, radius, background_floor(image))
            kept = np.concatenate([[False], ~(spread < below_spread)])[labels]
        metrics = case_metrics(np.asarray(reference, bool), kept, geometry)
        out[name] = {"dice": float(metrics["dice"]), "lesion_f1": float(metrics["lesion_f1"])}
    return out


def rules_table(scores: Sequence[Dict[str, Dict[str, float]]]) -> str:
    """Markdown: mean case Dice and lesion F1 over the cases under each rule."""
    lines = [f"| contrast rule ({len(scores)} cases, masks made without the filter) | mean case Dice | mean lesion F1 |",
             "|---|---|---|"]
    for name, _, _ in RULES:
        dice = np.nanmean([s[name]["dice"] for s in scores]) if scores else float("nan")
        f1 = np.nanmean([s[name]["lesion_f1"] for s in scores]) if scores else float("nan")
        lines.append(f"| {name} | {dice:.3f} | {f1:.3f} |")
    return "\n".join(lines)


def _image_for(images: Path, name: str) -> Path:
    """The image of a label file: the same name, or nnU-Net's CASE_0000 channel file."""
    stem = name[: -len(".nii.gz")] if name.endswith(".nii.gz") else Path(name).stem
    for candidate in (images / name, images / f"{stem}_0000.nii.gz"):
        if candidate.is_file():
            return candidate
    raise DeepWMLError(f"no image for label {name} (looked for {name} and {stem}_0000.nii.gz)", images)


def folder_rows(images: Path, labels: Path, predictions: Path, ring_mm: float = RING_MM,
                scores: Optional[List[Dict]] = None) -> List[Dict]:
    """Rows of every labelled case that has a prediction; a clear error for a missing or mismatched file. ``scores``,
    when given, receives each case's :func:`rule_scores`."""
    names = sorted(p.name for p in labels.glob("*.nii.gz"))
    if not names:
        raise DeepWMLError("holds no .nii.gz labels", labels)
    rows = []
    for name in names:
        reference = read_label(labels / name)
        image = read_image(_image_for(images, name))
        mask_path = predictions / name
        if not mask_path.is_file():
            raise DeepWMLError(f"no prediction for {name}", predictions)
        predicted = read_label(mask_path)
        for what, other in (("image", image.geometry), ("prediction", predicted.geometry)):
            problems = reference.geometry.mismatches(other)
            if problems:
                raise DeepWMLError(f"{what} of {name} is not on its label's grid: {'; '.join(problems)}", labels / name)
        case = both_ways(image.array, reference.array > 0, predicted.array > 0,
                         tuple(reversed(reference.geometry.spacing)), ring_mm, reference.geometry.slice_axis_numpy)
        rows += [{**r, "case": name} for r in case]
        if scores is not None:
            scores.append(rule_scores(image.array, reference.array > 0, predicted.array > 0, reference.geometry))
    return rows


def build_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-i", "--images", type=Path, required=True, help="folder of images (CASE.nii.gz or CASE_0000.nii.gz)")
    p.add_argument("-l", "--labels", type=Path, required=True, help="folder of reference masks (CASE.nii.gz, lesion > 0)")
    p.add_argument("-p", "--predictions", type=Path, required=True, help="folder of predicted masks named as the labels")
    p.add_argument("--ring-mm", type=float, default=RING_MM, help=f"ring width around each lesion, mm in-plane (default {RING_MM:g})")
    p.add_argument("--rules", action="store_true",
                   help="also score the masks after each contrast rule drops its lesions: mean case Dice and lesion F1 "
                        "(give masks made with deepwml_predict --min-lesion-contrast 0)")
    return p


def _main(argv: Optional[List[str]]) -> int:
    args = build_parser().parse_args(argv)
    if not args.ring_mm > 0:
        raise DeepWMLError(f"--ring-mm must be positive, got {args.ring_mm:g}")
    scores: Optional[List[Dict]] = [] if args.rules else None
    rows = folder_rows(args.images.expanduser(), args.labels.expanduser(), args.predictions.expanduser(), args.ring_mm, scores)
    references = [r for r in rows if r["kind"] == "reference"]
    print(f"{len(references)} reference lesions in {len({r['case'] for r in rows})} cases; contrast: lesion mean / median "
          f"of the tissue within {args.ring_mm:g} mm in-plane")
    print()
    print(conspicuity_table(rows))
    print()
    print(predicted_table(rows))
    print()
    print(filter_table(rows))
    if scores is not None:
        print()
        print(rules_table(scores))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point: user errors print one line and exit 2."""
    return run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
