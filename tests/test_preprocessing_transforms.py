"""preprocess_case / revert_to_original: exact geometry, a canonical slice layout, labels that survive resampling."""
from __future__ import annotations

import copy

import numpy as np
import pytest

from conftest import oblique_direction, tiny_case
from deepwml.constants import IGNORE_LABEL
from deepwml.imageio import Geometry, Image, read_label, write_image
from deepwml.planning.plan import load_preset
from deepwml.preprocessing.orientation import canonical_orientation, to_canonical
from deepwml.preprocessing.resample import resize_label
from deepwml.preprocessing.transforms import preprocess_case, revert_to_original
from deepwml.utils.errors import ImageError

DIRECTIONS = {
    "axial": (1, 0, 0, 0, 1, 0, 0, 0, 1),
    "lps": (-1, 0, 0, 0, -1, 0, 0, 0, 1),
    "oblique": oblique_direction(12),
}


def plan_with(matrix=None, **preprocessing):
    """The paper preset with a different matrix or preprocessing settings."""
    plan = copy.deepcopy(load_preset("paper"))
    if matrix is not None:
        plan.preprocessing.matrix = list(matrix)
    for key, value in preprocessing.items():
        setattr(plan.preprocessing, key, value)
    return plan


def sagittal_case(n_slices=8, size=64, seed=0):
    """A stack acquired sagittally: thick slices along x (numpy axis 2)."""
    image, label, _ = tiny_case(shape_zyx=(n_slices, size, size), seed=seed, n_lesions=6)
    image, label = np.moveaxis(image, 0, 2).copy(), np.moveaxis(label, 0, 2).copy()
    geometry = Geometry((n_slices, size, size), (6.0, 0.9, 0.9), (10.0, -20.0, 5.0))
    return image, label, geometry


def make_case(kind, shape=(6, 64, 64)):
    """(image, label, geometry) for an orientation kind."""
    if kind == "sagittal":
        return sagittal_case(n_slices=shape[0], size=shape[1])
    return tiny_case(shape_zyx=shape, direction=DIRECTIONS[kind], n_lesions=6)


def dice(a, b):
    """Dice of two boolean arrays."""
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


@pytest.mark.parametrize("kind", ["axial", "lps", "oblique", "sagittal"])
def test_round_trip_is_exact_on_disk_when_the_plan_keeps_the_grid(tmp_path, kind):
    image, label, geometry = make_case(kind)
    path = write_image(label, geometry, tmp_path / "label.nii.gz")
    _, label_pp, props = preprocess_case(Image(image, geometry), plan_with(matrix=(64, 64)), label)
    back = revert_to_original(label_pp, props)
    out = write_image(back, Geometry.from_dict(props["geometry"]), tmp_path / "back.nii.gz")
    original, reverted = read_label(path), read_label(out)
    assert not original.geometry.mismatches(reverted.geometry, tol=1e-6)
    assert np.array_equal(original.array, reverted.array)


@pytest.mark.parametrize("kind", ["axial", "lps", "oblique", "sagittal"])
@pytest.mark.parametrize("inplane", [(64, 64), (50, 58), (128, 100)])
def test_round_trip_dice_when_the_plan_grid_is_at_least_as_fine(kind, inplane):
    image, label, geometry = make_case(kind, shape=(6,) + inplane)
    if kind == "sagittal":
        image, label, geometry = sagittal_case(size=inplane[0])
    plan = plan_with(matrix=(128, 128))
    _, label_pp, props = preprocess_case(Image(image, geometry), plan, label)
    assert props["shape_after_resampling"][1:] == [128, 128]
    mask_back = revert_to_original(label_pp, props)
    prob_back = revert_to_original(label_pp.astype(np.float32), props, order=1) >= 0.5
    assert mask_back.shape == label.shape and mask_back.dtype == np.uint8
    assert dice(mask_back == 1, label == 1) >= 0.99
    assert dice(prob_back, label == 1) >= 0.99


def test_downsampling_round_trip_is_approximate_and_measured():
    # 512 → 256 cannot be undone exactly; probabilities reverted linearly and thresholded still overlap closely
    image, label, geometry = tiny_case(shape_zyx=(4, 512, 512), spacing_xyz=(0.47, 0.47, 7.5), n_lesions=8, seed=3)
    _, label_pp, props = preprocess_case(Image(image, geometry), plan_with(matrix=(256, 256)), label)
    back = revert_to_original(label_pp.astype(np.float32), props, order=1) >= 0.5
    measured = dice(back, label == 1)
    print(f"512->256->512 lesion Dice {measured:.4f}")
    assert 0.95 <= measured < 1.0


@pytest.mark.parametrize("kind", ["axial", "lps", "oblique"])
def test_canonical_columns_run_right_to_left_and_rows_anterior_to_posterior(kind):
    _, _, geometry = make_case(kind)
    world = world_of_canonical_pixels(geometry)
    # one step along W moves toward the patient's left (+x in LPS), one step along H toward posterior (+y)
    assert np.all(np.diff(world[..., 0], axis=2) > 0)
    assert np.all(np.diff(world[..., 1], axis=1) > 0)
    assert np.all(np.diff(world[..., 2], axis=0) > 0)


