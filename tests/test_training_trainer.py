"""deepwml_train end to end on a tiny preprocessed dataset: learning, outputs, exact resume, user errors."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from deepwml.cli.train import main
from deepwml.planning.plan import AugmentationPlan, Plan
from deepwml.training.checkpoint import load_checkpoint
from deepwml.training.trainer import Trainer, TrainOptions, train
from deepwml.utils.errors import DatasetError, DeepWMLError, PlanError
from training_fixtures import DATASET, tiny_plan, write_preprocessed_dataset


pytestmark = pytest.mark.usefixtures("training_threads")


def _argv(root: Path, fold: str = "0", *extra: str):
    return ["-d", "950", fold, "-p", "tiny", "--preprocessed", str(root / "pp"), "--results", str(root / "res"),
            "--threads", "1", *extra]


def _fold_dir(root: Path, fold: str = "0") -> Path:
    return root / "res" / DATASET / "tiny" / f"fold_{fold}"


def test_training_writes_every_result_file(tmp_path):
    write_preprocessed_dataset(tmp_path / "pp")
    assert main(_argv(tmp_path)) == 0
    out = _fold_dir(tmp_path)
    for name in ("plans.json", "dataset.json", "fingerprint.json"):
        assert (out.parent / name).is_file()
    entries = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in entries] == [1, 2]
    assert {"train_loss", "val_median_dice", "val_median_sensitivity", "val_median_precision", "val_ema_dice", "lr",
            "epoch_seconds", "images_per_second"} <= set(entries[0])
    assert (out / "progress.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ckpt = load_checkpoint(out / "checkpoint_latest.pth")
    assert {"model", "optimizer", "scaler", "epoch", "rng", "plan", "plan_hash", "best_ema_dice", "ema_dice",
            "deepwml_version"} <= set(ckpt)
    assert ckpt["epoch"] == 2 and ckpt["plan_hash"] == Plan.from_dict(ckpt["plan"]).hash()
    # tensors and plain values only: torch's weights-only loader needs no extra global (no numpy) to read it
    assert torch.serialization.get_unsafe_globals_in_checkpoint(out / "checkpoint_latest.pth") == []
    assert (out / "checkpoint_best.pth").is_file()
    # the validation summary describes the best checkpoint: the figures its epoch logged, from its per-slice values
    summary = json.loads((out / "validation" / "summary.json").read_text())
    best = load_checkpoint(out / "checkpoint_best.pth")
    assert summary["epoch"] == best["epoch"] and summary["n_slices"] > 0
    assert summary["median_dice"] == entries[best["epoch"] - 1]["val_median_dice"]
    per_slice = [d for case in summary["cases"] for d in case["dice"]]
    assert len(per_slice) == summary["n_slices"] and summary["median_dice"] == pytest.approx(float(np.median(per_slice)))
    assert not list(out.glob(".*tmp*")), "no temporary files may be left behind"


def _weights(path: Path):
    return load_checkpoint(path)["model"]


def _assert_same_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _two_runs(tmp_path: Path):
    """Result roots of an uninterrupted and of an interrupted run, sharing tmp_path/pp."""
    runs = tmp_path / "a", tmp_path / "b"
    for r in runs:
        r.mkdir()
        (r / "pp").symlink_to(tmp_path / "pp")
    return runs


def test_continue_reaches_the_same_weights_as_an_uninterrupted_run(tmp_path):
    write_preprocessed_dataset(tmp_path / "pp")
    straight, split = _two_runs(tmp_path)
    assert main(_argv(straight, "0", "--epochs", "2")) == 0
    assert main(_argv(split, "0", "--epochs", "1")) == 0
    assert main(_argv(split, "0", "--epochs", "2", "--continue")) == 0
    a, b = load_checkpoint(_fold_dir(straight) / "checkpoint_latest.pth"), load_checkpoint(_fold_dir(split) / "checkpoint_latest.pth")
    _assert_same_state(a["model"], b["model"])
    assert a["optimizer"]["state"][0]["exp_avg"].equal(b["optimizer"]["state"][0]["exp_avg"])
    assert [e["train_loss"] for e in a["history"]] == [e["train_loss"] for e in b["history"]]


def _old_layout(ckpt: dict) -> dict:
    """A checkpoint as DeepWML 0.x wrote it: np.random.get_state()'s tuple (with a uint32 array) inside."""
    import numpy as np

    rng = ckpt["rng"]["numpy"]
    numpy_state = (rng["bit_generator"], rng["key"].numpy().astype(np.uint32), rng["pos"], rng["has_gauss"], rng["cached_gaussian"])
    return dict(ckpt, rng=dict(ckpt["rng"], numpy=numpy_state))


