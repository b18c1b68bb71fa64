"""FreeSurfer MGH/MGZ volumes (deepwml.imageio.mgh, through nibabel): the voxels and affine nibabel reads, in DeepWML's
(z, y, x) order and LPS geometry; written so that nibabel reads back the same voxels and affine, refused by name when they are not one 3D scan with a geometry, and segmented by
deepwml_predict as the same scan in NIfTI."""
from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from deepwml.cli import predict as predict_cli
from deepwml.imageio import read_geometry, read_image, read_label, write_image
from deepwml.imageio.headers import itk_ras_affine
from deepwml.utils.errors import ImageError
from deepwml_testing.cases import input_case


def _oblique_affine(spacing=(0.45, 0.47, 6.5), tilt_deg=12.0, origin=(-110.0, -95.0, -40.0)) -> np.ndarray:
    """A RAS affine of axial slices tilted about the left-right axis, as an angled clinical FLAIR."""
    t = np.radians(tilt_deg)
    rotation = np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


@pytest.mark.parametrize("ending", [".mgz", ".mgh"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.float32])
def test_a_volume_nibabel_wrote_reads_as_nibabel_reads_it(tmp_path, ending, dtype):
    """Voxels (x fastest in the file, numpy z, y, x here) of every MGH data type, and the oblique affine."""
    rng = np.random.default_rng(3)
    data = (rng.random((40, 32, 7)) * 200).astype(dtype)  # nibabel's x, y, z
    path = tmp_path / f"scan{ending}"
    nib.save(nib.MGHImage(data, _oblique_affine()), str(path))
    image = read_image(path, dtype=None)
    assert image.array.dtype == dtype
    np.testing.assert_array_equal(image.array, data.transpose(2, 1, 0))
    np.testing.assert_allclose(itk_ras_affine(image.geometry), nib.load(str(path)).affine, atol=1e-4)
    assert read_geometry(path) == image.geometry
    assert image.geometry.size == (40, 32, 7)


@pytest.mark.parametrize("ending", [".mgz", ".mgh"])
def test_a_written_volume_reads_back_in_nibabel_with_its_voxels_and_affine(tmp_path, ending):
    """write_image picks MGH from the ending: nibabel reads the same voxels and affine; a mask is stored as uint8,
    a float map as float32, integers in the smallest signed type that holds them; nothing else is left beside it."""
    source = tmp_path / f"source{ending}"
    nib.save(nib.MGHImage(np.zeros((30, 20, 5), np.int16), _oblique_affine()), str(source))
    geometry = read_geometry(source)
    rng = np.random.default_rng(4)
    cases = {"mask": (rng.random((5, 20, 30)) > 0.5, np.uint8), "probabilities": (rng.random((5, 20, 30)), np.float32),
             "wide": (rng.integers(0, 60000, (5, 20, 30)).astype(np.uint16), np.int32),
             "ids": (rng.integers(0, 300, (5, 20, 30)).astype(np.int64), np.int16)}
    for name, (array, stored) in cases.items():
        path = tmp_path / f"{name}{ending}"
        write_image(array, geometry, path)
        back = nib.load(str(path))
        assert back.get_data_dtype().newbyteorder("=") == stored
        np.testing.assert_array_equal(np.asarray(back.dataobj), array.astype(stored).transpose(2, 1, 0))
        np.testing.assert_allclose(back.affine, nib.load(str(source)).affine, atol=1e-4)
        assert read_geometry(path).size == geometry.size
        np.testing.assert_allclose(read_geometry(path).origin, geometry.origin, atol=1e-4)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([source.name] + [f"{n}{ending}" for n in cases])
    with pytest.raises(ImageError, match="do not fit an MGH file's 32-bit integers"):
        write_image(np.full((5, 20, 30), 2**40, np.int64), geometry, tmp_path / f"huge{ending}")
    assert not (tmp_path / f"huge{ending}").exists()


def _mgh(tmp_path, **fields) -> bytes:
    """An MGH file's bytes from nibabel with header fields overwritten (big-endian, at their offsets)."""
    path = tmp_path / "source.mgh"
    nib.save(nib.MGHImage(np.ones((8, 6, 3), np.int16), _oblique_affine()), str(path))
    raw = bytearray(path.read_bytes())
    offsets = {"version": (0, ">i4"), "frames": (16, ">i4"), "type": (20, ">i4"), "good_ras": (28, ">i2"),
               "width": (4, ">i4")}
    for key, value in fields.items():
        offset, kind = offsets[key]
        raw[offset:offset + np.dtype(kind).itemsize] = np.array(value, kind).tobytes()
    return bytes(raw)


