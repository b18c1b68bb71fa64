"""Losses (``training.loss``): each entry maps logits [B,1,H,W] and a 0/1/IGNORE_LABEL target to a scalar.

The paper's loss is binary cross-entropy + soft Dice on one logit channel, with ignored pixels left out of both.
Dice is a *batch* Dice: intersections and sums are taken over every valid pixel of the (per-rank) batch before
the ratio. Many 2D FLAIR slices hold no lesion at all; a per-sample Dice would be undefined (or a constant
reward) on those and noisy on slices with a single tiny lesion, whereas the batch Dice stays well defined as
long as the batch holds some lesion, which foreground oversampling guarantees.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F

from deepwml.constants import IGNORE_LABEL

SMOOTH = 1e-5


def _valid(logits: torch.Tensor, target: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(float logits, target with ignored pixels set to 0, mask of valid pixels)."""
    target = target.float()
    valid = (target != IGNORE_LABEL).float()
    return logits.float(), target * valid, valid


def _bce(logits: torch.Tensor, t: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy over the valid pixels."""
    n_valid = valid.sum().clamp_min(1.0)
    return (F.binary_cross_entropy_with_logits(logits, t, reduction="none") * valid).sum() / n_valid


def _soft_dice(logits: torch.Tensor, t: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """1 - soft batch Dice over the valid pixels."""
    p = torch.sigmoid(logits) * valid
    intersection = (p * t).sum()
    return 1 - (2 * intersection + SMOOTH) / (p.sum() + t.sum() + SMOOTH)


def bce_dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE + soft batch Dice (the paper)."""
    logits, t, valid = _valid(logits, target)
    return _bce(logits, t, valid) + _soft_dice(logits, t, valid)


def bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy only."""
    logits, t, valid = _valid(logits, target)
    return _bce(logits, t, valid)


def dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft batch Dice only."""
    logits, t, valid = _valid(logits, target)
    return _soft_dice(logits, t, valid)
