"""Hostile inputs to verify/plan, train and evaluate (issue #11), each driven through the command's main(argv).

Every probe asserts what a user relies on: the exit code, one message naming the file and the problem, no partial
output (no plans.json or cache for a refused dataset, no fold folder for a refused training run, no report for a
refused evaluation), and, where it applies, that the other cases are still processed.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable, List

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from conftest import tiny_case, write_tiny_dataset
from deepwml.cli.evaluate import main as evaluate_main
from deepwml.cli.plan_and_preprocess import main as plan_main
from deepwml.cli.predict import main as predict_main
from deepwml.cli.train import main as train_main
from deepwml.cli.verify_dataset import main as verify_main
from deepwml.datasets.integrity import leakage
from deepwml.imageio import Geometry, write_image
from deepwml_testing.toy_models import tiny_plan as toy_model_plan
from deepwml_testing.toy_models import write_model_dir
from deepwml.preprocessing.run import plan_lock
from deepwml.utils.atomic import read_json, write_json
from training_fixtures import DATASET as TRAIN_DATASET
from training_fixtures import write_preprocessed_dataset

DS = "Dataset900_Tiny"


# --- helpers ---------------------------------------------------------------------------------------------------------


def _dataset(tmp_path: Path) -> Path:
    """A valid tiny raw dataset: case000-case003 in imagesTr/labelsTr, case004 in imagesTs/labelsTs."""
    return write_tiny_dataset(tmp_path / "raw")


def _plan(tmp_path: Path, *extra: str) -> int:
    """deepwml_plan_and_preprocess in-process (cpu_fast preset, one worker)."""
    return plan_main(["-d", "900", "--raw", str(tmp_path / "raw"), "--preprocessed", str(tmp_path / "pp"),
                      "-np", "1", "--preset", "cpu_fast", *extra])


def _verify(tmp_path: Path) -> int:
    """deepwml_verify_dataset in-process."""
    return verify_main(["-d", "900", "--raw", str(tmp_path / "raw")])


def _nothing_planned(tmp_path: Path) -> bool:
    """True when a refused run left nothing behind: no dataset folder, hence no plan, splits, fingerprint or cache."""
    return not (tmp_path / "pp" / DS).exists()


def _dangling(path: Path) -> None:
    """Replace ``path`` by a symbolic link to a file that does not exist."""
    path.unlink()
    path.symlink_to(path.parent / "moved_away.nii.gz")


def _relabel(ds: Path, cid: str, change: Callable[[np.ndarray], np.ndarray], **geometry) -> None:
    """Rewrite labelsTr/<cid> with ``change`` applied to its voxels and ``geometry`` fields replaced."""
    _, label, g = tiny_case(seed=int(cid[-3:]))
    g = Geometry(**{**dict(size=g.size, spacing=g.spacing, origin=g.origin, direction=g.direction), **geometry})
    write_image(change(label), g, ds / "labelsTr" / f"{cid}.nii.gz")


def _label_other_shape(ds: Path) -> None:
    """A label of 6x32x64 voxels for a 6x64x64 image."""
    _relabel(ds, "case001", lambda a: a[:, ::2, :].copy(), size=(64, 32, 6))


def _nan_image(ds: Path) -> None:
    """An image whose voxels are all NaN."""
    image, _, g = tiny_case(seed=1)
    write_image(np.full_like(image, np.nan), g, ds / "imagesTr" / "case001.nii.gz")


def _image_4d(ds: Path) -> None:
    """A 4D image (two volumes) in imagesTr."""
    sitk.WriteImage(sitk.Image([64, 64, 6, 2], sitk.sitkFloat32), str(ds / "imagesTr" / "case001.nii.gz"))


def _dataset_json_missing_case(ds: Path) -> None:
    """dataset.json forgets a case that has files."""
    spec = json.loads((ds / "dataset.json").read_text())
    del spec["cases"]["case002"]
    (ds / "dataset.json").write_text(json.dumps(spec))


#: (probe id, how the dataset is broken, the file the message must name, what verify says, what planning says)
BROKEN_DATASETS = [
    ("dangling-image-symlink", lambda ds: _dangling(ds / "imagesTr" / "case001.nii.gz"),
     "imagesTr/case001.nii.gz", "dangling symbolic link", "dangling symbolic link"),
    ("dangling-label-symlink", lambda ds: _dangling(ds / "labelsTr" / "case002.nii.gz"),
     "labelsTr/case002.nii.gz", "dangling symbolic link", "dangling symbolic link"),
    ("zero-byte-image", lambda ds: (ds / "imagesTr" / "case001.nii.gz").write_bytes(b""),
     "imagesTr/case001.nii.gz", "0 bytes", "0 bytes"),
    ("folder-named-like-an-image", lambda ds: (ds / "imagesTr" / "case009.nii.gz").mkdir(),
     "imagesTr/case009.nii.gz", "folder", "folder"),
    ("label-other-shape", _label_other_shape, "labelsTr/case001.nii.gz", "size", "grid"),
    ("label-other-spacing", lambda ds: _relabel(ds, "case001", lambda a: a, spacing=(1.2, 0.9, 6.0)),
     "labelsTr/case001.nii.gz", "spacing", "spacing"),
    ("label-other-origin", lambda ds: _relabel(ds, "case001", lambda a: a, origin=(0.0, -40.0, 10.0)),
     "labelsTr/case001.nii.gz", "origin", "origin"),
    ("label-value-3", lambda ds: _relabel(ds, "case001", lambda a: a * 3),
     "labelsTr/case001.nii.gz", "label values 3", "3"),
    ("label-value-0.5", lambda ds: _relabel(ds, "case001", lambda a: a.astype(np.float32) * 0.5),
     "labelsTr/case001.nii.gz", "non-integer", "non-integer"),
    ("4d-image", _image_4d, "imagesTr/case001.nii.gz", "4D", "4D"),
    ("nan-image", _nan_image, "imagesTr/case001.nii.gz", "NaN", "NaN"),
    ("dataset-json-not-json", lambda ds: (ds / "dataset.json").write_text("{'name': oops"),
     "dataset.json", "not valid JSON", "not valid JSON"),
    ("same-id-in-imagesTr-and-imagesTs",
     lambda ds: shutil.copy(ds / "imagesTs" / "case004.nii.gz", ds / "imagesTs" / "case001.nii.gz"),
     "imagesTs/case001.nii.gz", "in both imagesTr and imagesTs", "in both imagesTr and imagesTs"),
    ("byte-identical-test-image-under-another-id",
     lambda ds: shutil.copy(ds / "imagesTr" / "case002.nii.gz", ds / "imagesTs" / "case007.nii.gz"),
     "imagesTs/case007.nii.gz", "byte-identical to imagesTr/case002.nii.gz", "byte-identical to imagesTr/case002.nii.gz"),
]


# --- verify and plan ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("break_it,named,in_verify,in_plan", [p[1:] for p in BROKEN_DATASETS], ids=[p[0] for p in BROKEN_DATASETS])
def test_a_broken_dataset_is_named_by_verify_and_refused_by_plan_without_output(tmp_path, capsys, break_it, named, in_verify, in_plan):
    """A hostile user breaks one file of a valid dataset, then runs verify and plan_and_preprocess (without --verify)."""
    break_it(_dataset(tmp_path))
    assert _verify(tmp_path) == 1
    out = capsys.readouterr().out
    assert any(named in line and in_verify in line for line in out.splitlines()), out
    assert _plan(tmp_path) == 2
    err = capsys.readouterr().err
    assert named in err and in_plan in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert _nothing_planned(tmp_path)


@pytest.mark.parametrize("extra", [(), ("--verify",)], ids=["plain", "with-verify"])
def test_a_test_case_copied_into_training_is_refused_naming_both_files(tmp_path, capsys, extra):
    """A hostile user copies the test scan into imagesTs under a training id and another under a new id."""
    ds = _dataset(tmp_path)
    shutil.copy(ds / "imagesTs" / "case004.nii.gz", ds / "imagesTs" / "case000.nii.gz")
    shutil.copy(ds / "imagesTr" / "case003.nii.gz", ds / "imagesTs" / "case005.nii.gz")
    assert _plan(tmp_path, *extra) == 2
    err = capsys.readouterr().err
    assert "imagesTs/case000.nii.gz" in err and "imagesTr/case000.nii.gz" in err
    assert "imagesTs/case005.nii.gz" in err and "imagesTr/case003.nii.gz" in err
    assert _nothing_planned(tmp_path)


def test_a_training_scan_duplicated_under_two_ids_is_named(tmp_path, capsys):
    """A hostile user copies a training scan under a second training id: it could land in the test hold-out and in training."""
    ds = _dataset(tmp_path)
    for kind in ("images", "labels"):
        shutil.copy(ds / f"{kind}Tr" / "case001.nii.gz", ds / f"{kind}Tr" / "case009.nii.gz")
    assert _plan(tmp_path) == 2
    err = capsys.readouterr().err
    assert "imagesTr/case009.nii.gz: byte-identical to imagesTr/case001.nii.gz" in err
    assert _nothing_planned(tmp_path)


def test_the_leakage_check_reads_whole_files_only_when_samples_match(tmp_path, monkeypatch):
    """A hostile user's dataset of 100 uncompressed scans of one size: every size collides, sampled hashes keep it cheap."""
    import deepwml.datasets.integrity as integrity

    full_reads = []
    digest = integrity._digest

    def counting_digest(path, sampled):
        if not sampled:
            full_reads.append(path)
        return digest(path, sampled)

    monkeypatch.setattr(integrity, "_digest", counting_digest)
    ds = tmp_path / "raw" / DS
    rng = np.random.default_rng(0)
    geometry = Geometry((64, 64, 6), (0.9, 0.9, 6.0), (0.0, 0.0, 0.0))
    for i in range(100):
        split = "Tr" if i < 80 else "Ts"
        write_image(rng.normal(size=(6, 64, 64)).astype(np.float32), geometry, ds / f"images{split}" / f"c{i:03d}.nii")
    assert leakage(ds) == []
    assert full_reads == []  # every pair of equal-size files told apart by its sampled blocks
    (ds / "imagesTs" / "c099.nii").write_bytes((ds / "imagesTr" / "c000.nii").read_bytes())
    assert len(leakage(ds)) == 1 and len(full_reads) == 2  # only the identical pair is read in full


