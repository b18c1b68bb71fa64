"""Optimiser and learning-rate schedule from ``plan.training``.

The schedule is a pure function of the step number, so resuming needs no scheduler state: 'constant' (the
paper), 'poly' (nnU-Net's (1 − t/T)^0.9) or 'cosine' (half a cosine down to zero).
"""
from __future__ import annotations

import math

import torch

from deepwml.planning.plan import TrainingPlan

POLY_EXPONENT = 0.9


def build_optimizer(model: torch.nn.Module, training: TrainingPlan) -> torch.optim.Optimizer:
    """Adam (the paper, lr 1e-4), AdamW or SGD with Nesterov momentum 0.99 (nnU-Net)."""
    params = [p for p in model.parameters() if p.requires_grad]
    lr, wd = training.learning_rate, training.weight_decay
    if training.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if training.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    return torch.optim.SGD(params, lr=lr, weight_decay=wd, momentum=0.99, nesterov=True)


def learning_rate(training: TrainingPlan, step: int, total_steps: int) -> float:
    """The learning rate for optimisation step ``step`` of ``total_steps``."""
    base = training.learning_rate
    t = min(max(step, 0), total_steps) / max(total_steps, 1)
    if training.lr_schedule == "poly":
        return base * (1 - t) ** POLY_EXPONENT
    if training.lr_schedule == "cosine":
        return base * 0.5 * (1 + math.cos(math.pi * t))
    return base


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Apply ``lr`` to every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = lr
