"""NIfTI files that ITK's reader gets wrong are read as they should be (deepwml.imageio.itk_nifti): a NIfTI-2 file as
its NIfTI-1 twin (ITK reads NIfTI-1 only), a .nii.gz as itself when a .nii of the same name lies beside it (ITK's NIfTI
library reads the .nii instead)."""
from __future__ import annotations

import tempfile

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from deepwml.cli import predict as predict_cli
from deepwml.imageio import Geometry, read_geometry, read_image, write_image
from deepwml.imageio.itk_nifti import itk_readable
from deepwml.utils.errors import ImageError
from deepwml_testing.cases import input_case


@pytest.fixture(autouse=True)
def own_temp_folder(tmp_path, monkeypatch):
    """Each test's temporary files in a folder of its own, so that a test can see that none are left behind."""
    folder = tmp_path / "system_tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    yield folder
    assert list(folder.iterdir()) == []


def _twins(folder, data, affine, big_endian=False, gz=True, qform_code=1, sform_code=2, slope=None):
    """The same image saved by nibabel as NIfTI-1 and as NIfTI-2: (path of v1, path of v2)."""
    paths = []
    for version, image_class in ((1, nib.Nifti1Image), (2, nib.Nifti2Image)):
        header = image_class.header_class(endianness=">" if big_endian else "<")
        header.set_data_dtype(data.dtype)
        img = image_class(data, affine, header)
        img.set_qform(affine, code=qform_code)
        img.set_sform(affine, code=sform_code)
        if slope is not None:
            img.header.set_slope_inter(*slope)
        path = folder / f"v{version}.nii{'.gz' if gz else ''}"
        nib.save(img, str(path))
        paths.append(path)
    return paths


def _affine(seed: int) -> np.ndarray:
    """An oblique thick-slice affine (a proper or improper rotation)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    affine = np.eye(4)
    affine[:3, :3] = q * np.array([0.47, 0.47, 7.5])
    affine[:3, 3] = rng.uniform(-120, 120, 3)
    return affine


@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype,slope", [(np.int16, None), (np.int16, (0.5, 3.0)), (np.float32, None), (np.uint8, None)])
def test_a_nifti2_file_reads_as_its_nifti1_twin(tmp_path, big_endian, gz, dtype, slope):
    """Voxels (with the header's scaling), spacing, origin and direction of an oblique scan, by the whole reader and by
    the header-only one; before, ITK had no reader for it and the scan was refused."""
    rng = np.random.default_rng(int(big_endian) * 2 + int(gz))
    data = rng.integers(0, 250, size=(20, 18, 5)).astype(dtype)
    v1, v2 = _twins(tmp_path, data, _affine(int(gz)), big_endian=big_endian, gz=gz, slope=slope)
    one, two = read_image(v1), read_image(v2)
    np.testing.assert_array_equal(two.array, one.array)
    assert two.geometry == one.geometry and read_geometry(v2) == one.geometry
    scale = slope or (1.0, 0.0)
    np.testing.assert_allclose(one.array, data.transpose(2, 1, 0) * scale[0] + scale[1])
    assert read_image(v2, dtype=None).array.dtype == read_image(v1, dtype=None).array.dtype


@pytest.mark.parametrize("qform_code,sform_code", [(1, 0), (0, 2), (0, 0)])
def test_a_nifti2_file_with_one_or_no_world_geometry_reads_as_its_twin(tmp_path, qform_code, sform_code):
    """Only a qform, only an sform, or neither (pixdim alone): ITK's choice among them is the same for both."""
    v1, v2 = _twins(tmp_path, np.arange(8 * 6 * 3, dtype=np.int16).reshape(8, 6, 3), _affine(3),
                    qform_code=qform_code, sform_code=sform_code)
    assert read_image(v2).geometry == read_image(v1).geometry


def test_a_broken_nifti2_file_is_an_error_naming_it(tmp_path):
    """Truncated voxel data, NaN voxels, and an axis beyond NIfTI-1's 32767 voxels: each refused by name and reason."""
    _, v2 = _twins(tmp_path, np.ones((8, 6, 4), np.float32), _affine(1), gz=False)
    raw = v2.read_bytes()
    (tmp_path / "cut.nii").write_bytes(raw[:-40])
    with pytest.raises(ImageError, match=r"cut\.nii: truncated image"):
        read_image(tmp_path / "cut.nii")
    nan = np.ones((8, 6, 4), np.float32)
    nan[2, 3, 1] = np.nan
    nib.save(nib.Nifti2Image(nan, np.eye(4)), str(tmp_path / "nan.nii.gz"))
    with pytest.raises(ImageError, match=r"nan\.nii\.gz: contains 1 NaN/Inf voxels"):
        read_image(tmp_path / "nan.nii.gz")
    nib.save(nib.Nifti2Image(np.ones((40000, 1, 2), np.uint8), np.eye(4)), str(tmp_path / "long.nii.gz"))
    with pytest.raises(ImageError, match=r"long\.nii\.gz: is a NIfTI-2 image of size \(40000, 1, 2\).*32767"):
        read_image(tmp_path / "long.nii.gz")


def test_a_nii_gz_beside_a_nii_of_its_name_is_read_itself(tmp_path):
    """ITK's NIfTI library, asked for scan.nii.gz, silently read scan.nii when both were there (a copy unzipped with
    gunzip -k, then edited): another scan's voxels and grid under the name asked for."""
    write_image(np.zeros((3, 4, 5), np.int16), _geometry((5, 4, 3), 1.0), tmp_path / "scan.nii")
    write_image(np.ones((4, 4, 6), np.int16), _geometry((6, 4, 4), 2.0), tmp_path / "scan.nii.gz")
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "scan.nii.gz"))).max() == 0  # what ITK does alone
    gz, plain = read_image(tmp_path / "scan.nii.gz"), read_image(tmp_path / "scan.nii")
    assert gz.array.shape == (4, 4, 6) and gz.array.max() == 1 and gz.geometry.spacing[0] == 2.0
    assert plain.array.shape == (3, 4, 5) and plain.array.max() == 0
    assert read_geometry(tmp_path / "scan.nii.gz") == gz.geometry
    with itk_readable(tmp_path / "scan.nii") as readable:
        assert readable == tmp_path / "scan.nii"  # nothing shadows a .nii: read in place, no temporary file


