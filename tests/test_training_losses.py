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


@pytest.mark.parametrize("kind", ["bce_dice", "bce", "dice", "bce_dice_blob"])
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


def _big_and_tiny():
    """One slice holding a 10 x 10 lesion and a 2 x 2 one, and a lesion-free slice."""
    t = torch.zeros(2, 1, 32, 32)
    t[0, :, 2:12, 2:12] = 1
    t[0, :, 20:22, 20:22] = 1
    return t


def test_blob_loss_charges_a_missed_small_lesion_more_than_the_same_pixels_off_a_large_one():
    target = _big_and_tiny()
    perfect = torch.where(target == 1, 20.0, -20.0)
    miss_tiny = perfect.clone()
    miss_tiny[0, :, 20:22, 20:22] = -20.0
    trim_big = perfect.clone()
    trim_big[0, :, 2:4, 2:4] = -20.0  # the same 4 pixels, off the edge of the large lesion
    # the batch Dice cannot tell the two errors apart; the lesion-wise term can
    assert torch.isclose(segmentation_loss(miss_tiny, target), segmentation_loss(trim_big, target))
    assert segmentation_loss(miss_tiny, target, "bce_dice_blob") > segmentation_loss(trim_big, target, "bce_dice_blob") + 0.2
    assert segmentation_loss(perfect, target, "bce_dice_blob") < 1e-3


def test_blob_loss_charges_each_lesion_with_false_positives_of_its_own_slice_only():
    target = _big_and_tiny()
    perfect = torch.where(target == 1, 20.0, -20.0)
    fp_same, fp_other = perfect.clone(), perfect.clone()
    fp_same[0, :, 28:30, 2:4] = 20.0
    fp_other[1, :, 28:30, 2:4] = 20.0
    # both false positives cost the global terms the same; only the one beside the lesions costs the lesion-wise term
    assert torch.isclose(segmentation_loss(fp_same, target), segmentation_loss(fp_other, target))
    assert segmentation_loss(fp_same, target, "bce_dice_blob") > segmentation_loss(fp_other, target, "bce_dice_blob") + 0.05


def test_blob_loss_equals_bce_dice_on_a_batch_without_lesions():
    target = torch.zeros(2, 1, 16, 16)
    logits = torch.randn(2, 1, 16, 16)
    assert torch.isclose(segmentation_loss(logits, target, "bce_dice_blob"), segmentation_loss(logits, target))


def test_lesion_instances_are_eight_connected_and_numbered_across_the_batch():
    from deepwml.models.losses import lesion_instances
    t = torch.zeros(2, 1, 8, 8)
    t[0, 0, 1, 1] = t[0, 0, 2, 2] = 1  # diagonal neighbours: one lesion
    t[0, 0, 6, 6] = 1
    t[1, 0, 4, 4:6] = 1
    ids, owner = lesion_instances(t)
    assert owner.tolist() == [0, 0, 0, 1]
    assert ids[0, 1, 1] == ids[0, 2, 2] != ids[0, 6, 6]
    assert ids[1, 4, 4] == ids[1, 4, 5] == 3
    assert int((ids > 0).sum()) == int(t.sum())


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


def test_blob_loss_is_a_binary_plan_loss_and_works_with_deep_supervision():
    from deepwml_testing.toy_models import tiny_plan
    plan = tiny_plan()
    plan.training.loss = "bce_dice_blob"
    assert not plan.problems()
    plan.network.num_classes = 4
    assert any("'bce_dice_blob' is for one lesion class" in p for p in plan.problems())
    target = _big_and_tiny()
    outs = [torch.randn(2, 1, 32, 32, requires_grad=True), torch.randn(2, 1, 16, 16, requires_grad=True)]
    training_loss(outs, target, "bce_dice_blob").backward()
    assert all(torch.isfinite(o.grad).all() and o.grad.abs().sum() > 0 for o in outs)
