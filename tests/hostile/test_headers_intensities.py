"""Issue #11 point 4, hostile probes: implausible headers are errors that name the file and the problem (and the
other cases of the folder are still predicted); intensity outliers do not change the head mask, the normalisation
or the lesion volume, while a whole scan scaled ×1e6 keeps giving the same result.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Dict, Tuple

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from conftest import tiny_case
from deepwml.cli.predict import main as predict_main
from deepwml.imageio import Geometry, Image, read_image, write_image
from deepwml.imageio.headers import itk_ras_affine
from deepwml_testing.toy_models import tiny_plan, write_model_dir
from deepwml.planning import plan as plan_module
from deepwml.preprocessing.transforms import preprocess_arrays
from deepwml.utils.errors import ImageError
from test_dicom import UID_ROOT, write_dicom_series

SHAPE = (6, 64, 64)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A threshold toy model (deterministic lesion masks) as a trained PLAN folder."""
    return write_model_dir(tmp_path_factory.mktemp("model") / "Dataset999_Toy" / "tiny", tiny_plan(), kind="threshold")


def _clean() -> Tuple[np.ndarray, Geometry]:
    image, _, geometry = tiny_case(shape_zyx=SHAPE, seed=3, n_lesions=5)
    return image, geometry


# ---------------------------------------------------------------- header probes: each writes one bad file

def _nifti(path: Path, pixdim: Dict[int, float] = None, sform=None, qform=None, pixdim_from_affine=True) -> Path:
    """A NIfTI written by nibabel from the clean case, with the given header fields overridden."""
    image, geometry = _clean()
    affine = itk_ras_affine(geometry)
    img = nib.Nifti1Image(np.ascontiguousarray(image.transpose(2, 1, 0)), affine if pixdim_from_affine else None)
    if sform is not None:
        img.set_sform(sform, 1)
    if qform is not None:
        img.set_qform(qform, 1)
    for index, value in (pixdim or {}).items():
        img.header["pixdim"][index] = value
    nib.save(img, str(path))
    return path


def _sheared() -> np.ndarray:
    affine = itk_ras_affine(_clean()[1])
    affine[0, 1] += 0.3  # the y axis leans into x: a sheared grid
    return affine


def _text_header(path: Path, field: str, value: str) -> Path:
    """Write the clean case as MetaImage/NRRD, then replace one header field's value (the voxel data stay as they are)."""
    image, geometry = _clean()
    write_image(image, geometry, path)
    raw = path.read_bytes()
    end = raw.index(b"ElementDataFile") if path.suffix == ".mha" else raw.index(b"\n\n")
    header, n = re.subn(rf"(?m)^{re.escape(field)}( =|:) .*$".encode(), lambda m: m.group(0)[: m.end(1) - m.start(0) + 1] + value.encode(), raw[:end])
    assert n == 1, f"{field} not in the header of {path}"
    path.write_bytes(header + raw[end:])
    return path


def _inf_voxels(folder: Path) -> Path:
    image, geometry = _clean()
    image[2, 30:33, 30] = np.inf
    return write_image(image, geometry, folder / "infinite_voxels.nii.gz")


