"""Optimisers (``training.optimizer``): each entry maps (parameters, plan.training) to a torch optimiser."""
from __future__ import annotations

from typing import Any, Iterable

import torch

#: nnU-Net's SGD settings
SGD_MOMENTUM = 0.99


def adam(params: Iterable[Any], training: Any) -> torch.optim.Optimizer:
    """Adam (the paper, lr 1e-4)."""
    return torch.optim.Adam(params, lr=training.learning_rate, weight_decay=training.weight_decay)


def adamw(params: Iterable[Any], training: Any) -> torch.optim.Optimizer:
    """AdamW (decoupled weight decay)."""
    return torch.optim.AdamW(params, lr=training.learning_rate, weight_decay=training.weight_decay)


def sgd(params: Iterable[Any], training: Any) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum 0.99 (nnU-Net)."""
    return torch.optim.SGD(params, lr=training.learning_rate, weight_decay=training.weight_decay,
                           momentum=SGD_MOMENTUM, nesterov=True)
