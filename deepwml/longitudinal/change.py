"""Which lesions of a follow-up are new, enlarging, stable or shrinking against the baseline, and which baseline
lesions have resolved.

Two thick-slice stacks of one head never sample it at the same places, so lesions are matched in millimetres, not
voxel by voxel: a follow-up lesion and a baseline lesion are the same when, once the baseline is moved onto the
follow-up, a voxel of one lies within ``tolerance_mm`` in-plane of a voxel of the other on slabs that overlap
through-plane (centres less than half the two thicknesses apart). Lesions linked that way, directly or through
others (two baseline lesions merged, one split in two), form a group, and a group's volume change decides the
status of its follow-up lesions. Volumes are counted on each scan's own grid, never resampled.

Conventions follow MAGNIMS for MS follow-up on T2/FLAIR (Filippi et al., Lancet Neurol 2019; Rovira et al., Nat
Rev Neurol 2015): a new lesion counts from 3 mm in its long axis (smaller ones are listed, not counted); a lesion
is enlarging when it grew by at least half its volume and by more than the measurement noise of a thick slice
(``enlarge_min_ml``). See docs/prediction.md, "Comparing two visits".
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Dict, Optional, Tuple

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from deepwml.anatomy.location import DIS_MIN_LONG_AXIS_MM, SPLIT_COLUMNS, long_axes_mm
from deepwml.imageio import Geometry
from deepwml.inference.lesion_report import lesion_id_labels
from deepwml.longitudinal.registration import RigidTransform
from deepwml.utils.errors import DeepWMLError

if TYPE_CHECKING:
    import pandas as pd

NEW, ENLARGING, STABLE, SHRINKING, RESOLVED, PERSISTING = "new", "enlarging", "stable", "shrinking", "resolved", "persisting"
#: a follow-up lesion mostly outside the slabs the baseline covered: nothing can be said of its past
UNSEEN = "outside_baseline"
#: the change map's name for a new lesion that does not count (under the long axis or the signal rule)
NEW_NOT_COUNTED = "new, not counted"
#: values of the change map on the follow-up's grid (0: no lesion)
CHANGE_CODES: Dict[str, int] = {STABLE: 1, ENLARGING: 2, NEW: 3, SHRINKING: 4, UNSEEN: 5, NEW_NOT_COUNTED: 6}


@dataclass(frozen=True)
class ChangeRules:
    """When two lesions are one and when a lesion is new or has changed."""

    #: in-plane distance (mm) within which a follow-up and a baseline voxel touch; at least the coarser pixel
    tolerance_mm: float = 1.5
    #: a group whose follow-up volume is at least (1 + this) x its baseline volume is enlarging (the inverse: shrinking)
    enlarge_fraction: float = 0.5
    #: ... and whose volume changed by at least this many ml
    enlarge_min_ml: float = 0.03
    #: a new lesion counts (e.g. for disease activity) from this long axis in mm
    new_min_long_axis_mm: float = DIS_MIN_LONG_AXIS_MM
    #: with the images: a new lesion, and the part an enlarging lesion grew by, must be at least this much brighter
    #: than the baseline was at its place (AlignedImages.difference): about a third of the faintest real lesion's
    #: excess over the brain median (0.28), since a thick slab averages a lesion's rim with its surroundings
    min_signal_change: float = 0.1

    def check(self) -> None:
        """Raise a DeepWMLError naming the option that makes no sense."""
        if not self.tolerance_mm >= 0:
            raise DeepWMLError(f"--tolerance-mm must be >= 0, not {self.tolerance_mm}")
        if not self.enlarge_fraction > 0:
            raise DeepWMLError(f"--enlarge-fraction must be > 0, not {self.enlarge_fraction}")
        if not self.enlarge_min_ml >= 0:
            raise DeepWMLError(f"--enlarge-min-ml must be >= 0, not {self.enlarge_min_ml}")
        if not self.new_min_long_axis_mm >= 0:
            raise DeepWMLError(f"--new-min-long-axis-mm must be >= 0, not {self.new_min_long_axis_mm}")
        if not np.isfinite(self.min_signal_change):
            raise DeepWMLError(f"--min-signal-change must be a number, not {self.min_signal_change}")


@dataclass
class LesionSet:
    """The lesions of one scan: labels on its grid (ids 1..n, largest first, as CASE_lesions.csv numbers them)."""

    labels: np.ndarray
    count: int
    geometry: Geometry
    volume_ml: np.ndarray
    long_axis_mm: np.ndarray
    centroid_mm: np.ndarray  # (n, 3) world

    @classmethod
    def from_mask(cls, mask: np.ndarray, geometry: Geometry) -> "LesionSet":
        """Label the 26-connected lesions of a binary (z, y, x) mask and measure them."""
        # ids in the order of deepwml_predict's lesion table
        labels, count = lesion_id_labels(np.asarray(mask) > 0, geometry.slice_axis_numpy)
        if count == 0:
            return cls(labels, 0, geometry, np.zeros(0), np.zeros(0), np.zeros((0, 3)))
        coords = np.nonzero(labels)
        ids = labels[coords]
        n = np.bincount(ids, minlength=count + 1)[1:].astype(float)
        centroid_zyx = np.stack([np.bincount(ids, weights=c, minlength=count + 1)[1:] for c in coords], axis=1) / n[:, None]
        return cls(labels, count, geometry, n * geometry.voxel_volume_ml, long_axes_mm(labels, count, geometry),
                   geometry.index_to_world(centroid_zyx[:, ::-1]))

    def voxel_points(self) -> Tuple[np.ndarray, np.ndarray]:
        """World coordinates (N, 3) of every lesion voxel's centre and its lesion id."""
        coords = np.nonzero(self.labels)
        return self.geometry.index_to_world(np.stack(coords[::-1], axis=1).astype(float)), self.labels[coords]


