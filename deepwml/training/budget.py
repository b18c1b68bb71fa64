"""--max-minutes: how many epochs of the plan still fit in a wall-clock budget, estimated from the run's own pace.

The trainer tells it about every step and every finished epoch. At two kinds of decision point, a few steps into
the run's first epoch (so that the first epoch's learning-rate schedule already ends with the epochs that fit) and
after every epoch, the budget answers with the epoch count that fits; elsewhere it answers None. Decision points
depend only on epoch and step, so every process of a distributed run reaches them together and the trainer can
make rank 0's answer everyone's. The budget does arithmetic on its clock and nothing else.
"""
from __future__ import annotations

import time
from typing import Callable, Optional

from deepwml.utils.errors import DeepWMLError

#: the epoch count is first estimated after this many steps of the run
PROBE_STEPS = 4
#: allowance for validation and checkpointing on top of the training steps of an epoch (first estimate only)
VALIDATION_MARGIN = 0.15


class TimeBudget:
    """Epochs that fit in ``minutes`` (None: no budget, the plan's epochs) of wall-clock time from construction."""

    def __init__(self, minutes: Optional[float], plan_epochs: int, iterations_per_epoch: int,
                 clock: Optional[Callable[[], float]] = None) -> None:
        if minutes is not None and not minutes > 0:
            raise DeepWMLError(f"--max-minutes must be positive, got {minutes}")
        self.minutes = minutes
        self.plan_epochs = plan_epochs
        self.iterations = iterations_per_epoch
        self.clock = clock or time.monotonic
        self.started = self.clock()
        self.first_epoch = 0
        self.loop_started = self.started
        self.probe_started = self.started

    @property
    def active(self) -> bool:
        """Whether there is a budget at all."""
        return self.minutes is not None

    def start_loop(self, first_epoch: int) -> None:
        """Training proper starts now, at ``first_epoch`` (set-up, resume and announcement are behind it)."""
        self.first_epoch = first_epoch
        self.loop_started = self.clock()

    def after_step(self, epoch: int, step: int) -> Optional[int]:
        """After step ``step`` (0-based) of ``epoch``: the first estimate, once PROBE_STEPS steps were timed."""
        if not self.active or epoch != self.first_epoch:
            return None
        if step == 0:
            # the first step carries worker start-up and warm-up: the probe is timed from its end
            self.probe_started = self.clock()
        if step != PROBE_STEPS:
            return None
        per_step = (self.clock() - self.probe_started) / PROBE_STEPS
        per_epoch = per_step * self.iterations * (1 + VALIDATION_MARGIN)
        return self._fit(epoch + 1, per_epoch, (self.iterations - step - 1) * per_step)

    def after_epoch(self, epochs_done: int) -> Optional[int]:
        """After an epoch ends (``epochs_done`` completed in all): re-estimated from this run's mean epoch time."""
        if not self.active or epochs_done <= self.first_epoch:
            return None
        per_epoch = (self.clock() - self.loop_started) / (epochs_done - self.first_epoch)
        return self._fit(epochs_done, per_epoch, 0.0)

    def _fit(self, committed: int, per_epoch: float, rest_of_epoch: float) -> int:
        """The epochs that fit once ``committed`` are certain (the one under way is always finished)."""
        left = self.minutes * 60 - (self.clock() - self.started) - rest_of_epoch
        # capped by the plan, not by the last target: a pessimistic early estimate may be raised again
        return min(self.plan_epochs, max(committed, 1, committed + int(left // max(per_epoch, 1e-9))))
