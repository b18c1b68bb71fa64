"""Per-slice validation metrics (the paper's), ignored pixels, the moving average, whole-slice prediction."""
from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from deepwml.constants import IGNORE_LABEL
from deepwml.training.validation import (
    ValidationSlices,
    DiceEMA,
    slice_confusion,
    slice_metrics,
    validate,
)


def test_metrics_match_hand_counts_and_skip_ignored_pixels():
    ref = np.zeros((2, 4, 4), np.uint8)
    ref[0, 0, :2] = 1  # 2 lesion pixels
    ref[0, 3, :] = IGNORE_LABEL
    pred = np.zeros((2, 4, 4), bool)
    pred[0, 0, 0] = True  # 1 TP
    pred[0, 1, 0] = True  # 1 FP
    pred[0, 3, :] = True  # ignored: neither FP nor anything else
    tp, fp, fn = slice_confusion(pred, ref)
    assert (tp.tolist(), fp.tolist(), fn.tolist()) == ([1, 0], [1, 0], [1, 0])
    m = slice_metrics(tp[:1], fp[:1], fn[:1])
    assert m["dice"][0] == pytest.approx(2 / 4)
    assert m["sensitivity"][0] == pytest.approx(1 / 2)
    assert m["precision"][0] == pytest.approx(1 / 2)


def test_an_empty_prediction_on_a_lesion_slice_scores_zero():
    m = slice_metrics(np.array([0]), np.array([0]), np.array([5]))
    assert m["dice"][0] == 0 and m["sensitivity"][0] == 0 and m["precision"][0] == 0


def test_moving_average_is_bias_corrected_and_follows_alpha():
    ema = DiceEMA(0.9)
    assert ema.value is None
    assert ema.update(0.5) == pytest.approx(0.5)  # the first value is the average
    assert ema.update(1.0) == pytest.approx((0.9 * 0.5 + 1.0) / 1.9)
    for _ in range(100):
        ema.update(0.8)
    assert ema.value == pytest.approx(0.8)
    resumed = DiceEMA(0.9, ema.raw, ema.count)
    assert resumed.update(0.2) == ema.update(0.2)


class _Threshold(torch.nn.Module):
    """A 'network' whose logit is the image itself; records the input sizes it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes = []

    def forward(self, x):
        self.sizes.append(tuple(x.shape[-2:]))
        return x


def test_validate_predicts_whole_slices_padded_to_the_network_multiple():
    image = np.full((3, 10, 12), -5.0, np.float16)
    label = np.zeros((3, 10, 12), np.uint8)
    image[:, 2:5, 2:5] = 5.0
    label[:, 2:5, 2:5] = 1
    label[2, 2:5, 2:4] = 0  # slice 2: 3 of 9 predicted pixels are right, 6 are false positives
    slices = ValidationSlices(["c"], [image], [label], [np.arange(3)])
    net = _Threshold()
    result = validate(net, slices, batch_size=2, multiple=8, device=torch.device("cpu"),
                      channels_last=False, autocast=contextlib.nullcontext)
    assert net.sizes == [(16, 16), (16, 16)]
    assert result["n_slices"] == 3
    assert result["cases"][0]["dice"] == pytest.approx([1.0, 1.0, 2 * 3 / (2 * 3 + 6)])
    assert result["median_dice"] == pytest.approx(1.0)
