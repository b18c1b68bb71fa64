"""deepwml.imageio.nifti_header reads the stored NIfTI fields as nibabel does (NIfTI-1 and -2, either byte order,
sform and qform), finds truncated and NaN-holding voxel data, and spares a prediction the import of nibabel."""
from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from deepwml.imageio import read_image
from deepwml.imageio.nifti_header import check_nifti_voxels, read_nifti_header
from deepwml.utils.errors import ImageError


def _rotation(rng: np.random.Generator) -> np.ndarray:
    """A random proper or improper rotation."""
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    return q


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fields_and_affines_are_nibabels(tmp_path, version, big_endian, seed):
    """dim, pixdim, codes, sform and qform (left- and right-handed, so qfac -1 and 1) as nibabel reads them."""
    rng = np.random.default_rng(seed)
    affine = np.eye(4)
    affine[:3, :3] = _rotation(rng) * rng.uniform(0.4, 8.0, 3)
    affine[:3, 3] = rng.uniform(-120, 120, 3)
    data = rng.integers(0, 1000, size=(7, 6, 5)).astype(np.int16)
    image_class = nib.Nifti2Image if version == 2 else nib.Nifti1Image
    header = image_class.header_class(endianness=">" if big_endian else "<")
    img = image_class(data, affine, header)
    img.set_qform(affine, code=int(rng.integers(1, 3)))
    img.set_sform(affine, code=int(rng.integers(0, 3)))
    path = tmp_path / f"v{version}.nii{'.gz' if seed % 2 else ''}"
    nib.save(img, str(path))
    reference = nib.load(str(path)).header
    ours = read_nifti_header(path)
    assert ours.version == version and ours.byte_order == (">" if big_endian else "<")
    np.testing.assert_array_equal(ours.dim, reference["dim"])
    np.testing.assert_array_equal(ours.pixdim, reference["pixdim"])
    assert (ours.qform_code, ours.sform_code, ours.datatype) == (int(reference["qform_code"]), int(reference["sform_code"]),
                                                                 int(reference["datatype"]))
    np.testing.assert_allclose(ours.sform(), reference.get_sform(), atol=1e-5)
    np.testing.assert_allclose(ours.qform(), reference.get_qform(), atol=1e-4)
    assert ours.xyzt_units == int(reference["xyzt_units"])
    check_nifti_voxels(path, ours)  # complete, integer: nothing to say


def _float_nifti(path: Path, data: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data.astype(np.float32), np.eye(4)), str(path))
    return path


@pytest.mark.parametrize("ending", [".nii", ".nii.gz"])
def test_truncated_data_and_nan_voxels_are_errors_naming_the_file(tmp_path, ending):
    """A file cut inside its voxel data, or floating-point voxels holding NaN or Inf, is refused by name."""
    data = np.random.default_rng(0).random((8, 8, 4))
    whole = _float_nifti(tmp_path / f"whole{ending}", data)
    check_nifti_voxels(whole)
    raw = gzip.decompress(whole.read_bytes()) if ending == ".nii.gz" else whole.read_bytes()
    cut = tmp_path / f"cut{ending}"
    cut.write_bytes(gzip.compress(raw[:-100]) if ending == ".nii.gz" else raw[:-100])
    with pytest.raises(ImageError, match=r"cut\.nii.*truncated"):
        check_nifti_voxels(cut)
    if ending == ".nii.gz":  # the compressed stream itself cut short
        stream = tmp_path / f"stream{ending}"
        stream.write_bytes(whole.read_bytes()[:-200])
        with pytest.raises(ImageError, match=r"stream\.nii\.gz.*truncated"):
            check_nifti_voxels(stream)
    data[2, 3, 1], data[0, 0, 0] = np.nan, np.inf
    with pytest.raises(ImageError, match=r"nan\.nii.*2 NaN/Inf voxels"):
        check_nifti_voxels(_float_nifti(tmp_path / f"nan{ending}", data))


def test_reading_a_nifti_does_not_import_nibabel(tmp_path):
    """nibabel (with pydicom) costs a prediction 0.3-0.5 s of imports: reading a scan must not need it."""
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 4), np.int16), np.diag([0.9, 0.9, 6.0, 1.0])), str(path))
    code = f"import sys; from deepwml.imageio import read_image; read_image({str(path)!r}); print('nibabel' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
    assert read_image(path).array.shape == (4, 8, 8)


def test_a_header_split_across_gzip_members_is_read_whole(tmp_path):
    """A .nii.gz may hold several gzip members (concatenated streams): the header and voxel checks read across them,
    and so does the NIfTI-2 scan's reading (deepwml.imageio.itk_nifti)."""
    path = tmp_path / "v2.nii"
    nib.save(nib.Nifti2Image(np.ones((4, 4, 2), np.float32), np.diag([0.5, 0.5, 5.0, 1.0])), str(path))
    raw = path.read_bytes()
    split = tmp_path / "split.nii.gz"
    split.write_bytes(gzip.compress(raw[:100]) + gzip.compress(raw[100:300]) + gzip.compress(raw[300:]))
    header = read_nifti_header(split)
    assert header.version == 2 and list(header.pixdim[1:4]) == [0.5, 0.5, 5.0]
    check_nifti_voxels(split, header)
    np.testing.assert_array_equal(read_image(split).array, np.ones((2, 4, 4), np.float32))


def test_a_header_without_a_valid_data_offset_is_an_error_naming_the_file(tmp_path):
    """vox_offset NaN or negative: no place where the voxels start, refused by name (not an unexpected error)."""
    good = _float_nifti(tmp_path / "good.nii", np.ones((4, 4, 2)))
    for value in (np.nan, -8.0):
        raw = bytearray(good.read_bytes())
        raw[108:112] = np.float32(value).tobytes()
        bad = tmp_path / "bad.nii"
        bad.write_bytes(bytes(raw))
        with pytest.raises(ImageError, match=r"bad\.nii"):
            read_image(bad)
        with pytest.raises(ImageError, match=r"bad\.nii.*vox_offset"):
            check_nifti_voxels(bad)


@pytest.mark.parametrize("unit,mm", [("meter", 1000.0), ("micron", 0.001), ("mm", 1.0), ("unknown", 1.0)])
def test_a_header_in_metres_or_microns_is_read_in_millimetres(tmp_path, unit, mm):
    """pixdim and affine in the header's xyzt_units: ITK reads metres and microns into mm, and the check that ITK's
    geometry is the header's compares in mm (it refused a header in metres as 'sform and qform disagree')."""
    affine = np.diag([0.9, 0.8, 6.0, 1.0])
    affine[:3, 3] = [-20.0, -30.0, 10.0]
    stored = affine.copy()
    stored[:3] /= mm
    img = nib.Nifti1Image(np.ones((40, 48, 5), np.float32), stored)
    img.header.set_xyzt_units(unit)
    img.set_qform(stored, code=1)
    img.set_sform(stored, code=1)
    nib.save(img, str(tmp_path / "scan.nii.gz"))
    assert read_nifti_header(tmp_path / "scan.nii.gz").mm_per_unit == mm
    geometry = read_image(tmp_path / "scan.nii.gz").geometry
    np.testing.assert_allclose(geometry.spacing, [0.9, 0.8, 6.0], rtol=1e-5)
    np.testing.assert_allclose(geometry.origin, [20.0, 30.0, 10.0], rtol=1e-5)  # LPS
