"""deepwml_train --distill-from: one network learns a trained ensemble's averaged probabilities besides the labels;
the teacher is checked, recorded in every checkpoint and reloaded (unchanged) on --continue."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from deepwml.cli.train import main
from deepwml.constants import IGNORE_LABEL
from deepwml.training.checkpoint import load_checkpoint
from deepwml.training.distillation import distillation_loss
from deepwml.training.losses import training_loss
from training_fixtures import DATASET, tiny_plan, write_preprocessed_dataset

pytestmark = pytest.mark.usefixtures("training_threads")


def _argv(pp: Path, res: Path, *extra: str, fold: str = "0"):
    return ["-d", "950", fold, "-p", "tiny", "--preprocessed", str(pp), "--results", str(res), "--threads", "1", *extra]


def _fold_dir(res: Path, fold: str = "0") -> Path:
    return res / DATASET / "tiny" / f"fold_{fold}"


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory) -> Path:
    """A two-fold model trained on one 'site' (cases 0..5), once for this file: its PLAN folder."""
    root = tmp_path_factory.mktemp("teacher")
    write_preprocessed_dataset(root / "pp", tiny_plan(epochs=6, iterations=8, lr=1e-2))
    threads = torch.get_num_threads()
    try:
        for fold in ("0", "1"):
            assert main(_argv(root / "pp", root / "res", fold=fold)) == 0
    finally:
        torch.set_num_threads(threads)
    return root / "res" / DATASET / "tiny"


@pytest.fixture
def teacher(teacher_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the teacher (tests may change its files)."""
    return Path(shutil.copytree(teacher_dir, tmp_path / "teacher" / "tiny"))


def _site_b(tmp_path: Path, blank_training_labels: bool = False, **plan_kw) -> Path:
    """Another 'site' (cases 100..105); optionally its training cases carry no lesion labels (validation keeps its own)."""
    plan = tiny_plan(**{"epochs": 2, "iterations": 3, "lr": 1e-2, **plan_kw})
    folder = write_preprocessed_dataset(tmp_path / "pp_b", plan, seed_offset=100)
    if blank_training_labels:
        split = json.loads((folder / "splits.json").read_text())["folds"][0]
        for cid in split["train"]:
            path = folder / "tiny" / "cache" / f"{cid}.npz"
            with np.load(path) as z:
                arrays = dict(z)
            arrays["label"] = np.where(arrays["label"] == IGNORE_LABEL, IGNORE_LABEL, 0).astype(np.uint8)
            np.savez_compressed(path, **arrays)
    return tmp_path / "pp_b"


def _val_dice(res: Path) -> float:
    return json.loads((_fold_dir(res) / "validation" / "summary.json").read_text())["mean_dice"]


def test_the_loss_follows_labels_and_teacher_in_the_given_shares_and_ignores_what_the_label_ignores():
    """A teacher that repeats the labels gives the plan's loss; ignored pixels never count, at any deep-supervision scale."""
    torch.manual_seed(0)
    logits = torch.randn(2, 1, 16, 16)
    target = (torch.rand(2, 1, 16, 16) > 0.8).float()
    target[:, :, :, :2] = IGNORE_LABEL
    hard = (target == 1).float()
    plain = training_loss(logits, target)
    assert torch.allclose(distillation_loss(logits, target, hard, 0.5), plain)
    assert torch.allclose(distillation_loss(logits, target, hard, 1.0), plain)
    soft = torch.rand(2, 1, 16, 16)
    mixed = distillation_loss(logits, target, soft, 0.3)
    assert torch.allclose(mixed, 0.7 * plain + 0.3 * distillation_loss(logits, target, soft, 1.0))
    # what the teacher says where the label is ignored does not matter
    other = soft.clone()
    other[:, :, :, :2] = 1 - other[:, :, :, :2]
    assert torch.allclose(distillation_loss(logits, target, other, 0.5), distillation_loss(logits, target, soft, 0.5))
    # deep supervision: a list of heads, finest first, each compared with the teacher at its own size
    heads = [logits, torch.randn(2, 1, 8, 8)]
    assert torch.isfinite(distillation_loss(heads, target, soft, 0.5))
    assert torch.allclose(distillation_loss(heads, target, hard, 0.5), training_loss(heads, target), atol=0.05)


def test_a_student_learns_lesions_from_the_teacher_where_its_labels_show_none(tmp_path, teacher, capsys):
    """Training images with empty labels: alone the network learns nothing; with the teacher it finds the lesions."""
    pp_b = _site_b(tmp_path, blank_training_labels=True, epochs=4, iterations=6)
    assert main(_argv(pp_b, tmp_path / "student", "--distill-from", str(teacher), "--distill-weight", "1")) == 0
    out = capsys.readouterr().out
    assert "distilling" in out and "folds 0, 1" in out
    assert main(_argv(pp_b, tmp_path / "labels_only")) == 0
    student, alone = _val_dice(tmp_path / "student"), _val_dice(tmp_path / "labels_only")
    assert student > 0.5 and student > alone + 0.3, (student, alone)