def test_sagittal_stack_has_its_slice_axis_first_and_superior_at_the_top():
    _, _, geometry = sagittal_case()
    orientation = canonical_orientation(geometry)
    assert orientation.codes == "LIP"
    world = world_of_canonical_pixels(geometry)
    assert np.all(np.diff(world[..., 0], axis=0) > 0)  # slices step left
    assert np.all(np.diff(world[..., 2], axis=1) < 0)  # rows step down
    assert np.all(np.diff(world[..., 1], axis=2) > 0)  # columns step posterior


def world_of_canonical_pixels(geometry):
    """World (LPS) position of every pixel of the canonical [S, H, W] array."""
    zyx = np.stack(np.meshgrid(*[np.arange(n) for n in reversed(geometry.size)], indexing="ij"), axis=-1)
    canonical = np.stack([to_canonical(zyx[..., k], canonical_orientation(geometry)) for k in range(3)], axis=-1)
    xyz = canonical[..., ::-1].reshape(-1, 3)
    return geometry.index_to_world(xyz).reshape(canonical.shape)


def test_lps_stack_gives_the_same_picture_as_the_axial_one():
    image, label, axial = tiny_case(direction=DIRECTIONS["axial"])
    lps = Geometry(axial.size, axial.spacing, axial.origin, DIRECTIONS["lps"])
    # the same anatomy stored with x and y reversed
    flipped = image[:, ::-1, ::-1].copy()
    a, _, _ = preprocess_case(Image(image, axial), plan_with(matrix=(64, 64)))
    b, _, _ = preprocess_case(Image(flipped, lps), plan_with(matrix=(64, 64)))
    assert np.array_equal(a, b)


def test_slices_are_never_mixed():
    image, label, geometry = tiny_case(shape_zyx=(6, 50, 70))
    plan = plan_with(matrix=(96, 96), normalization="none", cache_dtype="float32")
    before, _, props = preprocess_case(Image(image, geometry), plan)
    changed = image.copy()
    changed[2] += 50
    after, _, _ = preprocess_case(Image(changed, geometry), plan)
    differs = np.abs(after[0] - before[0]).max(axis=(1, 2)) > 1e-4
    assert before.shape[:2] == (1, 6) and props["spacing_after_resampling"][0] == 6.0
    assert differs.tolist() == [False, False, True, False, False, False]


def test_target_spacing_mode_keeps_the_field_of_view():
    image, label, geometry = tiny_case(shape_zyx=(5, 60, 80), spacing_xyz=(0.5, 0.8, 6.0))
    plan = plan_with(inplane_mode="target_spacing", target_spacing=[0.4, 0.4])
    image_pp, label_pp, props = preprocess_case(Image(image, geometry), plan, label)
    # FOV 48 mm × 40 mm at 0.4 mm → 120 × 100
    assert image_pp.shape == (1, 5, 120, 100) and label_pp.shape == (5, 120, 100)
    assert props["spacing_after_resampling"] == pytest.approx([6.0, 0.4, 0.4])
    assert dice(revert_to_original(label_pp, props) == 1, label == 1) >= 0.99


def test_normalisation_is_a_zscore_inside_the_head():
    image, _, geometry = tiny_case(shape_zyx=(6, 64, 64))
    plan = plan_with(matrix=(64, 64), cache_dtype="float32")
    image_pp, _, props = preprocess_case(Image(image * 3.7 + 250, geometry), plan)
    stats = props["normalization"]
    assert stats["scheme"] == "zscore_head" and stats["clip_low"] < stats["clip_high"]
    yy, xx = np.meshgrid(np.linspace(-1, 1, 64), np.linspace(-1, 1, 64), indexing="ij")
    ellipse = (yy / 0.85) ** 2 + (xx / 0.7) ** 2 < 1
    inside = image_pp[0][:, ellipse]
    # scale and offset of the scanner are gone; the head is the ellipse (ventricles filled in)
    assert abs(inside.mean()) < 0.1 and 0.9 < inside.std() < 1.1
    assert props["head_fraction"] == pytest.approx(ellipse.mean(), abs=0.02)
    assert image_pp.dtype == np.float32


@pytest.mark.parametrize("scale", [1e-8, 1e8])
def test_a_scan_stored_in_tiny_or_huge_units_is_normalised_as_the_scan_itself(scale):
    """Intensity units are arbitrary: a scan at 1e-8 (a spread far under 1e-6) is z-scored like the scan as stored,
    not taken for a constant image and left unscaled; a constant image still is (no division by zero)."""
    image, _, geometry = tiny_case(shape_zyx=(6, 64, 64))
    plan = plan_with(matrix=(64, 64), cache_dtype="float32")
    stored, _, stored_props = preprocess_case(Image(image.astype(np.float32), geometry), plan)
    scaled, _, props = preprocess_case(Image((image * scale).astype(np.float32), geometry), plan)
    assert props["normalization"]["std"] == pytest.approx(scale * stored_props["normalization"]["std"], rel=1e-3)
    assert np.allclose(scaled, stored, atol=1e-3)
    constant, _, props = preprocess_case(Image(np.full(image.shape, 1000.0, np.float32), geometry), plan)
    assert props["normalization"]["std"] == 1.0 and np.isfinite(constant).all()


