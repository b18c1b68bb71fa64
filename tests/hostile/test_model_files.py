"""Hostile model files (issue #11, point 1): a checkpoint or model zip from elsewhere never runs code.

Every probe asserts the exit code (or exception), one line naming the file and the problem, that nothing half-made
is left behind, and that the crafted payload's sentinel file does not exist. The payload calls
``pathlib.Path.touch(sentinel)`` when unpickled in full: if any loading path ever unpickled it, the sentinel
would appear.
"""
from __future__ import annotations

import io
import json
import pathlib
import stat
import zipfile
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import pytest
import torch

from conftest import tiny_case
from deepwml.cli.export_model import main as export_main
from deepwml.cli.install_model import main as install_main
from deepwml.cli.predict import main as predict_main
from deepwml.cli.train import main as train_main
from deepwml.imageio import write_image
from deepwml.inference.model_zip import file_record
from deepwml.inference.packaging import export_model
from deepwml_testing.toy_models import tiny_plan, write_model_dir
from deepwml.planning.plan import Plan
from deepwml.training.network import build_network
from deepwml.training.trainer import Trainer
from training_fixtures import DATASET, write_preprocessed_dataset

PREFIX = "Dataset999_Toy/tiny/"
CKPT = "fold_0/checkpoint_best.pth"
NEVER = "never unpickles code"


class TouchOnUnpickle:
    """Unpickling this object (in full) creates ``path``: the stand-in for any code a hostile checkpoint runs."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


def crafted_bytes(sentinel: Path, plan: Plan, wrap=lambda payload: payload) -> bytes:
    """A checkpoint that passes every other check (real weights, right plan hash) but carries the payload."""
    net = build_network(plan.network)
    ckpt = {"model": net.state_dict(), "plan": plan.to_dict(), "plan_hash": plan.hash(), "epoch": 0,
            "optimizer": {}, "rng": {}, "payload": wrap(TouchOnUnpickle(sentinel))}
    buffer = io.BytesIO()
    torch.save(ckpt, buffer)
    return buffer.getvalue()


def refused(code: int, capsys, *needles: str, sentinel: Optional[Path] = None) -> str:
    """Exit code 2, one line on stderr without a traceback, naming every needle; the payload never ran."""
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)
    if sentinel is not None:
        assert not sentinel.exists(), "the crafted checkpoint ran code"
    return err


@pytest.fixture
def sentinel(tmp_path) -> Path:
    """Where the payload would create a file."""
    return tmp_path / "PWNED"


@pytest.fixture
def model_dir(tmp_path) -> Path:
    """A one-fold toy model at results/Dataset999_Toy/tiny."""
    return write_model_dir(tmp_path / "results" / "Dataset999_Toy" / "tiny", tiny_plan(), folds=(0,), kind="threshold")


@pytest.fixture
def scan(tmp_path) -> Path:
    """A tiny FLAIR scan to predict."""
    image, _, geometry = tiny_case(shape_zyx=(3, 48, 48), seed=1)
    return write_image(image, geometry, tmp_path / "in" / "scan.nii.gz")


@pytest.fixture
def members(tmp_path, model_dir) -> Dict[str, bytes]:
    """The members of a good (format 2) model zip exported from ``model_dir``."""
    export_model(model_dir, tmp_path / "good.zip")
    return read_members(tmp_path / "good.zip")


def read_members(path: Path) -> Dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def write_zip(path: Path, members: Dict[str, bytes], relist: Dict[str, bytes] = ()) -> Path:
    """Write ``members``; files in ``relist`` replace theirs and get a true manifest record (checksums pass)."""
    members = dict(members)
    if relist:
        manifest = json.loads(members[PREFIX + "manifest.json"])
        for name, data in dict(relist).items():
            members[PREFIX + name] = data
            manifest["files"][name] = file_record(data)
        members[PREFIX + "manifest.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def install(zip_path: Path, results: Path, *extra: str) -> int:
    return install_main([str(zip_path), "--results", str(results), *extra])


def train(root: Path, *extra: str) -> int:
    """deepwml_train on the tiny preprocessed dataset below ``root``/pp, results in ``root``/res."""
    return train_main(["-d", "950", "0", "-p", "tiny", "--preprocessed", str(root / "pp"), "--results", str(root / "res"),
                       "--threads", "1", *extra])


def nothing_installed(results: Path) -> None:
    """No model, no staging folder, not even the empty folders an install would have made."""
    assert not results.exists(), sorted(str(p) for p in results.rglob("*"))


# ---- the probe itself ------------------------------------------------------------------------------------------
def test_the_crafted_checkpoint_really_runs_code_when_fully_unpickled(tmp_path):
    """The probe is real: a plain torch.load(weights_only=False), as DeepWML did before, creates the sentinel."""
    path = tmp_path / "crafted.pth"
    path.write_bytes(crafted_bytes(tmp_path / "ran", tiny_plan()))
    torch.load(path, weights_only=False)
    assert (tmp_path / "ran").exists()


# ---- every path that loads a checkpoint, given a crafted one -----------------------------------------------------
def test_predict_with_m_refuses_a_crafted_checkpoint(tmp_path, model_dir, scan, sentinel, capsys):
    """A model folder given to -m holds a pickle checkpoint with a payload."""
    (model_dir / CKPT).write_bytes(crafted_bytes(sentinel, tiny_plan()))
    code = predict_main(["-i", str(scan), "-o", str(tmp_path / "out"), "-m", str(model_dir), "--no-qc"])
    refused(code, capsys, str(model_dir / CKPT), NEVER, "getattr", sentinel=sentinel)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # no output, not even summary.csv


def test_predict_with_d_p_refuses_a_crafted_latest_checkpoint(tmp_path, model_dir, scan, sentinel, capsys):
    """The results folder's checkpoint_latest.pth is crafted and predict is run with -d/-p --checkpoint latest."""
    (model_dir / "fold_0" / "checkpoint_latest.pth").write_bytes(crafted_bytes(sentinel, tiny_plan()))
    code = predict_main(["-i", str(scan), "-o", str(tmp_path / "out"), "-d", "999", "-p", "tiny", "--checkpoint", "latest",
                         "--results", str(tmp_path / "results"), "--no-qc"])
    refused(code, capsys, str(model_dir / "fold_0" / "checkpoint_latest.pth"), NEVER, sentinel=sentinel)
    assert not (tmp_path / "out" / "scan.nii.gz").exists()