#: probe name -> (writer of the bad file in a folder, what the error must say)
HEADER_PROBES: Dict[str, Tuple[Callable[[Path], Path], str]] = {
    "slice_spacing_0": (lambda d: _nifti(d / "slice_spacing_0.nii.gz", pixdim={3: 0.0}), r"pixdim\[3\].*is 0;.*finite and > 0.*1 mm"),
    "inplane_spacing_0": (lambda d: _nifti(d / "inplane_spacing_0.nii.gz", pixdim={1: 0.0}), r"pixdim\[1\].*is 0;"),
    "negative_spacing": (lambda d: _nifti(d / "negative_spacing.nii.gz", pixdim={2: -0.9}), r"pixdim\[2\].*is -0.9;"),
    "nan_spacing": (lambda d: _nifti(d / "nan_spacing.nii.gz", pixdim={3: np.nan}), r"pixdim\[3\].*is nan;"),
    "sheared_sform": (lambda d: _nifti(d / "sheared_sform.nii.gz", sform=_sheared()), r"sform.*shear/non-orthogonal.*resample to an orthogonal grid"),
    "sheared_sform_orthogonal_qform": (
        lambda d: _nifti(d / "sheared_sform_orthogonal_qform.nii.gz", sform=_sheared(), qform=itk_ras_affine(_clean()[1])),
        r"sform.*shear/non-orthogonal",
    ),
    "singular_sform": (
        lambda d: _nifti(d / "singular_sform.nii.gz", sform=np.diag([0.9, 0.9, 0.0, 1.0]), qform=itk_ras_affine(_clean()[1])),
        r"sform.*singular",
    ),
    "pixdim_disagrees_with_sform": (
        lambda d: _nifti(d / "pixdim_disagrees_with_sform.nii.gz", sform=itk_ras_affine(_clean()[1]), pixdim_from_affine=False),
        r"pixdim spacing \(1, 1, 1\) disagrees with its sform voxel size",
    ),
    "mha_slice_spacing_0": (lambda d: _text_header(d / "mha_spacing_0.mha", "ElementSpacing", "0.9 0.9 0"), r"ElementSpacing along z \(k\) is 0"),
    "mha_negative_spacing": (lambda d: _text_header(d / "mha_negative.mha", "ElementSpacing", "0.9 0.9 -6"), r"ElementSpacing along z \(k\) is -6"),
    "mha_nan_origin": (lambda d: _text_header(d / "mha_nan_origin.mha", "Offset", "0 nan 0"), r"Offset \(0, nan, 0\) is not finite"),
    "mha_singular_direction": (
        lambda d: _text_header(d / "mha_singular.mha", "TransformMatrix", "1 0 0 0 1 0 0 0 0"), r"TransformMatrix.*singular"
    ),
    "mha_non_orthogonal_direction": (
        lambda d: _text_header(d / "mha_nonortho.mha", "TransformMatrix", "1 0 0 0.3 1 0 0 0 1"), r"TransformMatrix.*shear/non-orthogonal"
    ),
    "nrrd_non_orthogonal_axes": (
        lambda d: _text_header(d / "nrrd_nonortho.nrrd", "space directions", "(0.9,0.3,0) (0,0.9,0) (0,0,6)"),
        r"space directions has shear/non-orthogonal axes",
    ),
    "infinite_voxels": (_inf_voxels, r"contains 3 NaN/Inf voxels"),
}


@pytest.mark.parametrize("probe", sorted(HEADER_PROBES))
def test_implausible_header_is_an_error_naming_the_file_and_the_problem(tmp_path, probe):
    """What a hostile user does: hands over a scan whose header has a zero/negative/NaN spacing, shear, a singular
    or non-finite geometry, or infinite voxels; ITK alone would read it at a wrong size or lose the shear."""
    write, expected = HEADER_PROBES[probe]
    path = write(tmp_path)
    with pytest.raises(ImageError) as error:
        read_image(path)
    assert str(path) in str(error.value) and re.search(expected, error.value.problem), error.value


def test_predict_fails_only_the_bad_header_cases_and_predicts_the_rest(tmp_path, model_dir, capsys):
    """What a hostile user does: mixes every bad header above into one input folder with two good scans."""
    folder = tmp_path / "in"
    folder.mkdir()
    bad = {probe: write(folder) for probe, (write, _) in HEADER_PROBES.items()}
    image, geometry = _clean()
    write_image(image, geometry, folder / "good.nii.gz")
    write_image(image, geometry, folder / "good_too.mha")
    assert predict_main(["-i", str(folder), "-o", str(tmp_path / "out"), "-m", str(model_dir)]) == 1
    err = capsys.readouterr().err
    assert f"{len(bad)} case(s) failed" in err
    summary = pd.read_csv(tmp_path / "out" / "summary.csv").set_index("case_id")
    assert summary.loc[["good", "good_too"], "status"].tolist() == ["ok", "ok"]
    assert summary.loc["good", "total_lesion_volume_ml"] > 0
    for probe, path in bad.items():
        case_id = path.name.split(".")[0]
        assert summary.loc[case_id, "status"] == "failed", probe
        assert re.search(HEADER_PROBES[probe][1], summary.loc[case_id, "error"]), (probe, summary.loc[case_id, "error"])
        assert not list((tmp_path / "out").glob(f"{case_id}.*")), f"{probe}: a mask was written for a refused scan"


