"""Choosing a lesion model's postprocessing on labelled scans: every candidate (threshold, smallest lesion, lesion
peak, lesion contrast) scored as deepwml_evaluate scores a case (Dice over the volume, lesion F1 of 26-connected
lesions).

Each case is reduced to a small table of counts per candidate (voxels right and wrong, lesions found and made), so
the search holds one case's probability map at a time and any number of cases costs a few kB each. Per threshold
the mask is labelled once; the lesion filters of every candidate at that threshold are then sums over the lesions.

Ignored voxels (a label's ignore value) are left out of the counts as the evaluator leaves them out; the lesion
filters judge a lesion by its whole extent, as deepwml_predict does before anything is evaluated.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import partial
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from deepwml.calibration.lesion_rules import LesionRules
from deepwml.evaluation.lesions import label_lesions
from deepwml.imageio import Geometry
from deepwml.inference.lesion_contrast import background_floor, lesion_measures, ring_radius, widen_box
from deepwml.inference.lesion_report import lesion_box, lesion_peaks
from deepwml.inference.postprocessing import MaskSettings
from deepwml.utils.errors import DeepWMLError

#: what each case's table counts, per candidate
COUNTS = ("tp", "fp", "fn", "n_reference", "n_predicted", "n_reference_detected", "n_predicted_touching")
OBJECTIVES = ("both", "dice", "f1")
#: a candidate replaces the model's settings only when it raises the objective by at least this much: less is what
#: a different draw of a few validation cases moves it by
MIN_GAIN = 0.005
#: how a case's counts are made (2: with the lesion contrast filter; 3: and its spread bound); part of the key of
#: counts kept in the user cache, so that counts an older way of counting kept are made again, not reused
COUNTS_VERSION = 3


@dataclass(frozen=True)
class SearchGrid:
    """The values tried of each setting; a lesion peak is tried only above the threshold (below, it drops nothing)."""

    thresholds: Tuple[float, ...] = tuple(round(0.2 + 0.05 * i, 2) for i in range(13))
    min_lesion_ml: Tuple[float, ...] = (0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1)
    min_lesion_peak: Tuple[float, ...] = (0.0, 0.6, 0.7, 0.8, 0.9)
    #: lesion / the tissue around it (deepwml.inference.lesion_contrast); the search needs the scans for these
    min_lesion_contrast: Tuple[float, ...] = (0.0, 1.05, 1.1, 1.15, 1.2)
    #: a faint lesion's ring spreads above which the contrast filter keeps it (lesion_contrast.lesion_spreads); tried
    #: with a contrast filter only (alone it drops nothing)
    min_lesion_spread: Tuple[float, ...] = (0.0, 2.0, 2.25)

    def candidates(self, default: MaskSettings) -> List[MaskSettings]:
        """Every combination, the model's ``default`` first (it wins ties), peaks above their threshold only, spread
        bounds with a contrast filter only."""
        combos = [MaskSettings(t, m, p, default.tta, c, s) for t, m, p, c, s in itertools.product(
            sorted(set(self.thresholds) | {default.threshold}), sorted(set(self.min_lesion_ml) | {default.min_lesion_ml}),
            sorted(set(self.min_lesion_peak) | {default.min_lesion_peak}),
            sorted(set(self.min_lesion_contrast) | {default.min_lesion_contrast}),
            sorted(set(self.min_lesion_spread) | {default.min_lesion_spread})) if (p == 0 or p > t) and (s == 0 or c > 0)]
        return [default] + [c for c in combos if c != default]


def case_counts(probs: np.ndarray, reference: np.ndarray, ignore: Optional[np.ndarray], voxel_ml: float,
                candidates: Sequence[MaskSettings], image: Optional[np.ndarray] = None,
                geometry: Optional[Geometry] = None, keep_lesions: Optional[LesionRules] = None) -> np.ndarray:
    """One case's COUNTS [len(candidates), 7] (int64) for a probability map and its reference on one grid; candidates
    with a lesion contrast filter need the scan (``image``) and ``geometry`` of that grid. ``keep_lesions``: the
    anatomy map's rules, which drop whole lesions whatever the candidate (deepwml.calibration.fit_input.anatomy_rules)."""
    ignore = np.zeros(reference.shape, bool) if ignore is None else np.asarray(ignore, bool)
    reference = np.asarray(reference, bool) & ~ignore
    probs = np.asarray(probs, np.float32)
    ref_labels, n_ref = label_lesions(reference)
    n_ref_voxels = int(np.count_nonzero(reference))
    out = np.zeros((len(candidates), len(COUNTS)), np.int64)
    out[:, COUNTS.index("n_reference")] = n_ref
    out[:, COUNTS.index("fn")] = n_ref_voxels
    lowest = min(c.threshold for c in candidates)
    box = lesion_box(probs >= lowest)
    if box is None:  # nothing reaches any threshold: every candidate predicts nothing
        return out
    contrast = None
    if any(c.min_lesion_contrast > 0 for c in candidates):
        if image is None or geometry is None:
            raise DeepWMLError("a lesion contrast filter is scored against the scan: give case_counts the image and its geometry")
        radius = ring_radius(geometry.numpy_spacing, geometry.slice_axis_numpy)
        # the rings of the lesions reach past their box
        box = widen_box(box, probs.shape, radius)
        contrast = (np.asarray(image, np.float32)[box], radius, background_floor(np.asarray(image)))
    # the rules judge each lesion the box holds against the whole grid (the brain, the cortex's median)
    kept_in_box = None if keep_lesions is None else partial(keep_lesions.kept, box=box)
    # every component of every threshold lies inside the box of the lowest one
    probs, reference, ignore, ref_labels = probs[box], reference[box], ignore[box], ref_labels[box]
    for threshold in sorted({c.threshold for c in candidates}):
        rows = [i for i, c in enumerate(candidates) if c.threshold == threshold]
        out[rows] = _threshold_counts(probs, reference, ignore, ref_labels, n_ref_voxels, n_ref, voxel_ml,
                                      [candidates[i] for i in rows], contrast, kept_in_box)
    return out


