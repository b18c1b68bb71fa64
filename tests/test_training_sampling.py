"""Slice sampling: lesion components within slices, foreground oversampling that does not starve small lesions."""
from __future__ import annotations

import numpy as np

from deepwml.training.sampling import (
    build_slice_index,
    crop_box,
    extract_patch,
    lesion_components,
    n_foreground,
    sample_slices,
)


def _label():
    label = np.zeros((3, 20, 20), np.uint8)
    label[0, 2:4, 2:4] = 1  # tiny lesion
    label[0, 10:18, 10:18] = 1  # large lesion, same slice
    label[1, 2:4, 2:4] = 1  # continues into the next slice: a separate 2D component
    label[1, 5, 5] = 255  # ignored pixel is no lesion
    return label


def test_components_are_per_slice_with_centroids():
    z, centre = lesion_components(_label())
    order = np.lexsort((centre[:, 0], z))
    assert z[order].tolist() == [0, 0, 1]
    assert np.allclose(centre[order], [[2.5, 2.5], [13.5, 13.5], [2.5, 2.5]])


def test_index_spans_cases_and_slices():
    a, b = _label(), np.zeros((2, 20, 20), np.uint8)
    index = build_slice_index([("a", a), ("b", b)])
    assert index.n_slices == 5 and index.n_components == 3
    assert index.slice_case.tolist() == [0, 0, 0, 1, 1]
    assert index.slice_z.tolist() == [0, 1, 2, 0, 1]


def test_foreground_fraction_is_kept_on_average():
    rng = np.random.default_rng(0)
    counts = [n_foreground(2, 0.33, rng) for _ in range(4000)]
    assert abs(np.mean(counts) - 0.66) < 0.05
    assert n_foreground(8, 0.5, rng) == 4


def test_small_lesions_are_drawn_as_often_as_large_ones():
    label = np.zeros((2, 40, 40), np.uint8)
    label[0, 1:39, 1:39] = 1  # one huge lesion on slice 0
    label[1, 5, 5] = 1  # one single-pixel lesion on slice 1
    index = build_slice_index([("c", label)])
    rng = np.random.default_rng(1)
    picks = [s for _ in range(2000) for s, centre in sample_slices(index, 4, 1.0, rng)]
    frac_small = np.mean(np.asarray(picks) == 1)
    # sampling by lesion pixels would pick the single pixel ~1/1445 of the time
    assert 0.45 < frac_small < 0.55


def test_without_lesions_batches_are_random_slices():
    index = build_slice_index([("c", np.zeros((4, 8, 8), np.uint8))])
    picks = sample_slices(index, 6, 1.0, np.random.default_rng(0))
    assert len(picks) == 6 and all(centre is None for _, centre in picks)


def test_crop_keeps_the_lesion_inside_and_pads_small_slices():
    rng = np.random.default_rng(0)
    for _ in range(200):
        (y0, y1), (x0, x1) = crop_box((100, 120), (32, 32), np.array([90.0, 5.0]), rng)
        assert y0 <= 90 < y1 and x0 <= 5 < x1
        assert 0 <= y0 and y1 <= 100 and 0 <= x0 and x1 <= 120
    box = crop_box((20, 40), (32, 32), None, rng)
    patch = extract_patch(np.ones((20, 40)), box, pad_value=-3.0)
    assert patch.shape == (32, 32)
    assert (patch[:6] == -3).all() and (patch[6:26] == 1).all() and (patch[26:] == -3).all()