def _geometry(size: tuple, spacing: float) -> Geometry:
    """An axis-aligned grid of ``size`` (x, y, z) and isotropic ``spacing``."""
    return Geometry(size, (spacing,) * 3, (0.0, 0.0, 0.0))


@pytest.mark.slow
def test_deepwml_predict_segments_a_nifti2_scan_as_its_nifti1_twin(tmp_path):
    """The shipped model's mask and lesion table of a scan saved as NIfTI-2 are those of the same scan as NIfTI-1, on
    its grid (written as NIfTI-1, which every viewer reads)."""
    case = input_case("MS#2", index=2, seed=4343, skull_stripped=False)
    write_image(case.image, case.geometry, tmp_path / "v1" / "scan.nii.gz")
    (tmp_path / "v2").mkdir()
    nib.save(nib.Nifti2Image.from_image(nib.load(str(tmp_path / "v1" / "scan.nii.gz"))), str(tmp_path / "v2" / "scan.nii.gz"))
    assert nib.load(str(tmp_path / "v2" / "scan.nii.gz")).header.sizeof_hdr == 540
    for version in ("v1", "v2"):
        assert predict_cli.main(["-i", str(tmp_path / version), "-o", str(tmp_path / f"out_{version}"), "--no-qc"]) == 0
    masks = [read_image(tmp_path / f"out_{v}" / "scan.nii.gz", dtype=None) for v in ("v1", "v2")]
    assert masks[0].array.sum() > 200
    np.testing.assert_array_equal(masks[1].array, masks[0].array)
    assert masks[1].geometry == masks[0].geometry == read_geometry(tmp_path / "v2" / "scan.nii.gz")
    tables = [(tmp_path / f"out_{v}" / "summary.csv").read_text() for v in ("v1", "v2")]
    assert tables[1] == tables[0]
