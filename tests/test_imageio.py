"""Image I/O keeps geometry exactly, finds the slice axis, and names the file in every error."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import oblique_direction, tiny_case
from deepwml.imageio import Geometry, read_geometry, read_image, read_label, write_image
from deepwml.utils.errors import ImageError


@pytest.mark.parametrize("ending", [".nii.gz", ".nii", ".mha", ".mhd", ".nrrd"])
@pytest.mark.parametrize("direction", ["axial", "lps", "oblique"])
def test_round_trip_keeps_voxels_and_geometry(tmp_path, ending, direction):
    dirs = {
        "axial": (1, 0, 0, 0, 1, 0, 0, 0, 1),
        "lps": (-1, 0, 0, 0, -1, 0, 0, 0, 1),
        "oblique": oblique_direction(15),
    }
    image, label, geometry = tiny_case(direction=dirs[direction])
    path = write_image(image, geometry, tmp_path / f"img{ending}")
    back = read_image(path)
    assert np.allclose(back.array, image)
    assert not back.geometry.mismatches(geometry, tol=1e-5)
    assert read_geometry(path) == back.geometry
    assert not list(tmp_path.glob(".*tmp*")), "temporary files left behind"


def test_slice_axis_is_coarsest_whatever_the_orientation():
    # sagittal-style stack: thick spacing on x
    g = Geometry((20, 256, 256), (6.0, 0.9, 0.9), (0, 0, 0))
    assert g.slice_axis == 0 and g.slice_axis_numpy == 2 and g.slice_thickness == 6.0
    assert g.inplane_spacing == (0.9, 0.9)
    # the same pixels by numpy axis, as the in-plane filters of an array take them
    g = Geometry((20, 256, 256), (6.0, 0.8, 0.9), (0, 0, 0))
    assert g.numpy_spacing == (0.9, 0.8, 6.0) and g.in_plane_pixels == {0: 0.9, 1: 0.8}
    assert Geometry((256, 240, 20), (0.8, 0.9, 6.0), (0, 0, 0)).in_plane_pixels == {1: 0.9, 2: 0.8}
    # isotropic: tie broken toward the axis closest to world z
    g = Geometry((10, 10, 10), (1, 1, 1), (0, 0, 0), (1, 0, 0, 0, 0, 1, 0, 1, 0))
    assert g.slice_axis == 1


def test_a_3d_acquisition_is_read_in_axial_planes_whatever_plane_it_was_acquired_in():
    """A sagittal 3D FLAIR of 1.2 mm partitions and 1 mm pixels has no slice axis a 2D model knows: its axial planes
    are read (the axis nearest world z), while a sagittal 2D stack keeps its thick slices."""
    sagittal = (0, 0, 1, 1, 0, 0, 0, 1, 0)  # index x along world y (A-P), y along world z (S-I), z along world x (L-R)
    g = Geometry((218, 182, 150), (1.0, 1.0, 1.2), (0, 0, 0), sagittal)
    assert g.slice_axis == 1 and g.slice_thickness == 1.0 and sorted(g.inplane_spacing) == [1.0, 1.2]
    assert Geometry((218, 182, 150), (1.0, 1.0, 1.5), (0, 0, 0), sagittal).slice_axis == 1
    # thicker than a 3D partition: a 2D sagittal stack, read as it was acquired (and flagged as not axial)
    assert Geometry((256, 256, 30), (0.9, 0.9, 1.6), (0, 0, 0), sagittal).slice_axis == 2
    assert Geometry((256, 256, 30), (0.9, 0.9, 5.0), (0, 0, 0), sagittal).slice_axis == 2
    # an axial 3D scan with thicker partitions than its pixels: its own slices, as before
    assert Geometry((256, 256, 150), (0.5, 0.5, 1.0), (0, 0, 0)).slice_axis == 2


def test_nan_image_is_an_error_naming_the_file(tmp_path):
    image, _, geometry = tiny_case()
    image[0, 0, 0] = np.nan
    path = write_image(image, geometry, tmp_path / "nan.nii.gz")
    with pytest.raises(ImageError, match="nan.nii.gz.*NaN"):
        read_image(path)


def test_2d_and_4d_images_are_rejected(tmp_path):
    sitk.WriteImage(sitk.Image(16, 16, sitk.sitkFloat32), str(tmp_path / "flat.nii.gz"))
    with pytest.raises(ImageError, match="flat.nii.gz.*2D"):
        read_image(tmp_path / "flat.nii.gz")
    sitk.WriteImage(sitk.Image([8, 8, 4, 3], sitk.sitkFloat32), str(tmp_path / "four.nii.gz"))
    with pytest.raises(ImageError, match="four.nii.gz.*4D"):
        read_image(tmp_path / "four.nii.gz")
    with pytest.raises(ImageError, match="4D"):
        read_geometry(tmp_path / "four.nii.gz")


def test_truncated_and_missing_files_are_errors(tmp_path):
    image, _, geometry = tiny_case()
    path = write_image(image, geometry, tmp_path / "t.nii.gz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="t.nii.gz.*(unreadable|truncated)"):
        read_image(path)
    with pytest.raises(ImageError, match="not found"):
        read_image(tmp_path / "missing.nii.gz")


@pytest.mark.parametrize("content", [b"not a nifti", b""], ids=["short", "empty"])
def test_a_compressed_file_shorter_than_a_header_is_an_error_naming_it(tmp_path, content):
    """A .nii.gz holding less than a NIfTI header (here: a gzip of something else) once escaped as nibabel's
    WrapStructError with a traceback."""
    import gzip

    path = tmp_path / "short.nii.gz"
    path.write_bytes(gzip.compress(content))
    with pytest.raises(ImageError, match="short.nii.gz.*unreadable"):
        read_image(path)


def test_label_with_fractional_values_is_rejected(tmp_path):
    image, _, geometry = tiny_case()
    path = write_image(image, geometry, tmp_path / "lab.nii.gz")
    with pytest.raises(ImageError, match="non-integer"):
        read_label(path)


def test_write_rejects_shape_that_does_not_match_geometry(tmp_path):
    image, _, geometry = tiny_case()
    with pytest.raises(ImageError, match="does not match"):
        write_image(image[:-1], geometry, tmp_path / "x.nii.gz")
    assert not list(tmp_path.iterdir())
