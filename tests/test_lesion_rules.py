"""deepwml.calibration.lesion_rules: at every threshold of a search, the lesions the anatomy map's rules keep are
exactly those deepwml_predict's rules keep in the mask (drop_outside_brain, then drop_faint_cortical)."""
from __future__ import annotations

import numpy as np
import pytest

from deepwml.anatomy.labels import BACKGROUND, CORTEX, WHITE_MATTER, anatomy_from_truth
from deepwml.calibration.lesion_rules import LesionRules
from deepwml.evaluation.lesions import label_lesions
from deepwml.imageio import Geometry
from deepwml.inference.cortex_contrast import drop_faint_cortical
from deepwml.inference.lesion_contrast import widen_box
from deepwml.inference.lesion_report import lesion_box
from deepwml.inference.outside_brain import drop_outside_brain
from deepwml_testing.cases import input_case

THRESHOLDS = (0.2, 0.5, 0.8)


@pytest.fixture(scope="module")
def scan():
    """Eight slices of a 512² synthetic scan with its skull, its anatomy map (one slice without brain) and a poor
    model's probabilities: lesions in the brain, in the cortex, in the scalp and just outside the brain's edge."""
    case = input_case("CSVD#3", 1, 0, truth=True)
    kept = slice(case.image.shape[0] // 2 - 4, case.image.shape[0] // 2 + 4)
    image, anatomy = case.image[kept].astype(np.float32), anatomy_from_truth(case.truth)[kept]
    anatomy[0] = BACKGROUND
    rng = np.random.default_rng(0)
    # a model's probabilities: the scan's lesions, bright voxels outside the brain (scalp, fat, the skull base) ...
    positive = image[image > 0]
    bright = image > 1.3 * float(np.median(positive[positive > 0.1 * np.median(positive)]))
    probs = np.where(case.label[kept] > 0, 0.95, 0.0) + np.where(bright & (anatomy == BACKGROUND), 0.7, 0.0)
    # ... and specks of three strengths on the cortex and in the white matter, whatever their brightness, as a model
    # takes bright normal cortex for lesions
    for structure in (CORTEX, WHITE_MATTER):
        z, y, x = np.nonzero(anatomy == structure)
        for n, k in enumerate(rng.choice(len(z), 60, replace=False)):
            spot = (z[k], slice(y[k] - 1, y[k] + 2), slice(x[k] - 1, x[k] + 2))
            probs[spot] = np.maximum(probs[spot], (0.3, 0.6, 0.9)[n % 3])
    g = case.geometry
    return probs, anatomy, image, Geometry((g.size[0], g.size[1], image.shape[0]), g.spacing, g.origin, g.direction)


def _slices_last(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(array, 0, 2))


@pytest.mark.parametrize("slices_last", [False, True])
@pytest.mark.parametrize("drop_outside,contrast", [(True, 1.15), (True, 0.0), (False, 1.2)])
def test_the_rules_keep_the_lesions_predict_keeps_at_every_threshold(scan, slices_last, drop_outside, contrast):
    probs, anatomy, image, geometry = scan
    if slices_last:  # the slice axis last in numpy order (ITK's first): a sagittally or coronally stored stack
        probs, anatomy, image = (_slices_last(a) for a in (probs, anatomy, image))
        geometry = Geometry(probs.shape[::-1], geometry.spacing[::-1], geometry.origin, (0, 0, 1, 0, 1, 0, 1, 0, 0))
        assert geometry.slice_axis_numpy == 2
    rules = LesionRules(anatomy, image, geometry, drop_outside, contrast)
    # one box for every threshold, wider than the lesions, as the search crops
    box = widen_box(lesion_box(probs >= THRESHOLDS[0]), probs.shape, [4, 4, 4])
    dropped = 0
    for threshold in THRESHOLDS:
        mask = probs >= threshold
        labels, count = label_lesions(mask[box])
        expected = drop_outside_brain(mask, anatomy, geometry)[0] > 0 if drop_outside else mask
        if contrast > 0:
            expected = drop_faint_cortical(expected, anatomy, image, geometry, contrast)[0] > 0
        kept = np.bincount(labels[expected[box]], minlength=count + 1)[1:] > 0
        np.testing.assert_array_equal(rules.kept(labels, count, box), kept)
        dropped += count - int(kept.sum())
    assert dropped > 0


def test_each_rule_drops_lesions_of_its_own(scan):
    """The scan holds lesions outside the brain and faint ones in or against the cortex: each rule drops some."""
    probs, anatomy, image, geometry = scan
    box = lesion_box(probs >= 0.5)
    labels, count = label_lesions((probs >= 0.5)[box])
    outside = LesionRules(anatomy, image, geometry, True, 0.0).kept(labels, count, box)
    both = LesionRules(anatomy, image, geometry, True, 1.15).kept(labels, count, box)
    assert (~outside).sum() > 0 and (outside & ~both).sum() > 0


def test_a_map_without_brain_drops_nothing(scan):
    """A map that finds (almost) no brain is what is wrong there: predict keeps every lesion, and so do the rules."""
    probs, _, image, geometry = scan
    nothing = np.full(probs.shape, BACKGROUND, np.uint8)
    box = lesion_box(probs >= 0.5)
    labels, count = label_lesions((probs >= 0.5)[box])
    assert drop_outside_brain(probs >= 0.5, nothing, geometry)[1] == 0
    assert LesionRules(nothing, image, geometry, True, 1.15).kept(labels, count, box).all()