def test_dataset_json_missing_a_case_is_named_by_verify_and_planning_warns(tmp_path, capsys):
    """A hostile user's dataset.json lacks a case that has files: verify names it, planning says it is stratified as unknown."""
    _dataset_json_missing_case(_dataset(tmp_path))
    assert _verify(tmp_path) == 1
    out = capsys.readouterr().out
    assert "imagesTr/case002.nii.gz: case 'case002' has no metadata entry" in out
    assert _plan(tmp_path) == 0
    assert "case002" in capsys.readouterr().out


def test_a_splits_json_whose_test_cases_are_in_a_fold_is_refused_by_plan_and_train(tmp_path, capsys):
    """A hostile user edits splits.json so that a test case also sits in fold 0's training set."""
    _dataset(tmp_path)
    assert _plan(tmp_path) == 0
    splits_path = tmp_path / "pp" / DS / "splits.json"
    splits = read_json(splits_path)
    leaked = splits["test"][0]
    splits["folds"][0]["train"].append(leaked)
    write_json(splits_path, splits)
    capsys.readouterr()
    assert _plan(tmp_path) == 2
    err = capsys.readouterr().err
    assert "splits.json" in err and leaked in err and "also in the test set" in err
    results = tmp_path / "res"
    assert train_main(["-d", "900", "0", "-p", "cpu_fast", "--preprocessed", str(tmp_path / "pp"), "--results", str(results),
                       "--threads", "1"]) == 2
    err = capsys.readouterr().err
    assert "splits.json" in err and leaked in err and "also in the test set" in err and "Traceback" not in err
    assert not results.exists()