def _threshold_counts(probs: np.ndarray, reference: np.ndarray, ignore: np.ndarray, ref_labels: np.ndarray,
                      n_ref_voxels: int, n_ref: int, voxel_ml: float, candidates: Sequence[MaskSettings],
                      contrast: Optional[tuple] = None,
                      keep_lesions: Optional[Callable[[np.ndarray, int], np.ndarray]] = None) -> np.ndarray:
    """COUNTS of candidates that share one threshold; ``contrast``: (the scan's crop, ring radius, background floor)
    when a candidate filters by lesion contrast; ``keep_lesions``: (labels, count) -> whether rules that drop whole
    lesions of every candidate keep each lesion."""
    # the same comparison deepwml_predict makes (probabilities_to_mask)
    labels, n = label_lesions(probs >= candidates[0].threshold)
    out = np.zeros((len(candidates), len(COUNTS)), np.int64)
    out[:, COUNTS.index("n_reference")] = n_ref
    out[:, COUNTS.index("fn")] = n_ref_voxels
    if n == 0:
        return out
    inside = labels > 0
    lesion = labels[inside]
    size = np.bincount(lesion, minlength=n + 1)[1:]
    scored = np.bincount(labels[inside & ~ignore], minlength=n + 1)[1:] if ignore.any() else size
    overlap = np.bincount(labels[reference], minlength=n + 1)[1:]
    peak = lesion_peaks(probs[inside], lesion, n)
    # keep[c, k]: candidate c keeps lesion k+1 (the filters of deepwml.inference.lesion_report.filter_lesions)
    ratio, spread = np.full(n, np.nan), np.full(n, np.nan)
    if contrast is not None:
        # both figures from the same rings, found once
        ratio, measured = lesion_measures(contrast[0], labels, n, contrast[1], contrast[2],
                                          spreads=any(c.min_lesion_spread > 0 for c in candidates))
        spread = spread if measured is None else measured

    def faint(c: MaskSettings) -> np.ndarray:
        """The lesions candidate ``c``'s contrast filter drops (as filter_lesions judges them)."""
        under = ratio < c.min_lesion_contrast * (1 - 1e-9)
        return under & ~(spread >= c.min_lesion_spread * (1 - 1e-9)) if c.min_lesion_spread > 0 else under

    keep = np.stack([(size * voxel_ml >= c.min_lesion_ml * (1 - 1e-9)) & (peak >= np.float32(c.min_lesion_peak))
                     & ~faint(c) for c in candidates])
    if keep_lesions is not None:
        keep &= keep_lesions(labels, n)
    tp = keep @ overlap
    out[:, COUNTS.index("tp")] = tp
    out[:, COUNTS.index("fp")] = keep @ scored - tp
    out[:, COUNTS.index("fn")] = n_ref_voxels - tp
    out[:, COUNTS.index("n_predicted")] = (keep & (scored > 0)).sum(axis=1)
    out[:, COUNTS.index("n_predicted_touching")] = (keep & (overlap > 0)).sum(axis=1)
    both = (labels > 0) & reference
    if both.any():
        pairs = np.unique(np.stack([ref_labels[both], labels[both]]), axis=1)  # (reference lesion, predicted lesion)
        refs, ref_index = np.unique(pairs[0], return_inverse=True)
        found = np.zeros((len(candidates), refs.size), bool)
        for c in range(len(candidates)):
            found[c, ref_index[keep[c, pairs[1] - 1]]] = True
        out[:, COUNTS.index("n_reference_detected")] = found.sum(axis=1)
    return out


