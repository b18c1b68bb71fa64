"""Distillation (``deepwml_train --distill-from MODEL``): learn a trained ensemble's averaged probabilities as well
as the labels, so that one network predicts about as well as the ensemble at the cost of one member.

The teacher is any binary model folder ('builtin' for the shipped one), loaded weights-only like deepwml_predict
loads it. It sees the student's augmented batch, so its preprocessing must equal the student plan's. Its origin
(folder, folds, each checkpoint's sha256) and the weight of its term are stored in every checkpoint of the run;
``--continue`` reloads the same teacher from there and refuses one whose files changed.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from deepwml.constants import IGNORE_LABEL
from deepwml.models.losses import soft_bce_dice
from deepwml.planning.plan import Plan
from deepwml.training.device import DeviceSetup
from deepwml.training.losses import deep_supervision_weights, downsample_target, training_loss
from deepwml.training.pretrained_weights import differences, file_sha256
from deepwml.utils.errors import DeepWMLError

#: share of the loss that follows the teacher (the rest follows the labels) unless --distill-weight says otherwise
DEFAULT_WEIGHT = 0.5


@dataclass
class Teacher:
    """The networks of a trained model, their probabilities averaged; ``origin`` is what checkpoints record."""

    networks: List[nn.Module]
    setup: DeviceSetup
    origin: Dict[str, Any]

    @property
    def weight(self) -> float:
        """Share of the loss that follows the teacher."""
        return float(self.origin["weight"])

    @torch.no_grad()
    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Mean sigmoid probability [B,1,H,W] (float32) of the teacher's networks on ``x``."""
        total = None
        for net in self.networks:
            with self.setup.autocast():
                logits = net(x)
            p = torch.sigmoid(logits.float())
            total = p if total is None else total + p
        return total / len(self.networks)


def _model_folder(spec: str) -> Path:
    """The PLAN folder that ``spec`` names ('builtin' or a path)."""
    from deepwml.inference.model_loading import resolve_model_dir
    from deepwml.pretrained import BUILTIN_ALIAS, builtin_model_dir

    return builtin_model_dir() if spec == BUILTIN_ALIAS else resolve_model_dir(spec)


def check_weight(weight: float) -> float:
    """The teacher's share of the loss, checked to lie in (0, 1]."""
    if not 0.0 < weight <= 1.0:
        raise DeepWMLError(f"--distill-weight must be in (0, 1], got {weight}")
    return float(weight)


def load_teacher(spec: str, plan: Plan, setup: DeviceSetup, folds: Optional[Sequence[Union[int, str]]] = None,
                 weight: float = DEFAULT_WEIGHT) -> Teacher:
    """The teacher ``spec`` names ('builtin', or a trained model's PLAN folder; ``folds``: all of them by default)."""
    from deepwml.inference.model_loading import build_fold_networks, check_model, load_fold_states

    weight = check_weight(weight)
    folder = _model_folder(spec)
    model = check_model(folder, folds)
    if plan.network.out_channels != 1 or model.plan.network.out_channels != 1:
        raise DeepWMLError("--distill-from: distillation is for binary lesion models (one output channel, both teacher and student)", folder)
    differ = differences(model.plan.to_dict()["preprocessing"], plan.to_dict()["preprocessing"])
    if differ:
        raise DeepWMLError("--distill-from: the teacher was trained on differently preprocessed images (teacher -> this plan: "
                           + "; ".join(differ) + "); it would be shown inputs it does not know", folder)
    ours_in, theirs_in = plan.network.in_channels, model.plan.network.in_channels
    if ours_in != theirs_in:
        raise DeepWMLError(f"--distill-from: the teacher takes {theirs_in} input channel(s), this plan's network {ours_in}", folder)
    layout = torch.channels_last if setup.channels_last else torch.contiguous_format
    networks = [n.to(setup.device).to(memory_format=layout).eval().requires_grad_(False)
                for n in build_fold_networks(model, load_fold_states(model))]
    origin = {
        "source": spec,
        "folder": str(folder.resolve()),
        "folds": list(model.folds),
        "checkpoint": model.checkpoint,
        "sha256": [file_sha256(p) for p in model.checkpoints],
        "plan_name": model.plan.name,
        "plan_hash": model.plan.hash(),
        "weight": weight,
    }
    return Teacher(networks, setup, origin)


def reload_teacher(origin: Dict[str, Any], plan: Plan, setup: DeviceSetup, where: Path) -> Teacher:
    """The teacher a checkpoint at ``where`` recorded, refused when its files are gone or changed since."""
    try:
        teacher = load_teacher(str(origin["source"]), plan, setup, origin["folds"], float(origin["weight"]))
    except DeepWMLError as e:
        raise DeepWMLError(f"this run was distilled from {origin.get('source')} ({origin.get('folder')}), which cannot be "
                           f"loaded again: {e}", where) from None
    except (KeyError, TypeError, ValueError) as e:
        raise DeepWMLError(f"the checkpoint's record of its teacher is damaged ({type(e).__name__}: {e})", where) from None
    if teacher.origin["sha256"] != origin.get("sha256"):
        raise DeepWMLError(f"this run was distilled from {origin.get('folder')}, folds {', '.join(origin['folds'])}, whose "
                           "checkpoints have changed since; continue with the original teacher or start a new run", where)
    return teacher


def same_teacher(a: Dict[str, Any], b: Dict[str, Any]) -> bool:
    """Whether two recorded teachers are the same weights with the same loss weight."""
    return a.get("sha256") == b.get("sha256") and float(a.get("weight", -1)) == float(b.get("weight", -2))


def _resized(teacher_prob: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """The teacher's probabilities at a coarser deep-supervision head (area average keeps them probabilities)."""
    return teacher_prob if tuple(teacher_prob.shape[-2:]) == tuple(size) else F.interpolate(teacher_prob, size=tuple(size), mode="area")


def distillation_loss(output: Union[torch.Tensor, List[torch.Tensor]], target: torch.Tensor, teacher_prob: torch.Tensor,
                      weight: float, kind: str = "bce_dice") -> torch.Tensor:
    """(1 - weight) x the plan's loss against the labels + weight x BCE + soft Dice against the teacher's probabilities;
    pixels the label ignores are ignored by both terms."""
    label_term = training_loss(output, target, kind)
    outputs = [output] if isinstance(output, torch.Tensor) else list(output)
    weights = deep_supervision_weights(len(outputs))
    soft_term = outputs[0].new_zeros((), dtype=torch.float32)
    for w, out in zip(weights, outputs):
        size = out.shape[-2:]
        # the labels' ignored pixels at this head's size, as the label term sees them
        t = target if target.shape[-2:] == size else downsample_target(target, size)
        soft_term = soft_term + w * soft_bce_dice(out, _resized(teacher_prob, size), t != IGNORE_LABEL)
    return (1.0 - weight) * label_term + weight * soft_term
