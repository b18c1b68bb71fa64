"""Training validation: the predictor's inference and the evaluator's per-slice metrics, the moving average."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from deepwml.constants import IGNORE_LABEL
from deepwml.evaluation.slice_metrics import slice_metrics
from deepwml.imageio import Geometry
from deepwml.inference.predictor import SlicePredictor
from deepwml.models import build_network
from deepwml.training.device import DeviceSetup
from deepwml.training.validation import DiceEMA, ValidationSlices, predict_probabilities, score_slices, validate
from deepwml_testing.toy_models import set_threshold_weights, tiny_plan

FP32 = DeviceSetup(torch.device("cpu"), None, channels_last=False, threads=1)


def test_metrics_match_hand_counts_and_skip_ignored_pixels():
    ref = np.zeros((2, 4, 4), np.uint8)
    ref[0, 0, :2] = 1  # 2 lesion pixels
    ref[0, 3, :] = IGNORE_LABEL
    probs = np.zeros((2, 4, 4), np.float32)
    probs[0, 0, 0] = 0.9  # 1 TP
    probs[0, 1, 0] = 0.5  # 1 FP: at the threshold counts as lesion, as in deepwml_predict's masks
    probs[0, 3, :] = 1.0  # ignored: neither FP nor anything else
    m = score_slices(probs, ref, threshold=0.5)
    assert m["dice"][0] == pytest.approx(2 / 4)
    assert m["sensitivity"][0] == pytest.approx(1 / 2)
    assert m["precision"][0] == pytest.approx(1 / 2)


def test_an_empty_prediction_on_a_lesion_slice_scores_zero_with_undefined_precision_as_the_evaluator():
    """One convention: Dice and sensitivity 0, precision NaN (no predicted pixel), left out of the median."""
    ref = np.zeros((1, 4, 4), np.uint8)
    ref[0, :2, :2] = 1
    m = score_slices(np.zeros((1, 4, 4), np.float32), ref, 0.5)
    assert m["dice"][0] == 0 and m["sensitivity"][0] == 0 and np.isnan(m["precision"][0])


def test_validation_scores_equal_the_evaluators_on_the_same_masks():
    rng = np.random.default_rng(0)
    ref = (rng.random((5, 16, 16)) < 0.2).astype(np.uint8)
    ref[:, 0, 0] = 1  # every slice holds lesion (validation scores only those)
    ref[1, 4:8] = IGNORE_LABEL
    probs = rng.random((5, 16, 16)).astype(np.float32)
    probs[3] = 0.0  # an empty prediction
    ours = score_slices(probs, ref, 0.5)
    ignore = ref == IGNORE_LABEL
    geometry = Geometry(size=(16, 16, 5), spacing=(1.0, 1.0, 5.0), origin=(0.0, 0.0, 0.0))  # slices along numpy axis 0
    theirs = slice_metrics(ref == 1, (probs >= 0.5) & ~ignore, geometry)
    for metric in ("dice", "sensitivity", "precision"):
        np.testing.assert_array_equal(ours[metric], theirs[metric].to_numpy())


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

    size_multiple = 8
    crop_safe = True

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
    result = validate(SlicePredictor([net], tiny_plan(), FP32, batch_size=2, prepare=False), slices)
    assert net.sizes == [(16, 16), (16, 16)]
    assert result["n_slices"] == 3
    assert result["cases"][0]["dice"] == pytest.approx([1.0, 1.0, 2 * 3 / (2 * 3 + 6)])
    assert result["median_dice"] == pytest.approx(1.0)
    assert net.training, "validation gives the network back in training mode"


def test_validation_probabilities_are_deepwml_predicts_and_the_median_precision_skips_empty_predictions():
    plan = tiny_plan(matrix=32, features=(4, 8))
    net = set_threshold_weights(build_network(plan.network))
    images = np.random.default_rng(1).normal(0, 1, (4, 32, 32)).astype(np.float16)
    images[1:, 10:14, 10:14] = 3.0  # bright lesions the threshold network finds
    images[2, 20:26, 20:26] = 3.0  # and a false positive
    labels = np.zeros(images.shape, np.uint8)
    labels[:, 10:14, 10:14] = 1
    predictor = SlicePredictor([net], plan, FP32, prepare=False)
    as_predicted = SlicePredictor([net], plan, FP32).predict(images.astype(np.float32))
    np.testing.assert_array_equal(predict_probabilities(predictor, images), as_predicted)
    result = validate(predictor, ValidationSlices(["c"], [images], [labels], [np.arange(4)]), plan.inference.threshold)
    precision = score_slices(as_predicted, labels, plan.inference.threshold)["precision"]
    assert np.isnan(precision[0]) and result["undefined_precision_slices"] == 1  # slice 0: nothing bright
    assert 0 < precision[2] < 1
    assert result["median_precision"] == pytest.approx(np.median(precision[1:]))
    assert result["cases"][0]["precision"][0] is None  # JSON has no NaN