def test_ignore_label_is_kept_as_255_and_lesion_wins_ties():
    image, label, geometry = tiny_case(shape_zyx=(4, 64, 64))
    raw = label.astype(np.int16)
    raw[:, :8, :8] = 2
    _, label_pp, props = preprocess_case(Image(image, geometry), plan_with(matrix=(128, 128)), raw, ignore_value=2)
    assert set(np.unique(label_pp)) <= {0, 1, IGNORE_LABEL}
    assert (label_pp[:, :16, :16] == IGNORE_LABEL).all()
    back = revert_to_original(label_pp, props)
    assert np.array_equal(back == IGNORE_LABEL, raw == 2) and np.array_equal(back == 1, raw == 1)


def test_thin_and_tiny_lesions_survive_downsampling():
    label = np.zeros((3, 64, 64), np.uint8)
    label[0, 21, 5:60] = 1  # one pixel wide
    label[1, 11:13, 21:23] = 1  # 2×2 straddling the coarse grid
    label[2, 40, 40] = 1  # a single pixel
    small = resize_label(label, (32, 32))
    assert [(small[k] == 1).sum() > 0 for k in range(3)] == [True, True, True]
    assert (small[0] == 1).sum() >= 27


def test_unknown_label_values_and_wrong_shapes_are_errors_naming_the_file(tmp_path):
    image, label, geometry = tiny_case()
    img = Image(image, geometry, tmp_path / "case.nii.gz")
    bad = label.astype(np.int16)
    bad[0, 0, 0] = 7
    with pytest.raises(ImageError, match=r"case.nii.gz.*values \[7\]"):
        preprocess_case(img, plan_with(matrix=(64, 64)), bad)
    with pytest.raises(ImageError, match=r"case.nii.gz.*label shape"):
        preprocess_case(img, plan_with(matrix=(64, 64)), label[:-1])


def test_revert_rejects_an_array_of_the_wrong_shape():
    image, _, geometry = tiny_case()
    image_pp, _, props = preprocess_case(Image(image, geometry), plan_with(matrix=(64, 64)))
    with pytest.raises(ValueError, match="does not match"):
        revert_to_original(image_pp[0, :, :32], props)


@pytest.mark.parametrize(
    "shape,out_hw,order,anti_alias",
    [((5, 512, 512), (256, 256), 3, True), ((3, 96, 80), (64, 40), 3, True), ((3, 64, 48), (160, 100), 1, False),
     ((2, 60, 70), (120, 35), 3, False), ((4, 50, 50), (25, 75), 0, False), ((2, 33, 17), (32, 32), 1, True)],
    ids=["512-to-256-cubic-aa", "shrink-cubic-aa", "grow-linear", "mixed-cubic", "nearest", "odd-linear-aa"],
)
def test_fast_resampling_is_the_reference_resampling_to_float32_rounding(shape, out_hw, order, anti_alias):
    """Prediction resamples with two matrix products: the result is scipy's slice-by-slice resampling, the one
    the synthetic generator keeps, to float32 rounding (and a binary mask resampled the same way too)."""
    from deepwml.preprocessing.resample import resize_slices, resize_slices_reference

    rng = np.random.default_rng(sum(shape))
    stack = (rng.random(shape) * 1000 - 200).astype(np.float32)
    stack[:, : shape[1] // 3] += 800  # an edge, where splines ring and anti-aliasing matters
    fast = resize_slices(stack, out_hw, order=order, anti_alias=anti_alias)
    reference = resize_slices_reference(stack, out_hw, order=order, anti_alias=anti_alias)
    assert fast.shape == reference.shape == (shape[0],) + out_hw and fast.dtype == np.float32
    assert np.abs(fast - reference).max() <= 2e-6 * np.abs(reference).max()
    mask = stack > 700
    assert np.abs(resize_slices(mask, out_hw, order=1) - resize_slices_reference(mask, out_hw, order=1)).max() < 1e-5


@pytest.mark.parametrize("n_in, n_out, order, sigma", [(512, 256, 3, 0.5), (512, 160, 3, 1.1), (256, 512, 3, 0.0)])
def test_resampling_operators_hold_no_denormal_weight(n_in, n_out, order, sigma):
    """A cubic spline's weights decay without end; those under float32's normal range would make every product
    ~10x slower on x86, so they are zero (the result stays the reference's to float32 rounding, tested above)."""
    from deepwml.preprocessing.resample import _axis_operator

    op = _axis_operator(n_in, n_out, order, sigma)
    assert np.all((op == 0) | (np.abs(op) >= np.finfo(np.float32).tiny))
    assert np.count_nonzero(op) < op.size / 4  # a band: each output pixel weighs a few inputs
