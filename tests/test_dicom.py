"""DICOM series folders read back with their voxels and full geometry; ambiguous or empty folders are clear errors."""
from __future__ import annotations

from typing import Tuple

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import oblique_direction, tiny_case
from deepwml.imageio import Geometry, is_dicom_folder, list_dicom_series, read_image, read_sitk
from deepwml.utils.errors import ImageError
from deepwml_testing.dicom_series import UID_ROOT, write_dicom_series  # noqa: F401 - other tests import them from here


def _flair_int16(seed: int = 0, direction: Tuple[float, ...] = (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)) -> Tuple[np.ndarray, Geometry]:
    """A tiny FLAIR-like case as int16 (what scanners store) with its geometry."""
    image, _, geometry = tiny_case(seed=seed, shape_zyx=(5, 48, 40), spacing_xyz=(0.9, 0.8, 6.0), direction=direction)
    return np.round(image * 10).astype(np.int16), geometry


@pytest.mark.parametrize("direction", [(1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0), oblique_direction(15)], ids=["axial", "oblique"])
def test_series_reads_back_with_voxels_and_geometry(tmp_path, direction):
    array, geometry = _flair_int16(direction=direction)
    folder = write_dicom_series(tmp_path / "series", array, geometry, UID_ROOT + "2.1")
    assert is_dicom_folder(folder)
    image = read_image(folder)
    assert np.array_equal(image.array, array.astype(np.float32))
    assert not geometry.mismatches(image.geometry, tol=1e-4), geometry.mismatches(image.geometry, tol=1e-4)
    assert image.geometry.slice_axis == 2 and image.geometry.slice_thickness == pytest.approx(6.0)
    # the SimpleITK image keeps the scanner's integer type
    assert read_sitk(folder).GetPixelID() in (sitk.sitkInt16, sitk.sitkUInt16)


def test_slices_are_sorted_by_position_not_file_name(tmp_path):
    array, geometry = _flair_int16(seed=3)
    folder = write_dicom_series(tmp_path / "series", array, geometry, UID_ROOT + "3.1")
    files = sorted(folder.iterdir())
    # reverse the names so that name order is the opposite of slice order
    for f in files:
        f.rename(f.with_name("tmp_" + f.name))
    for i, f in enumerate(sorted(folder.iterdir())):
        f.rename(folder / f"img{len(files) - 1 - i:03d}.dcm")
    image = read_image(folder)
    assert np.array_equal(image.array, array.astype(np.float32))
    assert not geometry.mismatches(image.geometry, tol=1e-4)


def test_two_series_in_one_folder_need_a_uid(tmp_path):
    folder = tmp_path / "mixed"
    a, geometry = _flair_int16(seed=1)
    b, _ = _flair_int16(seed=2)
    uid_a, uid_b = UID_ROOT + "4.1", UID_ROOT + "4.2"
    write_dicom_series(folder, a, geometry, uid_a, prefix="a")
    write_dicom_series(folder, b, geometry, uid_b, prefix="b")
    assert sorted(list_dicom_series(folder)) == sorted([uid_a, uid_b])
    with pytest.raises(ImageError) as info:
        read_image(folder)
    message = str(info.value)
    assert str(folder) in message and "2 DICOM series" in message and uid_a in message and uid_b in message
    assert np.array_equal(read_image(folder, series_uid=uid_b).array, b.astype(np.float32))
    assert np.array_equal(read_image(folder, series_uid=uid_a).array, a.astype(np.float32))
    with pytest.raises(ImageError, match=f"no DICOM series '1.2.3'.*{uid_a}"):
        read_image(folder, series_uid="1.2.3")


def test_empty_folder_and_folder_without_dicom_are_clear_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert not is_dicom_folder(empty)
    with pytest.raises(ImageError, match="empty: folder holds no DICOM series"):
        read_image(empty)
    other = tmp_path / "other"
    other.mkdir()
    (other / "readme.txt").write_text("not an image")
    with pytest.raises(ImageError, match="other: folder holds no DICOM series"):
        read_sitk(other)


def test_single_slice_series_is_rejected(tmp_path):
    array, geometry = _flair_int16()
    folder = write_dicom_series(tmp_path / "one", array[:1], Geometry((40, 48, 1), geometry.spacing, geometry.origin), UID_ROOT + "5.1")
    with pytest.raises(ImageError, match="1 slice"):
        read_image(folder)