def test_predict_refuses_a_payload_hidden_in_a_numpy_object_array(tmp_path, model_dir, scan, sentinel, capsys):
    """The payload sits inside a numpy object array: allowing numpy arrays (for old checkpoints) opens no door."""
    (model_dir / CKPT).write_bytes(crafted_bytes(sentinel, tiny_plan(), wrap=lambda p: np.array([p, 1], dtype=object)))
    code = predict_main(["-i", str(scan), "-o", str(tmp_path / "out"), "-m", str(model_dir), "--no-qc"])
    refused(code, capsys, str(model_dir / CKPT), NEVER, sentinel=sentinel)


def test_export_refuses_a_crafted_checkpoint_and_writes_no_zip(tmp_path, model_dir, sentinel, capsys):
    """A crafted checkpoint in the results folder is exported for another site."""
    (model_dir / CKPT).write_bytes(crafted_bytes(sentinel, tiny_plan()))
    code = export_main(["-d", "999", "-p", "tiny", "-o", str(tmp_path / "m.zip"), "--results", str(tmp_path / "results")])
    refused(code, capsys, str(model_dir / CKPT), NEVER, sentinel=sentinel)
    assert not (tmp_path / "m.zip").exists() and not list(tmp_path.glob(".m.zip*"))


def test_install_refuses_a_crafted_checkpoint_the_manifest_lists_with_its_true_checksum(tmp_path, members, sentinel, capsys):
    """The zip's own checkpoint is a payload, and the manifest's sha256 matches it (a hostile exporter)."""
    bad = write_zip(tmp_path / "bad.zip", members, relist={CKPT: crafted_bytes(sentinel, tiny_plan())})
    refused(install(bad, tmp_path / "siteB"), capsys, str(bad), PREFIX + CKPT, NEVER, sentinel=sentinel)
    nothing_installed(tmp_path / "siteB")


