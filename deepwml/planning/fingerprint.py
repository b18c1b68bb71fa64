"""The dataset fingerprint: what the training data is, per case and summarised per centre and per disease.

Memory stays bounded whatever the number of cases: each worker reads one case and returns a small summary
plus a fixed-size random sample of head intensities; the pooled samples are capped overall.
"""
from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from deepwml.constants import LV_GROUP_BOUNDS_ML, LV_GROUP_NAMES
from deepwml.datasets import Case, RawDataset
from deepwml.preprocessing.head_mask import constant_background, head_mask
from deepwml.preprocessing.outliers import suppress_outliers
from deepwml.preprocessing.orientation import canonical_orientation, canonical_spacing, to_canonical
from deepwml.preprocessing.parallel import parallel_map
from deepwml.preprocessing.reading import read_case, read_channels
from deepwml.utils.atomic import read_json, write_json
from deepwml.utils.errors import DatasetError, DeepWMLError

FINGERPRINT_VERSION = 1
PERCENTILES = (0.5, 50.0, 99.5)
SAMPLES_PER_CASE = 10_000
MAX_SAMPLES = 1_000_000


@dataclass(frozen=True)
class CaseTask:
    """What a worker needs to fingerprint one case (small and picklable)."""

    case_id: str
    image: Path
    label: Path
    meta: Dict[str, Any]
    n_samples: int
    ignore_value: Optional[int] = None
    #: every channel's file (channel 0 = ``image`` first) of a multi-channel dataset; empty for one channel
    channels: Tuple[Path, ...] = ()
    num_classes: int = 2