def test_ordinary_headers_are_not_refused(tmp_path):
    """What a careful user does: nibabel files with only a qform, only an sform, or both, oblique; ITK files LPS/RAS."""
    image, geometry = _clean()
    affine = itk_ras_affine(geometry)
    rotation = np.linalg.qr(np.random.default_rng(5).normal(size=(3, 3)))[0]
    oblique = affine.copy()
    oblique[:3, :3] = rotation @ np.diag(geometry.spacing)
    data = np.ascontiguousarray(image.transpose(2, 1, 0))
    for name, a in (("axial", affine), ("oblique", oblique)):
        for form in ("sform", "qform", "both"):
            img = nib.Nifti1Image(data, a)
            if form == "qform":
                img.set_qform(a, 1)
                img.set_sform(None, 0)
            elif form == "both":
                img.set_qform(a, 1)
            path = tmp_path / f"{name}_{form}.nii.gz"
            nib.save(img, str(path))
            assert np.allclose(itk_ras_affine(read_image(path).geometry), a, atol=1e-4), path
    for direction in ((-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0), tuple(rotation.ravel())):
        g = Geometry(geometry.size, geometry.spacing, geometry.origin, direction)
        for ending in (".nii.gz", ".mha", ".nrrd"):
            assert not read_image(write_image(image, g, tmp_path / f"itk{ending}")).geometry.mismatches(g)


def _dicom(folder: Path) -> Path:
    image, geometry = _clean()
    return write_dicom_series(folder, np.round(image[:4]).astype(np.int16), Geometry((64, 64, 4), geometry.spacing, geometry.origin), UID_ROOT + "4011")


def test_dicom_pixel_spacing_zero_is_an_error(tmp_path):
    """What a hostile user does: a DICOM series whose Pixel Spacing says 0 (ITK would read 1 mm)."""
    folder = _dicom(tmp_path / "series")
    for f in folder.glob("*.dcm"):
        raw = f.read_bytes()
        assert raw.count(b".9\\.9 ") == 1
        f.write_bytes(raw.replace(b".9\\.9 ", b"0\\.9  "))
    with pytest.raises(ImageError, match=r"series: slice000.dcm: Pixel Spacing \(0028,0030\) along y \(j\) is 0"):
        read_image(folder)


def test_dicom_slices_at_one_position_are_an_error(tmp_path):
    """What a hostile user does: two copies of a series in one folder, every slice position twice (spacing 0)."""
    _dicom(tmp_path / "series")
    write_dicom_series(tmp_path / "series", np.zeros((4, 64, 64), np.int16), Geometry((64, 64, 4), (0.9, 0.9, 6.0), (-30.0, -40.0, 10.0)),
                       UID_ROOT + "4011", prefix="copy")
    with pytest.raises(ImageError, match=r"series: 4 of 8 slices repeat another slice's position.*ITK would silently use 1 mm"):
        read_image(tmp_path / "series")


def test_dicom_missing_middle_slice_is_an_error(tmp_path):
    """What a hostile user does: deletes one slice from the middle of a series (ITK would close the gap)."""
    folder = _dicom(tmp_path / "series")
    (folder / "slice001.dcm").unlink()
    with pytest.raises(ImageError, match=r"series: slice positions are not evenly spaced \(gaps 6 to 12 mm\)"):
        read_image(folder)


def test_dicom_series_holding_a_slice_of_another_orientation_is_an_error(tmp_path):
    """A localiser or reformat sharing the FLAIR's series UID: not one stack (the spacing check alone would blame a gap)."""
    import pydicom

    folder = _dicom(tmp_path / "series")
    ds = pydicom.dcmread(folder / "slice002.dcm")
    ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]  # sagittal
    ds.save_as(folder / "slice002.dcm")
    with pytest.raises(ImageError, match=r"series: 1 of the series' 4 slices lie in another orientation than the first"):
        read_image(folder)


# ---------------------------------------------------------------- intensity probes

def _hot_voxel(value: float) -> Callable[[np.ndarray], np.ndarray]:
    def change(a: np.ndarray) -> np.ndarray:
        a = a.copy()
        a[3, 32, 20] = value  # inside the head, in normal tissue
        return a
    return change