def test_train_continue_refuses_a_crafted_checkpoint(tmp_path, sentinel, capsys):
    """checkpoint_latest.pth of a fold is replaced by a payload, then training is continued."""
    write_preprocessed_dataset(tmp_path / "pp")
    fold = tmp_path / "res" / DATASET / "tiny" / "fold_0"
    fold.mkdir(parents=True)
    plan = Plan.load(tmp_path / "pp" / DATASET / "tiny" / "plans.json")
    (fold / "checkpoint_latest.pth").write_bytes(crafted_bytes(sentinel, plan))
    code = train(tmp_path, "--continue")
    refused(code, capsys, str(fold / "checkpoint_latest.pth"), NEVER, sentinel=sentinel)
    assert sorted(p.name for p in fold.iterdir()) == ["checkpoint_latest.pth"]  # no epoch was trained


def test_train_pretrained_refuses_a_crafted_checkpoint(tmp_path, sentinel, capsys):
    """Fine-tuning starts from a checkpoint someone sent: --pretrained FILE with a payload."""
    write_preprocessed_dataset(tmp_path / "pp")
    plan = Plan.load(tmp_path / "pp" / DATASET / "tiny" / "plans.json")
    sent = tmp_path / "from_elsewhere" / "checkpoint_best.pth"
    sent.parent.mkdir()
    sent.write_bytes(crafted_bytes(sentinel, plan))
    code = train(tmp_path, "--pretrained", str(sent))
    refused(code, capsys, str(sent), NEVER, sentinel=sentinel)
    assert not (tmp_path / "res" / DATASET / "tiny" / "fold_0" / "checkpoint_latest.pth").exists()


