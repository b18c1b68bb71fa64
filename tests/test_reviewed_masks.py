"""deepwml_predict --lesion-masks: a reader's reviewed masks are described instead of the model's (lesion table,
summary, QC picture, report, DICOM SEG), a case corrected again is described anew, and what cannot be one case's
reviewed mask is refused by name."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from conftest import tiny_case
from deepwml.cli.predict import main as predict_main
from deepwml.imageio import Geometry, read_image, write_image
from deepwml.inference.inputs import discover_cases
from deepwml.inference.reviewed_masks import find_reviewed_masks, read_reviewed_mask
from deepwml.utils.errors import DeepWMLError, ImageError
from deepwml_testing.toy_models import tiny_plan, write_model_dir
from deepwml_testing.cases import input_case


@pytest.fixture
def model_dir(tmp_path) -> Path:
    """A threshold toy model (deterministic lesion masks, no anatomy needed)."""
    return write_model_dir(tmp_path / "results" / "Dataset999_Toy" / "tiny", tiny_plan(), folds=(0,), kind="threshold")


def _scans(folder: Path, n: int = 2) -> dict:
    """``n`` tiny scans a{k}.nii.gz with lesions; their geometry by case id."""
    grids = {}
    for k in range(n):
        image, _, geometry = tiny_case(seed=k + 1, n_lesions=4)
        write_image(image.astype(np.float32), geometry, folder / f"a{k}.nii.gz")
        grids[f"a{k}"] = geometry
    return grids


def _predict(*args) -> int:
    return predict_main([str(a) for a in args])


def _summary(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "summary.csv", keep_default_na=False).set_index("case_id")


def _edited(mask: np.ndarray) -> np.ndarray:
    """A reader's correction: the largest lesion removed, a 5 x 5 lesion added on the middle slice."""
    labels, n = ndimage.label(mask > 0)
    edited = (mask > 0).copy()
    if n:
        sizes = np.bincount(labels.ravel())[1:]
        edited[labels == 1 + int(np.argmax(sizes))] = False
    z = mask.shape[0] // 2
    edited[z, 30:35, 20:25] = True
    return edited.astype(np.uint8)


