"""Generator v13: patchy, mildly bright normal white matter away from the ventricles, never lesion
(deepwml.synthetic.patches)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

import deepwml.synthetic.patches as patches
from deepwml.synthetic.generate import GENERATOR_VERSION, generate_case
from deepwml.synthetic.patches import FAR_MM, NEAR_MM, PATCH_RAMP, patch_weight, sample_patches


def test_generator_version_is_13_or_later():
    assert GENERATOR_VERSION >= 13


def test_patch_weight_rises_over_the_ramp_above_the_threshold():
    field = np.array([0.5, 1.0, 1.0 + PATCH_RAMP / 2, 1.0 + PATCH_RAMP, 3.0], np.float32).reshape(1, 1, 5)
    weight = patch_weight(field, 1.0, (1, 1, 5))
    np.testing.assert_allclose(weight.ravel(), [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)


def test_patch_weight_fades_towards_the_ventricles():
    field = np.full((1, 4, 4), 5.0, np.float32)
    block = (slice(None), slice(0, 2), slice(0, 4))
    distance = np.array([[0.0, NEAR_MM, (NEAR_MM + FAR_MM) / 2, FAR_MM + 1]] * 2, np.float32)[None]
    weight = patch_weight(field, 0.0, (1, 4, 4), block, distance)
    np.testing.assert_allclose(weight[0, 0], [0.0, 0.0, 0.5, 1.0], atol=1e-6)
    np.testing.assert_allclose(weight[0, 2:], 1.0)  # outside the near-ventricle block: full strength


def test_about_the_patch_share_of_scans_has_patches_within_the_excess_range():
    rng = np.random.default_rng(0)
    draws = [sample_patches(rng) for _ in range(2000)]
    excess = np.array([d[0] for d in draws])
    assert abs((excess > 0).mean() - patches.PATCH_SHARE) < 0.04
    lo, hi = patches.PATCH_EXCESS_RANGE
    assert excess[excess > 0].min() >= lo and excess.max() <= hi
    thresholds = np.array([d[1] for d in draws])
    assert thresholds.min() >= patches.PATCH_THRESHOLD_RANGE[0] and thresholds.max() <= patches.PATCH_THRESHOLD_RANGE[1]


@pytest.fixture(scope="module")
def pair():
    """One template case drawn twice, with no patches and with strong ones; everything else is the same draw."""
    saved = patches.PATCH_SHARE, patches.PATCH_EXCESS_RANGE, patches.PATCH_THRESHOLD_RANGE
    try:
        patches.PATCH_THRESHOLD_RANGE = (0.6, 0.6)
        patches.PATCH_SHARE = 0.0
        plain = generate_case("MS#3", 2, seed=0, truth=True, brain="template")
        patches.PATCH_SHARE, patches.PATCH_EXCESS_RANGE = 1.0, (0.25, 0.25)
        patched = generate_case("MS#3", 2, seed=0, truth=True, brain="template")
    finally:
        patches.PATCH_SHARE, patches.PATCH_EXCESS_RANGE, patches.PATCH_THRESHOLD_RANGE = saved
    return plain, patched


def test_patches_are_never_lesion_and_change_nothing_but_brain_signal(pair):
    plain, patched = pair
    np.testing.assert_array_equal(plain.label, patched.label)
    for name in plain.truth:
        np.testing.assert_array_equal(plain.truth[name], patched.truth[name])
    diff = patched.image.astype(np.float64) - plain.image.astype(np.float64)
    # the head outside the brain keeps its values (the same noise draw), but for rounding after the stored range's
    # rescaling, which a brighter brain moves a little
    outside = diff[~ndimage.binary_dilation(plain.truth["brain"], iterations=2)]
    assert np.abs(outside).max() <= 0.005 * np.percentile(plain.image, 99) and (outside != 0).mean() < 0.02


def test_patches_brighten_white_matter_away_from_the_ventricles_not_beside_them(pair):
    plain, patched = pair
    t = plain.truth
    wm = t["brain"] & ~t["cortex"] & ~t["ventricle"] & ~t["rim"] & (plain.label == 0)
    spacing = (plain.geometry.spacing[2],) + tuple(plain.geometry.spacing[1::-1])  # (z, y, x) mm
    to_ventricle = ndimage.distance_transform_edt(~t["ventricle"], sampling=spacing)
    rel = patched.image.astype(np.float64) / np.maximum(plain.image.astype(np.float64), 1.0) - 1.0
    far, near = wm & (to_ventricle > 20.0), wm & (to_ventricle < 2.0)
    assert far.sum() > 1000 and near.sum() > 200
    # a patch covers part of the white matter at up to the full excess; beside the ventricles there is none
    assert np.percentile(rel[far], 95) > 0.1
    assert 0.05 < (rel[far] > 0.05).mean() < 0.4
    assert (rel[near] > 0.05).mean() < 0.2 * (rel[far] > 0.05).mean()
    # lesions keep their brightness: the lesion signal is set against the brain's spread, not the patches
    lesion = plain.label > 0
    assert abs(np.median(rel[lesion])) < 0.05
