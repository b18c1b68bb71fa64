"""The head mask covers the whole head (scalp, skull, CSF, brain) and nothing of the background noise."""
from __future__ import annotations

import numpy as np

from deepwml.preprocessing.head_mask import head_mask


def skull_phantom(n_slices: int = 5, size: int = 96, seed: int = 0):
    """Bright scalp ring, dark bone ring, brain with dark ventricles and a fissure open to the bone; noisy background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    r = np.sqrt((yy / 0.9) ** 2 + (xx / 0.75) ** 2)
    head = r < 1.0
    scalp = (r >= 0.9) & head
    brain = r < 0.8
    fissure = (np.abs(xx) < 0.02) & brain & (yy < -0.3)
    ventricles = (yy / 0.25) ** 2 + (xx / 0.1) ** 2 < 1
    plane = np.where(scalp, 120.0, 0.0) + np.where(brain, 100.0, 0.0) - 70.0 * (ventricles | fissure)
    stack = np.repeat(plane[None], n_slices, axis=0) + rng.normal(0, 4, (n_slices, size, size))
    return stack.astype(np.float32), np.repeat(head[None], n_slices, axis=0)


def test_mask_is_the_whole_head_despite_dark_bone_ventricles_and_fissures():
    stack, head = skull_phantom()
    mask = head_mask(stack)
    iou = (mask & head).sum() / (mask | head).sum()
    assert iou > 0.97
    assert not mask[:, :3, :3].any(), "background noise in the mask"


def test_the_mask_does_not_depend_on_the_stored_intensity_scale():
    """Scans stored at 1e-20 or 1e30 (float exports of odd converters) get the same mask, without overflow warnings."""
    import warnings

    stack, _ = skull_phantom()
    expected = head_mask(stack)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for scale in (1e-20, 1e30):
            assert np.array_equal(head_mask(stack * scale), expected), scale


def test_a_constant_image_gives_the_whole_stack():
    assert head_mask(np.full((3, 16, 16), 7.0)).all()


def test_opening_and_hole_filling_give_scipy_s_in_plane_results():
    """The shifted-view opening and the labelling hole fill equal scipy's with the in-plane structure, edges included
    (a hole touching the slice edge is no hole; slices never connect)."""
    from scipy import ndimage

    from deepwml.preprocessing.head_mask import fill_holes_in_plane, open_in_plane
    from deepwml.preprocessing.resample import in_plane_structure

    rng = np.random.default_rng(0)
    structure = in_plane_structure()
    for shape in [(1, 1, 1), (2, 1, 6), (3, 5, 1), (4, 9, 11), (5, 33, 27)]:
        for density in (0.3, 0.6, 0.85):
            mask = rng.random(shape) < density
            assert np.array_equal(open_in_plane(mask), ndimage.binary_opening(mask, structure=structure))
            assert np.array_equal(fill_holes_in_plane(mask), ndimage.binary_fill_holes(mask, structure=structure))
    ring = np.zeros((2, 9, 9), bool)
    ring[0, 2:7, 2:7] = True
    ring[0, 3:6, 3:6] = False
    filled = fill_holes_in_plane(ring)
    assert filled[0, 3:6, 3:6].all() and not filled[1].any()
