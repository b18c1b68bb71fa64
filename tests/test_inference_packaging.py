"""Model export and install: a model trained at one site predicts identically at another; unsafe zips are refused."""
from __future__ import annotations

import fractions
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from deepwml.utils.atomic import umask
import torch

from conftest import tiny_case
from deepwml.cli.export_model import main as export_main
from deepwml.cli.install_model import main as install_main
from deepwml.cli.predict import main as predict_main
from deepwml.imageio import read_image, write_image
from deepwml.inference.model_zip import file_record
from deepwml.inference.packaging import export_model, install_model
from deepwml_testing.toy_models import tiny_plan, write_model_dir
from deepwml.utils.errors import DeepWMLError

PREFIX = "Dataset999_Toy/tiny/"


@pytest.fixture
def trained(tmp_path) -> Path:
    """A 'site A' results folder with a random two-fold model whose checkpoints carry training state."""
    model_dir = write_model_dir(tmp_path / "siteA" / "Dataset999_Toy" / "tiny", tiny_plan(), folds=(0, 1), kind="random")
    for fold in (0, 1):
        path = model_dir / f"fold_{fold}" / "checkpoint_best.pth"
        ckpt = torch.load(path, weights_only=True)
        ckpt.update(optimizer={"state": {}}, rng={"numpy": np.random.get_state()}, best_ema_dice=np.float64(0.7))
        torch.save(ckpt, path)
    return model_dir


def _zip_with(path: Path, members: dict) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_exported_model_installs_elsewhere_and_predicts_the_same_masks(tmp_path, trained, capsys):
    assert export_main(["-d", "999", "-p", "tiny", "-o", str(tmp_path / "model.zip"), "--results", str(tmp_path / "siteA")]) == 0
    with zipfile.ZipFile(tmp_path / "model.zip") as zf:
        names = set(zf.namelist())
        manifest = json.loads(zf.read(PREFIX + "manifest.json"))
    assert names == {PREFIX + n for n in ("plans.json", "dataset.json", "fingerprint.json", "manifest.json",
                                          "fold_0/checkpoint_best.pth", "fold_1/checkpoint_best.pth")}
    assert manifest["folds"] == ["0", "1"] and manifest["checkpoint"] == "best" and len(manifest["plan_hash"]) == 64
    assert manifest["format_version"] == 2 and {PREFIX + n for n in manifest["files"]} == names - {PREFIX + "manifest.json"}
    with zipfile.ZipFile(tmp_path / "model.zip") as zf:
        assert all(file_record(zf.read(PREFIX + n)) == r for n, r in manifest["files"].items())
    assert install_main([str(tmp_path / "model.zip"), "--results", str(tmp_path / "siteB")]) == 0
    installed = tmp_path / "siteB" / "Dataset999_Toy" / "tiny"
    slim = torch.load(installed / "fold_0" / "checkpoint_best.pth", weights_only=True)  # no pickled code needed
    assert "optimizer" not in slim and "rng" not in slim and slim["best_ema_dice"] == pytest.approx(0.7)
    image, _, geometry = tiny_case(shape_zyx=(4, 48, 48), seed=5)
    scan = write_image(image, geometry, tmp_path / "in" / "scan.nii.gz")
    common = ["-i", str(scan), "--save-probabilities", "--no-qc"]
    assert predict_main(common + ["-o", str(tmp_path / "a"), "-m", str(trained)]) == 0
    assert predict_main(common + ["-o", str(tmp_path / "b"), "-d", "Dataset999_Toy", "-p", "tiny", "--results", str(tmp_path / "siteB")]) == 0
    prob_a = read_image(tmp_path / "a" / "scan_prob.nii.gz").array
    prob_b = read_image(tmp_path / "b" / "scan_prob.nii.gz").array
    assert np.array_equal(prob_a, prob_b)


