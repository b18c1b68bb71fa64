"""Calibration of lesion probabilities against reference masks: reliability counts, expected calibration error (ECE)
and the reliability diagram.

Voxels are put in ``N_BINS`` equal-width probability bins ([0, 0.1), ..., [0.9, 1.0]). For each bin: how many
voxels, their mean probability (confidence) and the fraction that is reference lesion (accuracy of the lesion
class). ECE = sum over bins of (voxels in bin / all voxels) x |mean probability - lesion fraction|.

Two voxel sets are scored. *All voxels* (ignore region removed) is the textbook ECE, but a brain scan is >99 %
easy background at probability ~0, so it is always small. *Candidate voxels* are those the model gives at least
``CANDIDATE_PROBABILITY``: where it sees possible lesion. They are chosen by the probability alone, never by the
reference: keeping reference-lesion voxels too would fill the low bins with exactly the voxels that are lesion and
make any model look under-confident there. Missed lesion voxels below the cut count in the all-voxel figure.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from deepwml.evaluation.cases import PROBABILITY_SUFFIX, CasePair, find_case_maps
from deepwml.evaluation.masks import reference_on_grid
from deepwml.imageio import read_image
from deepwml.utils.atomic import atomic_path
from deepwml.utils.errors import DeepWMLError, ImageError

N_BINS = 10
CANDIDATE_PROBABILITY = 0.05

#: rows of a counts array: voxels, sum of probabilities, reference-lesion voxels
COUNT, PROB_SUM, POSITIVE = 0, 1, 2


def reliability_counts(probs: np.ndarray, reference: np.ndarray, n_bins: int = N_BINS,
                       weights: Optional[np.ndarray] = None) -> np.ndarray:
    """[3, n_bins] float64: voxels, probability sum and reference-lesion voxels per equal-width probability bin
    (each voxel counted ``weights`` times: a sample standing for more voxels)."""
    p = np.asarray(probs).ravel()
    r = np.asarray(reference, dtype=bool).ravel()
    bins = np.minimum((p * n_bins).astype(np.intp), n_bins - 1)
    if weights is None:  # a whole scan's voxels: counting is far cheaper than weighting by ones
        return np.stack([np.bincount(bins, minlength=n_bins).astype(np.float64),
                         np.bincount(bins, weights=p, minlength=n_bins),
                         np.bincount(bins[r], minlength=n_bins).astype(np.float64)])
    w = np.asarray(weights, dtype=np.float64).ravel()
    return np.stack([np.bincount(bins, weights=w, minlength=n_bins), np.bincount(bins, weights=p * w, minlength=n_bins),
                     np.bincount(bins[r], weights=w[r], minlength=n_bins)])


def expected_calibration_error(counts: np.ndarray) -> Optional[float]:
    """ECE of accumulated reliability counts; None when no voxel was counted."""
    n = counts[COUNT]
    total = float(n.sum())
    if total == 0:
        return None
    used = n > 0
    gap = np.abs(counts[PROB_SUM][used] - counts[POSITIVE][used]) / n[used]
    return float(np.sum(n[used] / total * gap))


def bins_table(counts: np.ndarray) -> List[Dict[str, Any]]:
    """Per-bin figures for summary.json (mean probability and lesion fraction are None in empty bins)."""
    n_bins = counts.shape[1]
    rows = []
    for k in range(n_bins):
        n = counts[COUNT, k]
        rows.append({
            "from": k / n_bins, "to": (k + 1) / n_bins, "voxels": int(n),
            "mean_probability": float(counts[PROB_SUM, k] / n) if n else None,
            "lesion_fraction": float(counts[POSITIVE, k] / n) if n else None,
        })  # fmt: skip
    return rows


def find_probability_maps(folder: Path, case_ids: Sequence[str]) -> Dict[str, Path]:
    """CASE_prob<ending> files in ``folder`` for the given cases (deepwml_predict --save-probabilities names)."""
    return find_case_maps(folder, case_ids, PROBABILITY_SUFFIX, "probability")


def case_counts(pair: CasePair, prob_path: Path, ignore_label: Optional[int]) -> np.ndarray:
    """[2, 3, N_BINS]: reliability counts of one case over all voxels and over the candidate voxels."""
    prob_image = read_image(prob_path)
    reference, ignore, _ = reference_on_grid(pair.case_id, pair.reference, ignore_label, prob_image.geometry, prob_path,
                                             "probability map")
    probs = prob_image.array
    lo, hi = float(probs.min()), float(probs.max())
    if lo < 0 or hi > 1:
        raise ImageError(f"case {pair.case_id!r}: probability map has values outside 0..1 ({lo:g}..{hi:g})", prob_path)
    keep = ~ignore
    region = keep & (probs >= CANDIDATE_PROBABILITY)
    return np.stack([reliability_counts(probs[keep], reference[keep]), reliability_counts(probs[region], reference[region])])


def evaluate_calibration(
    pairs: Sequence[CasePair], prob_dir: Path, ignore_label: Optional[int], required: bool
) -> Optional[Dict[str, Any]]:
    """Calibration over every case with a probability map in ``prob_dir``; None when there is none and none was asked for."""
    maps = find_probability_maps(Path(prob_dir), [p.case_id for p in pairs])
    if not maps:
        if required:
            raise DeepWMLError("no probability maps CASE_prob<ending> for any reference case (write them with "
                               "deepwml_predict --save-probabilities)", prob_dir)
        return None
    total = np.zeros((2, 3, N_BINS))
    for pair in pairs:
        if pair.case_id in maps:
            total += case_counts(pair, maps[pair.case_id], ignore_label)
    without = sorted(p.case_id for p in pairs if p.case_id not in maps)
    return {
        "probability_dir": str(Path(prob_dir).resolve()),
        "n_cases": len(maps),
        "cases_without_probabilities": without,
        "n_bins": N_BINS,
        "candidate_probability": CANDIDATE_PROBABILITY,
        "all_voxels": {"ece": expected_calibration_error(total[0]), "voxels": int(total[0, COUNT].sum()), "bins": bins_table(total[0])},
        "candidate_voxels": {"ece": expected_calibration_error(total[1]), "voxels": int(total[1, COUNT].sum()), "bins": bins_table(total[1])},
    }


def reliability_figure(calibration: Dict[str, Any], path: Path) -> Path:
    """Reliability diagrams (all voxels, candidate voxels) with the voxel count per bin below; written atomically."""
    fig = Figure(figsize=(9.0, 5.2), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    for col, (key, title) in enumerate((("all_voxels", "All voxels"), ("candidate_voxels", f"Voxels with probability ≥ {calibration['candidate_probability']:g}"))):
        part = calibration[key]
        bins = part["bins"]
        centres = np.array([(b["from"] + b["to"]) / 2 for b in bins])
        width = bins[0]["to"] - bins[0]["from"]
        fraction = np.array([np.nan if b["lesion_fraction"] is None else b["lesion_fraction"] for b in bins])
        mean_p = np.array([np.nan if b["mean_probability"] is None else b["mean_probability"] for b in bins])
        top, bottom = axes[0, col], axes[1, col]
        top.bar(centres, np.nan_to_num(fraction), width=width * 0.9, color="#4C72B0", alpha=0.8, label="lesion fraction")
        top.plot(mean_p, fraction, "o", color="#C44E52", markersize=4, label="(mean probability, lesion fraction) of the bin")
        top.plot([0, 1], [0, 1], "--", color="grey", linewidth=1, label="perfect calibration")
        ece = part["ece"]
        top.set_title(f"{title}: ECE {ece:.4f}" if ece is not None else f"{title}: no voxels")
        top.set_ylim(0, 1)
        top.set_ylabel("fraction of voxels that are lesion")
        top.grid(alpha=0.3)
        counts = np.array([b["voxels"] for b in bins], dtype=float)
        bottom.bar(centres, np.where(counts > 0, counts, np.nan), width=width * 0.9, color="#8C8C8C")
        if np.any(counts > 0):
            bottom.set_yscale("log")
        bottom.set_ylabel("voxels")
        bottom.set_xlabel("predicted lesion probability")
        bottom.set_xlim(0, 1)
    axes[0, 0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, format="png")
    return path