@dataclass
class LesionChange:
    """The comparison: one row per follow-up lesion and per baseline lesion, the change map, and the counts."""

    followup: "pd.DataFrame"
    baseline: "pd.DataFrame"
    change_map: np.ndarray
    summary: Dict[str, object] = field(default_factory=dict)


def _matching_frame(geometry: Geometry, tolerance: float, other_thickness: float) -> np.ndarray:
    """World -> follow-up frame matrix: in-plane mm, and through-plane scaled so that two voxels on slabs that
    overlap (centres less than half the two thicknesses apart) lie within ``tolerance`` of each other."""
    axes = geometry.direction_matrix  # columns: the index axes in world space
    scale = np.ones(3)
    scale[geometry.slice_axis] = tolerance / (0.5 * (geometry.slice_thickness + other_thickness))
    return (axes * scale).T


def match_pairs(baseline: LesionSet, followup: LesionSet, transform: RigidTransform, rules: ChangeRules) -> np.ndarray:
    """(k, 2) pairs of (baseline id, follow-up id) that touch, each once."""
    if baseline.count == 0 or followup.count == 0:
        return np.zeros((0, 2), np.int64)
    b_world, b_ids = baseline.voxel_points()
    f_world, f_ids = followup.voxel_points()
    b_in_f = transform.baseline_to_followup(b_world)
    # never below the coarser pixel: two touching lesions must find each other's voxel centres
    tolerance = max(rules.tolerance_mm, *followup.geometry.inplane_spacing, *baseline.geometry.inplane_spacing) + 1e-6
    frame = _matching_frame(followup.geometry, tolerance, baseline.geometry.slice_thickness)
    b_pts, f_pts = b_in_f @ frame.T, f_world @ frame.T
    pairs = []
    # both ways: every follow-up voxel's nearest baseline voxel and every baseline voxel's nearest follow-up voxel,
    # so that a lesion touching two others on different voxels links to both
    for query, tree_points, query_ids, tree_ids, flip in ((f_pts, b_pts, f_ids, b_ids, True), (b_pts, f_pts, b_ids, f_ids, False)):
        distance, nearest = cKDTree(tree_points).query(query, distance_upper_bound=tolerance)
        hit = np.isfinite(distance)
        a, b = query_ids[hit], tree_ids[nearest[hit]]
        pairs.append(np.stack([b, a] if flip else [a, b], axis=1))
    return np.unique(np.concatenate(pairs).astype(np.int64), axis=0)


@dataclass
class AlignedImages:
    """The follow-up image and, on its grid, the baseline image and lesion mask moved onto it and the voxels the
    baseline's slabs cover."""

    followup: np.ndarray
    baseline: np.ndarray
    covered: np.ndarray
    baseline_mask: np.ndarray

    def difference(self) -> np.ndarray:
        """Follow-up minus baseline, each divided by its median over the same head voxels (so that scanner scale and
        gain cancel): about 0.2-0.5 where a lesion appeared on normal white matter (real lesions are 1.28-1.59 x the
        brain median, ../shared/REAL_FLAIR_FIGURES.md), about 0 where the follow-up shows what the baseline showed."""
        head = self.covered & (self.followup > 0.1 * np.percentile(self.followup, 99)) & (self.baseline > 0)
        if not head.any():
            return np.full(self.followup.shape, np.nan, np.float32)
        f_scale, b_scale = float(np.median(self.followup[head])), float(np.median(self.baseline[head]))
        if not (f_scale > 0 and b_scale > 0):  # no positive tissue signal to scale by: no evidence either way
            return np.full(self.followup.shape, np.nan, np.float32)
        return (self.followup / np.float32(f_scale) - self.baseline / np.float32(b_scale)).astype(np.float32)


