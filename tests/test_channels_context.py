"""Several image channels and 2.5D input (issue #13): dataset.json channels → cache [C,S,H,W] → training →
prediction, each channel normalised on its own, neighbouring slices as channels; old single-channel plans, caches
and checkpoints keep working unchanged."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import tiny_case
from deepwml.cli.plan_and_preprocess import main as plan_main
from deepwml.cli.predict import main as predict_main
from deepwml.cli.train import main as train_main
from deepwml.datasets import CaseMeta, DatasetJson
from deepwml.imageio import Geometry, read_image, write_image
from deepwml.inference.predictor import SlicePredictor
from deepwml.models import build_network
from deepwml.models.base import InputSpec
from deepwml.planning.plan import NetworkPlan, Plan
from deepwml.preprocessing import load_case, load_head
from deepwml.preprocessing.network_input import stack_slices
from deepwml.training.checkpoint import load_checkpoint, read_checkpoint
from deepwml.training.dataloader import BatchSpec, SliceBatchLoader
from deepwml.training.device import setup_device
from deepwml.training.sampling import build_slice_index
from deepwml.utils.atomic import savez_compressed, write_json
from deepwml.utils.errors import DatasetError, PlanError
from deepwml_testing.toy_models import tiny_plan, write_model_dir

REPO = Path(__file__).parents[1]
DATA = Path(__file__).parent / "data"
TWO = "Dataset901_TwoChannel"
CPU = setup_device("cpu", allow_bf16=False, threads=1)  # fp32: compared with the network run by hand


def t1_of(flair: np.ndarray) -> np.ndarray:
    """A second contrast: the FLAIR inverted, scaled and offset (its z-score is exactly minus the FLAIR's)."""
    return (1000.0 - 5.0 * flair).astype(np.float32)


def write_two_channel_dataset(root: Path, n_train: int = 5, n_test: int = 1) -> Path:
    """A FLAIR + T1 raw dataset: imagesTr/CASE_0000 (FLAIR), CASE_0001 (T1), labelsTr/CASE."""
    folder = root / TWO
    meta = DatasetJson(name=TWO, channel_names={"0": "FLAIR", "1": "T1"})
    for i in range(n_train + n_test):
        split, cid = ("Tr" if i < n_train else "Ts"), f"case{i:03d}"
        image, label, geometry = tiny_case(seed=i)
        write_image(image, geometry, folder / f"images{split}" / f"{cid}_0000.nii.gz")
        write_image(t1_of(image), geometry, folder / f"images{split}" / f"{cid}_0001.nii.gz")
        write_image(label, geometry, folder / f"labels{split}" / f"{cid}.nii.gz")
        meta.cases[cid] = CaseMeta(centre="AB"[i % 2], disease="MS")
    meta.num_training, meta.num_test = n_train, n_test
    meta.save(folder / "dataset.json")
    return folder


def _roots(tmp_path: Path, monkeypatch) -> None:
    for kind in ("raw", "preprocessed", "results"):
        monkeypatch.setenv(f"DEEPWML_{kind.upper()}", str(tmp_path / kind))


def _tiny_preset(tmp_path: Path, context_slices: int = 1) -> Path:
    preset = tiny_plan()
    preset.network.context_slices = context_slices
    t = preset.training
    t.epochs, t.iterations_per_epoch, t.num_workers, t.batch_size = 1, 2, 0, 2
    preset.save(tmp_path / "tiny.json")
    return tmp_path / "tiny.json"


# ---- several channels, end to end ------------------------------------------------------------------------------

def test_a_flair_t1_dataset_plans_preprocesses_trains_and_predicts(tmp_path, monkeypatch, training_threads):
    _roots(tmp_path, monkeypatch)
    raw = write_two_channel_dataset(tmp_path / "raw")
    assert plan_main(["-d", "901", "--preset", str(_tiny_preset(tmp_path)), "-np", "1"]) == 0
    pp = tmp_path / "preprocessed" / TWO
    plan = Plan.load(pp / "tiny" / "plans.json")
    assert plan.preprocessing.channels == [{"name": "FLAIR", "normalization": "zscore_head"},
                                           {"name": "T1", "normalization": "zscore_head"}]
    assert plan.network.in_channels == 2 and build_network(plan.network).input_spec == InputSpec(2, 1, "edge")
    # the fingerprint has each channel's intensities (the T1 is 1000 - 5 × FLAIR, so its head mean follows)
    fingerprint = json.loads((pp / "fingerprint.json").read_text())
    case = fingerprint["cases"]["case000"]
    assert case["channels"]["1"]["mean"] == pytest.approx(1000 - 5 * case["head"]["mean"], rel=1e-4)
    assert list(fingerprint["dataset_summary"]["channels"]) == ["FLAIR", "T1"]
    # the cache holds both channels on one grid, each z-scored with its own statistics
    image, label, props = load_case(pp / "tiny" / "cache", "case000")
    head = load_head(pp / "tiny" / "cache", "case000").astype(bool)
    assert image.shape == (2, 6, 64, 64) and label.shape == head.shape == (6, 64, 64)
    assert np.allclose(image[1][head].astype(np.float32), -image[0][head].astype(np.float32), atol=0.02)
    assert props["channel_normalization"][1]["mean"] == pytest.approx(1000 - 5 * props["normalization"]["mean"], rel=1e-4)

    assert train_main(["-d", "901", "-p", "tiny", "0", "--num-workers", "0", "--threads", "1"]) == 0
    out = tmp_path / "out"
    assert predict_main(["-i", str(raw / "imagesTs"), "-o", str(out), "-d", "901", "-p", "tiny", "--no-qc"]) == 0
    summary = pd.read_csv(out / "summary.csv")
    assert summary["case_id"].tolist() == ["case005"] and summary["status"].tolist() == ["ok"]
    mask = read_image(out / "case005.nii.gz", dtype=None)
    assert not mask.geometry.mismatches(read_image(raw / "imagesTs" / "case005_0000.nii.gz").geometry)


def test_a_missing_or_misaligned_second_channel_is_refused_naming_the_file(tmp_path, capsys):
    raw = write_two_channel_dataset(tmp_path / "raw", n_train=4, n_test=0)
    argv = ["-d", "901", "--raw", str(tmp_path / "raw"), "--preprocessed", str(tmp_path / "pp"), "-np", "1",
            "--preset", str(_tiny_preset(tmp_path))]
    missing = raw / "imagesTr" / "case001_0001.nii.gz"
    missing.unlink()
    assert plan_main(argv) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "case001" in err and "channel 1 (T1)" in err
    assert not (tmp_path / "pp").exists(), "nothing is written before every case was read"

    image, _, geometry = tiny_case(seed=1)
    shifted = Geometry(geometry.size, (0.8, 0.9, 6.0), geometry.origin, geometry.direction)
    write_image(t1_of(image), shifted, missing)
    assert plan_main(argv) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "not on the grid of channel 0" in err and "spacing" in err


def test_a_plan_file_for_another_number_of_channels_is_refused_naming_it(tmp_path, capsys):
    write_two_channel_dataset(tmp_path / "raw", n_train=4, n_test=0)
    plan_file = tmp_path / "one_channel.json"
    tiny_plan().save(plan_file)
    assert plan_main(["-d", "901", "--raw", str(tmp_path / "raw"), "--preprocessed", str(tmp_path / "pp"), "-np", "1",
                      "--plan-file", str(plan_file)]) == 2
    err = capsys.readouterr().err
    assert str(plan_file) in err and "takes 1 image channel(s)" in err and "'1': 'T1'" in err
    assert not (tmp_path / "pp" / TWO / "tiny").exists()


def test_prediction_reads_every_channel_and_a_missing_one_fails_that_case_by_name(tmp_path):
    plan = tiny_plan()
    plan.preprocessing.channels = [{"name": "FLAIR", "normalization": "zscore_head"}, {"name": "T2", "normalization": "zscore"}]
    plan.network.in_channels = 2
    model = write_model_dir(tmp_path / "model" / "Dataset999_Toy" / "tiny", plan, kind="random")
    inputs = tmp_path / "in"
    for cid in ("a", "b"):
        image, _, geometry = tiny_case(seed=3)
        write_image(image, geometry, inputs / f"{cid}_0000.nii.gz")
        if cid == "a":
            write_image(t1_of(image), geometry, inputs / f"{cid}_0001.nii.gz")
    assert predict_main(["-i", str(inputs), "-o", str(tmp_path / "out"), "-m", str(model), "--no-qc"]) == 1
    summary = pd.read_csv(tmp_path / "out" / "summary.csv").set_index("case_id")
    assert summary.loc["a", "status"] == "ok" and summary.loc["b", "status"] == "failed"
    assert "case b: channel 1 image file b_0001.nii.gz is missing" in summary.loc["b", "error"]
    assert (tmp_path / "out" / "a.nii.gz").is_file() and not (tmp_path / "out" / "b.nii.gz").exists()
    # a file that is no channel of a case: refused before anything runs
    write_image(image, geometry, inputs / "c.nii.gz")
    assert predict_main(["-i", str(inputs), "-o", str(tmp_path / "out2"), "-m", str(model), "--no-qc"]) == 2
    assert not (tmp_path / "out2").exists()


# ---- 2.5D --------------------------------------------------------------------------------------------------------

def _numbered_stack(channels: int = 2, slices: int = 5) -> np.ndarray:
    """[C, S, 4, 4] whose every pixel of slice z in channel c is 10·c + z + 1 (so 0 is only ever padding)."""
    values = 10 * np.arange(channels)[:, None] + np.arange(slices)[None] + 1
    return np.broadcast_to(values[:, :, None, None], (channels, slices, 4, 4)).astype(np.float16)


@pytest.mark.parametrize("padding, first, last", [
    ("edge", [1, 1, 2, 11, 11, 12], [4, 5, 5, 14, 15, 15]),
    ("zero", [0, 1, 2, 0, 11, 12], [4, 5, 0, 14, 15, 0]),
])
def test_context_slices_are_channel_major_and_padded_as_the_plan_says(padding, first, last):
    x = stack_slices(_numbered_stack(), [0, 2, 4], 3, padding)
    assert x.shape == (3, 6, 4, 4) and x.dtype == np.float32
    assert x[0, :, 0, 0].tolist() == first
    assert x[1, :, 0, 0].tolist() == [2, 3, 4, 12, 13, 14]
    assert x[2, :, 0, 0].tolist() == last
    assert (x == x[..., :1, :1]).all()  # whole planes, nothing mixed within a slice


def test_training_batches_hold_each_slice_with_its_neighbours(tmp_path):
    stack = _numbered_stack(slices=4).astype(np.float32)
    label = np.zeros((4, 4, 4), np.uint8)
    label[1:3, 1:3, 1:3] = 1
    savez_compressed(tmp_path / "c.npz", image=stack, label=label, head=np.ones_like(label))
    write_json(tmp_path / "c.json", {"case_id": "c"})
    index = build_slice_index([("c", label)])
    spec = BatchSpec(tmp_path, index, (4, 4), 16, 0.5, 0, 0, 0, 1, channels=2, context_slices=3, context_padding="zero")
    data = SliceBatchLoader(spec).make_batch(0)["data"]
    assert data.shape == (16, 6, 4, 4)
    expected = {z: stack_slices(stack, [z], 3, "zero")[0, :, 0, 0].tolist() for z in range(4)}
    seen = {z for sample in data for z, planes in expected.items() if sample[:, 0, 0].tolist() == planes}
    assert all(sample[:, 0, 0].tolist() in expected.values() for sample in data) and len(seen) >= 2


def test_a_25d_model_predicts_what_its_network_gives_for_the_stacked_neighbours():
    net_plan = NetworkPlan(features=[4, 8], norm="instance", in_channels=3, context_slices=3, context_padding="zero")
    plan = Plan(network=net_plan)
    torch.manual_seed(0)
    net = build_network(net_plan).eval()
    image = np.random.default_rng(1).normal(0, 1, (5, 16, 16)).astype(np.float32)
    probs = SlicePredictor([net], plan, CPU, batch_size=2, crop=False).predict(image)
    for z, neighbours in ((0, [np.zeros_like(image[0]), image[0], image[1]]), (2, [image[1], image[2], image[3]])):
        with torch.no_grad():
            manual = torch.sigmoid(net(torch.from_numpy(np.stack(neighbours)[None])))[0, 0].numpy()
        np.testing.assert_allclose(probs[z], manual, rtol=0, atol=1e-6)


def test_a_25d_plan_trains_resumes_bit_identically_and_predicts(tmp_path, training_threads):
    from training_fixtures import DATASET, tiny_plan as training_plan, write_preprocessed_dataset

    plan = training_plan(epochs=2, iterations=2)
    plan.network.context_slices, plan.network.in_channels, plan.network.context_padding = 3, 3, "zero"
    write_preprocessed_dataset(tmp_path / "pp", plan)  # a single-channel cache in the old [S, H, W] layout
    runs = []
    for name, steps in (("a", [[]]), ("b", [["--epochs", "1"], ["--continue"]])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "pp").symlink_to(tmp_path / "pp")
        for extra in steps:
            assert train_main(["-d", "950", "0", "-p", "tiny", "--preprocessed", str(tmp_path / name / "pp"),
                               "--results", str(tmp_path / name / "res"), "--threads", "1", *extra]) == 0
        runs.append(load_checkpoint(tmp_path / name / "res" / DATASET / "tiny" / "fold_0" / "checkpoint_latest.pth"))
    a, b = runs
    assert a["model"]["encoder.0.0.weight"].shape[1] == 3
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    net = build_network(plan.network)
    net.load_state_dict(a["model"])
    image, _, _ = load_case(tmp_path / "pp" / DATASET / "tiny" / "cache", "case000")
    probs = SlicePredictor([net], plan, CPU).predict(image)
    assert probs.shape == image.shape[1:] and np.isfinite(probs).all()


# ---- what existed before channels keeps working ------------------------------------------------------------------

def test_an_old_plan_is_one_channel_2d_with_its_old_hashes():
    plan = Plan.load(REPO / "plans" / "cpu_fast.json")
    assert plan.n_channels == 1 and plan.channel_schemes() == ["zscore_head"]
    assert build_network(plan.network).input_spec == InputSpec(channels=1, context_slices=1)
    saved = plan.to_dict()
    assert "channels" not in saved["preprocessing"] and not {"context_slices", "context_padding"} & set(saved["network"])
    plan.fingerprint_hash = "fixture"
    # computed by main before channels existed: every cached case stays valid, nothing is preprocessed again
    assert plan.preprocessing_hash() == "953cab6705c926a54d1608ab8eac99a601f14d787374328496495110ef0dbe9f"
    plan_25d = Plan.load(REPO / "plans" / "cpu_fast_25d.json")
    assert plan_25d.network.in_channels == 3 and plan_25d.hash() != plan.hash()
    plan_25d.fingerprint_hash = "fixture"
    assert plan_25d.preprocessing_hash() == plan.preprocessing_hash(), "2.5D reuses the 2D cache"


def test_an_old_checkpoint_predicts_as_before_from_either_cache_layout():
    """tests/data/unet2d_main_f286536.pth holds networks of main at f286536 with their outputs on a fixed input."""
    saved = read_checkpoint(DATA / "unet2d_main_f286536.pth")
    stack = saved["input"][:, 0].numpy()  # two 16×16 slices
    for name, entry in saved["networks"].items():
        plan = Plan(network=NetworkPlan(**entry["network"]))
        net = build_network(plan.network)
        net.load_state_dict(entry["model"])
        expected = torch.sigmoid(entry["output"])[:, 0].numpy()
        for layout in (stack, stack[None]):  # the cache before channels ([S,H,W]) and after ([1,S,H,W])
            probs = SlicePredictor([net], plan, CPU, batch_size=2, crop=False).predict(layout)
            # 1e-5: on the CPU in channels-last, instance norm runs as group_norm (issue #15), rounded differently
            np.testing.assert_allclose(probs, expected, rtol=0, atol=1e-5, err_msg=name)


def test_an_old_cache_is_read_as_one_channel(tmp_path):
    image = np.arange(2 * 3 * 3, dtype=np.float16).reshape(2, 3, 3)
    savez_compressed(tmp_path / "old.npz", image=image, label=np.zeros((2, 3, 3), np.uint8), head=np.ones((2, 3, 3), np.uint8))
    write_json(tmp_path / "old.json", {"case_id": "old"})
    loaded, label, _ = load_case(tmp_path, "old")
    assert loaded.shape == (1, 2, 3, 3) and np.array_equal(loaded[0], image) and label.shape == (2, 3, 3)


# ---- validation: settings that cannot work are named ------------------------------------------------------------

@pytest.mark.parametrize("change, message", [
    (lambda p: setattr(p.network, "in_channels", 2), r"network.in_channels must be 1 \(1 image channel\(s\) × network.context_slices 1\)"),
    (lambda p: (setattr(p.network, "context_slices", 2), setattr(p.network, "in_channels", 2)), "context_slices must be an odd number"),
    (lambda p: setattr(p.network, "context_padding", "mirror"), "context_padding must be one of edge, zero"),
    (lambda p: setattr(p.preprocessing, "channels", [{"name": "FLAIR", "normalization": "zscore_head"},
                                                      {"name": "T1", "normalization": "minmax"}]),
     r"preprocessing.channels\[1\].normalization 'minmax' is not one of"),
    (lambda p: setattr(p.preprocessing, "channels", [{"name": "FLAIR", "normalization": "none"}]),
     r"channels\[0\].normalization must equal preprocessing.normalization"),
])
def test_impossible_channel_settings_are_plan_errors(tmp_path, change, message):
    plan = tiny_plan()
    change(plan)
    plan.save(tmp_path / "plans.json")
    with pytest.raises(PlanError, match=message):
        Plan.load(tmp_path / "plans.json")


@pytest.mark.parametrize("names, message", [
    ({"0": "FLAIR", "2": "T1"}, r'keys must be "0" .. "1"'),
    ({"0": "T1", "1": "FLAIR"}, "'0' must be the FLAIR"),
    ({"0": "FLAIR", "1": "FLAIR"}, "distinct non-empty name"),
])
def test_channel_names_must_number_distinct_channels_flair_first(tmp_path, names, message):
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps({"name": "x", "file_ending": ".nii.gz", "channel_names": names,
                                "labels": {"background": 0, "lesion": 1}}))
    with pytest.raises(DatasetError, match=message):
        DatasetJson.load(path)