def case_scores(counts: np.ndarray) -> Dict[str, np.ndarray]:
    """Dice, lesion recall, precision and F1 per candidate from COUNTS [..., 7], with deepwml_evaluate's values for
    empty masks (both empty: 1 everywhere)."""
    c = {name: counts[..., i].astype(np.float64) for i, name in enumerate(COUNTS)}
    denominator = 2 * c["tp"] + c["fp"] + c["fn"]
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(denominator > 0, 2 * c["tp"] / denominator, 1.0)
        recall = np.where(c["n_reference"] > 0, c["n_reference_detected"] / c["n_reference"], 1.0)
        precision = np.where(c["n_predicted"] > 0, c["n_predicted_touching"] / c["n_predicted"], 1.0)
        f1 = np.where(recall + precision > 0, 2 * recall * precision / (recall + precision), 0.0)
    return {"dice": dice, "lesion_recall": recall, "lesion_precision": precision, "lesion_f1": f1}


def objective_of(means: Dict[str, np.ndarray], objective: str) -> np.ndarray:
    """The figure a search maximises: mean Dice ('dice'), mean lesion F1 ('f1') or their average ('both')."""
    if objective not in OBJECTIVES:
        raise DeepWMLError(f"--objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    if objective == "dice":
        return means["dice"]
    if objective == "f1":
        return means["lesion_f1"]
    return (means["dice"] + means["lesion_f1"]) / 2


def trades_away(means: Dict[str, np.ndarray], min_gain: float = MIN_GAIN) -> np.ndarray:
    """Per candidate: its case-mean Dice or lesion F1 falls more than ``min_gain`` below the first candidate's (the
    model's own). The average of the two would buy one with the other: one blob touching every reference lesion
    scores a lesion F1 near 1 at a Dice near 0 (a barely trained model's search chose Dice 0.07, F1 0.97 over 0.29,
    0.12)."""
    return (means["dice"] < means["dice"][0] - min_gain) | (means["lesion_f1"] < means["lesion_f1"][0] - min_gain)


@dataclass
class SearchResult:
    """The chosen settings, the model's own, and the case means of both (dice, lesion_recall, ..., objective)."""

    chosen: MaskSettings
    default: MaskSettings
    before: Dict[str, float]
    after: Dict[str, float]
    #: one row per candidate: its settings, case means and whether it trades one figure away; those that may be
    #: chosen first, best objective first
    table: List[Dict[str, float]]
    #: the candidate of the best objective when 'both' barred it (it lowers one figure), with its case means
    passed_over: Optional[Tuple[MaskSettings, Dict[str, float]]] = None

    @property
    def changed(self) -> bool:
        """True when the search found settings better than the model's own."""
        return self.chosen != self.default


def choose(counts: np.ndarray, candidates: Sequence[MaskSettings], objective: str = "both",
           min_gain: float = MIN_GAIN) -> SearchResult:
    """The candidate with the best case-mean ``objective`` over ``counts`` [cases, candidates, 7]; the first candidate
    (the model's own settings) is kept unless the best beats it by ``min_gain``. Under 'both' a candidate whose mean
    Dice or mean lesion F1 falls more than ``min_gain`` below the first's is never chosen (:func:`trades_away`)."""
    if counts.ndim != 3 or counts.shape[0] == 0:
        raise DeepWMLError("no labelled case to choose the postprocessing on")
    means = {k: v.mean(axis=0) for k, v in case_scores(counts).items()}
    means["objective"] = objective_of(means, objective)
    score = means["objective"]
    barred = trades_away(means, min_gain) if objective == "both" else np.zeros(len(candidates), bool)
    # ties go to the simplest: no filter before a filter, the threshold nearest the model's own
    order = sorted(range(len(candidates)), key=lambda i: (bool(barred[i]), -round(float(score[i]), 9),
                                                         candidates[i].min_lesion_contrast > 0,
                                                         candidates[i].min_lesion_spread > 0,
                                                         candidates[i].min_lesion_peak > 0, candidates[i].min_lesion_ml > 0,
                                                         abs(candidates[i].threshold - candidates[0].threshold), i))
    best = order[0] if not barred[order[0]] and score[order[0]] >= score[0] + min_gain else 0
    row = lambda i: {k: round(float(v[i]), 4) for k, v in means.items()}  # noqa: E731
    table = [dict(candidates[i].as_record(), **row(i), trades_away=bool(barred[i])) for i in order]
    top = max(range(len(candidates)), key=lambda i: (round(float(score[i]), 9), -i))
    passed_over = (candidates[top], row(top)) if barred[top] and score[top] >= score[best] + min_gain else None
    return SearchResult(candidates[best], candidates[0], row(0), row(best), table, passed_over)
