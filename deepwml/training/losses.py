"""The paper's loss: binary cross-entropy + soft Dice on one logit channel, with ignored pixels left out of both.

Dice is a *batch* Dice: intersections and sums are taken over every valid pixel of the (per-rank) batch before
the ratio. Many 2D FLAIR slices hold no lesion at all; a per-sample Dice would be undefined (or a constant
reward) on those and noisy on slices with a single tiny lesion, whereas the batch Dice stays well defined as
long as the batch holds some lesion, which foreground oversampling guarantees.
"""
from __future__ import annotations

from typing import List, Sequence, Union

import torch
import torch.nn.functional as F

from deepwml.constants import IGNORE_LABEL

SMOOTH = 1e-5


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, kind: str = "bce_dice") -> torch.Tensor:
    """BCE and/or soft batch Dice between logits [B,1,H,W] and a 0/1/IGNORE_LABEL target of the same shape."""
    logits = logits.float()
    target = target.float()
    valid = (target != IGNORE_LABEL).float()
    t = target * valid  # ignored pixels become 0 here and are masked out below
    n_valid = valid.sum().clamp_min(1.0)
    loss = logits.new_zeros(())
    if kind in ("bce_dice", "bce"):
        bce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
        loss = loss + (bce * valid).sum() / n_valid
    if kind in ("bce_dice", "dice"):
        p = torch.sigmoid(logits) * valid
        intersection = (p * t).sum()
        dice = (2 * intersection + SMOOTH) / (p.sum() + t.sum() + SMOOTH)
        loss = loss + (1 - dice)
    return loss


def downsample_target(target: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Nearest-neighbour target for a coarser deep-supervision head (keeps 0/1/IGNORE_LABEL exact)."""
    return F.interpolate(target.float(), size=tuple(size), mode="nearest")


def deep_supervision_weights(n: int) -> List[float]:
    """Weights 1, 1/2, 1/4, ... normalised to sum to one (as nnU-Net)."""
    w = [0.5**i for i in range(n)]
    s = sum(w)
    return [x / s for x in w]


def training_loss(output: Union[torch.Tensor, List[torch.Tensor]], target: torch.Tensor, kind: str = "bce_dice") -> torch.Tensor:
    """The loss of one batch; a list of outputs (deep supervision, finest first) gets halving weights."""
    if isinstance(output, torch.Tensor):
        return segmentation_loss(output, target, kind)
    weights = deep_supervision_weights(len(output))
    total = output[0].new_zeros((), dtype=torch.float32)
    for w, out in zip(weights, output):
        t = target if out.shape[-2:] == target.shape[-2:] else downsample_target(target, out.shape[-2:])
        total = total + w * segmentation_loss(out, t, kind)
    return total
