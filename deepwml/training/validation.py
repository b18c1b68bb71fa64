"""Validation during training: the paper's per-slice Dice, sensitivity and precision on whole slices.

Only slices whose reference holds lesion are scored (the paper's per-slice metrics), ignored pixels excluded.
Those slices are loaded once and kept in memory (float16), predicted in batches under ``inference_mode``.
The model is selected by an exponential moving average of the median per-slice Dice, which is much less noisy
than a single epoch's value.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from deepwml.constants import IGNORE_LABEL

LoadCase = Callable[[str], Tuple[np.ndarray, np.ndarray]]


def slice_confusion(pred: np.ndarray, ref: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-slice true positives, false positives and false negatives of boolean predictions [N,H,W] against 0/1/255."""
    valid = ref != IGNORE_LABEL
    truth = ref == 1
    pred = pred & valid
    tp = (pred & truth).sum(axis=(1, 2))
    fp = (pred & ~truth).sum(axis=(1, 2))
    fn = (~pred & truth).sum(axis=(1, 2))
    return tp, fp, fn


def slice_metrics(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> Dict[str, np.ndarray]:
    """Dice, sensitivity and precision per slice; an empty prediction has precision 0 (the slice has lesion)."""
    tp, fp, fn = (np.asarray(a, dtype=np.float64) for a in (tp, fp, fn))
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 1.0)
        sensitivity = np.where(tp + fn > 0, tp / (tp + fn), 1.0)
        precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
    return {"dice": dice, "sensitivity": sensitivity, "precision": precision}


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
    images: List[np.ndarray]  # float16 [n_i, H, W]
    labels: List[np.ndarray]  # uint8 [n_i, H, W]
    slice_numbers: List[np.ndarray]

    @property
    def n_slices(self) -> int:
        """Number of scored slices."""
        return int(sum(len(s) for s in self.slice_numbers))


def collect_validation_slices(case_ids: Sequence[str], load_case: LoadCase) -> ValidationSlices:
    """Load the scored slices of every validation case (one case at a time)."""
    out = ValidationSlices([], [], [], [])
    for cid in case_ids:
        image, label = load_case(cid)
        keep = np.flatnonzero((np.asarray(label) == 1).any(axis=(1, 2)))
        if len(keep) == 0:
            continue
        out.case_ids.append(cid)
        out.images.append(np.asarray(image[keep], dtype=np.float16))
        out.labels.append(np.asarray(label[keep], dtype=np.uint8))
        out.slice_numbers.append(keep)
    return out


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """Pad [B,1,H,W] at the bottom/right with each slice's minimum so that H and W divide by ``multiple``."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x, (h, w)
    background = x.amin(dim=(1, 2, 3), keepdim=True)
    padded = F.pad(x - background, (0, pw, 0, ph)) + background
    return padded, (h, w)


@torch.inference_mode()
def predict_slices(model: torch.nn.Module, images: np.ndarray, batch_size: int, multiple: int,
                   device: torch.device, channels_last: bool, autocast) -> np.ndarray:
    """Foreground logits [N,H,W] (float32, CPU) of whole slices [N,H,W]."""
    out = []
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(np.asarray(images[start:start + batch_size], dtype=np.float32))[:, None].to(device)
        x, (h, w) = _pad_to_multiple(x, multiple)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast():
            logits = model(x)
        out.append(logits[:, 0, :h, :w].float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0,) + images.shape[1:], np.float32)


def validate(model: torch.nn.Module, slices: ValidationSlices, batch_size: int, multiple: int,
             device: torch.device, channels_last: bool, autocast, threshold: float = 0.5) -> Dict[str, object]:
    """Per-slice metrics on every scored slice; summary medians/means plus per-case details."""
    was_training = model.training
    model.eval()
    logit_threshold = float(np.log(threshold / (1 - threshold)))
    per_case, tps, fps, fns = [], [], [], []
    try:
        for cid, images, labels, numbers in zip(slices.case_ids, slices.images, slices.labels, slices.slice_numbers):
            logits = predict_slices(model, images, batch_size, multiple, device, channels_last, autocast)
            tp, fp, fn = slice_confusion(logits > logit_threshold, labels)
            m = slice_metrics(tp, fp, fn)
            per_case.append({"case_id": cid, "slices": numbers.tolist(), **{k: v.tolist() for k, v in m.items()}})
            tps.append(tp), fps.append(fp), fns.append(fn)
    finally:
        model.train(was_training)
    if not tps:
        return {"n_slices": 0, "median_dice": float("nan"), "mean_dice": float("nan"),
                "median_sensitivity": float("nan"), "median_precision": float("nan"), "cases": []}
    m = slice_metrics(np.concatenate(tps), np.concatenate(fps), np.concatenate(fns))
    return {
        "n_slices": int(len(m["dice"])),
        "median_dice": float(np.median(m["dice"])),
        "mean_dice": float(np.mean(m["dice"])),
        "median_sensitivity": float(np.median(m["sensitivity"])),
        "median_precision": float(np.median(m["precision"])),
        "cases": per_case,
    }
