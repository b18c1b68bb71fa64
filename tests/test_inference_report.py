"""Lesion tables (26-connected components, volumes, slice spans, world centroids), summaries and QC montages."""
from __future__ import annotations

import matplotlib.image
import numpy as np
import pytest
import SimpleITK as sitk

from conftest import oblique_direction, tiny_case
from deepwml.imageio import Geometry
from deepwml.inference.confidence import CONFIDENCE_COLUMNS
from deepwml.inference.lesion_contrast import background_floor, lesion_contrasts, ring_radius
from deepwml.inference.lesion_report import (
    CONTRAST_COLUMNS,
    LESION_COLUMNS,
    filter_lesions,
    label_lesions,
    lesion_table,
    slice_areas_mm2,
    summarize_case,
)
from deepwml.inference.qc import canonical_view, choose_slices, write_qc_montage


def _geometry(shape_zyx, spacing=(0.5, 0.8, 6.0), direction=oblique_direction(20)) -> Geometry:
    return Geometry(tuple(reversed(shape_zyx)), spacing, (10.0, -20.0, 30.0), direction)


def test_corner_touching_voxels_are_one_lesion_and_gaps_split_them():
    mask = np.zeros((4, 10, 10), np.uint8)
    mask[1, 2, 2] = mask[2, 3, 3] = 1  # touch by a corner only (26-connectivity joins them)
    mask[1, 7, 7] = 1  # isolated
    table = lesion_table(mask, _geometry(mask.shape))
    assert list(table.columns) == LESION_COLUMNS
    assert table["voxels"].tolist() == [2, 1] and table["lesion_id"].tolist() == [1, 2]
    assert table.loc[0, ["first_slice", "last_slice"]].tolist() == [1, 2]
    assert table.loc[1, ["first_slice", "last_slice"]].tolist() == [1, 1]
    assert table["volume_ml"].tolist() == pytest.approx([2 * 0.5 * 0.8 * 6 / 1000, 0.5 * 0.8 * 6 / 1000])


def test_centroid_is_in_world_millimetres_for_an_oblique_grid():
    mask = np.zeros((5, 12, 14), np.uint8)
    mask[2, 3:5, 6] = 1  # centroid at index (x=6, y=3.5, z=2)
    geometry = _geometry(mask.shape)
    image = sitk.Image(list(geometry.size), sitk.sitkUInt8)
    geometry.apply_to(image)
    expected = image.TransformContinuousIndexToPhysicalPoint((6.0, 3.5, 2.0))
    row = lesion_table(mask, geometry).iloc[0]
    assert [row.centroid_x_mm, row.centroid_y_mm, row.centroid_z_mm] == pytest.approx(expected, abs=1e-9)


def test_empty_mask_gives_an_empty_table_and_zero_totals():
    mask = np.zeros((3, 8, 8), np.uint8)
    geometry = _geometry(mask.shape)
    table = lesion_table(mask, geometry)
    assert len(table) == 0 and list(table.columns) == LESION_COLUMNS
    summary = summarize_case("c", mask, geometry, table)
    assert (summary.status, summary.lesion_count, summary.total_lesion_volume_ml, summary.slices_with_lesion) == ("ok", 0, 0.0, 0)


def _contrast_case():
    """A noisy scan with lesions of distinct sizes and brightness, the smallest first in scan order (so that sorting
    by size reorders them), one whose ring reaches past the lesions' box, one at the volume's edge and one in the
    background (no ring)."""
    rng = np.random.default_rng(4)
    image = rng.normal(100.0, 8.0, (4, 40, 48)).astype(np.float32)
    image[:, :, :12] = 0.0  # a stripped scan's background
    mask = np.zeros(image.shape, np.uint8)
    for (z, y, x), (h, w), bright in [((0, 5, 30), (1, 2), 1.1), ((0, 15, 20), (3, 3), 1.6), ((0, 28, 44), (4, 4), 1.45),
                                      ((1, 8, 20), (2, 6), 1.2), ((1, 30, 28), (4, 5), 1.3), ((2, 20, 0), (3, 2), 1.0)]:
        mask[z, y:y + h, x:x + w] = 1
        image[z, y:y + h, x:x + w] *= bright
    return image, mask


def test_the_contrast_column_is_each_lesion_s_own_in_its_sorted_row():
    image, mask = _contrast_case()
    geometry = _geometry(mask.shape)
    table = lesion_table(mask, geometry, probs=mask * np.float32(0.9), image=image)
    assert list(table.columns) == LESION_COLUMNS + CONFIDENCE_COLUMNS + CONTRAST_COLUMNS
    # the reference: every lesion labelled on the whole scan, measured as the filter measures it
    labels, count = label_lesions(mask)
    expected = lesion_contrasts(image, labels, count, ring_radius(tuple(reversed(geometry.spacing)), geometry.slice_axis_numpy),
                                background_floor(image))
    voxels = np.bincount(labels.ravel())[1:]
    assert len(set(voxels)) == count == len(table) == 6  # distinct sizes: a row is found by its voxel count
    assert table["voxels"].tolist() != voxels.tolist()  # the rows were reordered
    by_size = dict(zip(voxels.tolist(), expected))
    np.testing.assert_array_equal(table["contrast"].to_numpy(), [by_size[v] for v in table["voxels"]])
    assert table["contrast"].isna().tolist() == [v == 6 for v in table["voxels"]]  # the lesion in the background