def test_continue_from_a_checkpoint_of_the_previous_layout_is_still_exact(tmp_path):
    """Checkpoints written before weights-only loading (numpy arrays inside) continue bit-identically."""
    write_preprocessed_dataset(tmp_path / "pp")
    straight, split = _two_runs(tmp_path)
    assert main(_argv(straight, "0", "--epochs", "2")) == 0
    assert main(_argv(split, "0", "--epochs", "1")) == 0
    latest = _fold_dir(split) / "checkpoint_latest.pth"
    torch.save(_old_layout(load_checkpoint(latest)), latest)
    assert "numpy.ndarray" in torch.serialization.get_unsafe_globals_in_checkpoint(latest)  # really the old layout
    assert main(_argv(split, "0", "--epochs", "2", "--continue")) == 0
    a, b = load_checkpoint(_fold_dir(straight) / "checkpoint_latest.pth"), load_checkpoint(latest)
    _assert_same_state(a["model"], b["model"])
    assert [e["train_loss"] for e in a["history"]] == [e["train_loss"] for e in b["history"]]
    assert torch.serialization.get_unsafe_globals_in_checkpoint(latest) == []  # rewritten in the new layout


def test_ctrl_c_then_continue_matches_with_workers_and_a_poly_schedule(tmp_path, monkeypatch, capsys):
    plan = tiny_plan(lr_schedule="poly", num_workers=2)
    write_preprocessed_dataset(tmp_path / "pp", plan)
    straight, split = _two_runs(tmp_path)
    assert main(_argv(straight)) == 0

    original = Trainer.train_one_epoch

    def interrupt_second_epoch(self, bar):
        if self.epoch == 1:
            raise KeyboardInterrupt
        original(self, bar)

    monkeypatch.setattr(Trainer, "train_one_epoch", interrupt_second_epoch)
    assert main(_argv(split)) == 130
    assert "--continue" in capsys.readouterr().out
    assert load_checkpoint(_fold_dir(split) / "checkpoint_latest.pth")["epoch"] == 1
    monkeypatch.setattr(Trainer, "train_one_epoch", original)
    assert main(_argv(split, "0", "--continue")) == 0
    _assert_same_state(_weights(_fold_dir(straight) / "checkpoint_latest.pth"), _weights(_fold_dir(split) / "checkpoint_latest.pth"))
    log = (_fold_dir(split) / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log] == [1, 2]


def _opts(root: Path, **kw) -> TrainOptions:
    kw.setdefault("fold", 0)
    kw.setdefault("plan_name", "tiny")
    return TrainOptions(dataset="950", preprocessed_root=root / "pp", results_root=root / "res", threads=1, **kw)


def test_unknown_fold_is_an_error(tmp_path, capsys):
    write_preprocessed_dataset(tmp_path / "pp")
    with pytest.raises(DatasetError, match="fold 7 does not exist"):
        train(_opts(tmp_path, fold=7))
    assert main(_argv(tmp_path, "seven")) == 2
    assert "fold must be a number" in capsys.readouterr().err


def test_missing_preprocessing_names_the_command_to_run(tmp_path, capsys):
    write_preprocessed_dataset(tmp_path / "pp")
    with pytest.raises(PlanError, match="deepwml_plan_and_preprocess -d 950 --preset cpu_fast"):
        train(_opts(tmp_path, plan_name="cpu_fast"))
    assert main(["-d", "951", "0", "--preprocessed", str(tmp_path / "pp"), "--results", str(tmp_path / "res")]) == 2
    assert "deepwml_plan_and_preprocess -d 951" in capsys.readouterr().err
    (tmp_path / "pp" / DATASET / "tiny" / "cache" / "case002.json").unlink()
    with pytest.raises(DatasetError, match="not preprocessed"):
        train(_opts(tmp_path))


def test_a_plan_that_does_not_match_the_cache_is_refused(tmp_path):
    folder = write_preprocessed_dataset(tmp_path / "pp")
    plans = folder / "tiny" / "plans.json"
    plan = Plan.load(plans)
    plan.preprocessing.clip_percentiles = [1.0, 99.0]
    plan.save(plans)
    with pytest.raises(PlanError, match="preprocessing_hash differs"):
        train(_opts(tmp_path))