def test_the_outputs_describe_the_reviewed_masks_and_follow_a_second_correction(tmp_path, model_dir):
    """The written mask is the reader's; lesion table, volume and count are its; summary.csv says where the lesions
    came from; a second run resumes, and a case corrected again is described anew alone."""
    grids = _scans(tmp_path / "in")
    assert _predict("-i", tmp_path / "in", "-o", tmp_path / "model", "-m", model_dir, "--no-anatomy") == 0
    reviewed = {}
    for cid in grids:
        reviewed[cid] = _edited(read_image(tmp_path / "model" / f"{cid}.nii.gz", dtype=None).array)
        # a viewer may store the reader's labels as 255
        write_image(reviewed[cid] * 255, grids[cid], tmp_path / "reviewed" / f"{cid}.nii.gz")
    args = ["-i", tmp_path / "in", "-o", tmp_path / "out", "-m", model_dir, "--no-anatomy", "--lesion-masks",
            tmp_path / "reviewed"]
    assert _predict(*args) == 0
    summary = _summary(tmp_path / "out")
    for cid, mask in reviewed.items():
        written = read_image(tmp_path / "out" / f"{cid}.nii.gz", dtype=None).array
        np.testing.assert_array_equal(written > 0, mask > 0)
        lesions = pd.read_csv(tmp_path / "out" / f"{cid}_lesions.csv")
        n = ndimage.label(mask > 0, structure=np.ones((3, 3, 3)))[1]
        assert len(lesions) == summary.loc[cid, "lesion_count"] == n
        assert summary.loc[cid, "total_lesion_volume_ml"] == pytest.approx(mask.sum() * grids[cid].voxel_volume_ml)
        assert summary.loc[cid, "lesions_from"] == f"reviewed mask {cid}.nii.gz"
        # the added lesion, where the model saw nothing, has its low mean probability
        assert lesions["mean_probability"].min() < 0.2 and lesions["mean_probability"].max() > 0.5
    marker = json.loads((tmp_path / "out" / ".deepwml_output.json").read_text())
    assert marker["predicted_with"]["lesion_masks"] == str((tmp_path / "reviewed").resolve())
    # the model's own run has no such column
    assert "lesions_from" not in _summary(tmp_path / "model").columns
    # run again: both resumed; the reader corrects a1 once more: a1 alone is described anew
    stamp = (tmp_path / "out" / "a0_lesions.csv").stat().st_mtime_ns
    again = reviewed["a1"].copy()
    again[again.shape[0] // 2, 40:44, 40:44] = 1
    write_image(again, grids["a1"], tmp_path / "reviewed" / "a1.nii.gz")
    assert _predict(*args) == 0
    assert (tmp_path / "out" / "a0_lesions.csv").stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(read_image(tmp_path / "out" / "a1.nii.gz", dtype=None).array > 0, again > 0)
    summary = _summary(tmp_path / "out")
    assert summary.loc["a1", "total_lesion_volume_ml"] == pytest.approx(again.sum() * grids["a1"].voxel_volume_ml)
    assert summary.loc["a0", "lesions_from"] == "reviewed mask a0.nii.gz"  # resumed rows keep it


def test_a_case_without_its_reviewed_mask_or_off_its_grid_fails_alone_by_name(tmp_path, model_dir, capsys):
    """One case lacks its mask, one has it on another grid: each fails with the reason, the third is described."""
    grids = _scans(tmp_path / "in", n=3)
    write_image(np.zeros((6, 64, 64), np.uint8), grids["a0"], tmp_path / "reviewed" / "a0.nii.gz")
    other = Geometry(grids["a1"].size, (0.8, 0.8, 6.0), grids["a1"].origin, grids["a1"].direction)
    write_image(np.zeros((6, 64, 64), np.uint8), other, tmp_path / "reviewed" / "a1.nii.gz")
    assert _predict("-i", tmp_path / "in", "-o", tmp_path / "out", "-m", model_dir, "--no-anatomy",
                    "--lesion-masks", tmp_path / "reviewed") == 1
    summary = _summary(tmp_path / "out")
    assert summary.loc["a0", "status"] == "ok" and summary.loc["a0", "lesion_count"] == 0
    assert "a1.nii.gz" in summary.loc["a1", "error"] and "not on its scan's grid" in summary.loc["a1", "error"]
    assert "no reviewed lesion mask for case 'a2'" in summary.loc["a2", "error"]
    assert not (tmp_path / "out" / "a2.nii.gz").exists()


def test_options_without_effect_and_a_folder_of_the_model_s_masks_are_refused(tmp_path, model_dir, capsys):
    """Mask settings beside reviewed masks, one mask file for two cases, the output folder as the masks' folder,
    and reviewed masks into a folder of the model's masks: refused before anything is written."""
    grids = _scans(tmp_path / "in")
    for cid, geometry in grids.items():
        write_image(np.zeros((6, 64, 64), np.uint8), geometry, tmp_path / "reviewed" / f"{cid}.nii.gz")
    base = ["-i", tmp_path / "in", "-m", model_dir, "--no-anatomy"]
    assert _predict(*base, "-o", tmp_path / "o1", "--lesion-masks", tmp_path / "reviewed", "--threshold", "0.3") == 2
    assert "--threshold would change nothing" in capsys.readouterr().err
    assert _predict(*base, "-o", tmp_path / "o1", "--lesion-masks", tmp_path / "reviewed" / "a0.nii.gz") == 2
    assert "one file, and the input holds 2 cases" in capsys.readouterr().err
    assert not (tmp_path / "o1").exists()
    assert _predict(*base, "-o", tmp_path / "model") == 0
    assert _predict(*base, "-o", tmp_path / "model", "--lesion-masks", tmp_path / "reviewed") == 2
    assert "predicted with other settings (lesion_masks None ->" in capsys.readouterr().err
    assert _predict(*base, "-o", tmp_path / "model", "--lesion-masks", tmp_path / "model") == 2
    assert "--lesion-masks is the output folder" in capsys.readouterr().err


def test_masks_are_found_by_case_id_and_read_onto_the_scan_s_grid(tmp_path):
    """CASE<any image ending> or CASE.dcm; two for a case refused; > 0 is lesion; a .dcm that is no SEG is refused
    with the reason."""
    grids = _scans(tmp_path / "in", n=3)
    cases = discover_cases(tmp_path / "in")
    write_image(np.full((6, 64, 64), 3, np.uint8), grids["a0"], tmp_path / "rev" / "a0.mha")
    (tmp_path / "rev" / "a1.dcm").write_bytes(b"not a SEG")
    found = find_reviewed_masks(tmp_path / "rev", cases, tmp_path / "out")
    assert found == {"a0": tmp_path / "rev" / "a0.mha", "a1": tmp_path / "rev" / "a1.dcm"}
    assert read_reviewed_mask(found["a0"], grids["a0"]).all()
    with pytest.raises(ImageError, match=r"a1\.dcm: is not a DICOM SEG"):
        read_reviewed_mask(found["a1"], grids["a1"])
    write_image(np.zeros((6, 64, 64), np.uint8), grids["a0"], tmp_path / "rev" / "a0.nii.gz")
    with pytest.raises(DeepWMLError, match=r"case 'a0' has 2 reviewed masks \(a0\.nii\.gz, a0\.mha\); keep one"):
        find_reviewed_masks(tmp_path / "rev", cases, tmp_path / "out")
    with pytest.raises(DeepWMLError, match="no such file or folder"):
        find_reviewed_masks(tmp_path / "nowhere", cases, tmp_path / "out")


@pytest.mark.slow
def test_the_shipped_models_report_says_the_lesions_are_the_reader_s(tmp_path):
    """With the shipped lesion and anatomy models: the report page says the lesions are the reviewed mask's and that
    the model's threshold and filters were not applied; the findings say 'as reviewed'; the lesions get locations."""
    case = input_case("MS#2", index=2, seed=4343, skull_stripped=False)
    write_image(case.image, case.geometry, tmp_path / "in" / "scan.nii.gz")
    assert _predict("-i", tmp_path / "in", "-o", tmp_path / "model", "--no-qc") == 0
    edited = _edited(read_image(tmp_path / "model" / "scan.nii.gz", dtype=None).array)
    write_image(edited, case.geometry, tmp_path / "reviewed" / "scan.nii.gz")
    assert _predict("-i", tmp_path / "in" / "scan.nii.gz", "-o", tmp_path / "out", "--report",
                    "--lesion-masks", tmp_path / "reviewed" / "scan.nii.gz") == 0
    np.testing.assert_array_equal(read_image(tmp_path / "out" / "scan.nii.gz", dtype=None).array > 0, edited > 0)
    page = (tmp_path / "out" / "report" / "scan.html").read_text()
    assert "Lesions as reviewed: the reviewed mask scan.nii.gz" in page
    assert "White-matter lesions (as reviewed)" in page and "not applied" in page
    lesions = pd.read_csv(tmp_path / "out" / "scan_lesions.csv")
    assert lesions["location"].notna().all() and len(lesions) > 3


def test_a_dicom_seg_kept_in_the_pacs_is_a_reviewed_mask_and_the_new_seg_says_semiautomatic(tmp_path, model_dir):
    """The SEG deepwml_predict made of a DICOM series, given back as CASE.dcm (as a PACS viewer keeps a reader's
    edits), is read onto the series' slices, and onto the grid of the series converted to NIfTI; the SEG written of
    reviewed lesions is SEMIAUTOMATIC, not AUTOMATIC."""
    hd = pytest.importorskip("highdicom", reason="DICOM SEG needs highdicom (pip install 'deepwml[dicom]')")
    from test_dicom_seg import AXIAL, _series

    _series(tmp_path / "dicom" / "patient7", AXIAL)
    assert _predict("-i", tmp_path / "dicom", "-o", tmp_path / "model", "-m", model_dir, "--no-anatomy", "--dicom-seg") == 0
    model_mask = read_image(tmp_path / "model" / "patient7.nii.gz", dtype=None).array > 0
    assert model_mask.any()
    (tmp_path / "reviewed").mkdir()
    (tmp_path / "reviewed" / "patient7.dcm").write_bytes((tmp_path / "model" / "patient7_seg.dcm").read_bytes())
    assert _predict("-i", tmp_path / "dicom", "-o", tmp_path / "out", "-m", model_dir, "--no-anatomy", "--dicom-seg",
                    "--lesion-masks", tmp_path / "reviewed") == 0
    np.testing.assert_array_equal(read_image(tmp_path / "out" / "patient7.nii.gz", dtype=None).array > 0, model_mask)
    model_seg, seg = (hd.seg.segread(tmp_path / folder / "patient7_seg.dcm") for folder in ("model", "out"))
    assert model_seg.SegmentSequence[0].SegmentAlgorithmType == "AUTOMATIC"
    assert seg.SegmentSequence[0].SegmentAlgorithmType == "SEMIAUTOMATIC"
    assert seg.SeriesDescription == "DeepWML white matter lesions, reviewed (research use)"
    assert model_seg.SeriesDescription == "DeepWML white matter lesions (research use)"
    # the same SEG beside the series converted to NIfTI: its frames placed on the file's grid by their positions
    series = read_image(tmp_path / "dicom" / "patient7")
    write_image(series.array, series.geometry, tmp_path / "nifti" / "patient7.nii.gz")
    assert _predict("-i", tmp_path / "nifti", "-o", tmp_path / "out_nifti", "-m", model_dir, "--no-anatomy",
                    "--lesion-masks", tmp_path / "reviewed") == 0
    np.testing.assert_array_equal(read_image(tmp_path / "out_nifti" / "patient7.nii.gz", dtype=None).array > 0, model_mask)


def test_a_mask_cropped_to_its_segments_is_placed_on_the_scan_s_grid(tmp_path):
    """3D Slicer may save a segmentation (CASE.seg.nrrd) cropped to its segments' extent: a window of the scan's grid,
    its origin a whole number of voxels in. Placed there; half a voxel off, another voxel size, or lesions beyond
    the scan: refused."""
    grids = _scans(tmp_path / "in", n=1)
    geometry = grids["a0"]
    full = np.zeros((6, 64, 64), np.uint8)
    full[2, 20:26, 30:33] = 1
    full[3, 21:24, 31:35] = 2
    window = full[1:5, 15:40, 25:50]  # z 1..4, y 15..39, x 25..49
    direction, spacing = geometry.direction_matrix, np.asarray(geometry.spacing)

    def origin_at(index_xyz) -> tuple:
        return tuple(np.asarray(geometry.origin) + direction @ (np.asarray(index_xyz, float) * spacing))

    cropped = Geometry((25, 25, 4), geometry.spacing, origin_at((25, 15, 1)), geometry.direction)
    write_image(window, cropped, tmp_path / "rev" / "a0.seg.nrrd", compress=False)
    found = find_reviewed_masks(tmp_path / "rev", discover_cases(tmp_path / "in"), tmp_path / "out")
    assert found == {"a0": tmp_path / "rev" / "a0.seg.nrrd"}
    np.testing.assert_array_equal(read_reviewed_mask(found["a0"], geometry), full > 0)
    for name, grid in (("half", Geometry((25, 25, 4), geometry.spacing, origin_at((25.5, 15, 1)), geometry.direction)),
                       ("coarse", Geometry((25, 25, 4), (1.0, 1.0, 6.0), origin_at((25, 15, 1)), geometry.direction)),
                       ("beyond", Geometry((25, 25, 4), geometry.spacing, origin_at((60, 15, 1)), geometry.direction))):
        write_image(window, grid, tmp_path / "bad" / f"{name}.nii.gz")
        with pytest.raises(ImageError, match=rf"{name}\.nii\.gz: the lesion mask is not on its scan's grid"):
            read_reviewed_mask(tmp_path / "bad" / f"{name}.nii.gz", geometry)