def test_a_second_plan_run_is_refused_while_the_first_holds_the_plan(tmp_path, capsys):
    """A hostile user starts deepwml_plan_and_preprocess twice on one plan; the second must stop, not interleave."""
    _dataset(tmp_path)
    plan_dir = tmp_path / "pp" / DS / "cpu_fast"
    with plan_lock(plan_dir):
        assert _plan(tmp_path) == 2
        assert not any((plan_dir / "cache").glob("*.npz")) and not (plan_dir / "plans.json").exists()
    assert "another deepwml_plan_and_preprocess" in capsys.readouterr().err
    assert _plan(tmp_path) == 0
    assert len(list((plan_dir / "cache").glob("*.npz"))) == 4


# --- train -------------------------------------------------------------------------------------------------------------


@pytest.fixture
def preprocessed(tmp_path, monkeypatch) -> Path:
    """The training fixtures' tiny preprocessed dataset (plan 'tiny')."""
    monkeypatch.setenv("DEEPWML_ALLOCATOR", "default")
    return write_preprocessed_dataset(tmp_path / "pp")


def _train(tmp_path: Path, fold: str = "0") -> int:
    """deepwml_train in-process, one epoch of two iterations."""
    return train_main(["-d", "950", fold, "-p", "tiny", "--preprocessed", str(tmp_path / "pp"), "--results", str(tmp_path / "res"),
                       "--threads", "1", "--epochs", "1", "--iterations", "2"])


