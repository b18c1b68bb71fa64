"""Losses (``training.loss``): each entry maps logits [B,C,H,W] and a target [B,1,H,W] to a scalar.

Binary plans (one logit channel, target 0/1/IGNORE_LABEL): ``bce_dice``, ``bce``, ``dice``, ``bce_dice_blob``.
Multi-class plans (one logit per class, target 0..C-1/IGNORE_LABEL): ``ce_dice`` (softmax cross-entropy + soft batch
Dice averaged over the foreground classes, as nnU-Net) and ``ce``.

The paper's loss is binary cross-entropy + soft Dice on one logit channel, with ignored pixels left out of both.
Dice is a *batch* Dice: intersections and sums are taken over every valid pixel of the (per-rank) batch before
the ratio. Many 2D FLAIR slices hold no lesion at all; a per-sample Dice would be undefined (or a constant
reward) on those and noisy on slices with a single tiny lesion, whereas the batch Dice stays well defined as
long as the batch holds some lesion, which foreground oversampling guarantees.

A batch Dice is dominated by the large lesions of the batch: missing ten 3-pixel lesions costs it less than a thin rim
of one confluent lesion. ``bce_dice_blob`` adds a lesion-wise term after Kofler et al. (2023, "blob loss", MS lesion
detection): for each 8-connected lesion of each slice, a soft Dice between the prediction and that lesion alone over
the slice's background plus that lesion (the slice's other lesions left out), averaged over the lesions of the batch.
Every lesion then weighs the same, and each is charged with its slice's false-positive mass.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

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


#: weight of the lesion-wise term in ``bce_dice_blob`` (Kofler et al. weigh the global and the blob term 2 : 1)
BLOB_WEIGHT = 0.5
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def lesion_instances(t: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per pixel of a 0/1 target [B,1,H,W] the id of its 8-connected lesion (1..K over the batch, 0 elsewhere), and each id's slice."""
    fg = (t[:, 0] == 1).cpu().numpy()
    ids = np.zeros(fg.shape, dtype=np.int64)
    owner = [0]
    for b in range(fg.shape[0]):
        lab, k = ndimage.label(fg[b], structure=_EIGHT_CONNECTED)
        ids[b] = np.where(lab > 0, lab + (len(owner) - 1), 0)
        owner.extend([b] * k)
    return torch.from_numpy(ids).to(t.device), torch.tensor(owner, dtype=torch.long, device=t.device)


def _blob_dice(logits: torch.Tensor, t: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """1 - soft Dice of each lesion against its slice's background, averaged over the lesions (0 when there are none)."""
    ids, owner = lesion_instances(t)
    k = owner.numel() - 1
    if k == 0:
        return logits.new_zeros(())
    p = (torch.sigmoid(logits) * valid)[:, 0]
    flat = ids.reshape(-1)
    inside = p.new_zeros(k + 1).index_add(0, flat, p.reshape(-1))[1:]
    size = torch.bincount(flat, minlength=k + 1)[1:].to(p.dtype)
    background = (p * (1 - t[:, 0])).sum(dim=(1, 2))
    dice = (2 * inside + SMOOTH) / (inside + background[owner[1:]] + size + SMOOTH)
    return 1 - dice.mean()


def bce_dice_blob(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE + soft batch Dice + a lesion-wise (blob) Dice in which every lesion weighs the same."""
    logits, t, valid = _valid(logits, target)
    return _bce(logits, t, valid) + _soft_dice(logits, t, valid) + BLOB_WEIGHT * _blob_dice(logits, t, valid)


def bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy only."""
    logits, t, valid = _valid(logits, target)
    return _bce(logits, t, valid)


def dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft batch Dice only."""
    logits, t, valid = _valid(logits, target)
    return _soft_dice(logits, t, valid)


def soft_bce_dice(logits: torch.Tensor, soft_target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """BCE + soft batch Dice against probabilities in [0, 1] (a teacher's, for distillation) over the ``valid`` pixels."""
    valid = valid.float()
    t = soft_target.float() * valid
    logits = logits.float()
    return _bce(logits, t, valid) + _soft_dice(logits, t, valid)


def _class_target(target: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(class index per pixel [B,H,W] with ignored pixels set to 0, valid mask [B,1,H,W] float)."""
    t = target[:, 0].long()
    valid = t != IGNORE_LABEL
    return t * valid, valid[:, None].float()


def _ce(logits: torch.Tensor, t: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean softmax cross-entropy over the valid pixels."""
    n_valid = valid.sum().clamp_min(1.0)
    return (F.cross_entropy(logits, t, reduction="none") * valid[:, 0]).sum() / n_valid


def _soft_dice_classes(logits: torch.Tensor, t: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """1 - soft batch Dice averaged over the foreground classes (channel 0, background, is left out)."""
    p = torch.softmax(logits, dim=1) * valid
    one_hot = F.one_hot(t, logits.shape[1]).permute(0, 3, 1, 2).float() * valid
    dims = (0, 2, 3)
    intersection = (p * one_hot).sum(dims)[1:]
    dice = (2 * intersection + SMOOTH) / (p.sum(dims)[1:] + one_hot.sum(dims)[1:] + SMOOTH)
    return 1 - dice.mean()


def ce_dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy + soft batch Dice over the foreground classes (multi-class plans)."""
    logits = logits.float()
    t, valid = _class_target(target)
    return _ce(logits, t, valid) + _soft_dice_classes(logits, t, valid)


def ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy only (multi-class plans)."""
    logits = logits.float()
    t, valid = _class_target(target)
    return _ce(logits, t, valid)
