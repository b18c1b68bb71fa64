"""Learning-rate schedules (``training.lr_schedule``): the rate as a pure function of the training progress.

Each entry maps (base rate, fraction of the run done in [0, 1]) to the rate, so resuming needs no scheduler state.
"""
from __future__ import annotations

import math

POLY_EXPONENT = 0.9


def constant(base: float, t: float) -> float:
    """The same rate throughout (the paper)."""
    return base


def poly(base: float, t: float) -> float:
    """nnU-Net's (1 - t)^0.9 decay."""
    return base * (1 - t) ** POLY_EXPONENT


def cosine(base: float, t: float) -> float:
    """Half a cosine down to zero."""
    return base * 0.5 * (1 + math.cos(math.pi * t))
