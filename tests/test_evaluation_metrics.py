"""Per-slice and per-case metrics on small hand-computed masks."""
from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import oblique_direction

from deepwml.evaluation.case_metrics import absolute_volume_difference, case_metrics, dice
from deepwml.evaluation.groups import lv_groups, thickness_bands
from deepwml.evaluation.lesions import lesion_detection
from deepwml.evaluation.slice_metrics import slice_metrics
from deepwml.evaluation.surface import boundary, hausdorff_percentile
from deepwml.imageio import Geometry


def geom(shape_zyx: tuple, spacing_xyz: tuple = (0.5, 0.5, 5.0), direction: tuple = (1, 0, 0, 0, 1, 0, 0, 0, 1)) -> Geometry:
    """A geometry for an array of numpy shape ``shape_zyx``."""
    return Geometry(tuple(reversed(shape_zyx)), spacing_xyz, (10.0, -20.0, 30.0), direction)


# ---------------------------------------------------------------- per slice


def test_slice_metrics_scored_fp_and_empty_prediction_slices():
    ref = np.zeros((4, 4, 4), bool)
    pred = np.zeros_like(ref)
    ref[0, 0, :4] = True  # 4 lesion pixels
    pred[0, 0, :2] = True  # 2 hit
    pred[0, 3, :2] = True  # 2 false positives on the lesion slice
    pred[1, 2, 1:4] = True  # slice without reference lesion: 3 false-positive pixels
    ref[2, 1, 1:3] = True  # lesion slice, empty prediction
    # slice 3: nothing anywhere
    df = slice_metrics(ref, pred, geom(ref.shape))
    assert len(df) == 4
    s0, s1, s2, s3 = (df.iloc[i] for i in range(4))
    assert s0.dice == pytest.approx(0.5) and s0.sensitivity == pytest.approx(0.5) and s0.precision == pytest.approx(0.5)
    assert s0.ref_area_mm2 == pytest.approx(4 * 0.25) and s0.fp_area_mm2 == pytest.approx(0.5)
    assert s0.lesion_volume_ml == pytest.approx(4 * 0.25 * 5.0 / 1000.0)
    assert s0.has_reference_lesion and not s0.false_positive_slice
    # no reference lesion: not scored (never 1), flagged as a false-positive slice with its area
    assert not s1.has_reference_lesion and s1.false_positive_slice
    assert math.isnan(s1.dice) and math.isnan(s1.sensitivity) and math.isnan(s1.precision)
    assert s1.fp_area_mm2 == pytest.approx(0.75) and s1.lv_group == "none"
    # lesion but empty prediction: Dice 0, sensitivity 0, precision undefined
    assert s2.dice == 0 and s2.sensitivity == 0 and math.isnan(s2.precision)
    assert not s3.has_reference_lesion and not s3.false_positive_slice and s3.fp_area_mm2 == 0


def test_slices_follow_the_coarse_axis_even_when_it_is_not_numpy_axis_0():
    # ITK x has the 6 mm spacing, so slices run along numpy axis 2
    ref = np.zeros((5, 7, 3), bool)
    ref[:, :, 1] = True
    g = Geometry((3, 7, 5), (6.0, 0.9, 0.8), (0, 0, 0))
    df = slice_metrics(ref, ref.copy(), g)
    assert len(df) == 3
    assert list(df.has_reference_lesion) == [False, True, False]
    assert df.ref_area_mm2[1] == pytest.approx(35 * 0.9 * 0.8)
    assert df.lesion_volume_ml[1] == pytest.approx(35 * 0.9 * 0.8 * 6.0 / 1000)


def test_lesion_volume_groups_and_their_bounds():
    volumes = [0.0, 0.05, 0.1999, 0.2, 0.69, 0.7, 1.99, 2.0, 4.99, 5.0, 80.0]
    assert list(lv_groups(np.array(volumes))) == ["none", "G1", "G1", "G2", "G2", "G3", "G3", "G4", "G4", "G5", "G5"]


def test_thickness_bands():
    assert list(thickness_bands(np.array([3.0, 5.0, 5.01, 7.0, 7.5]))) == ["≤5 mm", "≤5 mm", "5–7 mm", "5–7 mm", ">7 mm"]


# ---------------------------------------------------------------- per case: empty masks


def test_empty_reference_and_empty_prediction():
    z = np.zeros((3, 8, 8), bool)
    m = case_metrics(z, z.copy(), geom(z.shape))
    assert m["dice"] == 1.0 and m["avd_percent"] == 0.0 and math.isnan(m["hd95_mm"])
    assert (m["lesion_recall"], m["lesion_precision"], m["lesion_f1"]) == (1.0, 1.0, 1.0)
    assert m["ref_lesion_count"] == m["pred_lesion_count"] == 0 and m["ref_empty"] and m["pred_empty"]


def test_empty_reference_full_prediction():
    z = np.zeros((3, 8, 8), bool)
    m = case_metrics(z, ~z, geom(z.shape))
    assert m["dice"] == 0.0 and math.isnan(m["avd_percent"]) and math.isnan(m["hd95_mm"])
    assert (m["lesion_recall"], m["lesion_precision"], m["lesion_f1"]) == (1.0, 0.0, 0.0)
    assert m["pred_lesion_count"] == 1 and m["pred_volume_ml"] == pytest.approx(3 * 64 * 0.25 * 5 / 1000)


def test_full_reference_empty_prediction():
    z = np.zeros((3, 8, 8), bool)
    m = case_metrics(~z, z, geom(z.shape))
    assert m["dice"] == 0.0 and m["avd_percent"] == 100.0 and math.isnan(m["hd95_mm"])
    assert (m["lesion_recall"], m["lesion_precision"], m["lesion_f1"]) == (0.0, 1.0, 0.0)