def test_the_checkpoint_records_the_teacher_and_continue_reloads_it_bit_identically(tmp_path, teacher):
    """Folder, folds, checksums and weight are recorded; --continue alone resumes with the same teacher."""
    pp_b = _site_b(tmp_path)
    assert main(_argv(pp_b, tmp_path / "straight", "--distill-from", str(teacher), "--distill-weight", "0.7")) == 0
    assert main(_argv(pp_b, tmp_path / "split", "--distill-from", str(teacher), "--distill-weight", "0.7", "--epochs", "1")) == 0
    assert main(_argv(pp_b, tmp_path / "split", "--continue")) == 0
    a = load_checkpoint(_fold_dir(tmp_path / "straight") / "checkpoint_latest.pth")
    b = load_checkpoint(_fold_dir(tmp_path / "split") / "checkpoint_latest.pth")
    assert b["epoch"] == 2
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    origin = a["distilled_from"]
    assert origin == b["distilled_from"]
    assert origin["folds"] == ["0", "1"] and origin["weight"] == 0.7 and origin["folder"] == str(teacher.resolve())
    assert len(origin["sha256"]) == 2 and all(len(h) == 64 for h in origin["sha256"])
    # a run without a teacher records none
    assert main(_argv(pp_b, tmp_path / "plain", "--epochs", "1")) == 0
    assert load_checkpoint(_fold_dir(tmp_path / "plain") / "checkpoint_latest.pth")["distilled_from"] is None


def test_continue_refuses_a_changed_teacher_or_a_changed_recipe(tmp_path, teacher, capsys):
    """A teacher whose weights changed, a teacher added to a plain run, or another weight: one line, nothing trained."""
    pp_b = _site_b(tmp_path, epochs=1)
    assert main(_argv(pp_b, tmp_path / "res", "--distill-from", str(teacher), "--distill-folds", "0")) == 0
    latest = _fold_dir(tmp_path / "res") / "checkpoint_latest.pth"
    before = latest.read_bytes()
    assert main(_argv(pp_b, tmp_path / "res", "--continue", "--epochs", "2", "--distill-weight", "0.9")) == 2
    assert "--distill-weight cannot change it" in capsys.readouterr().err
    assert main(_argv(pp_b, tmp_path / "res", "--continue", "--epochs", "2", "--distill-folds", "0", "1")) == 2
    assert "--distill-folds cannot change them" in capsys.readouterr().err
    (teacher / "fold_0" / "checkpoint_best.pth").write_bytes((teacher / "fold_1" / "checkpoint_best.pth").read_bytes())
    assert main(_argv(pp_b, tmp_path / "res", "--continue", "--epochs", "2")) == 2
    err = capsys.readouterr().err
    assert "checkpoint_latest.pth" in err and "changed since" in err
    shutil.rmtree(teacher)
    assert main(_argv(pp_b, tmp_path / "res", "--continue", "--epochs", "2")) == 2
    assert "cannot be loaded again" in capsys.readouterr().err
    assert latest.read_bytes() == before
    assert main(_argv(pp_b, tmp_path / "plain")) == 0
    assert main(_argv(pp_b, tmp_path / "plain", "--continue", "--epochs", "3", "--distill-from", str(tmp_path / "res" / DATASET / "tiny"))) == 2
    assert "trained without a teacher" in capsys.readouterr().err
    assert main(_argv(pp_b, tmp_path / "plain", "--continue", "--epochs", "3", "--distill-weight", "0.5")) == 2
    assert "trained without a teacher" in capsys.readouterr().err


def test_a_teacher_that_cannot_serve_is_refused_before_training(tmp_path, teacher, capsys):
    """Other preprocessing, a missing folder or fold, a weight out of range, or options without a teacher: one line each."""
    pp_b = _site_b(tmp_path, size=48)
    assert main(_argv(pp_b, tmp_path / "res", "--distill-from", str(teacher))) == 2
    err = capsys.readouterr().err
    assert "differently preprocessed" in err and "matrix" in err
    pp_c = _site_b(tmp_path / "c")
    assert main(_argv(pp_c, tmp_path / "res", "--distill-from", str(tmp_path / "nowhere"))) == 2
    assert "not found" in capsys.readouterr().err
    assert main(_argv(pp_c, tmp_path / "res", "--distill-from", str(teacher), "--distill-folds", "3")) == 2
    assert "fold 3 is missing" in capsys.readouterr().err
    assert main(_argv(pp_c, tmp_path / "res", "--distill-from", str(teacher), "--distill-weight", "0")) == 2
    assert "--distill-weight must be in (0, 1]" in capsys.readouterr().err
    assert main(_argv(pp_c, tmp_path / "res", "--distill-weight", "0.5")) == 2
    assert "go with --distill-from" in capsys.readouterr().err
    assert not _fold_dir(tmp_path / "res").exists() or not (_fold_dir(tmp_path / "res") / "checkpoint_latest.pth").exists()


def test_a_multi_class_teacher_or_student_is_refused(tmp_path, teacher):
    """Distillation averages sigmoid lesion probabilities: a multi-class model on either side is one clear error."""
    import dataclasses

    from deepwml.planning.plan import Plan
    from deepwml.training.device import setup_device
    from deepwml.training.distillation import load_teacher
    from deepwml.utils.errors import DeepWMLError

    setup = setup_device("cpu", allow_bf16=False, threads=1)
    binary = tiny_plan()
    multi = dataclasses.replace(binary, network=dataclasses.replace(binary.network, num_classes=4),
                                training=dataclasses.replace(binary.training, loss="ce_dice"))
    with pytest.raises(DeepWMLError, match="binary lesion models"):
        load_teacher(str(teacher), multi, setup)
    plan_file = teacher / "plans.json"
    d = json.loads(plan_file.read_text())
    d["network"]["num_classes"] = 4
    d["training"]["loss"] = "ce_dice"
    plan_file.write_text(json.dumps(d))
    assert Plan.load(plan_file).network.num_classes == 4
    with pytest.raises(DeepWMLError, match="binary lesion models"):
        load_teacher(str(teacher), binary, setup)
