"""Prediction inputs: case discovery over files and DICOM folders, bad images, input protection, part splits."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from conftest import tiny_case
from deepwml.imageio import Geometry, write_image
from deepwml.inference.inputs import discover_cases, read_case
from deepwml.inference.outputs import case_outputs, check_inputs_safe
from deepwml.inference.parts import select_part
from deepwml.utils.errors import DeepWMLError, ImageError
from test_dicom import UID_ROOT, write_dicom_series


def _write(path: Path, seed: int = 0) -> Path:
    image, _, geometry = tiny_case(shape_zyx=(4, 32, 32), seed=seed)
    return write_image(image, geometry, path)


def _dicom(folder: Path, uid: str, seed: int = 0) -> Path:
    image, _, geometry = tiny_case(shape_zyx=(3, 24, 24), seed=seed)
    return write_dicom_series(folder, np.round(image).astype(np.int16), geometry, UID_ROOT + uid)


def test_single_file_is_one_case_named_after_its_stem(tmp_path):
    path = _write(tmp_path / "sub-01_FLAIR.nii.gz")
    [case] = discover_cases(path)
    assert (case.case_id, case.kind, case.output_ending) == ("sub-01_FLAIR", "file", ".nii.gz")


def test_folder_of_mixed_formats_is_sorted_and_keeps_each_ending(tmp_path):
    for name in ("b.mha", "a.nii.gz", "c.nrrd", "d.nii"):
        _write(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".a2.nii.gz.tmp.nii.gz").write_bytes(b"half-written by an atomic write")
    cases = discover_cases(tmp_path)
    assert [(c.case_id, c.output_ending) for c in cases] == [("a", ".nii.gz"), ("b", ".mha"), ("c", ".nrrd"), ("d", ".nii")]


def test_pictures_beside_the_scans_are_left_and_named_and_a_folder_of_pictures_says_why_it_has_no_scan(tmp_path, capsys):
    """A screenshot or a viewer's JPEG export is no scan: beside scans it is left with a note naming it (other files,
    such as notes or sidecars, are left quietly); alone, the error says what the pictures are."""
    _write(tmp_path / "scans" / "a.nii.gz")
    for name in ("key image.JPG", "shot.png"):
        (tmp_path / "scans" / name).write_bytes(b"picture")
    (tmp_path / "scans" / "a.json").write_text("{}")
    assert [c.case_id for c in discover_cases(tmp_path / "scans")] == ["a"]
    err = capsys.readouterr().err
    assert err.count("note:") == 1 and "left 2 picture file(s) (key image.JPG, shot.png)" in err and "a.json" not in err
    (tmp_path / "pictures").mkdir()
    for k in range(5):
        (tmp_path / "pictures" / f"slice{k}.png").write_bytes(b"picture")
    with pytest.raises(DeepWMLError, match=r"no images found.*5 picture file\(s\) \(slice0.png, slice1.png, slice2.png and 2 "
                                           r"more\), which are no scans.*export the series as DICOM or NIfTI"):
        discover_cases(tmp_path / "pictures")
    _write(tmp_path / "quiet" / "b.nii.gz")
    (tmp_path / "quiet" / "notes.txt").write_text("not an image")
    discover_cases(tmp_path / "quiet")
    assert "note" not in capsys.readouterr().err


def test_dicom_series_folder_and_folder_of_series_folders(tmp_path):
    one = _dicom(tmp_path / "all" / "patientB", "10.1")
    _dicom(tmp_path / "all" / "patientA", "11.1", seed=1)
    [case] = discover_cases(one)
    assert (case.case_id, case.kind, case.output_ending) == ("patientB", "dicom", ".nii.gz")
    cases = discover_cases(tmp_path / "all")
    assert [c.case_id for c in cases] == ["patientA", "patientB"] and {c.kind for c in cases} == {"dicom"}
    assert read_case(cases[0]).array.shape == (3, 24, 24)


def test_subfolder_without_readable_series_becomes_a_case_that_fails_when_read(tmp_path):
    _dicom(tmp_path / "good", "12.1")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "IM0001").write_bytes(b"\x00" * 300)
    (tmp_path / "previous_output").mkdir()
    _write(tmp_path / "previous_output" / "good.nii.gz")
    cases = {c.case_id: c for c in discover_cases(tmp_path)}
    assert sorted(cases) == ["broken", "good"]  # a folder of NIfTI outputs is not mistaken for a series
    with pytest.raises(ImageError, match="broken.*no DICOM series"):
        read_case(cases["broken"])


def test_duplicate_case_ids_and_empty_or_missing_inputs_are_errors(tmp_path):
    _write(tmp_path / "x.nii.gz")
    _write(tmp_path / "x.mha")
    with pytest.raises(DeepWMLError, match="x"):
        discover_cases(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DeepWMLError, match="no images found"):
        discover_cases(tmp_path / "empty")
    with pytest.raises(DeepWMLError, match="not found"):
        discover_cases(tmp_path / "nope")
    (tmp_path / "scan.jpg").write_bytes(b"jpeg")
    with pytest.raises(DeepWMLError, match="unknown image file ending"):
        discover_cases(tmp_path / "scan.jpg")


def test_constant_nan_and_4d_images_are_rejected_with_the_file_named(tmp_path):
    geometry = Geometry((16, 16, 4), (1.0, 1.0, 5.0), (0.0, 0.0, 0.0))
    write_image(np.zeros((4, 16, 16), np.float32), geometry, tmp_path / "blank.nii.gz")
    nan = np.ones((4, 16, 16), np.float32)
    nan[1, 2, 3] = np.nan
    write_image(nan, geometry, tmp_path / "nan.nii.gz")
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(np.ones((2, 4, 16, 16), np.float32), isVector=False), str(tmp_path / "four_d.nii.gz"))
    cases = {c.case_id: c for c in discover_cases(tmp_path)}
    with pytest.raises(ImageError, match=r"blank\.nii\.gz.*empty"):
        read_case(cases["blank"])
    with pytest.raises(ImageError, match=r"nan\.nii\.gz.*NaN"):
        read_case(cases["nan"])
    with pytest.raises(ImageError, match=r"four_d\.nii\.gz.*4D"):
        read_case(cases["four_d"])


def test_output_folder_that_would_overwrite_inputs_is_refused(tmp_path):
    _write(tmp_path / "in" / "a.nii.gz")
    _write(tmp_path / "in" / "b_prob.nii.gz")
    _write(tmp_path / "in" / "b.nii.gz")
    cases = discover_cases(tmp_path / "in")
    with pytest.raises(DeepWMLError, match="input folder"):
        check_inputs_safe(cases, tmp_path / "in", tmp_path / "in")
    # the same folder reached through another path is still the input folder
    (tmp_path / "link").symlink_to(tmp_path / "in")
    with pytest.raises(DeepWMLError, match="input folder"):
        check_inputs_safe(cases, tmp_path / "link", tmp_path / "in")
    check_inputs_safe(cases, tmp_path / "out", tmp_path / "in")
    # a single input file predicted into its own folder: the mask would land on the input itself
    single = tmp_path / "in" / "b.nii.gz"
    with pytest.raises(DeepWMLError, match="would overwrite the input of case b"):
        check_inputs_safe(discover_cases(single), tmp_path / "in", single)


def test_outputs_keep_the_ending_and_dicom_gets_nifti(tmp_path):
    _write(tmp_path / "a.mha")
    [case] = discover_cases(tmp_path)
    out = case_outputs(tmp_path / "o", case)
    assert (out.mask.name, out.probabilities.name, out.lesions.name) == ("a.mha", "a_prob.mha", "a_lesions.csv")
    assert out.qc == tmp_path / "o" / "qc" / "a.png"


@pytest.mark.parametrize("n_items,num_parts", [(0, 3), (1, 4), (10, 3), (17, 5), (5, 5)])
def test_parts_cover_every_case_once_whatever_the_listing_order(n_items, num_parts):
    ids = [f"case{i:03d}" for i in range(n_items)]
    shuffled = ids[:]
    random.Random(n_items).shuffle(shuffled)
    parts = [select_part(shuffled, num_parts, k, key=str) for k in range(num_parts)]
    flat = [i for part in parts for i in part]
    assert sorted(flat) == ids and len(flat) == len(set(flat))
    assert parts == [select_part(ids, num_parts, k, key=str) for k in range(num_parts)]
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("num_parts,part_id", [(0, 0), (3, 3), (3, -1)])
def test_impossible_part_is_an_error(num_parts, part_id):
    with pytest.raises(DeepWMLError, match="--part-id|--num-parts"):
        select_part(["a"], num_parts, part_id, key=str)


def test_folder_with_two_series_needs_the_series_uid(tmp_path):
    _dicom(tmp_path / "two", "20.1", seed=0)
    image, _, geometry = tiny_case(shape_zyx=(4, 24, 24), seed=1)
    write_dicom_series(tmp_path / "two", np.round(image).astype(np.int16), geometry, UID_ROOT + "20.2", prefix="other")
    [case] = discover_cases(tmp_path / "two")
    with pytest.raises(ImageError, match="2 DICOM series.*" + UID_ROOT.replace(".", r"\.") + "20"):
        read_case(case)
    assert read_case(case, series_uid=UID_ROOT + "20.2").array.shape == (4, 24, 24)