def test_continue_refuses_a_checkpoint_of_another_plan_and_training_refuses_to_overwrite(tmp_path):
    folder = write_preprocessed_dataset(tmp_path / "pp")
    train(_opts(tmp_path, epochs=1))
    with pytest.raises(DeepWMLError, match="--continue"):
        train(_opts(tmp_path, epochs=1))
    plans = folder / "tiny" / "plans.json"
    plan = Plan.load(plans)
    plan.training.learning_rate = 0.5
    plan.save(plans)
    with pytest.raises(DeepWMLError, match="another plan"):
        train(_opts(tmp_path, epochs=2, resume=True))


@pytest.mark.slow
def test_a_small_network_overfits_the_tiny_dataset_within_a_minute(tmp_path):
    plan = tiny_plan(batch_size=8, epochs=8, iterations=20, lr=1e-2, lr_schedule="poly")
    plan.training.augmentation = AugmentationPlan(mirror_lr=False, rotation_deg=0.0)
    write_preprocessed_dataset(tmp_path / "pp", plan, n_cases=4)
    started = time.monotonic()
    result = train(_opts(tmp_path, fold="all"))
    assert time.monotonic() - started < 60
    summary = json.loads((result["folder"] / "validation" / "summary.json").read_text())
    assert summary["validated_on_training_cases"] is True
    assert summary["mean_dice"] > 0.9


def test_a_time_budget_trains_fewer_epochs_and_ends_the_schedule_with_them(tmp_path, monkeypatch):
    """A fake clock (1 s per training step) makes the budget's arithmetic exact: 6 s hold three epochs of 2 steps."""
    import types

    from deepwml.training import budget as budget_module
    from deepwml.training import trainer as trainer_module
    from deepwml.training.optim import learning_rate

    write_preprocessed_dataset(tmp_path / "pp", tiny_plan(epochs=500, iterations=2, lr_schedule="poly"))
    clock = types.SimpleNamespace(now=0.0)
    fake_time = types.SimpleNamespace(monotonic=lambda: clock.now, perf_counter=lambda: clock.now)
    monkeypatch.setattr(trainer_module, "time", fake_time)
    monkeypatch.setattr(budget_module, "time", fake_time)
    original = Trainer.train_step

    def one_second_step(self, batch, lr):
        clock.now += 1.0
        return original(self, batch, lr)

    monkeypatch.setattr(Trainer, "train_step", one_second_step)
    result = train(_opts(tmp_path, max_minutes=0.1))
    assert result["epochs"] == 3
    history = load_checkpoint(result["folder"] / "checkpoint_latest.pth")["history"]
    t = tiny_plan(epochs=500, iterations=2, lr_schedule="poly").training
    # epoch 1 ran on the plan's schedule; after it the target became 3 epochs and poly decay ends with them
    assert [e["lr"] for e in history] == pytest.approx([learning_rate(t, 1, 1000), learning_rate(t, 3, 6), learning_rate(t, 5, 6)])
    assert history[-1]["lr"] < 0.25 * t.learning_rate


def test_with_batches_made_in_process_the_checkpointed_generators_are_the_trainers(tmp_path):
    """--num-workers 0: augmentation runs in the trainer's process but must not overwrite its generator states."""
    import random

    write_preprocessed_dataset(tmp_path / "pp")  # tiny_plan: no workers, augmentation on
    result = train(_opts(tmp_path, epochs=1))
    rng = load_checkpoint(result["folder"] / "checkpoint_latest.pth")["rng"]
    np.random.seed(0)  # what the trainer seeded with (--seed 0); nothing of its own draws from these generators
    _, key, pos, _, _ = np.random.get_state()
    assert np.array_equal(rng["numpy"]["key"].numpy(), key.astype(np.int64)) and rng["numpy"]["pos"] == pos
    random.seed(0)
    assert tuple(rng["python"][1]) == random.getstate()[1]


def test_without_lesions_to_validate_on_the_best_checkpoint_is_the_latest(tmp_path):
    import numpy as np

    from deepwml.utils.atomic import savez_compressed

    folder = write_preprocessed_dataset(tmp_path / "pp")
    val_case = folder / "tiny" / "cache" / "case001.npz"  # fold 0 validates on case001
    with np.load(val_case) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["label"][:] = 0
    savez_compressed(val_case, **arrays)
    result = train(_opts(tmp_path, epochs=2))
    best, latest = (load_checkpoint(result["folder"] / name) for name in ("checkpoint_best.pth", "checkpoint_latest.pth"))
    assert best["epoch"] == latest["epoch"] == 2
    entries = [json.loads(line) for line in (result["folder"] / "log.jsonl").read_text().splitlines()]
    assert entries[-1]["val_slices"] == 0 and entries[-1]["val_median_dice"] is None