def test_verify_accepts_a_two_channel_dataset_and_names_missing_misaligned_and_misnamed_channels(tmp_path):
    from deepwml.datasets.verify import dataset_summary, verify_dataset

    raw = write_two_channel_dataset(tmp_path / "raw", n_train=3, n_test=1)
    assert verify_dataset(raw) == []
    assert dataset_summary(raw).startswith(f"{TWO}: 4 cases (3 training, 1 test)")
    (raw / "imagesTr" / "case001_0001.nii.gz").unlink()
    image, _, geometry = tiny_case(seed=2)
    shifted = Geometry(geometry.size, geometry.spacing, (0.0, 0.0, 0.0), geometry.direction)
    write_image(t1_of(image), shifted, raw / "imagesTr" / "case002_0001.nii.gz")
    write_image(tiny_case(seed=9)[0], geometry, raw / "imagesTr" / "case009.nii.gz")
    found = {Path(p.file).name: p.message for p in verify_dataset(raw)}
    assert found["case001_0001.nii.gz"] == "case 'case001' has no channel 1 image"
    assert found["case002_0001.nii.gz"].startswith("not on the grid of channel 0 case002_0000.nii.gz: origin")
    assert "declares 2 channels" in found["case009.nii.gz"]
    assert len(found) == 3
