"""A CSV case list as deepwml_predict's input: scans wherever they lie, named by its case_id column (a cohort of
sub-XX/flair.nii.gz), read as each one alone; a list that cannot name its cases refused by row before anything runs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import oblique_direction, tiny_case
from deepwml.cli.predict import main as predict_main
from deepwml.imageio import read_image, write_image
from deepwml_testing.dicom_series import write_dicom_series
from deepwml_testing.toy_models import tiny_plan, write_model_dir


@pytest.fixture
def model(tmp_path) -> Path:
    """A threshold toy model: deterministic masks."""
    return write_model_dir(tmp_path / "model" / "Dataset999_Toy" / "tiny", tiny_plan(), kind="threshold")


def _scan(path: Path, seed: int) -> Path:
    image, _, geometry = tiny_case(seed=seed)
    return write_image(image, geometry, path)


def _list(path: Path, text: str, bom: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(("\ufeff" if bom else "") + text, encoding="utf-8")
    return path


def test_a_cohort_of_same_named_scans_is_predicted_by_its_case_ids_as_each_scan_alone(tmp_path, model, monkeypatch):
    cohort = tmp_path / "cohort"
    _scan(cohort / "sub-01" / "anat" / "flair.nii.gz", 1)
    _scan(cohort / "sub-02" / "anat" / "flair.nii.gz", 2)
    elsewhere = _scan(tmp_path / "other" / "visit.nii.gz", 3)
    image, _, geometry = tiny_case(shape_zyx=(5, 64, 56), spacing_xyz=(0.9, 0.9, 6.5), direction=oblique_direction(12), seed=4)
    write_dicom_series(cohort / "sub-04" / "dicom", np.round(image * 10).astype(np.int16), geometry, "1.2.826.0.1.3680043.8.498.76.1")
    listed = _list(cohort / "cohort.csv", "case_id,path,age\n"
                   "sub-01,sub-01/anat/flair.nii.gz,54\n"
                   "sub-02,sub-02/anat/flair.nii.gz,61\n"
                   f"sub-03,{elsewhere},70\n"
                   "sub-04,sub-04/dicom,48\n"
                   "sub-05,sub-05/anat/flair.nii.gz,66\n", bom=True)
    monkeypatch.chdir(tmp_path)  # relative paths are the list's folder's, not the working folder's
    assert predict_main(["-i", str(listed), "-o", str(tmp_path / "out"), "-m", str(model), "--no-qc"]) == 1
    summary = pd.read_csv(tmp_path / "out" / "summary.csv").set_index("case_id")
    assert summary.index.tolist() == ["sub-01", "sub-02", "sub-03", "sub-04", "sub-05"]
    assert summary.loc["sub-05", "status"] == "failed" and "sub-05/anat/flair.nii.gz" in summary.loc["sub-05", "error"]
    assert "AX FLAIR" in summary.loc["sub-04", "source_series"]
    for case_id, scan in (("sub-01", cohort / "sub-01" / "anat" / "flair.nii.gz"), ("sub-03", elsewhere),
                          ("sub-04", cohort / "sub-04" / "dicom")):
        alone = tmp_path / f"alone_{case_id}"
        assert predict_main(["-i", str(scan), "-o", str(alone), "-m", str(model), "--no-qc"]) == 0
        (written,) = [p for p in alone.glob("*.nii.gz")]
        mask = read_image(tmp_path / "out" / f"{case_id}.nii.gz", dtype=None).array
        assert np.array_equal(mask, read_image(written, dtype=None).array) and mask.any()
    # a second run resumes: the finished cases are not predicted anew, the missing one fails again
    assert predict_main(["-i", str(listed), "-o", str(tmp_path / "out"), "-m", str(model), "--no-qc"]) == 1


def test_without_a_case_id_column_cases_are_named_by_their_files_and_a_clash_is_refused_by_row(tmp_path, model, capsys):
    _scan(tmp_path / "a" / "flair.nii.gz", 1)
    _scan(tmp_path / "b" / "other.nii.gz", 2)
    good = _list(tmp_path / "good.csv", "path\na/flair.nii.gz\nb/other.nii.gz\n")
    assert predict_main(["-i", str(good), "-o", str(tmp_path / "out"), "-m", str(model), "--no-qc"]) == 0
    assert pd.read_csv(tmp_path / "out" / "summary.csv")["case_id"].tolist() == ["flair", "other"]
    _scan(tmp_path / "c" / "flair.nii.gz", 3)
    clash = _list(tmp_path / "clash.csv", "path\na/flair.nii.gz\nb/other.nii.gz\nc/flair.nii.gz\n")
    assert predict_main(["-i", str(clash), "-o", str(tmp_path / "out2"), "-m", str(model)]) == 2
    assert "several rows give the case id(s) flair (rows 2, 4)" in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()


@pytest.mark.parametrize("text,message", [
    ("case_id,file\nx,a.nii.gz\n", "a case list needs an 'image' (or 'path') column, and may have 'case_id'; its columns are ['case_id', 'file']"),
    ("path\n", "the case list names no scans"),
    ("case_id,path\nx,\n", "row 2: empty path"),
    ("case_id,path\n../up,scan.nii.gz\n", "row 2: case id '../up' cannot name output files"),
    ("case_id,path\n.hidden,scan.nii.gz\n", "row 2: case id '.hidden' cannot name output files"),
    ("case_id,path\na b,scan.nii.gz\n", "row 2: case id 'a b' cannot name output files"),
    ("path\nscan.nii.gz\nstudy.zip\n", "row 3: {folder}/study.zip is an archive"),
    ("path\ntwo\n", "row 2: {folder}/two holds 2 scans; a case list names one scan per row"),
    ("path\nnotes.txt\n", "row 2: notes.txt is not a scan DeepWML reads"),
], ids=["no-path-column", "no-rows", "empty-path", "dot-dot-id", "hidden-id", "space-id", "archive", "folder-of-two", "unknown-ending"])
def test_a_list_that_cannot_name_its_cases_is_refused_by_row_before_anything_runs(tmp_path, model, capsys, text, message):
    _scan(tmp_path / "scan.nii.gz", 1)
    _scan(tmp_path / "two" / "a.nii.gz", 1)
    _scan(tmp_path / "two" / "b.nii.gz", 2)
    (tmp_path / "study.zip").write_bytes(b"PK")
    (tmp_path / "notes.txt").write_text("not a scan")
    listed = _list(tmp_path / "cases.csv", text)
    assert predict_main(["-i", str(listed), "-o", str(tmp_path / "out"), "-m", str(model)]) == 2
    assert f"{listed}: {message.format(folder=tmp_path)}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_model_of_several_channels_takes_folders_not_a_case_list(tmp_path, capsys):
    plan = tiny_plan()
    plan.preprocessing.channels = [{"name": "FLAIR", "normalization": "zscore_head"}, {"name": "T2", "normalization": "zscore"}]
    plan.network.in_channels = 2
    model = write_model_dir(tmp_path / "model" / "Dataset999_Toy" / "tiny", plan, kind="random")
    _scan(tmp_path / "a_0000.nii.gz", 1)
    listed = _list(tmp_path / "cases.csv", "path\na_0000.nii.gz\n")
    assert predict_main(["-i", str(listed), "-o", str(tmp_path / "out"), "-m", str(model)]) == 2
    assert "a case list names one file per scan, and this model takes 2 channels" in capsys.readouterr().err


def test_a_finetuning_manifest_is_a_case_list(tmp_path, model):
    """The manifest deepwml_finetune reads (Case_ID / Image / Label ..., any letter case) predicts its images: the
    label column and the others are left alone."""
    _scan(tmp_path / "p1" / "FLAIR.nii.gz", 1)
    _scan(tmp_path / "p2" / "FLAIR.nii.gz", 2)
    manifest = _list(tmp_path / "manifest.csv", "Case_ID,Image,Label,Centre\np1,p1/FLAIR.nii.gz,p1/wmh.nii.gz,A\n"
                     "p2,p2/FLAIR.nii.gz,,A\n")
    assert predict_main(["-i", str(manifest), "-o", str(tmp_path / "out"), "-m", str(model), "--no-qc"]) == 0
    assert pd.read_csv(tmp_path / "out" / "summary.csv")["case_id"].tolist() == ["p1", "p2"]