def test_predict_with_the_builtin_alias_refuses_a_crafted_shipped_checkpoint(tmp_path, sentinel, capsys, monkeypatch):
    """A tampered install: the shipped model's checkpoint replaced by a payload; -m builtin still never runs it."""
    import deepwml.pretrained as pretrained

    folder = write_model_dir(tmp_path / "pkg" / "Dataset999_Toy" / "tiny", tiny_plan(), folds=("all",))
    (folder / "fold_all" / "checkpoint_best.pth").write_bytes(crafted_bytes(sentinel, tiny_plan()))
    monkeypatch.setattr(pretrained, "BUILTIN_DIR", folder)
    image, _, geometry = tiny_case()
    write_image(image, geometry, tmp_path / "in" / "a.nii.gz")
    code = predict_main(["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-m", "builtin"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "pretrained model shipped with DeepWML" in err[0]
    assert NEVER in err[-1] and "checkpoint_best.pth" in err[-1] and "Traceback" not in "".join(err)
    assert not sentinel.exists()
    assert not list(tmp_path.glob("out/*.nii.gz"))


def test_end_of_training_validation_refuses_a_crafted_best_checkpoint(tmp_path, sentinel, capsys, monkeypatch):
    """Another process swaps checkpoint_best.pth for a payload just before training reloads it for its summary."""
    write_preprocessed_dataset(tmp_path / "pp")
    original = Trainer.final_validation

    def swap_then_validate(self):
        (self.out / "checkpoint_best.pth").write_bytes(crafted_bytes(sentinel, self.plan))
        return original(self)

    monkeypatch.setattr(Trainer, "final_validation", swap_then_validate)
    code = train(tmp_path, "--epochs", "1")
    fold = tmp_path / "res" / DATASET / "tiny" / "fold_0"
    refused(code, capsys, str(fold / "checkpoint_best.pth"), NEVER, sentinel=sentinel)
    assert not (fold / "validation" / "summary.json").exists()


# ---- model zips ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("extra", ["fold_0/checkpoint_latest.pth", "fold_1/checkpoint_best.pth", "fold_0/notes.txt"])
def test_install_refuses_members_the_manifest_does_not_list(tmp_path, members, sentinel, capsys, extra):
    """A zip carries an unlisted crafted checkpoint_latest.pth, an extra fold or any other file."""
    bad = write_zip(tmp_path / "bad.zip", {**members, PREFIX + extra: crafted_bytes(sentinel, tiny_plan())})
    refused(install(bad, tmp_path / "siteB"), capsys, str(bad), PREFIX + extra, "not listed in the manifest", sentinel=sentinel)
    nothing_installed(tmp_path / "siteB")


@pytest.mark.parametrize("name", [PREFIX + CKPT, PREFIX + "fold_0/"])
def test_install_refuses_symlink_entries(tmp_path, members, capsys, name):
    """A zip entry (the checkpoint, or the fold folder) is a symbolic link pointing out of the install."""
    members = {n: d for n, d in members.items() if n != name}
    bad = write_zip(tmp_path / "bad.zip", members)
    with zipfile.ZipFile(bad, "a") as zf:
        link = zipfile.ZipInfo(name)
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc")
    refused(install(bad, tmp_path / "siteB"), capsys, str(bad), repr(name), "symbolic link")
    nothing_installed(tmp_path / "siteB")


def test_install_refuses_a_file_whose_checksum_does_not_match(tmp_path, members, capsys):
    """plans.json is edited inside the zip (threshold lowered) but the manifest is left as exported."""
    edited = members[PREFIX + "plans.json"].replace(b'"threshold": 0.5,', b'"threshold": 0.1,')
    assert edited != members[PREFIX + "plans.json"] and len(edited) == len(members[PREFIX + "plans.json"])
    bad = write_zip(tmp_path / "bad.zip", {**members, PREFIX + "plans.json": edited})
    refused(install(bad, tmp_path / "siteB"), capsys, str(bad), PREFIX + "plans.json", "sha256")
    nothing_installed(tmp_path / "siteB")


@pytest.mark.parametrize("name,problem", [(PREFIX + "../../../evil.txt", "'..'"), ("../evil.txt", "'..'"),
                                          ("/tmp/deepwml-evil.txt", "absolute path"), ("C:/evil.txt", "absolute path")])
def test_install_refuses_traversal_and_absolute_members(tmp_path, members, capsys, name, problem):
    """A member name climbs out of the install folder or is absolute (zip-slip)."""
    bad = write_zip(tmp_path / "bad.zip", {**members, name: b"owned"})
    refused(install(bad, tmp_path / "siteB"), capsys, str(bad), repr(name), problem)
    nothing_installed(tmp_path / "siteB")
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/deepwml-evil.txt").exists()


def test_install_refuses_duplicate_members(tmp_path, members, capsys):
    """plans.json appears twice: the checked copy and a second one that a naive extractor would let win."""
    bad = write_zip(tmp_path / "bad.zip", members)
    with zipfile.ZipFile(bad, "a") as zf, pytest.warns(UserWarning, match="Duplicate"):
        zf.writestr(PREFIX + "plans.json", b"{}")
    refused(install(bad, tmp_path / "siteB"), capsys, str(bad), PREFIX + "plans.json", "more than once")
    nothing_installed(tmp_path / "siteB")


def test_install_refuses_a_member_larger_than_the_manifest_says(tmp_path, members, capsys):
    """A zip bomb: 64 MB of zeros (a few tens of kB compressed) in place of the listed checkpoint."""
    bad = write_zip(tmp_path / "bad.zip", {**members, PREFIX + CKPT: bytes(64 << 20)})
    assert bad.stat().st_size < 1 << 20
    refused(install(bad, tmp_path / "siteB"), capsys, str(bad), PREFIX + CKPT, str(64 << 20), "manifest lists")
    nothing_installed(tmp_path / "siteB")


@pytest.mark.parametrize("damage", ["truncated", "flipped"])
def test_install_refuses_a_truncated_or_damaged_zip(tmp_path, capsys, damage):
    """The zip was cut short in transfer, or bytes inside a member's compressed data were changed."""
    model = write_model_dir(tmp_path / "results" / "Dataset999_Toy" / "tiny", tiny_plan(), folds=(0,), kind="random")
    export_model(model, tmp_path / "good.zip")
    data = bytearray((tmp_path / "good.zip").read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    else:
        with zipfile.ZipFile(tmp_path / "good.zip") as zf:
            info = zf.getinfo(PREFIX + CKPT)
        start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 200
        data[start:start + 64] = bytes(64)
    bad = tmp_path / "bad.zip"
    bad.write_bytes(bytes(data))
    refused(install(bad, tmp_path / "siteB"), capsys, str(bad), "truncated or damaged")
    nothing_installed(tmp_path / "siteB")


def test_install_refuses_a_file_that_is_not_a_zip(tmp_path, capsys):
    """The 'model zip' is a text file."""
    bad = tmp_path / "model.zip"
    bad.write_text("this is not a zip\n")
    refused(install(bad, tmp_path / "siteB"), capsys, str(bad), "not a zip file")
    nothing_installed(tmp_path / "siteB")


def test_install_refuses_a_manifest_that_is_not_json(tmp_path, members, capsys):
    """manifest.json holds garbage."""
    bad = write_zip(tmp_path / "bad.zip", {**members, PREFIX + "manifest.json": b"{not json"})
    refused(install(bad, tmp_path / "siteB"), capsys, str(bad), PREFIX + "manifest.json", "not valid JSON")
    nothing_installed(tmp_path / "siteB")


def test_install_refuses_a_manifest_listing_a_file_the_zip_lacks(tmp_path, members, capsys):
    """The manifest lists fold_0's checkpoint, which the zip does not hold."""
    bad = write_zip(tmp_path / "bad.zip", {n: d for n, d in members.items() if n != PREFIX + CKPT})
    refused(install(bad, tmp_path / "siteB"), capsys, str(bad), CKPT, "the zip holds no")
    nothing_installed(tmp_path / "siteB")


@pytest.mark.parametrize("edit,problem", [
    (lambda m: m.update(folds=["../../x"]), "no valid folds"),
    (lambda m: m["files"].update({"fold_0/run.py": file_record(b"print(1)")}), "'fold_0/run.py', which is no part of a model"),
    (lambda m: m.update(format_version=3), "upgrade DeepWML"),
])
def test_install_refuses_manifests_that_list_the_wrong_things(tmp_path, members, capsys, edit, problem):
    """The manifest names a fold outside the model, lists a file no model has, or comes from a future format."""
    manifest = json.loads(members[PREFIX + "manifest.json"])
    edit(manifest)
    extra = {PREFIX + "fold_0/run.py": b"print(1)"} if "run.py" in problem else {}
    bad = write_zip(tmp_path / "bad.zip", {**members, **extra, PREFIX + "manifest.json": json.dumps(manifest).encode()})
    refused(install(bad, tmp_path / "siteB"), capsys, str(bad), problem)
    nothing_installed(tmp_path / "siteB")


def _misfit_checkpoint() -> bytes:
    """A valid weights-only checkpoint of the right plan hash whose tensors belong to a wider network."""
    plan, other = tiny_plan(), tiny_plan(features=(16, 32, 64))
    buffer = io.BytesIO()
    torch.save({"model": build_network(other.network).state_dict(), "plan": plan.to_dict(), "plan_hash": plan.hash(), "epoch": 0}, buffer)
    return buffer.getvalue()


def test_install_refuses_weights_that_do_not_fit_the_plan(tmp_path, members, capsys):
    """The checkpoint loads weights-only and names the right plan hash, but its tensors have other shapes."""
    bad = write_zip(tmp_path / "bad.zip", members, relist={CKPT: _misfit_checkpoint()})
    refused(install(bad, tmp_path / "siteB"), capsys, str(bad), PREFIX + CKPT, "do not fit the plan")
    nothing_installed(tmp_path / "siteB")


def test_predict_refuses_weights_that_do_not_fit_the_plan(tmp_path, model_dir, scan, capsys):
    """The same misfit checkpoint placed directly in a model folder given to -m."""
    (model_dir / CKPT).write_bytes(_misfit_checkpoint())
    code = predict_main(["-i", str(scan), "-o", str(tmp_path / "out"), "-m", str(model_dir), "--no-qc"])
    refused(code, capsys, str(model_dir / CKPT), "do not fit the plan")
    assert not (tmp_path / "out" / "scan.nii.gz").exists()


def test_a_refused_overwrite_leaves_the_installed_model_untouched(tmp_path, members, sentinel, capsys):
    """A hostile zip is installed with --overwrite over a working model of the same name."""
    good = write_zip(tmp_path / "good2.zip", members)
    assert install(good, tmp_path / "siteB") == 0
    target = tmp_path / "siteB" / "Dataset999_Toy" / "tiny"
    before = {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    capsys.readouterr()
    bad = write_zip(tmp_path / "bad.zip", members, relist={CKPT: crafted_bytes(sentinel, tiny_plan())})
    refused(install(bad, tmp_path / "siteB", "--overwrite"), capsys, PREFIX + CKPT, NEVER, sentinel=sentinel)
    assert {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()} == before
    assert [p.name for p in target.parent.iterdir()] == ["tiny"]  # no staging folder, no old copy


def test_a_format_1_zip_installs_only_its_implied_files_and_refuses_extras(tmp_path, members, sentinel, capsys):
    """A zip from the previous DeepWML (manifest format 1, no checksums); then one with an extra member."""
    manifest = json.loads(members[PREFIX + "manifest.json"])
    manifest["format_version"] = 1
    del manifest["files"]
    old = {**members, PREFIX + "manifest.json": json.dumps(manifest).encode()}
    assert install(write_zip(tmp_path / "old.zip", old), tmp_path / "siteB") == 0
    target = tmp_path / "siteB" / "Dataset999_Toy" / "tiny"
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file()) == sorted(
        ["plans.json", "dataset.json", "fingerprint.json", "manifest.json", CKPT])
    capsys.readouterr()
    bad = write_zip(tmp_path / "old_extra.zip", {**old, PREFIX + "fold_0/checkpoint_latest.pth": crafted_bytes(sentinel, tiny_plan())})
    refused(install(bad, tmp_path / "siteC"), capsys, PREFIX + "fold_0/checkpoint_latest.pth", "not listed", sentinel=sentinel)
    nothing_installed(tmp_path / "siteC")


def test_install_refuses_a_listed_plans_json_that_is_not_a_plan(tmp_path, members, capsys):
    """plans.json is valid JSON with a true checksum but not a plan."""
    bad = write_zip(tmp_path / "bad.zip", members, relist={"plans.json": b'{"name": 3}'})
    refused(install(bad, tmp_path / "siteB"), capsys, str(bad), PREFIX + "plans.json", "name must be a string")
    nothing_installed(tmp_path / "siteB")


def test_install_into_a_results_folder_below_a_file_is_one_line(tmp_path, members, capsys):
    """--results names a path below an existing file."""
    (tmp_path / "afile").write_text("x")
    good = write_zip(tmp_path / "good2.zip", members)
    refused(install(good, tmp_path / "afile" / "results"), capsys, str(tmp_path / "afile"), "cannot create the install folder")
    assert (tmp_path / "afile").read_text() == "x"


def test_train_continue_refuses_an_exported_checkpoint(tmp_path, members, capsys):
    """A slimmed checkpoint from a model zip (weights only, no optimiser or RNG state) is put in place to --continue."""
    write_preprocessed_dataset(tmp_path / "pp")
    fold = tmp_path / "res" / DATASET / "tiny" / "fold_0"
    fold.mkdir(parents=True)
    (fold / "checkpoint_latest.pth").write_bytes(members[PREFIX + CKPT])
    code = train(tmp_path, "--continue")
    refused(code, capsys, str(fold / "checkpoint_latest.pth"), "not a training checkpoint (lacks optimizer, rng)")
    assert sorted(p.name for p in fold.iterdir()) == ["checkpoint_latest.pth"]
