"""Lesion location classes, McDonald 2017 DIS counts and the Fazekas estimate on constructed volumes with known answers."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from deepwml.anatomy.fazekas import fazekas_from_locations, ventricle_outline_mm
from deepwml.anatomy.labels import CORTEX, INFRATENTORIAL, VENTRICLE, WHITE_MATTER
from deepwml.anatomy.volumes import VOLUME_COLUMNS
from deepwml.imageio import Geometry
from deepwml.inference.lesion_report import (
    ANATOMY_SUMMARY_COLUMNS,
    BRIGHT_SHARE_COLUMN,
    FAINT_CORTEX_COLUMN,
    SKULL_STRIP_COLUMN,
    OUTSIDE_BRAIN_COLUMN,
    LESION_COLUMNS,
    LOCATION_COLUMNS,
    SUMMARY_COLUMNS,
    locate_mask,
    failed_case,
    lesion_table,
    summarize_case,
    summary_frame,
)
from deepwml.utils.errors import DeepWMLError


def _geometry(shape_zyx, spacing_xyz=(0.5, 0.5, 6.0)) -> Geometry:
    return Geometry(tuple(shape_zyx[::-1]), spacing_xyz, (0.0, 0.0, 0.0))


def _brain(shape=(5, 64, 64)) -> np.ndarray:
    """White matter everywhere, a ventricle on the middle slice only (rows and columns 20-29)."""
    anatomy = np.full(shape, WHITE_MATTER, np.uint8)
    anatomy[2, 20:30, 20:30] = VENTRICLE
    return anatomy


def _only_location(mask, anatomy, spacing=(0.5, 0.5, 6.0)) -> pd.Series:
    table = lesion_table(mask, _geometry(mask.shape, spacing), anatomy)
    assert len(table) == 1
    return table.iloc[0]


def test_lesion_touching_the_ventricle_in_plane_is_periventricular():
    mask = np.zeros((5, 64, 64), np.uint8)
    mask[2, 22:26, 30:36] = 1  # the column right next to the ventricle's last one
    row = _only_location(mask, _brain())
    assert row["location"] == "periventricular"
    assert row["ventricle_distance_mm"] == pytest.approx(0.5)


def test_one_voxel_of_white_matter_is_contact_at_half_a_millimetre_but_not_at_one_millimetre():
    mask = np.zeros((5, 64, 64), np.uint8)
    mask[2, 22:26, 31:37] = 1  # one pixel of white matter between lesion and ventricle
    at_half = _only_location(mask, _brain())
    assert (at_half["location"], at_half["ventricle_distance_mm"]) == ("periventricular", pytest.approx(1.0))
    at_one = _only_location(mask, _brain(), spacing=(1.0, 1.0, 6.0))
    assert (at_one["location"], at_one["ventricle_distance_mm"]) == ("deep", pytest.approx(2.0))
    wider = np.zeros_like(mask)
    wider[2, 22:26, 33:39] = 1  # three pixels (1.5 mm) of white matter at 0.5 mm
    far = _only_location(wider, _brain())
    assert (far["location"], far["ventricle_distance_mm"]) == ("deep", pytest.approx(2.0))


def test_through_plane_neighbour_touches_on_thin_slices_only():
    mask = np.zeros((5, 64, 64), np.uint8)
    mask[3, 22:26, 22:28] = 1  # right above the ventricle, on the next slice
    thick = _only_location(mask, _brain())
    # 6 mm slabs: the centres are 6 mm apart, white matter may lie between; beyond 5 mm no distance is reported
    assert thick["location"] == "deep" and np.isnan(thick["ventricle_distance_mm"])
    thin = _only_location(mask, _brain(), spacing=(0.5, 0.5, 1.0))
    assert (thin["location"], thin["ventricle_distance_mm"]) == ("periventricular", pytest.approx(1.0))
    mask[3] = 0
    mask[4, 22:26, 22:28] = 1  # two slices away is never contact
    assert _only_location(mask, _brain(), spacing=(0.5, 0.5, 1.0))["location"] == "deep"


def test_juxtacortical_cortical_infratentorial_and_the_priority_order():
    anatomy = _brain()
    anatomy[:, :4, :] = CORTEX
    anatomy[2, 20:30, 36:40] = CORTEX
    anatomy[0, 40:, :] = INFRATENTORIAL
    anatomy[0, 50:52, 30:34] = VENTRICLE  # a fourth ventricle
    cases = {
        "juxtacortical": (2, slice(4, 8), slice(44, 50)),
        "cortical": (3, slice(0, 3), slice(44, 50)),
        "infratentorial": (0, slice(52, 56), slice(30, 34)),  # touches the fourth ventricle: infratentorial first
        "periventricular": (2, slice(22, 26), slice(30, 36)),  # touches ventricle and cortex: periventricular first
        "deep": (4, slice(40, 44), slice(40, 44)),
    }
    for expected, index in cases.items():
        mask = np.zeros(anatomy.shape, np.uint8)
        mask[index] = 1
        assert _only_location(mask, anatomy)["location"] == expected, expected
    outside = np.zeros(anatomy.shape, np.uint8)
    outside[2, 23:27, 23:27] = 1  # inside the ventricle: not parenchyma
    assert _only_location(outside, anatomy)["location"] == "unclassified"


def test_sagittal_stack_is_classified_like_the_same_axial_one():
    mask = np.zeros((5, 64, 64), np.uint8)
    mask[2, 22:26, 31:37] = 1
    mask[3, 40:44, 22:28] = 1
    axial = lesion_table(mask, _geometry(mask.shape), _brain())
    # the same voxels with the slice axis along x: numpy (z, y, x) = (64, 64, 5) with 6 mm x spacing
    sagittal = lesion_table(mask.transpose(2, 1, 0), _geometry((64, 64, 5), (6.0, 0.5, 0.5)), _brain().transpose(2, 1, 0))
    columns = ["location", "ventricle_distance_mm", "long_axis_mm"]
    pd.testing.assert_frame_equal(axial[columns], sagittal[columns])


def test_mcdonald_regions_count_lesions_of_three_millimetres_or_more():
    anatomy = _brain((5, 96, 96))
    anatomy[:, :4, :] = CORTEX
    anatomy[0, 60:, :] = INFRATENTORIAL
    mask = np.zeros(anatomy.shape, np.uint8)
    mask[2, 22:26, 30:40] = 1  # periventricular, 5 mm long
    mask[2, 4:8, 50:60] = 1  # juxtacortical, 5 mm
    mask[0, 70:73, 40:44] = 1  # infratentorial but 2 mm: not counted
    mask[4, 50:54, 50:60] = 1  # deep: no DIS region
    geometry = _geometry(mask.shape)
    table = lesion_table(mask, geometry, anatomy)
    assert sorted(table["location"]) == ["deep", "infratentorial", "juxtacortical", "periventricular"]
    fields = summarize_case("c", mask, geometry, table, anatomy).anatomy
    assert (fields["mcdonald_periventricular"], fields["mcdonald_cortical_juxtacortical"], fields["mcdonald_infratentorial"]) == (1, 1, 0)
    assert fields["mcdonald_dis_regions"] == 2
    assert fields["mcdonald_dis_region_names"] == "periventricular;cortical_juxtacortical"
    assert (fields["periventricular_count"], fields["infratentorial_count"], fields["deep_count"]) == (1, 1, 1)


def test_long_axis_is_the_length_of_an_elongated_lesion():
    mask = np.zeros((3, 64, 64), np.uint8)
    yy, xx = np.mgrid[:64, :64]
    mask[1] = ((yy - 32) / 20.0) ** 2 + ((xx - 32) / 6.0) ** 2 <= 1  # ellipse 40 x 12 pixels
    row = _only_location(mask, np.full(mask.shape, WHITE_MATTER, np.uint8))
    assert row["long_axis_mm"] == pytest.approx(20.0, rel=0.05)


def test_tables_and_summaries_gain_the_anatomy_columns_only_with_a_map():
    mask = np.zeros((5, 64, 64), np.uint8)
    mask[2, 22:26, 30:36] = 1
    mask[4, 40:44, 40:44] = 1
    geometry = _geometry(mask.shape)
    plain = lesion_table(mask, geometry)
    located = lesion_table(mask, geometry, _brain())
    assert list(plain.columns) == LESION_COLUMNS
    assert list(located.columns) == LESION_COLUMNS + LOCATION_COLUMNS
    pd.testing.assert_frame_equal(located[LESION_COLUMNS], plain)
    empty = lesion_table(np.zeros_like(mask), geometry, _brain())
    assert len(empty) == 0 and list(empty.columns) == LESION_COLUMNS + LOCATION_COLUMNS
    rows = [summarize_case("a", mask, geometry, plain), failed_case("b", "broken")]
    assert list(summary_frame(rows).columns) == SUMMARY_COLUMNS
    with_map = summarize_case("a", mask, geometry, located, _brain())
    # recomputed from the mask when the table does not carry its located lesions
    assert summarize_case("a", mask, geometry, plain, _brain()).anatomy == with_map.anatomy
    frame = summary_frame([with_map, failed_case("b", "broken")])
    # (the counts of lesions dropped outside the brain and in the cortex come only from a run that drops them:
    # test_outside_brain.py, test_cortex_contrast.py; the contrast check's figure from deepwml_predict, which has the
    # scan: test_flair_check.py; what the lesion model saw from a run that strips: test_skull_strip.py)
    assert list(frame.columns) == SUMMARY_COLUMNS + [c for c in ANATOMY_SUMMARY_COLUMNS if c not in (
        OUTSIDE_BRAIN_COLUMN, FAINT_CORTEX_COLUMN, BRIGHT_SHARE_COLUMN, SKULL_STRIP_COLUMN)]
    assert frame.loc[0, "periventricular_count"] == 1 and pd.isna(frame.loc[1, "fazekas_deep"])


def test_anatomy_on_another_grid_is_refused():
    mask = np.zeros((5, 64, 64), np.uint8)
    mask[2, 22:26, 30:36] = 1
    with pytest.raises(DeepWMLError, match=r"anatomy map has shape \(5, 32, 32\) but the lesion mask has \(5, 64, 64\)"):
        lesion_table(mask, _geometry(mask.shape), np.zeros((5, 32, 32), np.uint8))
    with pytest.raises(DeepWMLError, match="integer class labels"):
        lesion_table(mask, _geometry(mask.shape), _brain().astype(np.float32))


# --- Fazekas ---------------------------------------------------------------------------------------------------

SHAPE = (5, 160, 160)


def _ventricles() -> np.ndarray:
    """Two lateral ventricles, elliptic cross-sections 16 x 6 mm, on slices 1-3, in white matter."""
    anatomy = np.full(SHAPE, WHITE_MATTER, np.uint8)
    yy, xx = np.mgrid[: SHAPE[1], : SHAPE[2]]
    for cx in (45, 71):
        anatomy[1:4][:, ((yy - 55) / 16.0) ** 2 + ((xx - cx) / 6.0) ** 2 <= 1] = VENTRICLE
    return anatomy


def _grades(mask: np.ndarray, anatomy: np.ndarray):
    geometry = _geometry(mask.shape)
    return fazekas_from_locations(locate_mask(mask > 0, geometry, anatomy), anatomy, geometry)


def _lining(anatomy: np.ndarray, pixels: float) -> np.ndarray:
    """A lesion lining ``pixels`` thick around the ventricles, in plane, on their slices."""
    from scipy import ndimage

    ventricle = anatomy == VENTRICLE
    distance = np.stack([ndimage.distance_transform_edt(~v) for v in ventricle])
    return ((distance > 0) & (distance <= pixels) & ventricle.any(axis=(1, 2))[:, None, None]).astype(np.uint8)


def test_fazekas_periventricular_caps_lining_halo_and_extension():
    anatomy = _ventricles()
    none = np.zeros(SHAPE, np.uint8)
    assert (_grades(none, anatomy).periventricular, _grades(none, anatomy).deep) == (0, 0)
    caps = np.zeros(SHAPE, np.uint8)
    for cx in (45, 71):
        caps[1:3, 33:39, cx - 3 : cx + 3] = 1  # frontal caps, 3 mm thick
        caps[1:3, 72:76, cx - 3 : cx + 3] = 1  # occipital caps
    assert _grades(caps, anatomy).periventricular == 1
    pencil = _lining(anatomy, 1.5)  # a pixel or two: pencil-thin
    assert _grades(pencil, anatomy).periventricular == 1
    halo = _lining(anatomy, 6)  # 3 mm all round
    estimate = _grades(halo, anatomy)
    assert estimate.periventricular == 2 and 2.0 <= estimate.pv_lining_mm <= 4.0 and estimate.deep == 0
    band = halo.copy()
    band[1:4, 45:85, 80:150] = 1  # a confluent area growing out of the halo deep into the white matter
    estimate = _grades(band, anatomy)
    assert (estimate.periventricular, estimate.deep) == (3, 3)
    assert estimate.pv_deep_part_mm >= 25.0
    one_focus = np.zeros(SHAPE, np.uint8)
    one_focus[2, 53:57, 51:55] = 1  # a single 2 mm focus touching a wall is not a lining
    assert _grades(one_focus, anatomy).periventricular == 0


def test_fazekas_deep_punctate_beginning_confluence_and_large_areas():
    anatomy = _ventricles()
    punctate = np.zeros(SHAPE, np.uint8)
    for r, c in ((110, 30), (120, 100), (140, 130)):
        punctate[2, r : r + 6, c : c + 6] = 1  # 3 mm foci
    assert _grades(punctate, anatomy).deep == 1
    beginning = punctate.copy()
    beginning[3, 100:106, 100:130] = 1  # 15 mm
    assert _grades(beginning, anatomy).deep == 2
    large = punctate.copy()
    large[3, 95:115, 90:150] = 1  # 30 mm
    estimate = _grades(large, anatomy)
    assert estimate.deep == 3 and estimate.periventricular == 0 and estimate.deep_long_axis_mm >= 25.0


def test_ventricle_outline_length_follows_the_outline_of_a_disk():
    anatomy = np.full((1, 128, 128), WHITE_MATTER, np.uint8)
    yy, xx = np.mgrid[:128, :128]
    anatomy[0][(yy - 64) ** 2 + (xx - 64) ** 2 <= 40**2] = VENTRICLE
    length = ventricle_outline_mm(anatomy, _geometry(anatomy.shape))
    assert length == pytest.approx(2 * np.pi * 40 * 0.5, rel=0.05)
    anatomy[anatomy == WHITE_MATTER] = INFRATENTORIAL  # a fourth ventricle's outline does not count
    assert ventricle_outline_mm(anatomy, _geometry(anatomy.shape)) == 0.0


def _nearest_mm(lesion: np.ndarray, structure: np.ndarray, spacing_zyx) -> float:
    """Brute force: the smallest centre-to-centre distance (mm) between any lesion voxel and any structure voxel."""
    a = np.argwhere(lesion) * np.asarray(spacing_zyx)
    b = np.argwhere(structure) * np.asarray(spacing_zyx)
    if len(b) == 0:
        return np.inf
    return float(np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2)).min())


@pytest.mark.parametrize("spacing_xyz", [(0.5, 0.7, 6.0), (0.9, 0.9, 1.0)])
def test_distances_reach_and_contact_match_a_brute_force_search_over_every_voxel_pair(spacing_xyz):
    """Many lesions at once (big ones whose inside is far from everything, ones on a structure, ones at the image
    edge): each distance is the closest voxel pair when within 5 mm and missing beyond, as the one-lesion-at-a-time
    definition says; a periventricular lesion's reach is its farthest voxel from the wall on slices showing it."""
    rng = np.random.default_rng(3)
    shape = (6, 40, 44)
    anatomy = np.full(shape, WHITE_MATTER, np.uint8)
    anatomy[:, :3] = CORTEX
    anatomy[:, :, -4:] = CORTEX
    anatomy[1:4, 14:22, 10:20] = VENTRICLE
    anatomy[rng.random(shape) < 0.01] = CORTEX
    mask = rng.random(shape) < 0.03
    mask[2:5, 24:34, 20:32] = True  # a block whose inside lies more than 5 mm from any structure in-plane
    anatomy[2:5, 24:34, 20:32] = WHITE_MATTER
    anatomy[3, 29, 26] = CORTEX  # ... but for one cortex voxel deep inside it: distance 0 there, not on its surface
    mask[2, 15:18, 12:15] = True  # inside the ventricle
    mask[0, 0:2, 30:34] = True  # on the image edge, over the cortex
    geometry = _geometry(shape, spacing_xyz)
    located = locate_mask(mask, geometry, anatomy)
    from deepwml.inference.lesion_report import label_lesions

    labels, count = label_lesions(mask)
    spacing_zyx = spacing_xyz[::-1]
    assert count == len(located) > 20
    for i in range(count):
        lesion = labels == i + 1
        for structure, found in ((anatomy == VENTRICLE, located.ventricle_distance_mm[i]), (anatomy == CORTEX, located.cortex_distance_mm[i])):
            truth = _nearest_mm(lesion, structure, spacing_zyx)
            if truth <= 5.0 - 1e-6:
                assert found == pytest.approx(truth, abs=1e-5)
            else:
                assert np.isnan(found) or truth <= 5.0 + 1e-6
        # the 10 mm rule counts the lesion's voxels within 10 mm (3D) of any ventricle voxel (exact distances)
        near = ndimage.distance_transform_edt(anatomy != VENTRICLE, sampling=spacing_zyx)[lesion]
        assert located.voxels[i] == lesion.sum()
        assert np.count_nonzero(near < 10.0 - 1e-6) <= located.near_ventricle_voxels[i] <= np.count_nonzero(near <= 10.0 + 1e-6)
        if located.location[i] == "periventricular":
            # in-plane distance to the ventricle on the voxel's own slice, capped at 10 mm, over slices that show it
            reach = []
            for s, r, c in np.argwhere(lesion):
                walls = np.argwhere(anatomy[s] == VENTRICLE)
                if len(walls):
                    reach.append(min(10.0, float(np.sqrt((((walls - [r, c]) * spacing_zyx[1:]) ** 2).sum(axis=1)).min())))
            if reach:
                assert located.wall_extent_mm[i] == pytest.approx(max(reach), abs=1e-5)
                assert located.near_wall_area_mm2[i] == pytest.approx(sum(d < 10.0 for d in reach) * spacing_zyx[1] * spacing_zyx[2])
            else:
                assert np.isnan(located.wall_extent_mm[i])
        else:
            assert np.isnan(located.wall_extent_mm[i])