def test_a_lesion_survives_a_contrast_filter_up_to_its_contrast_and_not_above():
    image, mask = _contrast_case()
    geometry = _geometry(mask.shape)
    table = lesion_table(mask, geometry, image=image)
    for contrast in table["contrast"].dropna():
        for limit, kept in ((contrast, True), (contrast * (1 + 1e-6), False)):
            survivors = lesion_table(filter_lesions(mask, geometry, image=image, min_contrast=limit), geometry)
            expected = table[~(table["contrast"] < contrast) if kept else ~(table["contrast"] <= contrast)]
            assert survivors["voxels"].tolist() == expected["voxels"].tolist()


def test_without_the_scan_there_is_no_contrast_column():
    image, mask = _contrast_case()
    geometry = _geometry(mask.shape)
    assert "contrast" not in lesion_table(mask, geometry).columns
    empty = lesion_table(np.zeros_like(mask), geometry, image=image)
    assert len(empty) == 0 and list(empty.columns) == LESION_COLUMNS + CONTRAST_COLUMNS
    with pytest.raises(ValueError, match="scan of shape"):
        lesion_table(mask, geometry, image=image[1:])


def test_slice_areas_follow_the_slice_axis_even_when_it_is_not_numpy_axis_0():
    # a sagittal stack: thick spacing along ITK x, so slices are numpy axis 2
    mask = np.zeros((20, 16, 5), np.uint8)
    mask[3:5, 2:5, 1] = 1
    mask[0, 0, 4] = 1
    geometry = Geometry((5, 16, 20), (5.0, 0.9, 0.7), (0.0, 0.0, 0.0))
    assert slice_areas_mm2(mask, geometry).tolist() == pytest.approx([0, 6 * 0.63, 0, 0, 0.63])
    table = lesion_table(mask, geometry)
    assert table.loc[0, ["first_slice", "last_slice"]].tolist() == [1, 1]
    summary = summarize_case("sag", mask, geometry, table)
    assert summary.slice_thickness_mm == 5.0 and summary.slices == 5 and summary.slices_with_lesion == 2
    assert summary.lesion_area_mm2_per_slice.split(";") == ["0.00", "3.78", "0.00", "0.00", "0.63"]


def test_same_anatomy_stored_lps_or_flipped_shows_the_same_qc_view():
    image, label, geometry = tiny_case(shape_zyx=(4, 20, 24), seed=2)
    flipped_geometry = Geometry(geometry.size, geometry.spacing, geometry.origin, (-1, 0, 0, 0, -1, 0, 0, 0, 1))
    # storing the voxels reversed along x and y with a flipped direction describes the same patient
    flipped = image[:, ::-1, ::-1]
    view_a, slices_a, spacing_a = canonical_view(image, geometry)
    view_b, slices_b, spacing_b = canonical_view(flipped, flipped_geometry)
    assert np.array_equal(view_a, view_b) and spacing_a == spacing_b
    assert slices_a.tolist() == slices_b.tolist() == [0, 1, 2, 3]
    inferior_first = Geometry(geometry.size, geometry.spacing, geometry.origin, (1, 0, 0, 0, 1, 0, 0, 0, -1))
    _, slices_c, _ = canonical_view(image, inferior_first)
    assert slices_c.tolist() == [3, 2, 1, 0]  # panels go inferior to superior, labelled with the file's slice numbers


def test_montage_shows_lesion_slices_largest_first_when_there_are_too_many():
    mask = np.zeros((30, 8, 8), bool)
    for s in range(30):
        mask[s, : 1 + s % 7, :2] = True
    chosen = choose_slices(mask, max_panels=5)
    area = mask.sum(axis=(1, 2))
    assert len(chosen) == 5 and list(chosen) == sorted(chosen)
    assert min(area[chosen]) >= sorted(area)[-5]
    assert len(choose_slices(np.zeros((30, 8, 8), bool))) == 8


@pytest.mark.parametrize("with_lesions", [True, False])
def test_qc_montage_is_a_png_with_one_panel_per_lesion_slice(tmp_path, with_lesions):
    image, label, geometry = tiny_case(shape_zyx=(6, 48, 40), seed=1, n_lesions=4)
    mask = label if with_lesions else np.zeros_like(label)
    path = write_qc_montage(image, mask, geometry, tmp_path / "qc" / "case.png", title="case")
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    if with_lesions:
        # the contour colour is present: strongly red pixels
        red = (pixels[..., 0] > 0.8) & (pixels[..., 1] < 0.4) & (pixels[..., 2] < 0.4)
        assert red.sum() > 20
    assert not list((tmp_path / "qc").glob(".*"))  # no temporary file left behind
