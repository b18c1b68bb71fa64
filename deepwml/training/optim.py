"""Optimiser and learning-rate schedule from ``plan.training``, looked up in ``deepwml.models``' registries.

The schedule is a pure function of the step number, so resuming needs no scheduler state.
"""
from __future__ import annotations

import torch

from deepwml.models.registry import LR_SCHEDULES, OPTIMIZERS
from deepwml.planning.plan import TrainingPlan


def build_optimizer(model: torch.nn.Module, training: TrainingPlan) -> torch.optim.Optimizer:
    """The registered optimiser ``training.optimizer`` over the model's trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    return OPTIMIZERS.get(training.optimizer)(params, training)


def learning_rate(training: TrainingPlan, step: int, total_steps: int) -> float:
    """The learning rate for optimisation step ``step`` of ``total_steps``."""
    t = min(max(step, 0), total_steps) / max(total_steps, 1)
    return LR_SCHEDULES.get(training.lr_schedule)(training.learning_rate, t)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Apply ``lr`` to every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = lr