def test_avd_definition():
    assert absolute_volume_difference(10, 15) == pytest.approx(50.0)
    assert absolute_volume_difference(10, 5) == pytest.approx(50.0)
    assert absolute_volume_difference(0, 0) == 0.0 and math.isnan(absolute_volume_difference(0, 3))


# ---------------------------------------------------------------- per case: lesions


def test_one_pixel_lesions():
    ref = np.zeros((3, 10, 10), bool)
    pred = np.zeros_like(ref)
    ref[0, 1, 1] = ref[1, 5, 5] = ref[2, 8, 2] = True
    pred[1, 5, 5] = True  # hits one reference lesion
    pred[0, 8, 8] = True  # a false positive
    m = case_metrics(ref, pred, geom(ref.shape))
    assert m["dice"] == pytest.approx(2 * 1 / (3 + 2))
    assert m["lesion_recall"] == pytest.approx(1 / 3) and m["lesion_precision"] == pytest.approx(1 / 2)
    assert m["lesion_f1"] == pytest.approx(2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3))
    assert m["avd_percent"] == pytest.approx(100 / 3)
    assert (m["ref_lesion_count"], m["pred_lesion_count"]) == (3, 2)
    assert m["ref_volume_ml"] == pytest.approx(3 * 0.25 * 5 / 1000)


def test_lesion_split_in_two_by_the_prediction_and_the_reverse():
    bar = np.zeros((1, 3, 9), bool)
    bar[0, 1, 1:8] = True
    split = bar.copy()
    split[0, 1, 4] = False
    d = lesion_detection(bar, split)
    assert (d.n_reference, d.n_predicted, d.n_reference_detected, d.n_predicted_touching) == (1, 2, 1, 2)
    assert d.recall == 1.0 and d.precision == 1.0
    d = lesion_detection(split, bar)
    assert (d.n_reference, d.n_predicted) == (2, 1) and d.recall == 1.0 and d.precision == 1.0


def test_lesions_are_26_connected_across_slices_and_corners():
    mask = np.zeros((3, 5, 5), bool)
    mask[0, 0, 0] = mask[1, 1, 1] = mask[2, 2, 2] = True  # touching only by corners
    mask[0, 4, 4] = True  # separate
    d = lesion_detection(mask, np.zeros_like(mask))
    assert d.n_reference == 2 and d.recall == 0.0


def test_dice_of_partial_overlap():
    a = np.zeros(20, bool)
    b = np.zeros(20, bool)
    a[:10] = True
    b[5:15] = True
    assert dice(a, b) == pytest.approx(2 * 5 / 20)


# ---------------------------------------------------------------- boundaries and HD95


def test_boundary_is_per_slice_ring():
    mask = np.zeros((3, 7, 7), bool)
    mask[:, 1:6, 1:6] = True
    edge = boundary(mask, slice_axis=0)
    # in-plane erosion: every slice keeps its 16-pixel ring; no slice becomes a full 3D "cap"
    assert edge.sum() == 3 * 16 and not edge[:, 2:5, 2:5].any()


def test_boundary_at_the_image_border_counts_the_outside_as_foreground():
    mask = np.zeros((1, 6, 6), bool)
    mask[0, :, :3] = True  # touches three image borders
    edge = boundary(mask, slice_axis=0)
    assert edge[0, :, 2].all() and not edge[0, :, :2].any()


def test_hd95_with_anisotropic_spacing_and_oblique_direction():
    # one voxel each: the distance is the world distance between voxel centres, whatever the rotation
    shape = (4, 10, 10)
    g = geom(shape, spacing_xyz=(0.9, 0.9, 6.0), direction=oblique_direction(12.0))
    ref = np.zeros(shape, bool)
    pred = np.zeros(shape, bool)
    ref[1, 3, 4] = True
    pred[2, 5, 4] = True  # 2 voxels along y (0.9 mm) and 1 slice (6 mm)
    expected = math.hypot(2 * 0.9, 6.0)
    assert hausdorff_percentile(ref, pred, g) == pytest.approx(expected)
    # the same index offset in an axial image gives the same distance: rotation preserves lengths
    assert hausdorff_percentile(ref, pred, geom(shape, (0.9, 0.9, 6.0))) == pytest.approx(expected)


def test_hd95_is_a_percentile_not_the_maximum():
    ref = np.zeros((1, 40, 40), bool)
    pred = np.zeros_like(ref)
    ref[0, 5, 0:20] = True  # a line: every voxel is a boundary voxel
    pred[0, 7, 0:20] = True  # the same line 2 rows (1 mm) away
    g = geom(ref.shape, spacing_xyz=(0.5, 0.5, 5.0))
    assert hausdorff_percentile(ref, pred, g) == pytest.approx(1.0)
    pred[0, 27, 0] = pred[0, 27, 39] = True  # two far-away single-voxel detections
    d_far = sorted([math.hypot(0, 11.0), math.hypot(39 * 0.5 - 19 * 0.5, 11.0)])
    # pred -> ref: 20 distances of 1 mm and the two outliers; 95th percentile of 22 values (linear interpolation)
    values = np.array([1.0] * 20 + d_far)
    expected = float(np.percentile(values, 95))
    assert expected == pytest.approx(1.0 + 0.95 * (d_far[0] - 1.0))
    assert hausdorff_percentile(ref, pred, g) == pytest.approx(expected)
    assert hausdorff_percentile(ref, pred, g, q=100) == pytest.approx(d_far[1])