def _fold_dir(tmp_path: Path, fold: str = "0") -> Path:
    return tmp_path / "res" / TRAIN_DATASET / "tiny" / f"fold_{fold}"


@pytest.mark.parametrize("fold,message", [("7", "fold 7 does not exist"), ("seven", "fold must be a number"), ("-1", "fold must be")])
def test_train_refuses_an_unknown_fold(tmp_path, capsys, preprocessed, fold, message):
    """A hostile user asks for a fold the splits do not have."""
    assert _train(tmp_path, fold) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not _fold_dir(tmp_path, fold).exists()


def test_train_refuses_a_cache_deleted_halfway(tmp_path, capsys, preprocessed):
    """A hostile user deletes one case's npz from the cache (a cleanup script run halfway)."""
    (preprocessed / "tiny" / "cache" / "case003.npz").unlink()
    assert _train(tmp_path) == 2
    err = capsys.readouterr().err
    assert "case003" in err and "deepwml_plan_and_preprocess -d 950" in err
    assert not _fold_dir(tmp_path).exists()


def test_train_refuses_a_truncated_cache_file_naming_it(tmp_path, capsys, preprocessed):
    """A hostile user's disk filled up: one case's npz is cut in half."""
    npz = preprocessed / "tiny" / "cache" / "case002.npz"
    npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])
    assert _train(tmp_path) == 2
    err = capsys.readouterr().err
    assert "case002.npz" in err and "unreadable cache file" in err and "Traceback" not in err
    assert not list(_fold_dir(tmp_path).glob("checkpoint_*.pth"))


# --- evaluate ----------------------------------------------------------------------------------------------------------

GRID = Geometry((12, 12, 3), (0.9, 0.9, 6.0), (0.0, 0.0, 0.0))


def _mask() -> np.ndarray:
    m = np.zeros((3, 12, 12), np.uint8)
    m[1, 4:8, 4:8] = 1
    return m


def _masks(tmp_path: Path, cases=("a", "b", "c")) -> tuple:
    """Reference and prediction folders with identical masks for ``cases``."""
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    for cid in cases:
        write_image(_mask(), GRID, ref / f"{cid}.nii.gz")
        write_image(_mask(), GRID, pred / f"{cid}.nii.gz")
    return ref, pred


def _evaluate(tmp_path: Path, *extra: str) -> int:
    return evaluate_main(["-ref", str(tmp_path / "ref"), "-pred", str(tmp_path / "pred"), "-o", str(tmp_path / "report"), *extra])