def _signal_evidence(images: AlignedImages, labels: np.ndarray, count: int, voxel_group: np.ndarray,
                     n_groups: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per follow-up lesion its mean signal change and the share of it inside the baseline's slabs, and per group
    the mean signal change of its follow-up voxels outside the aligned baseline lesions (where it grew)."""
    coords = np.nonzero(labels)
    ids = labels[coords]
    change = images.difference()[coords].astype(np.float64)
    voxels = np.bincount(ids, minlength=count + 1)[1:]
    signal = np.bincount(ids, weights=change, minlength=count + 1)[1:] / voxels
    covered = np.bincount(ids, weights=images.covered[coords], minlength=count + 1)[1:] / voxels
    outside = ~images.baseline_mask[coords]
    group_of_voxel = voxel_group[ids - 1][outside]
    with np.errstate(invalid="ignore", divide="ignore"):
        growth = (np.bincount(group_of_voxel, weights=change[outside], minlength=n_groups)
                  / np.bincount(group_of_voxel, minlength=n_groups))
    return signal, covered, growth


def compare_lesions(baseline_mask: np.ndarray, baseline_geometry: Geometry, followup_mask: np.ndarray,
                    followup_geometry: Geometry, transform: RigidTransform, rules: ChangeRules = ChangeRules(),
                    images: Optional[AlignedImages] = None) -> LesionChange:
    """Compare the lesions of two scans; ``transform`` maps follow-up world points to baseline world points.
    With ``images`` a new lesion must also be brighter than the baseline was at its place, and a follow-up lesion
    outside the baseline's slabs is UNSEEN."""
    import pandas as pd

    rules.check()
    base, follow = LesionSet.from_mask(baseline_mask, baseline_geometry), LesionSet.from_mask(followup_mask, followup_geometry)
    pairs = match_pairs(base, follow, transform, rules)
    nb, nf = base.count, follow.count
    # nodes 0..nb-1 the baseline lesions, nb.. the follow-up lesions
    graph = sparse.coo_matrix((np.ones(len(pairs)), (pairs[:, 0] - 1, nb + pairs[:, 1] - 1)), shape=(nb + nf, nb + nf))
    n_groups, group = connected_components(graph, directed=False)
    base_group, follow_group = group[:nb], group[nb:]
    group_base = np.bincount(base_group, weights=base.volume_ml, minlength=n_groups)
    group_follow = np.bincount(follow_group, weights=follow.volume_ml, minlength=n_groups)
    linked_base = np.bincount(base_group, minlength=n_groups) > 0
    linked_follow = np.bincount(follow_group, minlength=n_groups) > 0
    grown = group_follow - group_base
    growing = (group_follow >= (1 + rules.enlarge_fraction) * group_base) & (grown >= rules.enlarge_min_ml)
    signal, covered = np.full(nf, np.nan), np.ones(nf)
    if images is not None and nf:
        signal, covered, growth = _signal_evidence(images, follow.labels, nf, follow_group, n_groups)
        # where it grew, the follow-up must be brighter than the baseline was: not a thick slice cut elsewhere
        growing &= growth >= rules.min_signal_change
    shrinking = (group_base >= (1 + rules.enlarge_fraction) * group_follow) & (-grown >= rules.enlarge_min_ml)
    group_status = np.where(growing, ENLARGING, np.where(shrinking, SHRINKING, STABLE)).astype(object)
    group_status[~linked_base] = NEW

    follow_status = group_status[follow_group] if nf else np.zeros(0, object)
    follow_status[(follow_status == NEW) & (covered < 0.5)] = UNSEEN
    brighter = ~(signal < rules.min_signal_change)  # NaN (no images): the mask alone decides
    counted = (follow_status != NEW) | ((follow.long_axis_mm >= rules.new_min_long_axis_mm) & brighter)
    base_status = np.where(linked_follow[base_group], PERSISTING, RESOLVED) if nb else np.zeros(0, object)
    partners_of_follow = _partners(pairs[:, 1], pairs[:, 0], nf)
    partners_of_base = _partners(pairs[:, 0], pairs[:, 1], nb)

    followup_table = pd.DataFrame({
        "lesion_id": np.arange(1, nf + 1), "status": follow_status, "counted": counted,
        "volume_ml": follow.volume_ml.round(5), "long_axis_mm": follow.long_axis_mm.round(2),
        "signal_change": signal.round(3), "baseline_lesion_ids": partners_of_follow,
        "group_baseline_volume_ml": group_base[follow_group].round(5) if nf else np.zeros(0),
        "group_followup_volume_ml": group_follow[follow_group].round(5) if nf else np.zeros(0),
        **_centroid_columns(follow.centroid_mm),
    })
    baseline_table = pd.DataFrame({
        "lesion_id": np.arange(1, nb + 1), "status": base_status, "volume_ml": base.volume_ml.round(5),
        "long_axis_mm": base.long_axis_mm.round(2), "followup_lesion_ids": partners_of_base,
        **_centroid_columns(base.centroid_mm),
    })
    codes = np.zeros(nf + 1, np.uint8)
    codes[1:] = [CHANGE_CODES[NEW_NOT_COUNTED if s == NEW and not c else s] for s, c in zip(follow_status, counted)]
    change_map = codes[follow.labels]
    summary = _summary(follow_status, counted, base_status, base.volume_ml, follow.volume_ml, rules)
    return LesionChange(followup_table, baseline_table, change_map, summary)


def _partners(ids: np.ndarray, others: np.ndarray, n: int) -> list:
    """For lesions 1..n, the space-separated ids of the lesions they touch ('' for none)."""
    out = [[] for _ in range(n)]
    for a, b in zip(ids.tolist(), others.tolist()):
        out[a - 1].append(b)
    return [" ".join(str(v) for v in sorted(p)) for p in out]


def _centroid_columns(centroid: np.ndarray) -> Dict[str, np.ndarray]:
    return {f"centroid_{axis}_mm": centroid[:, k].round(2) for k, axis in enumerate("xyz")}


def findings_text(summary: Dict[str, object]) -> str:
    """The comparison as a report's sentence, e.g. 'Compared with the baseline: 2 new lesions (3 mm or more) and 1
    enlarging lesion; lesion volume 3.41 ml -> 3.62 ml (+6.2 %).'"""
    def count(n: int, what: str) -> str:
        return f"{n} {what}" + ("" if n == 1 else "s")

    new, enlarging = int(summary["new_lesions"]), int(summary["enlarging_lesions"])
    rules = summary["rules"]
    if new or enlarging:
        parts = []
        if new:
            where = summary.get("new_lesion_locations") or {}
            places = "".join(f", {n} {place}" for place, n in sorted(where.items(), key=lambda kv: (-kv[1], kv[0])))
            parts.append(f"{count(new, 'new lesion')} ({rules['new_min_long_axis_mm']:g} mm or more{places})")
        if enlarging:
            parts.append(count(enlarging, "enlarging lesion"))
        activity = " and ".join(parts)
    else:
        activity = "no new or enlarging lesion"
    change = summary["volume_change_percent"]
    volume = (f"lesion volume {summary['baseline_volume_ml']:.2f} ml -> {summary['followup_volume_ml']:.2f} ml"
              + (f" ({change:+.1f} %)" if change is not None else ""))
    # the periventricular / deep split at both visits, when deepwml_compare segmented both with the anatomy map
    split = ""
    keys = [f"{visit}_{column}" for column in SPLIT_COLUMNS for visit in ("baseline", "followup")]
    if all(k in summary for k in keys):
        split = (f" (within 10 mm of the ventricles {summary[keys[0]]:.2f} -> {summary[keys[1]]:.2f} ml, beyond "
                 f"{summary[keys[2]]:.2f} -> {summary[keys[3]]:.2f} ml)")
    resolved = int(summary["resolved_baseline_lesions"])
    tail = f"; {count(resolved, 'baseline lesion')} no longer seen" if resolved else ""
    return f"Compared with the baseline: {activity}; {volume}{split}{tail}."


def _summary(follow_status: np.ndarray, counted: np.ndarray, base_status: np.ndarray, base_ml: np.ndarray,
             follow_ml: np.ndarray, rules: ChangeRules) -> Dict[str, object]:
    """The figures a follow-up report states."""
    base_total, follow_total = float(base_ml.sum()), float(follow_ml.sum())
    new = follow_status == NEW
    return {
        "new_lesions": int((new & counted).sum()),
        "new_lesions_not_counted": int((new & ~counted).sum()),
        "outside_baseline_lesions": int((follow_status == UNSEEN).sum()),
        "enlarging_lesions": int((follow_status == ENLARGING).sum()),
        "new_or_enlarging_lesions": int((new & counted).sum() + (follow_status == ENLARGING).sum()),
        "stable_lesions": int((follow_status == STABLE).sum()),
        "shrinking_lesions": int((follow_status == SHRINKING).sum()),
        "resolved_baseline_lesions": int((base_status == RESOLVED).sum()),
        "baseline_lesion_count": int(len(base_ml)),
        "followup_lesion_count": int(len(follow_ml)),
        "baseline_volume_ml": round(base_total, 4),
        "followup_volume_ml": round(follow_total, 4),
        "volume_change_ml": round(follow_total - base_total, 4),
        "volume_change_percent": round(100.0 * (follow_total - base_total) / base_total, 2) if base_total > 0 else None,
        "new_lesion_volume_ml": round(float(follow_ml[new].sum()), 4),
        "rules": asdict(rules),
    }