def test_volumes_per_location_and_by_the_ten_millimetre_rule():
    """Each class's lesion volume; the supratentorial lesions' voxels within 10 mm (3D) of the ventricles and beyond
    (one periventricular lesion split between the two), infratentorial lesions in neither, even beside the fourth
    ventricle."""
    anatomy = _brain()
    anatomy[4, :12, :12] = INFRATENTORIAL
    anatomy[4, 5, 5] = VENTRICLE  # a fourth ventricle
    mask = np.zeros(anatomy.shape, np.uint8)
    mask[2, 22:26, 30:60] = 1  # from the wall out to 15 mm: columns 30-49 lie within 10 mm (0.5 mm pixels), 50-59 beyond
    mask[0, 50:54, 50:54] = 1  # two 6 mm slices above the ventricle: beyond
    mask[4, 5:7, 7:9] = 1  # infratentorial, beside the fourth ventricle
    geometry = _geometry(mask.shape)
    table = lesion_table(mask, geometry, anatomy)
    assert sorted(table["location"]) == ["deep", "infratentorial", "periventricular"]
    fields = summarize_case("c", mask, geometry, table, anatomy).anatomy
    voxel_ml = 0.5 * 0.5 * 6.0 / 1000.0
    assert fields["periventricular_volume_ml"] == pytest.approx(120 * voxel_ml)
    assert fields["deep_volume_ml"] == pytest.approx(16 * voxel_ml)
    assert fields["infratentorial_volume_ml"] == pytest.approx(4 * voxel_ml)
    assert fields["cortical_volume_ml"] == fields["juxtacortical_volume_ml"] == fields["unclassified_volume_ml"] == 0.0
    assert fields["volume_within_10mm_of_ventricles_ml"] == pytest.approx(80 * voxel_ml)
    assert fields["volume_beyond_10mm_of_ventricles_ml"] == pytest.approx((40 + 16) * voxel_ml)
    # the same figures without the table's located lesions to reuse, and none without a lesion
    assert {k: v for k, v in summarize_case("c", mask, geometry, table.iloc[:0], anatomy).anatomy.items() if k.endswith("_ml")} == \
        {k: v for k, v in fields.items() if k.endswith("_ml")}
    empty = summarize_case("e", np.zeros_like(mask), geometry, lesion_table(np.zeros_like(mask), geometry, anatomy), anatomy).anatomy
    assert all(empty[k] == 0.0 for k in empty if k.endswith("_ml") and k not in VOLUME_COLUMNS)
    # the brain's own volumes do not depend on the lesions
    assert empty["brain_volume_ml"] == fields["brain_volume_ml"] > 0 and empty["lesion_percent_of_brain"] == 0.0


