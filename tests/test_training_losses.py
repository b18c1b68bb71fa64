"""BCE + soft batch Dice with ignored pixels, deep-supervision weighting, learning-rate schedules."""
from __future__ import annotations

import math

import pytest
import torch

from deepwml.constants import IGNORE_LABEL
from deepwml.planning.plan import TrainingPlan
from deepwml.training.losses import deep_supervision_weights, segmentation_loss, training_loss
from deepwml.training.optim import learning_rate


def _target():
    t = torch.zeros(2, 1, 8, 8)
    t[:, :, 2:5, 2:5] = 1
    t[0, :, :, 6:] = IGNORE_LABEL
    return t


@pytest.mark.parametrize("kind", ["bce_dice", "bce", "dice"])
def test_ignored_pixels_change_neither_loss_nor_gradient(kind):
    target = _target()
    logits = torch.randn(2, 1, 8, 8, requires_grad=True)
    loss = segmentation_loss(logits, target, kind)
    loss.backward()
    ignored = target == IGNORE_LABEL
    assert torch.all(logits.grad[ignored] == 0)
    changed = logits.detach().clone()
    changed[ignored] = 50.0  # confidently "lesion" where nothing is known
    assert torch.isclose(segmentation_loss(changed, target, kind), loss.detach())


def test_perfect_prediction_has_near_zero_loss_and_wrong_one_a_large_loss():
    target = _target()
    good = torch.where(target == 1, 20.0, -20.0)
    bad = -good
    assert segmentation_loss(good, target) < 1e-3
    assert segmentation_loss(bad, target) > 10


def test_dice_part_is_a_batch_dice():
    # a lesion-free sample does not drag the batch Dice down when it is predicted empty
    target = torch.zeros(2, 1, 4, 4)
    target[0, :, :2, :2] = 1
    logits = torch.where(target == 1, 30.0, -30.0)
    assert segmentation_loss(logits, target, "dice") < 1e-4


def test_deep_supervision_weights_halve_and_sum_to_one():
    w = deep_supervision_weights(3)
    assert w == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    target = _target()
    outs = [torch.randn(2, 1, 8, 8), torch.randn(2, 1, 4, 4)]
    expected = (2 / 3) * segmentation_loss(outs[0], target) + (1 / 3) * segmentation_loss(
        outs[1], target[:, :, ::2, ::2])
    assert torch.isclose(training_loss(outs, target), expected)


def test_learning_rate_schedules():
    plan = TrainingPlan(learning_rate=1e-3)
    assert learning_rate(plan, 500, 1000) == pytest.approx(1e-3)
    plan.lr_schedule = "poly"
    assert learning_rate(plan, 0, 1000) == pytest.approx(1e-3)
    assert learning_rate(plan, 500, 1000) == pytest.approx(1e-3 * 0.5**0.9)
    plan.lr_schedule = "cosine"
    assert learning_rate(plan, 500, 1000) == pytest.approx(0.5e-3)
    assert learning_rate(plan, 1000, 1000) == pytest.approx(0.0, abs=1e-12)
    assert not math.isnan(learning_rate(plan, 2000, 1000))