def case_fingerprint(task: CaseTask) -> Tuple[Dict[str, Any], np.ndarray]:
    """Summary of one case and a random sample of its head intensities."""
    image, label_image = read_case(task.image, task.label, task.ignore_value, task.num_classes)
    g = image.geometry
    orientation = canonical_orientation(g)
    stack = to_canonical(image.array, orientation)
    label = to_canonical(label_image.array, orientation)
    thickness, sp_h, sp_w = canonical_spacing(g, orientation)
    # intensity statistics need no more than ~256² pixels a slice; a strided grid makes 512² cases 4× cheaper
    stride = max(1, min(stack.shape[1:]) // 256)
    stored = stack[:, ::stride, ::stride]
    coarse, _ = suppress_outliers(stored)
    head = head_mask(coarse)
    lesion = label == 1
    fg = coarse[head]
    lesion_values = stack[lesion]
    area_mm2 = lesion.sum(axis=(1, 2)) * (sp_h * sp_w)
    volume_ml = area_mm2 * thickness / 1000.0
    fg_pct = np.percentile(fg, PERCENTILES)
    extra = _channel_intensities(read_channels(image, task.channels)[1:], orientation, stride, head) if task.channels else None
    summary = {
        "case_id": task.case_id,
        "centre": task.meta.get("centre", "unknown"),
        "disease": task.meta.get("disease", "other"),
        "vendor": task.meta.get("vendor", "unknown"),
        "field_strength": task.meta.get("field_strength"),
        "size": list(g.size),
        "spacing": list(g.spacing),
        "direction": list(g.direction),
        "axis_codes": sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(g.direction),
        "canonical_codes": orientation.codes,
        "slice_axis": g.slice_axis,
        "slice_thickness": thickness,
        "n_slices": int(stack.shape[0]),
        "inplane_shape": [int(stack.shape[1]), int(stack.shape[2])],
        "inplane_spacing": [sp_h, sp_w],
        "fov_mm": [stack.shape[1] * sp_h, stack.shape[2] * sp_w],
        "intensity_percentiles": dict(zip(_pct_keys(), np.percentile(coarse, PERCENTILES).tolist())),
        "head": {
            "fraction": float(head.mean()),
            "mean": float(fg.mean()),
            "std": float(fg.std()),
            "percentiles": dict(zip(_pct_keys(), fg_pct.tolist())),
        },
        "lesion": {
            "voxels": int(lesion.sum()),
            "mean": float(lesion_values.mean()) if lesion_values.size else None,
            "std": float(lesion_values.std()) if lesion_values.size else None,
            "median": float(np.median(lesion_values)) if lesion_values.size else None,
            "contrast_to_head_median": float(np.median(lesion_values) / fg_pct[1]) if lesion_values.size and fg_pct[1] else None,
            "area_mm2_per_slice": area_mm2.tolist(),
            "volume_ml_per_slice": volume_ml.tolist(),
            "volume_ml": float(volume_ml.sum()),
            "slices_with_lesion": int(np.count_nonzero(area_mm2)),
        },
        # read_case allows only the class values and the ignore value
        "ignored_voxels": int(np.count_nonzero((label < 0) | (label >= task.num_classes))),
        # one background value outside the head: skull-stripped (deepwml_predict strips by default only for a model
        # that learned such scans)
        "skull_stripped": constant_background(stored, head),
    }
    if extra is not None:
        summary["channels"] = extra
    return summary, _sample(fg, task.n_samples, task.case_id)


def _channel_intensities(images: Sequence[Any], orientation: Any, stride: int, head: np.ndarray) -> Dict[str, Any]:
    """Head intensity statistics of channels 1.. (inside channel 0's head mask), keyed by channel number."""
    out = {}
    for channel, image in enumerate(images, start=1):
        coarse, _ = suppress_outliers(to_canonical(image.array, orientation)[:, ::stride, ::stride])
        fg = coarse[head]
        out[str(channel)] = {"mean": float(fg.mean()), "std": float(fg.std()),
                             "percentiles": dict(zip(_pct_keys(), np.percentile(fg, PERCENTILES).tolist()))}
    return out


def _pct_keys() -> List[str]:
    """'p0.5', 'p50', 'p99.5'."""
    return [f"p{p:g}" for p in PERCENTILES]


def _sample(values: np.ndarray, n: int, case_id: str) -> np.ndarray:
    """A reproducible random sample of at most ``n`` values (seeded by the case id, not by run order)."""
    rng = np.random.default_rng(zlib.crc32(case_id.encode()))
    if values.size <= n:
        return values.astype(np.float32)
    return values[rng.choice(values.size, size=n, replace=False)].astype(np.float32)


def training_cases(dataset: RawDataset) -> List[Case]:
    """The labelled training cases; a missing label is an error naming the file."""
    cases = dataset.cases("Tr")
    if not cases:
        raise DatasetError(f"no training images (*{dataset.file_ending}) in imagesTr", dataset.folder)
    for case in cases:
        if case.label is None:
            raise DatasetError(f"training case {case.case_id!r} has no label", dataset.folder / "labelsTr" / f"{case.case_id}{dataset.file_ending}")
        for channel, path in enumerate(case.channels):
            if not path.exists():
                raise DatasetError(f"training case {case.case_id!r} has no channel {channel} "
                                   f"({dataset.meta.channel_list()[channel]}) image", path)
    return cases


def source_stamps(cases: Iterable[Case]) -> Dict[str, List[int]]:
    """Size and modification time of every image and label: a changed file means a new fingerprint."""
    stamps = {}
    for case in cases:
        a, b = case.image.stat(), case.label.stat()
        stamps[case.case_id] = [a.st_size, a.st_mtime_ns, b.st_size, b.st_mtime_ns]
        for path in case.channels[1:]:
            c = path.stat()
            stamps[case.case_id] += [c.st_size, c.st_mtime_ns]
    return stamps


def compute_fingerprint(dataset: RawDataset, n_jobs: int = 1, progress: Optional[bool] = None) -> Dict[str, Any]:
    """Fingerprint every training case in parallel and summarise."""
    cases = training_cases(dataset)
    per_case = min(SAMPLES_PER_CASE, MAX_SAMPLES // len(cases))
    tasks = [CaseTask(c.case_id, c.image, c.label, c.meta.to_dict(), per_case, dataset.meta.ignore_label, c.channels,
                      dataset.meta.num_classes) for c in cases]
    summaries, samples = [], []
    for summary, sample in parallel_map(case_fingerprint, tasks, n_jobs, desc="fingerprint", progress=progress):
        summaries.append(summary)
        samples.append(sample)
    pooled = np.concatenate(samples)
    fingerprint = {
        "fingerprint_version": FINGERPRINT_VERSION,
        "dataset": dataset.name,
        "n_cases": len(summaries),
        "samples_per_case": per_case,
        "dataset_summary": _group_summary(summaries, pooled),
        "by_centre": _grouped(summaries, "centre"),
        "by_disease": _grouped(summaries, "disease"),
        "cases": {s["case_id"]: s for s in summaries},
    }
    if dataset.n_channels > 1:
        # only for several channels: a single-channel fingerprint (and so every plan's hash) stays as it was
        fingerprint["channel_names"] = dict(dataset.meta.channel_names)
        fingerprint["dataset_summary"]["channels"] = _channel_summary(summaries, dataset.meta.channel_list())
    fingerprint = _tidy(fingerprint)
    fingerprint["sources"] = source_stamps(cases)
    return fingerprint


def _channel_summary(summaries: Sequence[Dict[str, Any]], names: Sequence[str]) -> Dict[str, Any]:
    """Per channel (by name): median over cases of the head mean and std, and the range of the head percentiles."""
    out = {}
    for channel, name in enumerate(names):
        heads = [s["head"] if channel == 0 else s["channels"][str(channel)] for s in summaries]
        out[name] = {
            "channel": channel,
            "median_head_mean": float(np.median([h["mean"] for h in heads])),
            "median_head_std": float(np.median([h["std"] for h in heads])),
            "head_intensity_range": [float(min(h["percentiles"]["p0.5"] for h in heads)),
                                     float(max(h["percentiles"]["p99.5"] for h in heads))],
        }
    return out


def _grouped(summaries: Sequence[Dict[str, Any]], key: str) -> Dict[str, Any]:
    """Group summaries per value of ``key`` (centre or disease), in sorted order."""
    groups: Dict[str, List[Dict[str, Any]]] = {}
    for s in summaries:
        groups.setdefault(str(s[key]), []).append(s)
    return {name: _group_summary(groups[name]) for name in sorted(groups)}


def _group_summary(summaries: Sequence[Dict[str, Any]], pooled: Optional[np.ndarray] = None) -> Dict[str, Any]:
    """Ranges and medians over a group of case summaries."""
    thick = np.array([s["slice_thickness"] for s in summaries])
    inplane = np.array([s["inplane_spacing"] for s in summaries])
    shapes = np.array([[s["n_slices"]] + s["inplane_shape"] for s in summaries])
    fov = np.array([s["fov_mm"] for s in summaries])
    load = np.array([s["lesion"]["volume_ml"] for s in summaries])
    slice_volumes = np.concatenate([s["lesion"]["volume_ml_per_slice"] for s in summaries])
    lesion_slices = slice_volumes[slice_volumes > 0]
    out = {
        "n": len(summaries),
        "slice_thickness_range": [float(thick.min()), float(thick.max())],
        "inplane_spacing_range": [float(inplane.min()), float(inplane.max())],
        "median_inplane_spacing": np.median(inplane, axis=0).tolist(),
        "median_slice_thickness": float(np.median(thick)),
        "median_shape": np.median(shapes, axis=0).tolist(),
        "matrix_sizes": sorted({f"{h}x{w}" for _, h, w in shapes.tolist()}),
        "n_slices_range": [int(shapes[:, 0].min()), int(shapes[:, 0].max())],
        "fov_mm_range": [float(fov.min()), float(fov.max())],
        "intensity_range": [
            float(min(s["intensity_percentiles"]["p0.5"] for s in summaries)),
            float(max(s["intensity_percentiles"]["p99.5"] for s in summaries)),
        ],
        "lesion_load_ml": {"median": float(np.median(load)), "min": float(load.min()), "max": float(load.max())},
        "slices_with_lesion_fraction": float(lesion_slices.size / max(1, slice_volumes.size)),
        "lesion_volume_per_slice_groups": _lv_groups(lesion_slices),
        "slice_axes": _counts(["xyz"[s["slice_axis"]] for s in summaries]),
        "orientations": _counts([s["axis_codes"] for s in summaries]),
        "centres": _counts([str(s["centre"]) for s in summaries]),
        "diseases": _counts([str(s["disease"]) for s in summaries]),
    }
    if all("skull_stripped" in s for s in summaries):  # case summaries cached before the field have no say
        out["skull_stripped_cases"] = int(sum(bool(s["skull_stripped"]) for s in summaries))
    if pooled is not None:
        out["head_intensity_percentiles"] = dict(zip(_pct_keys(), np.percentile(pooled, PERCENTILES).tolist()))
        out["head_intensity_samples"] = int(pooled.size)
    return out


def _lv_groups(slice_volumes_ml: np.ndarray) -> Dict[str, int]:
    """Number of lesion-bearing slices in each of the paper's lesion-volume groups G1..G5."""
    groups = np.searchsorted(np.asarray(LV_GROUP_BOUNDS_ML), slice_volumes_ml, side="left")
    counts = np.bincount(groups, minlength=len(LV_GROUP_NAMES))
    return {name: int(n) for name, n in zip(LV_GROUP_NAMES, counts)}


def _counts(values: Sequence[str]) -> Dict[str, int]:
    """Sorted value → count."""
    unique, counts = np.unique(np.asarray(values, dtype=str), return_counts=True)
    return {str(u): int(c) for u, c in zip(unique, counts)}


def _tidy(obj: Any) -> Any:
    """Round floats to 6 significant digits so that the JSON is readable and stable."""
    if isinstance(obj, float):
        return float(f"{obj:.6g}")
    if isinstance(obj, dict):
        return {k: _tidy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_tidy(v) for v in obj]
    return obj


def fingerprint_hash(fingerprint: Dict[str, Any]) -> str:
    """SHA-256 of the fingerprint's content (file stamps excluded, so a copied dataset hashes the same)."""
    content = {k: v for k, v in fingerprint.items() if k != "sources"}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def load_or_compute_fingerprint(
    dataset: RawDataset, path: Path, n_jobs: int = 1, overwrite: bool = False, progress: Optional[bool] = None
) -> Tuple[Dict[str, Any], bool]:
    """Reuse ``path`` when it describes exactly the current files, else compute and write it; (fingerprint, reused)."""
    if path.is_file() and not overwrite:
        try:
            old = read_json(path)
        except DeepWMLError:
            old = None
        if (
            isinstance(old, dict)
            and old.get("fingerprint_version") == FINGERPRINT_VERSION
            and old.get("sources") == source_stamps(training_cases(dataset))
        ):
            return old, True
    fingerprint = compute_fingerprint(dataset, n_jobs, progress)
    write_json(path, fingerprint)
    return fingerprint, False


def format_table(fingerprint: Dict[str, Any]) -> str:
    """Per-centre table: n, thickness, in-plane spacing, matrix sizes, intensity range, lesion load."""
    header = ("centre", "n", "thickness mm", "in-plane mm", "matrix", "intensity p0.5..p99.5", "lesion ml median [min, max]")
    rows = [header]
    groups = dict(fingerprint["by_centre"])
    groups["all"] = fingerprint["dataset_summary"]
    for name, g in groups.items():
        load = g["lesion_load_ml"]
        rows.append(
            (
                name,
                str(g["n"]),
                _range(g["slice_thickness_range"]),
                _range(g["inplane_spacing_range"], 3),
                ", ".join(g["matrix_sizes"][:3]) + (" ..." if len(g["matrix_sizes"]) > 3 else ""),
                _range(g["intensity_range"], 4),
                f"{load['median']:.1f} [{load['min']:.1f}, {load['max']:.1f}]",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _range(lo_hi: Sequence[float], digits: int = 2) -> str:
    """'a..b', or 'a' when both ends are equal."""
    lo, hi = (f"{v:.{digits}g}" for v in lo_hi)
    return lo if lo == hi else f"{lo}..{hi}"