def _hot_cluster(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a[2:4, 36:46, 36:46] = 1e6  # 200 voxels of a spike artefact, in normal tissue
    return a


INTENSITY_PROBES = {
    "one_voxel_1e30": _hot_voxel(1e30),
    "one_voxel_1e6": _hot_voxel(1e6),
    "one_voxel_minus_1e30": _hot_voxel(-1e30),
    "cluster_of_200_hot_voxels": _hot_cluster,
}


@pytest.mark.parametrize("probe", sorted(INTENSITY_PROBES))
def test_outliers_do_not_change_head_mask_or_normalisation(probe):
    """What a hostile user does: sets one voxel (or a 200-voxel patch) of a scan to 1e30, 1e6 or -1e30."""
    image, geometry = _clean()
    changed = INTENSITY_PROBES[probe](image)
    plan = tiny_plan()
    plan.preprocessing.cache_dtype = "float32"
    clean = preprocess_arrays(Image(image, geometry), plan)
    result = preprocess_arrays(Image(changed, geometry), plan)
    outliers = changed != image
    assert np.array_equal(result.head, clean.head)
    assert result.props["outlier_voxels"] == np.count_nonzero(outliers)
    # every voxel but the outliers themselves keeps its normalised value (statistics barely miss those voxels)
    assert np.allclose(result.image[0][~outliers], clean.image[0][~outliers], atol=2e-3)
    assert np.all(np.isfinite(result.image)) and np.abs(result.image).max() < 10


def _scaled(factor: float, offset: float = 0.0, dtype=np.float32, background=None) -> Callable[[np.ndarray], np.ndarray]:
    def change(a: np.ndarray) -> np.ndarray:
        out = a * factor + offset
        if background is not None:
            # the scanner's background: small negative integers (int16 -5..-1)
            bg = a < 30
            out[bg] = np.random.default_rng(0).integers(background[0], background[1], size=int(bg.sum()))
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            out = np.clip(np.round(out), info.min, info.max)
        return out.astype(dtype)
    return change


RANGE_PROBES = {
    "whole_scan_times_1e6": _scaled(1e6),
    "uint8_0_to_240": _scaled(240 / 170, 10, np.uint8),
    "int16_0_to_16383": _scaled(16383 / 170, 1000, np.int16),
    "int16_negative_background": _scaled(10, 0, np.int16, background=(-5, 0)),
}


@pytest.mark.parametrize("probe", sorted(RANGE_PROBES))
def test_other_intensity_ranges_give_the_same_head_mask_and_normalised_head(probe):
    """What a hostile user does: hands over the same scan ×1e6, as uint8 0..240, int16 0..16383, or int16 with a
    background of -5..-1 (z-scoring inside the head must not care)."""
    image, geometry = _clean()
    plan = tiny_plan()
    plan.preprocessing.cache_dtype = "float32"
    clean = preprocess_arrays(Image(image, geometry), plan)
    result = preprocess_arrays(Image(RANGE_PROBES[probe](image), geometry), plan)
    head = clean.head.astype(bool)
    assert np.array_equal(result.head, clean.head)
    assert result.props["outlier_voxels"] == 0
    # uint8 rounding moves values by up to half a grey level: about 0.02 standard deviations here
    assert np.allclose(result.image[0][head], clean.image[0][head], atol=0.05)


def test_predicted_lesion_volume_is_the_same_for_outliers_and_scaled_scans(tmp_path, model_dir):
    """What a hostile user does: predicts a clean scan next to copies with hot voxels, a hot patch and ×1e6."""
    image, geometry = _clean()
    folder = tmp_path / "in"
    write_image(image, geometry, folder / "clean.nii.gz")
    for probe, change in {**INTENSITY_PROBES, "whole_scan_times_1e6": RANGE_PROBES["whole_scan_times_1e6"]}.items():
        write_image(change(image), geometry, folder / f"{probe}.nii.gz")
    assert predict_main(["-i", str(folder), "-o", str(tmp_path / "out"), "-m", str(model_dir)]) == 0
    summary = pd.read_csv(tmp_path / "out" / "summary.csv").set_index("case_id")
    assert (summary["status"] == "ok").all()
    volumes = summary["total_lesion_volume_ml"]
    assert volumes["clean"] > 0
    clean_mask = read_image(tmp_path / "out" / "clean.nii.gz", dtype=None).array
    for probe in volumes.index.drop("cluster_of_200_hot_voxels"):
        assert volumes[probe] == volumes["clean"], probe
        assert np.array_equal(read_image(tmp_path / "out" / f"{probe}.nii.gz", dtype=None).array, clean_mask), probe
    # 200 of ~11 000 head voxels lose their true value: the statistics move by ~1e-3 standard deviations, which
    # may tip one lesion-edge voxel of this 64² phantom over the toy model's threshold (a real scan has ~50× more)
    assert abs(volumes["cluster_of_200_hot_voxels"] - volumes["clean"]) <= geometry.voxel_volume_ml + 1e-9


def test_a_cache_from_the_old_preprocessing_code_is_computed_again(monkeypatch):
    """What a user upgrading DeepWML has: a cache preprocessed by the old (outlier-sensitive) code; it must not count."""
    plan = tiny_plan()
    current = plan.preprocessing_hash()
    monkeypatch.setattr(plan_module, "PREPROCESSING_ALGORITHM_VERSION", plan_module.PREPROCESSING_ALGORITHM_VERSION - 1)
    assert plan.preprocessing_hash() != current