def _refused(tmp_path: Path, capsys, *named: str) -> str:
    """Evaluation exits 2 with one line naming ``named`` and writes no report."""
    assert _evaluate(tmp_path) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and all(n in errors[0] for n in named) and "Traceback" not in err, err
    assert not (tmp_path / "report" / "report.html").exists()
    return err


def test_evaluate_refuses_a_prediction_on_another_grid(tmp_path, capsys):
    """A hostile user evaluates a prediction resampled to another spacing."""
    _, pred = _masks(tmp_path)
    write_image(_mask(), Geometry((12, 12, 3), (1.0, 0.9, 6.0), (0.0, 0.0, 0.0)), pred / "b.nii.gz")
    _refused(tmp_path, capsys, str(pred / "b.nii.gz"), "not on the reference grid", "spacing")


def test_evaluate_refuses_a_missing_prediction_unless_asked_to_score_it_empty(tmp_path, capsys):
    """A hostile user evaluates a prediction folder that lacks one case."""
    _, pred = _masks(tmp_path)
    (pred / "c.nii.gz").unlink()
    _refused(tmp_path, capsys, "have no prediction: c", "--missing-as-empty")
    assert _evaluate(tmp_path, "--missing-as-empty") == 0
    per_case = pd.read_csv(next((tmp_path / "report").glob("*case*.csv")))
    assert len(per_case) == 3


@pytest.mark.parametrize(
    "role,breaker,problem",
    [
        ("pred", lambda p: _dangling(p / "b.nii.gz"), "dangling symbolic link"),
        ("ref", lambda p: _dangling(p / "b.nii.gz"), "dangling symbolic link"),
        ("pred", lambda p: (p / "b.nii.gz").write_bytes(b""), "0 bytes"),
        ("ref", lambda p: (p / "d.nii.gz").mkdir(), "is a folder"),
    ],
    ids=["dangling-prediction", "dangling-reference", "zero-byte-prediction", "folder-named-like-a-reference"],
)
def test_evaluate_names_an_entry_it_cannot_read_instead_of_dropping_the_case(tmp_path, capsys, role, breaker, problem):
    """A hostile user's mask folder holds a broken link, an empty file or a folder named like a mask."""
    ref, pred = _masks(tmp_path)
    folder = ref if role == "ref" else pred
    breaker(folder)
    _refused(tmp_path, capsys, str(folder), problem)


# --- predict (case discovery) -------------------------------------------------------------------------------------------


def test_predict_reports_broken_entries_as_failed_cases_and_predicts_the_rest(tmp_path, capsys):
    """A hostile user's input folder holds a dangling link, an empty file and a folder named like an image."""
    model = write_model_dir(tmp_path / "model" / "Dataset999_Toy" / "tiny", toy_model_plan(), folds=(0,), kind="threshold")
    inputs = tmp_path / "in"
    image, _, geometry = tiny_case(shape_zyx=(4, 64, 64))
    write_image(image, geometry, inputs / "good.nii.gz")
    (inputs / "gone.nii.gz").symlink_to(inputs / "moved_away.nii.gz")
    (inputs / "empty.nii.gz").write_bytes(b"")
    (inputs / "folder.nii.gz").mkdir()
    code = predict_main(["-i", str(inputs), "-o", str(tmp_path / "out"), "-m", str(model), "--no-qc"])
    err = capsys.readouterr().err
    assert code == 1 and "3 case(s) failed" in err
    summary = pd.read_csv(tmp_path / "out" / "summary.csv").set_index("case_id")
    assert summary.loc["good", "status"] == "ok" and (tmp_path / "out" / "good.nii.gz").is_file()
    errors: List[str] = [summary.loc[c, "error"] for c in ("gone", "empty", "folder")]
    assert (summary.drop(index="good")["status"] == "failed").all()
    assert "dangling symbolic link" in errors[0] and "0 bytes" in errors[1] and "folder" in errors[2]
    assert not any((tmp_path / "out" / f"{c}.nii.gz").exists() for c in ("gone", "empty", "folder"))
    assert os.path.islink(inputs / "gone.nii.gz")  # inputs untouched
