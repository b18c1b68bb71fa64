"""Does a scan look like the scans the model learned from? Slice plane, slice thickness and in-plane spacing of each
input against the ranges of the model's training data (its fingerprint.json), so that a result on, say, a 1 mm 3D
FLAIR or coronal slices is never reported as if it were on the routine axial 2D FLAIR the model knows.

The check warns, it does not refuse: the mask is still written (a model often does fair work somewhat outside its
training data), and summary.csv, the terminal and the patient report say what differs. The margins are generous,
because the training ranges are those of the (synthetic) training set, not hard limits of the method.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Tuple

import numpy as np

from deepwml.imageio.geometry import Geometry

#: a scan's slices may be this much thinner (x 2/3) or thicker (x 1.25) than the thinnest / thickest trained on
THICKNESS_MARGIN = (2 / 3, 1.25)
#: and its pixels this much finer or coarser than the finest / coarsest trained on
INPLANE_MARGIN = (2 / 3, 1.5)
#: slices whose normal is further than this from the head's long (superior-inferior) axis are not axial; oblique
#: axial stacks (tilted along the AC-PC line, often 10-30 degrees) stay well inside
MAX_AXIAL_TILT_DEG = 45.0


@dataclass(frozen=True)
class TrainedAcquisition:
    """The slice thickness and in-plane spacing ranges (mm) of a model's training scans."""

    slice_thickness_mm: Tuple[float, float]
    inplane_spacing_mm: Tuple[float, float]


def _recorded(model_dir: Path, name: str, *keys: str) -> Any:
    """``model_dir``/``name`` (JSON) followed down ``keys``; None when the file, a key or valid JSON is missing."""
    try:
        value = json.loads((Path(model_dir) / name).read_text(encoding="utf-8"))
        for key in keys:
            value = value[key]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return value


def trained_acquisition(model_dir: Path) -> Optional[TrainedAcquisition]:
    """The training ranges recorded in ``model_dir``/fingerprint.json; None when the model does not record them."""
    try:
        summary = _recorded(model_dir, "fingerprint.json", "dataset_summary")
        thickness = tuple(float(v) for v in summary["slice_thickness_range"])
        inplane = tuple(float(v) for v in summary["inplane_spacing_range"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # a hand-made or older model folder: nothing to compare with, so nothing is claimed
    if len(thickness) != 2 or len(inplane) != 2 or not all(math.isfinite(v) and v > 0 for v in thickness + inplane):
        return None
    return TrainedAcquisition((min(thickness), max(thickness)), (min(inplane), max(inplane)))


def learned_stripped_scans(model_dir: Path) -> Optional[int]:
    """How many of the model's training scans were skull-stripped: fingerprint.json's ``skull_stripped_cases``, else
    the per-case ``skull_stripped`` of a synthetic dataset.json (deepwml_make_synthetic records what it drew; the
    shipped model's fingerprint predates the count); None when neither says (a hand-made folder, or a fingerprint from
    before 2026-12-07 of scans that are not synthetic)."""
    count = _recorded(model_dir, "fingerprint.json", "dataset_summary", "skull_stripped_cases")
    if isinstance(count, int) and not isinstance(count, bool) and count >= 0:
        return count
    cases = _recorded(model_dir, "dataset.json", "cases")
    flags = [meta.get("skull_stripped") if isinstance(meta, dict) else None
             for meta in (cases.values() if isinstance(cases, dict) else ())]
    return sum(flags) if flags and all(isinstance(f, bool) for f in flags) else None


def axial_tilt_deg(geometry: Geometry) -> float:
    """Angle (degrees) between the slice normal and the world's superior-inferior axis: 0 for axial slices."""
    normal = geometry.direction_matrix[:, geometry.slice_axis]
    cosine = abs(float(normal[2])) / max(float(np.linalg.norm(normal)), 1e-12)
    return math.degrees(math.acos(min(1.0, cosine)))


def acquisition_warning(geometry: Geometry, trained: Optional[TrainedAcquisition]) -> str:
    """'' when the scan resembles the training scans, else what differs ('; '-separated, for summary.csv)."""
    if trained is None:
        return ""
    problems: List[str] = []
    tilt = axial_tilt_deg(geometry)
    if tilt > MAX_AXIAL_TILT_DEG:
        problems.append(f"slices are not axial (slice normal {tilt:.0f} degrees from the head's long axis); the model "
                        "learned axial slices")
    thickness, (low, high) = geometry.slice_thickness, trained.slice_thickness_mm
    if not low * THICKNESS_MARGIN[0] <= thickness <= high * THICKNESS_MARGIN[1]:
        problems.append(f"slices {thickness:.2g} mm thick; the model learned {low:.2g}-{high:.2g} mm slices")
    finest, coarsest = min(geometry.inplane_spacing), max(geometry.inplane_spacing)
    (low, high) = trained.inplane_spacing_mm
    if finest < low * INPLANE_MARGIN[0] or coarsest > high * INPLANE_MARGIN[1]:
        problems.append(f"pixels {finest:.2g} x {coarsest:.2g} mm; the model learned {low:.2g}-{high:.2g} mm pixels")
    if not problems:
        return ""
    return "unlike the scans the model learned from: " + "; ".join(problems) + " (results not validated there)"
