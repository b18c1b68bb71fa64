"""Validation during training: the paper's per-slice Dice, sensitivity and precision on whole slices.

The slices are predicted by the predictor deepwml_predict uses (``SlicePredictor.forward``: the same padding,
precision and sigmoid) and thresholded by the same rule (probability >= the plan's threshold); they are scored by
the evaluator's function (``deepwml.evaluation.slice_metrics.slice_scores``) and summarised by the evaluator's
``describe``. So a validation figure means what the same figure of deepwml_evaluate means: only slices whose
reference holds lesion are scored, ignored pixels are removed from reference and prediction, and on a slice
with an empty prediction Dice and sensitivity are 0 and precision is undefined (NaN, left out of its median).
What differs is the grid: validation scores the preprocessed slices, deepwml_evaluate the masks in each scan's
own geometry.

Those slices are loaded once and kept in memory (float16). The model is selected by an exponential moving
average of the median per-slice Dice, which is much less noisy than a single epoch's value.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from deepwml.constants import IGNORE_LABEL
from deepwml.evaluation.slice_metrics import slice_counts, slice_scores
from deepwml.evaluation.stratify import describe
from deepwml.inference.predictor import SlicePredictor, probabilities_to_mask
from deepwml.models.base import InputSpec
from deepwml.preprocessing.network_input import stack_slices

LoadCase = Callable[[str], Tuple[np.ndarray, np.ndarray]]


def score_slices(probs: np.ndarray, labels: np.ndarray, threshold: float) -> Dict[str, np.ndarray]:
    """Per-slice scores of probabilities [N,H,W] against a 0/1/IGNORE_LABEL reference, as deepwml_evaluate scores."""
    ignore = labels == IGNORE_LABEL
    prediction = probabilities_to_mask(probs, threshold).astype(bool) & ~ignore
    return slice_scores(*slice_counts(labels == 1, prediction, 0))


@dataclass
class DiceEMA:
    """Bias-corrected exponential moving average (as Adam's moments): a weighted mean of all values so far with
    weights alpha^age, normalised. Unlike an average started at the first value, it does not keep dragging the
    first, untrained epochs along (with alpha 0.9, 31 % of epoch 1 would still be in it after 12 epochs)."""

    alpha: float
    raw: float = 0.0
    count: int = 0

    def update(self, value: float) -> float:
        """Add one epoch's value; returns the new average."""
        self.raw = self.alpha * self.raw + (1 - self.alpha) * value
        self.count += 1
        return self.value

    @property
    def value(self) -> Optional[float]:
        """The average, or None before the first value."""
        if self.count == 0:
            return None
        return self.raw / (1 - self.alpha**self.count) if self.alpha < 1 else self.raw


@dataclass
class ValidationSlices:
    """Lesion-holding slices of the validation cases, grouped per case (slices of one case share a shape)."""

    case_ids: List[str]
    images: List[np.ndarray]  # float16 network input [n_i, C·k, H, W]
    labels: List[np.ndarray]  # uint8 [n_i, H, W]
    slice_numbers: List[np.ndarray]

    @property
    def n_slices(self) -> int:
        """Number of scored slices."""
        return int(sum(len(s) for s in self.slice_numbers))


def collect_validation_slices(
    case_ids: Sequence[str], load_case: LoadCase, spec: InputSpec = InputSpec(), multiclass: bool = False
) -> ValidationSlices:
    """Load the scored slices of every validation case (one case at a time) as the network ``spec`` takes them: those
    holding lesion, or for a multi-class plan those holding any class but background."""
    out = ValidationSlices([], [], [], [])
    for cid in case_ids:
        image, label = load_case(cid)
        label = np.asarray(label)
        scored = ((label > 0) & (label != IGNORE_LABEL)) if multiclass else label == 1
        keep = np.flatnonzero(scored.any(axis=(1, 2)))
        if len(keep) == 0:
            continue
        out.case_ids.append(cid)
        out.images.append(stack_slices(image, keep, spec.context_slices, spec.padding).astype(np.float16))
        out.labels.append(np.asarray(label[keep], dtype=np.uint8))
        out.slice_numbers.append(keep)
    return out


def predict_probabilities(predictor: SlicePredictor, images: np.ndarray) -> np.ndarray:
    """Probabilities [N,H,W] of whole slices (network input [N,C·k,H,W], or [N,H,W] for one channel), in batches."""
    step = predictor.batch_size
    out = [predictor.forward(images[start:start + step]) for start in range(0, len(images), step)]
    return np.concatenate(out) if out else np.zeros((len(images), *images.shape[-2:]), np.float32)


def _plain(values: np.ndarray) -> List[Optional[float]]:
    """JSON-ready list (NaN as None)."""
    return [None if np.isnan(v) else float(v) for v in values]


def _nan_if_none(x: Optional[float]) -> float:
    """The evaluator's None (no defined value) as the NaN validation summaries use."""
    return float("nan") if x is None else float(x)


@contextmanager
def eval_mode(predictor: SlicePredictor) -> Iterator[None]:
    """The predictor's networks in eval mode for the block, then back in the mode each had (the trainer's)."""
    modes = [net.training for net in predictor.networks]
    for net in predictor.networks:
        net.eval()
    try:
        yield
    finally:
        for net, mode in zip(predictor.networks, modes):
            net.train(mode)


def validate(predictor: SlicePredictor, slices: ValidationSlices, threshold: float = 0.5) -> Dict[str, Any]:
    """Per-slice metrics on every scored slice; summary medians/means plus per-case details."""
    per_case: List[Dict[str, Any]] = []
    scores: Dict[str, List[np.ndarray]] = {"dice": [], "sensitivity": [], "precision": []}
    with eval_mode(predictor):
        for cid, images, labels, numbers in zip(slices.case_ids, slices.images, slices.labels, slices.slice_numbers):
            m = score_slices(predict_probabilities(predictor, images), labels, threshold)
            per_case.append({"case_id": cid, "slices": numbers.tolist(), **{k: _plain(v) for k, v in m.items()}})
            for k, v in m.items():
                scores[k].append(v)
    stats = {k: describe(np.concatenate(v) if v else np.zeros(0)) for k, v in scores.items()}
    return {
        "n_slices": int(stats["dice"]["n"] + stats["dice"]["n_undefined"]),
        "median_dice": _nan_if_none(stats["dice"]["median"]),
        "mean_dice": _nan_if_none(stats["dice"]["mean"]),
        "median_sensitivity": _nan_if_none(stats["sensitivity"]["median"]),
        "median_precision": _nan_if_none(stats["precision"]["median"]),
        "undefined_precision_slices": int(stats["precision"]["n_undefined"]),
        "cases": per_case,
    }


def class_scores(reference: np.ndarray, prediction: np.ndarray, num_classes: int) -> Dict[str, np.ndarray]:
    """Dice, sensitivity and precision of each foreground class 1..C-1 over a whole stack (NaN where undefined:
    Dice and sensitivity without reference, precision without prediction); IGNORE_LABEL pixels are left out."""
    valid = reference != IGNORE_LABEL
    classes = np.arange(1, num_classes)
    ref = np.bincount(reference[valid].ravel(), minlength=num_classes)[classes].astype(np.int64)
    pred = np.bincount(prediction[valid].ravel(), minlength=num_classes)[classes].astype(np.int64)
    same = valid & (reference == prediction)
    tp = np.bincount(reference[same].ravel(), minlength=num_classes)[classes].astype(np.int64)
    return slice_scores(ref, pred, tp)


def validate_classes(predictor: SlicePredictor, slices: ValidationSlices) -> Dict[str, Any]:
    """A multi-class plan's validation: per case the Dice of each foreground class over its scored slices (argmax of
    the predicted probabilities); ``median_dice`` is the median over cases of their mean foreground Dice."""
    num_classes = predictor.out_channels
    per_case: List[Dict[str, Any]] = []
    scores: Dict[str, List[np.ndarray]] = {"dice": [], "sensitivity": [], "precision": []}
    with eval_mode(predictor):
        for cid, images, labels, numbers in zip(slices.case_ids, slices.images, slices.labels, slices.slice_numbers):
            prediction = predict_probabilities(predictor, images).argmax(axis=1).astype(np.uint8)
            m = class_scores(labels, prediction, num_classes)
            per_case.append({"case_id": cid, "slices": numbers.tolist(), **{f"class_{k}": _plain(v) for k, v in m.items()}})
            for k, v in m.items():
                scores[k].append(v)
    table = {k: np.stack(v) if v else np.zeros((0, num_classes - 1)) for k, v in scores.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a class absent from every case: NaN, as intended
        case_mean = {k: np.nanmean(v, axis=1) if len(v) else np.zeros(0) for k, v in table.items()}
        class_mean = np.nanmean(table["dice"], axis=0) if len(table["dice"]) else np.full(num_classes - 1, np.nan)
    stats = {k: describe(v) for k, v in case_mean.items()}
    for case, dice in zip(per_case, case_mean["dice"]):
        case["mean_dice"] = None if np.isnan(dice) else float(dice)
    return {
        "n_slices": slices.n_slices,
        "metric": "per case: mean over the foreground classes of the Dice over the case's scored slices",
        "median_dice": _nan_if_none(stats["dice"]["median"]),
        "mean_dice": _nan_if_none(stats["dice"]["mean"]),
        "median_sensitivity": _nan_if_none(stats["sensitivity"]["median"]),
        "median_precision": _nan_if_none(stats["precision"]["median"]),
        "undefined_precision_slices": 0,
        "class_dice": {str(k): v for k, v in zip(range(1, num_classes), _plain(class_mean))},
        "cases": per_case,
    }