def test_install_refuses_to_overwrite_unless_asked(tmp_path, trained):
    export_model(trained, tmp_path / "m.zip", folds=[1])
    target = install_model(tmp_path / "m.zip", tmp_path / "siteB")
    with pytest.raises(DeepWMLError, match="already installed.*--overwrite"):
        install_model(tmp_path / "m.zip", tmp_path / "siteB")
    (target / "fold_0").mkdir()  # something stale that a replacement must not keep
    install_model(tmp_path / "m.zip", tmp_path / "siteB", overwrite=True)
    assert sorted(p.name for p in target.iterdir() if p.is_dir()) == ["fold_1"]
    assert [p.name for p in target.parent.iterdir()] == ["tiny"]  # no staging or old copies left behind
    # readable by the other users of a shared server, like any folder mkdir makes (not mkdtemp's private 0700)
    assert target.stat().st_mode & 0o777 == 0o777 & ~umask()


@pytest.mark.parametrize(
    "bad_name,message",
    [("../../evil.txt", r"\.\."), ("/etc/evil", "absolute"), (PREFIX + "../../outside.txt", r"\.\."), ("Dataset999_Toy/other/x", "not listed in the manifest")],
)
def test_zip_slip_and_stray_members_are_refused_before_anything_is_written(tmp_path, trained, bad_name, message):
    export_model(trained, tmp_path / "m.zip")
    with zipfile.ZipFile(tmp_path / "m.zip") as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    members[bad_name] = b"x"
    _zip_with(tmp_path / "bad.zip", members)
    with pytest.raises(DeepWMLError, match=message):
        install_model(tmp_path / "bad.zip", tmp_path / "siteB" / "results")
    assert not (tmp_path / "siteB").exists() and not (tmp_path / "evil.txt").exists()


def test_altered_or_foreign_zips_are_refused(tmp_path, trained):
    export_model(trained, tmp_path / "m.zip")
    with zipfile.ZipFile(tmp_path / "m.zip") as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    plan = json.loads(members[PREFIX + "plans.json"])
    plan["inference"]["threshold"] = 0.2
    _zip_with(tmp_path / "edited.zip", {**members, PREFIX + "plans.json": json.dumps(plan)})
    with pytest.raises(DeepWMLError, match="altered"):
        install_model(tmp_path / "edited.zip", tmp_path / "siteB")
    altered = {**members, PREFIX + "fold_0/checkpoint_best.pth": members[PREFIX + "fold_1/checkpoint_best.pth"]}
    _zip_with(tmp_path / "altered.zip", altered)
    with pytest.raises(DeepWMLError, match="fold_0/checkpoint_best.pth.*(sha256|bytes)"):
        install_model(tmp_path / "altered.zip", tmp_path / "siteB")
    # a checkpoint that needs a pickled class, listed with its true checksum: refused by the weights-only loader
    full = torch.load(io.BytesIO(members[PREFIX + "fold_0/checkpoint_best.pth"]), weights_only=True)
    buffer = io.BytesIO()
    torch.save({**full, "extra": fractions.Fraction(1, 3)}, buffer)
    manifest = json.loads(members[PREFIX + "manifest.json"])
    manifest["files"]["fold_0/checkpoint_best.pth"] = file_record(buffer.getvalue())
    pickled = {**members, PREFIX + "fold_0/checkpoint_best.pth": buffer.getvalue(), PREFIX + "manifest.json": json.dumps(manifest)}
    _zip_with(tmp_path / "pickled.zip", pickled)
    with pytest.raises(DeepWMLError, match="fold_0/checkpoint_best.pth.*never unpickles code"):
        install_model(tmp_path / "pickled.zip", tmp_path / "siteB")
    _zip_with(tmp_path / "nomanifest.zip", {PREFIX + "plans.json": members[PREFIX + "plans.json"]})
    with pytest.raises(DeepWMLError, match="manifest"):
        install_model(tmp_path / "nomanifest.zip", tmp_path / "siteB")
    (tmp_path / "notzip.zip").write_text("hello")
    with pytest.raises(DeepWMLError, match="not a zip"):
        install_model(tmp_path / "notzip.zip", tmp_path / "siteB")
    assert not (tmp_path / "siteB" / "Dataset999_Toy" / "tiny").exists()


def test_export_refuses_a_model_whose_folds_do_not_match_its_plan(tmp_path, trained):
    plan = tiny_plan()
    plan.inference.threshold = 0.4
    plan.save(trained / "plans.json")
    with pytest.raises(DeepWMLError, match="plans.json changed after training"):
        export_model(trained, tmp_path / "m.zip")
    assert not (tmp_path / "m.zip").exists()
