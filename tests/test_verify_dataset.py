"""verify_dataset finds each kind of broken raw dataset, names the file, and lists every problem in one run."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import List

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import tiny_case, write_tiny_dataset
from deepwml.cli.verify_dataset import main as verify_main
from deepwml.datasets.verify import Problem, check_dataset, verify_dataset
from deepwml.imageio import Geometry, write_image
from deepwml.utils.errors import DatasetError


def _edit_json(folder: Path, **changes) -> dict:
    """Apply ``changes`` to dataset.json (a value of None deletes the key) and return the new content."""
    path = folder / "dataset.json"
    spec = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            spec.pop(key, None)
        else:
            spec[key] = value
    path.write_text(json.dumps(spec))
    return spec


def _about(problems: List[Problem], name: str, pattern: str) -> List[Problem]:
    """The problems whose file ends with ``name`` and whose message contains ``pattern`` (case-insensitive)."""
    return [p for p in problems if p.file.endswith(name) and pattern.lower() in p.message.lower()]


def test_clean_dataset_has_no_problems_and_cli_prints_summary(tiny_dataset, capsys):
    assert verify_dataset(tiny_dataset) == []
    code = verify_main(["-d", "900", "--raw", str(tiny_dataset.parent)])
    out = capsys.readouterr().out
    assert code == 0
    assert "5 cases (4 training, 1 test)" in out and "(A, B)" in out and "MS 3" in out and "CSVD 2" in out


def test_truncated_image_is_reported(tiny_dataset):
    path = tiny_dataset / "imagesTr" / "case001.nii.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    problems = verify_dataset(tiny_dataset)
    assert _about(problems, "imagesTr/case001.nii.gz", "truncated"), problems


def test_truncated_uncompressed_nifti_is_reported(tmp_path):
    # ITK zero-fills a short .nii without complaint; the check must still catch it
    folder = write_tiny_dataset(tmp_path, ending=".nii", n_test=0)
    path = folder / "labelsTr" / "case002.nii"
    path.write_bytes(path.read_bytes()[:-500])
    problems = verify_dataset(folder)
    assert _about(problems, "labelsTr/case002.nii", "truncated"), problems


def test_2d_and_4d_images_are_reported(tiny_dataset):
    sitk.WriteImage(sitk.Image(64, 64, sitk.sitkFloat32), str(tiny_dataset / "imagesTr" / "case000.nii.gz"))
    sitk.WriteImage(sitk.Image([64, 64, 6, 2], sitk.sitkFloat32), str(tiny_dataset / "imagesTr" / "case001.nii.gz"))
    problems = verify_dataset(tiny_dataset)
    assert _about(problems, "imagesTr/case000.nii.gz", "2D")
    assert _about(problems, "imagesTr/case001.nii.gz", "4D")


def test_nan_and_inf_voxels_are_reported(tiny_dataset):
    image, _, geometry = tiny_case(seed=2)
    image[1, 10, 10] = np.nan
    image[2, 5, 5] = np.inf
    write_image(image, geometry, tiny_dataset / "imagesTr" / "case002.nii.gz")
    problems = verify_dataset(tiny_dataset)
    assert _about(problems, "imagesTr/case002.nii.gz", "2 NaN/Inf"), problems


def test_blank_image_is_reported(tiny_dataset):
    _, _, geometry = tiny_case()
    write_image(np.zeros((6, 64, 64), np.float32), geometry, tiny_dataset / "imagesTr" / "case000.nii.gz")
    assert _about(verify_dataset(tiny_dataset), "imagesTr/case000.nii.gz", "blank")


@pytest.mark.parametrize(
    "change, expected",
    [
        (dict(spacing=(0.9, 0.9, 5.0)), "spacing"),
        (dict(origin=(-30.0, -40.0, 16.0)), "origin"),
        (dict(direction=(-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0)), "direction"),
    ],
)
def test_label_on_another_grid_is_reported(tiny_dataset, change, expected):
    _, label, geometry = tiny_case(seed=1)
    moved = Geometry(**{**geometry.__dict__, **change})
    write_image(label, moved, tiny_dataset / "labelsTr" / "case001.nii.gz")
    problems = _about(verify_dataset(tiny_dataset), "labelsTr/case001.nii.gz", expected)
    assert len(problems) == 1 and "case001.nii.gz" in problems[0].message


def test_label_with_other_size_is_reported(tiny_dataset):
    _, label, geometry = tiny_case(seed=1, shape_zyx=(5, 64, 64))
    write_image(label, geometry, tiny_dataset / "labelsTr" / "case001.nii.gz")
    assert _about(verify_dataset(tiny_dataset), "labelsTr/case001.nii.gz", "size")


def test_tiny_origin_rounding_is_tolerated(tiny_dataset):
    _, label, geometry = tiny_case(seed=1)
    nudged = Geometry(geometry.size, geometry.spacing, tuple(o + 1e-4 for o in geometry.origin), geometry.direction)
    write_image(label, nudged, tiny_dataset / "labelsTr" / "case001.nii.gz")
    assert verify_dataset(tiny_dataset) == []


def test_undeclared_label_values_are_reported_and_declared_ignore_is_accepted(tmp_path):
    folder = write_tiny_dataset(tmp_path)
    _, label, geometry = tiny_case(seed=0)
    label[0, :4, :4] = 2
    label[1, :4, :4] = 7
    write_image(label, geometry, folder / "labelsTr" / "case000.nii.gz")
    problems = _about(verify_dataset(folder), "labelsTr/case000.nii.gz", "not declared")
    assert len(problems) == 1 and "2, 7" in problems[0].message

    _edit_json(folder, labels={"background": 0, "lesion": 1, "ignore": 2})
    problems = _about(verify_dataset(folder), "labelsTr/case000.nii.gz", "not declared")
    assert len(problems) == 1 and "values 7 " in problems[0].message


def test_missing_label_and_orphan_label_are_reported(tiny_dataset):
    (tiny_dataset / "labelsTr" / "case003.nii.gz").unlink()
    shutil.copy(tiny_dataset / "labelsTr" / "case000.nii.gz", tiny_dataset / "labelsTr" / "case777.nii.gz")
    problems = verify_dataset(tiny_dataset)
    assert _about(problems, "imagesTr/case003.nii.gz", "no label")
    assert _about(problems, "labelsTr/case777.nii.gz", "no image")


def test_test_images_need_no_label(tiny_dataset):
    shutil.rmtree(tiny_dataset / "labelsTs")
    assert verify_dataset(tiny_dataset) == []


def test_duplicate_case_ids_are_reported(tiny_dataset):
    # the same id with two endings, and a training case repeated in the test split
    image, label, geometry = tiny_case(seed=0)
    write_image(image, geometry, tiny_dataset / "imagesTr" / "case000.nii")
    shutil.copy(tiny_dataset / "imagesTr" / "case001.nii.gz", tiny_dataset / "imagesTs" / "case001.nii.gz")
    problems = verify_dataset(tiny_dataset)
    duplicate = [p for p in problems if "duplicate case id 'case000'" in p.message]
    assert len(duplicate) == 1 and "case000.nii, case000.nii.gz" in duplicate[0].message
    assert _about(problems, "imagesTs/case001.nii.gz", "both imagesTr and imagesTs")


def test_case_ids_differing_only_in_letter_case_are_reported(tiny_dataset):
    for kind in ("images", "labels"):
        shutil.copy(tiny_dataset / f"{kind}Tr" / "case000.nii.gz", tiny_dataset / f"{kind}Tr" / "CASE000.nii.gz")
    problems = verify_dataset(tiny_dataset)
    assert [p for p in problems if "letter case" in p.message]


def test_unsafe_case_ids_are_reported(tiny_dataset):
    for kind in ("images", "labels"):
        shutil.copy(tiny_dataset / f"{kind}Tr" / "case000.nii.gz", tiny_dataset / f"{kind}Tr" / "a..b.nii.gz")
    spec = json.loads((tiny_dataset / "dataset.json").read_text())
    spec["cases"]["a..b"] = spec["cases"]["case000"]
    spec["cases"]["../escape"] = spec["cases"]["case000"]
    spec["numTraining"] = 5
    (tiny_dataset / "dataset.json").write_text(json.dumps(spec))
    problems = verify_dataset(tiny_dataset)
    assert _about(problems, "imagesTr/a..b.nii.gz", "unsafe case id")
    assert _about(problems, "dataset.json", "path separator")


def test_dataset_json_that_disagrees_with_the_files_is_reported(tiny_dataset):
    spec = json.loads((tiny_dataset / "dataset.json").read_text())
    spec["numTraining"] = 7
    spec["cases"]["ghost"] = {"centre": "A", "disease": "MS"}
    del spec["cases"]["case002"]
    (tiny_dataset / "dataset.json").write_text(json.dumps(spec))
    problems = verify_dataset(tiny_dataset)
    assert _about(problems, "dataset.json", "numTraining is 7 but imagesTr holds 4")
    assert _about(problems, "dataset.json", "'ghost' is listed")
    assert _about(problems, "imagesTr/case002.nii.gz", "no metadata")


def test_wrong_file_ending_is_reported_for_every_file(tiny_dataset):
    _edit_json(tiny_dataset, file_ending=".nii")
    problems = [p for p in verify_dataset(tiny_dataset) if "file ending differs" in p.message]
    assert len(problems) == 10  # 5 images + 5 labels


def test_schema_problems_are_reported(tiny_dataset):
    spec = _edit_json(tiny_dataset, labels={"background": 0, "lesion": 2}, numTest=None)
    spec["cases"]["case000"]["disease"] = "flu"
    spec["cases"]["case001"]["field_strength"] = "3T"
    (tiny_dataset / "dataset.json").write_text(json.dumps(spec))
    messages = [p.message for p in verify_dataset(tiny_dataset) if p.file.endswith("dataset.json")]
    assert any("lesion to 1" in m for m in messages)
    assert any("'numTest'" in m for m in messages)
    assert any("'flu'" in m for m in messages)
    assert any("field_strength" in m and "'3T'" in m for m in messages)


def test_missing_or_malformed_dataset_json_is_reported_and_files_still_checked(tiny_dataset):
    (tiny_dataset / "dataset.json").write_text("{not json")
    (tiny_dataset / "labelsTr" / "case000.nii.gz").unlink()
    problems = verify_dataset(tiny_dataset)
    assert _about(problems, "dataset.json", "not valid JSON")
    assert _about(problems, "imagesTr/case000.nii.gz", "no label")
    (tiny_dataset / "dataset.json").unlink()
    assert _about(verify_dataset(tiny_dataset), "dataset.json", "missing")


def test_stray_files_and_folders_are_reported(tiny_dataset):
    (tiny_dataset / "imagesTr" / "notes.txt").write_text("x")
    (tiny_dataset / "imagesTr" / "case009").mkdir()
    (tiny_dataset / "imagesTr" / ".DS_Store").write_text("x")
    problems = verify_dataset(tiny_dataset)
    assert _about(problems, "imagesTr/notes.txt", "not an image file")
    assert _about(problems, "imagesTr/case009", "is a folder")
    assert not _about(problems, ".DS_Store", "")


def _break_everything(folder: Path) -> None:
    """Seven unrelated problems in seven files."""
    path = folder / "imagesTr" / "case000.nii.gz"
    path.write_bytes(path.read_bytes()[:300])  # truncated
    image, label, geometry = tiny_case(seed=1)
    image[0, 0, 0] = np.nan
    write_image(image, geometry, folder / "imagesTr" / "case001.nii.gz")  # NaN
    write_image(label, Geometry(geometry.size, (1.0, 1.0, 6.0), geometry.origin), folder / "labelsTr" / "case002.nii.gz")
    (folder / "labelsTr" / "case003.nii.gz").unlink()  # missing label
    label[0, 0, 0] = 5
    write_image(label, geometry, folder / "labelsTs" / "case004.nii.gz")  # undeclared value
    shutil.copy(folder / "imagesTr" / "case002.nii.gz", folder / "imagesTr" / "extra.nii.gz")  # no label, no metadata
    spec = json.loads((folder / "dataset.json").read_text())
    spec["numTest"] = 3
    (folder / "dataset.json").write_text(json.dumps(spec))


def test_every_problem_is_listed_in_one_run(tiny_dataset, capsys):
    _break_everything(tiny_dataset)
    problems = verify_dataset(tiny_dataset)
    expected = [
        ("imagesTr/case000.nii.gz", "truncated"),
        ("imagesTr/case001.nii.gz", "NaN"),
        ("labelsTr/case002.nii.gz", "spacing"),
        ("imagesTr/case003.nii.gz", "no label"),
        ("labelsTs/case004.nii.gz", "not declared"),
        ("imagesTr/extra.nii.gz", "no label"),
        ("imagesTr/extra.nii.gz", "no metadata"),
        ("dataset.json", "numTraining is 4 but imagesTr holds 5"),
        ("dataset.json", "numTest is 3"),
    ]
    for name, pattern in expected:
        assert _about(problems, name, pattern), (name, pattern, problems)

    code = verify_main(["-d", "Dataset900_Tiny", "--raw", str(tiny_dataset.parent)])
    out = capsys.readouterr().out.splitlines()
    assert code == 1
    assert len(out) == len(problems)
    assert all(line.startswith("Dataset900_Tiny/") for line in out)


def test_parallel_check_finds_the_same_problems(tiny_dataset):
    _break_everything(tiny_dataset)
    assert verify_dataset(tiny_dataset, n_jobs=2) == verify_dataset(tiny_dataset, n_jobs=1)


def test_check_dataset_raises_one_error_listing_the_problems(tiny_dataset):
    check_dataset(tiny_dataset)
    (tiny_dataset / "labelsTr" / "case003.nii.gz").unlink()
    with pytest.raises(DatasetError, match="1 problem.*imagesTr/case003.nii.gz: training image has no label"):
        check_dataset(tiny_dataset)


def test_unknown_dataset_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "raw").mkdir()
    assert verify_main(["-d", "123", "--raw", str(tmp_path / "raw")]) == 2
    assert "no dataset '123'" in capsys.readouterr().err