def test_deep_supervision_and_batch_norm_train_and_validate_as_deepwml_predict_and_evaluate_would(tmp_path):
    from deepwml.evaluation.slice_metrics import slice_metrics
    from deepwml.imageio import Geometry
    from deepwml.inference.predictor import SlicePredictor
    from deepwml.models import build_network
    from deepwml.training.device import setup_device

    plan = tiny_plan(epochs=2)
    plan.network.deep_supervision = True
    plan.network.norm = "batch"
    plan.network.features = [8, 16, 32, 64]
    folder = write_preprocessed_dataset(tmp_path / "pp", plan)
    torch.manual_seed(0)  # the trainer seeds --seed 0 before building: these are its initial weights
    initial = build_network(plan.network).state_dict()
    result = train(_opts(tmp_path))
    state = load_checkpoint(result["folder"] / "checkpoint_best.pth")["model"]
    # the coarser heads are trained (their loss reaches them) and batch norm learned running statistics for eval mode
    assert not torch.equal(state["ds_heads.1.weight"], initial["ds_heads.1.weight"])
    assert not torch.allclose(state["encoder.0.1.running_var"], initial["encoder.0.1.running_var"])
    # validation = the predictor on the validation case's lesion slices, scored by the evaluator's per-slice metrics
    net = build_network(plan.network)
    net.load_state_dict(state)
    with np.load(folder / "tiny" / "cache" / "case001.npz") as z:  # fold 0 validates on case001
        image, label = z["image"], z["label"]
    keep = (label == 1).any(axis=(1, 2))
    # validation keeps its slices in float16 memory
    probs = SlicePredictor([net], plan, setup_device("cpu", threads=1)).predict(image[keep].astype(np.float16).astype(np.float32))
    ignore = label[keep] == 255
    geometry = Geometry(size=(32, 32, int(keep.sum())), spacing=(1.0, 1.0, 5.0), origin=(0.0, 0.0, 0.0))
    scores = slice_metrics(label[keep] == 1, (probs >= plan.inference.threshold) & ~ignore, geometry)
    summary = json.loads((result["folder"] / "validation" / "summary.json").read_text())
    assert result["val_median_dice"] == summary["median_dice"] == pytest.approx(float(scores["dice"].median()))
    assert summary["median_precision"] == pytest.approx(float(scores["precision"].median()))  # NaN left out, as there


def test_a_resenc_network_trains_resumes_and_predicts_through_the_registry_alone(tmp_path):
    """resenc_unet2d reaches trainer, checkpoint and predictor only through deepwml.models (no stage knows it)."""
    from deepwml.inference.model_loading import build_fold_networks, check_model, load_fold_states
    from deepwml.inference.predictor import SlicePredictor
    from deepwml.training.device import setup_device

    plan = tiny_plan(epochs=2)
    plan.network.architecture = "resenc_unet2d"
    plan.network.convs_per_block = 1
    plan.network.options = {"blocks_per_stage": [1, 2, 1]}
    write_preprocessed_dataset(tmp_path / "pp", plan)
    straight, split = _two_runs(tmp_path)
    assert main(_argv(straight)) == 0
    assert main(_argv(split, "0", "--epochs", "1")) == 0
    assert main(_argv(split, "0", "--continue")) == 0
    a, b = (load_checkpoint(_fold_dir(r) / "checkpoint_latest.pth") for r in (straight, split))
    _assert_same_state(a["model"], b["model"])
    assert any(k.startswith("encoder.1.1.conv2.") for k in a["model"])  # the second block of stage 1
    spec = check_model(_fold_dir(straight).parent, ["0"])
    assert spec.plan.network.options == {"blocks_per_stage": [1, 2, 1]}
    nets = build_fold_networks(spec, load_fold_states(spec))
    image = np.random.default_rng(0).normal(0, 1, (3, 32, 32)).astype(np.float32)
    probs = SlicePredictor(nets, spec.plan, setup_device("cpu", threads=1)).predict(image)
    assert probs.shape == image.shape and np.isfinite(probs).all()