@pytest.mark.parametrize("spacing_xyz", [(0.47, 0.47, 6.5), (0.9, 0.9, 3.0), (1.0, 1.0, 1.0), (0.5, 0.7, 1.4)])
def test_the_classes_alone_are_the_lesion_table_s_classes(spacing_xyz):
    """lesion_classes (what the cortex bound reads at every threshold of a search) searches contact only, and gives
    every lesion the class locate_lesions gives it: near, touching and on the ventricles and the cortex, in the
    infratentorial class, outside the parenchyma, and on thin slices where through-plane neighbours touch."""
    from deepwml.anatomy.location import lesion_classes, locate_lesions
    from deepwml.inference.lesion_report import label_lesions, lesion_box

    seen = set()
    for seed in range(3):
        rng = np.random.default_rng(seed)
        shape = (7, 48, 52)
        anatomy = np.full(shape, WHITE_MATTER, np.uint8)
        anatomy[:, :4] = CORTEX
        anatomy[:, :, -5:] = CORTEX
        anatomy[1:5, 16:24, 12:22] = VENTRICLE
        anatomy[5:, 30:40, 30:40] = INFRATENTORIAL
        anatomy[:, 44:] = 0  # background
        anatomy[rng.random(shape) < 0.005] = CORTEX
        mask = ndimage.binary_dilation(rng.random(shape) < 0.01, iterations=int(rng.integers(1, 3)))
        geometry = _geometry(shape, spacing_xyz)
        box = lesion_box(mask)
        labels, count = label_lesions(mask[box])
        offset = tuple(b.start for b in box)
        full = locate_lesions(labels, count, offset, anatomy, geometry).location
        assert count > 10
        assert list(lesion_classes(labels, count, offset, anatomy, geometry)) == list(full)
        seen |= set(full)
    assert len(seen) >= 5