@pytest.mark.parametrize("problem,message", [
    ({"frames": 2}, "is 4D: 2 frames"),
    ({"good_ras": 0}, "holds no voxel size or orientation"),
    ({"type": 2}, "unknown data type code 2"),
    ({"version": 7}, "Unknown MGH format version"),
    ({"width": 0}, "should be non-zero"),
    ({"width": 9}, "unreadable or truncated MGH voxels"),
])
def test_files_that_are_not_one_3d_scan_with_a_geometry_are_refused_by_name(tmp_path, problem, message):
    path = tmp_path / "scan.mgz"
    with gzip.open(path, "wb") as out:
        out.write(_mgh(tmp_path, **problem))
    with pytest.raises(ImageError, match=message) as caught:
        read_image(path)
    assert str(path) in str(caught.value)


def test_broken_files_are_refused_by_name(tmp_path):
    """A gzip stream cut short, a file shorter than the header, and a plain file named .mgz."""
    cut = tmp_path / "cut.mgz"
    with gzip.open(cut, "wb") as out:
        out.write(_mgh(tmp_path))
    cut.write_bytes(cut.read_bytes()[:-20])
    short = tmp_path / "short.mgh"
    short.write_bytes(_mgh(tmp_path)[:100])
    plain = tmp_path / "plain.mgz"
    plain.write_bytes(_mgh(tmp_path))
    for path, message in ((cut, "unreadable MGH file"), (short, "unreadable or truncated MGH voxels .*could the file be damaged"),
                          (plain, "unreadable MGH file")):
        with pytest.raises(ImageError, match=message) as caught:
            read_image(path)
        assert str(path) in str(caught.value)


def test_a_sheared_grid_is_refused_and_a_mirrored_one_kept(tmp_path):
    """MGH stores any three axis directions: non-orthogonal ones are refused as for every format (the mask could not be
    written back exactly); a left-handed grid (one axis mirrored) is a valid scan and keeps its handedness."""
    sheared = _oblique_affine()
    sheared[:3, 1] += 0.2 * sheared[:3, 0]
    nib.save(nib.MGHImage(np.ones((8, 6, 3), np.int16), sheared), str(tmp_path / "sheared.mgz"))
    with pytest.raises(ImageError, match="shear/non-orthogonal axes"):
        read_image(tmp_path / "sheared.mgz")
    mirrored = _oblique_affine() @ np.diag([-1.0, 1.0, 1.0, 1.0])
    nib.save(nib.MGHImage(np.ones((8, 6, 3), np.int16), mirrored), str(tmp_path / "mirrored.mgz"))
    geometry = read_geometry(tmp_path / "mirrored.mgz")
    assert np.linalg.det(geometry.direction_matrix) < 0
    np.testing.assert_allclose(itk_ras_affine(geometry), mirrored, atol=1e-4)


def test_a_label_in_mgz_reads_as_a_label(tmp_path):
    """read_label takes integer MGH labels (the format FreeSurfer's segmentations come in)."""
    labels = np.zeros((10, 8, 4), np.int32)
    labels[2:5, 3:6, 1:3] = 1
    nib.save(nib.MGHImage(labels, _oblique_affine()), str(tmp_path / "wmh.mgz"))
    assert read_label(tmp_path / "wmh.mgz").array.sum() == labels.sum()


@pytest.mark.slow
def test_deepwml_predict_segments_an_mgz_scan_as_the_same_scan_in_nifti(tmp_path):
    """The shipped model's mask and lesion table of a scan given as .mgz are those of the NIfTI scan, and the mask is
    written as .mgz on the scan's grid."""
    case = input_case("MS#2", index=2, seed=4343, skull_stripped=False)
    write_image(case.image, case.geometry, tmp_path / "nifti" / "scan.nii.gz")
    write_image(case.image, case.geometry, tmp_path / "mgz" / "scan.mgz")
    for kind in ("nifti", "mgz"):
        assert predict_cli.main(["-i", str(tmp_path / kind), "-o", str(tmp_path / f"out_{kind}"), "--no-qc"]) == 0
    nifti = read_image(tmp_path / "out_nifti" / "scan.nii.gz", dtype=None)
    mgz = read_image(tmp_path / "out_mgz" / "scan.mgz", dtype=None)
    assert nifti.array.sum() > 200
    np.testing.assert_array_equal(mgz.array, nifti.array)
    assert mgz.geometry.size == nifti.geometry.size
    np.testing.assert_allclose(itk_ras_affine(mgz.geometry), itk_ras_affine(nifti.geometry), atol=1e-4)
    assert (tmp_path / "out_mgz" / "summary.csv").read_text() == (tmp_path / "out_nifti" / "summary.csv").read_text()
