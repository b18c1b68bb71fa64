"""The training loss of one batch: the plan's loss (``deepwml.models.LOSSES``) and deep-supervision weighting."""
from __future__ import annotations

from typing import List, Sequence, Union

import torch
import torch.nn.functional as F

from deepwml.models.registry import LOSSES


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, kind: str = "bce_dice") -> torch.Tensor:
    """The registered loss ``kind`` between logits [B,C,H,W] and a target [B,1,H,W] (0/1 or class indices, IGNORE_LABEL)."""
    return LOSSES.get(kind)(logits, target)


def downsample_target(target: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Nearest-neighbour target for a coarser deep-supervision head (keeps class values and IGNORE_LABEL exact)."""
    return F.interpolate(target.float(), size=tuple(size), mode="nearest")


def deep_supervision_weights(n: int) -> List[float]:
    """Weights 1, 1/2, 1/4, ... normalised to sum to one (as nnU-Net)."""
    w = [0.5**i for i in range(n)]
    s = sum(w)
    return [x / s for x in w]


def training_loss(output: Union[torch.Tensor, List[torch.Tensor]], target: torch.Tensor, kind: str = "bce_dice") -> torch.Tensor:
    """The loss of one batch; a list of outputs (deep supervision, finest first) gets halving weights."""
    loss = LOSSES.get(kind)
    if isinstance(output, torch.Tensor):
        return loss(output, target)
    weights = deep_supervision_weights(len(output))
    total = output[0].new_zeros((), dtype=torch.float32)
    for w, out in zip(weights, output):
        t = target if out.shape[-2:] == target.shape[-2:] else downsample_target(target, out.shape[-2:])
        total = total + w * loss(out, t)
    return total
