"""--max-minutes arithmetic (deepwml/training/budget.py) on a fake clock: what a user with a deadline relies on."""
from __future__ import annotations

import pytest

from deepwml.training.budget import PROBE_STEPS, VALIDATION_MARGIN, TimeBudget
from deepwml.utils.errors import DeepWMLError


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _probe(budget: TimeBudget, clock: Clock, epoch: int, seconds_per_step: float):
    """Run the first PROBE_STEPS + 1 steps of ``epoch`` at a fixed pace; the answers given."""
    answers = []
    for step in range(PROBE_STEPS + 1):
        clock.now += seconds_per_step
        answers.append(budget.after_step(epoch, step))
    return answers


def test_without_a_budget_there_is_never_an_answer():
    clock = Clock()
    budget = TimeBudget(None, plan_epochs=10, iterations_per_epoch=20, clock=clock)
    budget.start_loop(0)
    assert _probe(budget, clock, 0, 1.0) == [None] * (PROBE_STEPS + 1)
    assert budget.after_epoch(1) is None


@pytest.mark.parametrize("minutes", [0, -1.0])
def test_a_budget_that_is_not_positive_is_refused(minutes):
    with pytest.raises(DeepWMLError, match="--max-minutes must be positive"):
        TimeBudget(minutes, plan_epochs=10, iterations_per_epoch=20)


def test_the_first_estimate_comes_after_the_probe_steps_and_allows_for_validation():
    """10 steps of 1 s per epoch plus the validation margin: 11.5 s per epoch; 60 s hold five epochs."""
    clock = Clock()
    budget = TimeBudget(1.0, plan_epochs=100, iterations_per_epoch=10, clock=clock)
    budget.start_loop(0)
    answers = _probe(budget, clock, 0, 1.0)
    assert answers[:-1] == [None] * PROBE_STEPS
    # at the probe: 5 s used, the rest of this epoch (5 more steps) is reserved
    left = 60 - (PROBE_STEPS + 1) - (10 - PROBE_STEPS - 1)
    assert answers[-1] == 1 + int(left // (10 * (1 + VALIDATION_MARGIN)))
    # no more answers in the epoch; later epochs are not probed again
    assert budget.after_step(0, PROBE_STEPS + 1) is None
    assert _probe(budget, clock, 1, 1.0) == [None] * (PROBE_STEPS + 1)


def test_after_each_epoch_the_estimate_uses_the_runs_own_pace_and_never_exceeds_the_plan():
    clock = Clock()
    budget = TimeBudget(1.0, plan_epochs=4, iterations_per_epoch=10, clock=clock)
    clock.now = 30.0  # set-up and resume are not counted in the pace, but they are spent from the budget
    budget.start_loop(0)
    clock.now = 40.0
    assert budget.after_epoch(1) == 3  # 10 s per epoch, 20 s left: two more
    clock.now = 41.0
    assert budget.after_epoch(2) == 4  # 5.5 s per epoch, 19 s left: capped by the plan's 4
    clock.now = 200.0
    assert budget.after_epoch(3) == 3  # out of time: the epochs already done


def test_a_resumed_run_measures_its_pace_from_where_it_resumed():
    clock = Clock()
    budget = TimeBudget(2.0, plan_epochs=50, iterations_per_epoch=10, clock=clock)
    budget.start_loop(7)
    assert budget.after_epoch(7) is None  # nothing trained in this run yet
    clock.now = 20.0
    # one epoch of this run took 20 s; 100 s left hold five more
    assert budget.after_epoch(8) == 13
