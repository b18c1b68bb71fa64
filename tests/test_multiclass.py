"""Multi-class segmentation (issue #14's anatomy model): dataset.json classes, the plan's num_classes, the softmax
loss, label resampling, and a dataset of learnable classes that plans, trains and predicts through the commands."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import AXIAL, oblique_direction
from deepwml.datasets import CaseMeta, DatasetJson
from deepwml.imageio import Geometry, read_image, write_image
from deepwml.models.losses import ce_dice
from deepwml.planning.plan import NetworkPlan, Plan
from deepwml.preprocessing.resample import resize_class_probabilities, resize_classes, resize_slices
from deepwml.utils.errors import DatasetError, PlanError
from deepwml_testing.toy_models import tiny_plan

CLASSES = {"background": 0, "tissue": 1, "bright": 2, "dark": 3}


def test_dataset_json_accepts_consecutive_classes_and_names_the_file_otherwise(tmp_path):
    """A multi-class dataset maps background to 0 and its classes to 1, 2, ...; gaps and a lone non-lesion class fail."""
    base = {"name": "Dataset001_X", "file_ending": ".nii.gz", "channel_names": {"0": "FLAIR"}}
    meta = DatasetJson.from_dict({**base, "labels": {**CLASSES, "ignore": 255}})
    assert meta.num_classes == 4 and meta.ignore_label == 255
    assert DatasetJson.from_dict({**base, "labels": {"background": 0, "lesion": 1}}).num_classes == 2
    for labels, message in (({"background": 0, "a": 1, "b": 3}, "1, 2, ..."), ({"background": 0, "wmh": 1}, "lesion to 1"),
                            ({**CLASSES, "ignore": 2}, "ignore label")):
        path = tmp_path / "dataset.json"
        path.write_text(json.dumps({**base, "labels": labels}))
        with pytest.raises(DatasetError, match=f"dataset.json.*{message}|{message}.*dataset.json"):
            DatasetJson.load(path)


def test_binary_plans_keep_their_file_and_hash_and_a_loss_must_fit_the_classes(tmp_path):
    """plans.json of a binary plan has no num_classes (older plans keep their hash); a multi-class plan records it."""
    plan = tiny_plan()
    assert "num_classes" not in plan.to_dict()["network"]
    plan.save(tmp_path / "plans.json")
    assert Plan.load(tmp_path / "plans.json").hash() == plan.hash()
    plan.network.num_classes, plan.training.loss = 4, "ce_dice"
    assert plan.to_dict()["network"]["num_classes"] == 4 and not plan.problems()
    plan.training.loss = "bce_dice"
    assert any("'bce_dice' is for one lesion class" in p for p in plan.problems())
    with pytest.raises(PlanError, match="num_classes must be 2..255"):
        Plan.from_dict({**tiny_plan().to_dict(), "network": {**tiny_plan().to_dict()["network"], "num_classes": 1}})


def test_the_shipped_lesion_plan_keeps_the_hash_its_checkpoint_records():
    """The plan hash of the shipped model (checkpoints and manifest record it) does not move with the new field."""
    from deepwml.pretrained import BUILTIN_DIR

    manifest = json.loads((BUILTIN_DIR / "manifest.json").read_text())
    assert Plan.load(BUILTIN_DIR / "plans.json").hash() == manifest["plan_hash"]


def test_ce_dice_rewards_the_right_class_and_ignores_ignored_pixels():
    """Confident right logits give a small loss, wrong ones a large one; logits at ignored pixels do not count."""
    target = torch.tensor([[[[0, 1], [2, 255]]]], dtype=torch.float32)
    right = torch.full((1, 3, 2, 2), -8.0)
    for k, (y, x) in enumerate([(0, 0), (0, 1), (1, 0)]):
        right[0, k, y, x] = 8.0
    wrong = right.roll(1, dims=1)
    assert ce_dice(right, target) < 0.01 < 1.0 < ce_dice(wrong, target)
    changed = right.clone()
    changed[0, :, 1, 1] = torch.tensor([5.0, -3.0, 9.0])
    assert torch.allclose(ce_dice(changed, target), ce_dice(right, target))


def test_class_probabilities_resample_as_their_full_linear_interpolation():
    """Interpolating only near class boundaries gives the argmax of every class resampled linearly."""
    rng = np.random.default_rng(0)
    coarse = rng.random((3, 4, 6, 5)).astype(np.float32)
    logits = resize_slices(coarse.reshape(12, 6, 5), (24, 20), order=3).reshape(3, 4, 24, 20) * 5
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    full = np.stack([resize_slices(probs[:, k], (61, 47), order=1) for k in range(4)], axis=1).argmax(axis=1)
    fast = resize_class_probabilities(probs, (61, 47))
    assert fast.dtype == np.uint8 and fast.shape == (3, 61, 47)
    assert np.mean(fast == full) > 0.999
    assert np.array_equal(resize_class_probabilities(probs, (24, 20)), probs.argmax(axis=1))


def test_downsampled_class_labels_leave_no_holes_where_classes_meet():
    """Three classes meeting at a point: every output pixel gets one of them (thresholding each would leave 0s)."""
    label = np.ones((1, 30, 30), np.uint8)
    label[0, :15, 15:] = 2
    label[0, 15:, :] = 3
    out = resize_classes(label, (7, 7))
    assert set(np.unique(out)) == {1, 2, 3}
    assert out[0, 0, 0] == 1 and out[0, 0, -1] == 2 and out[0, -1, 3] == 3


def squares_case(seed: int, shape=(6, 48, 48)):
    """A 'head' (tissue), a bright square and a dark square at random places: classes 1, 2, 3 learnable from intensity."""
    rng = np.random.default_rng(seed)
    z, h, w = shape
    yy, xx = np.mgrid[:h, :w]
    label = np.zeros(shape, np.uint8)
    head = ((yy - h / 2) / (0.42 * h)) ** 2 + ((xx - w / 2) / (0.38 * w)) ** 2 < 1
    label[:, head] = 1
    for k in range(z):
        for value in (2, 3):
            y0, x0 = rng.integers(int(0.3 * h), int(0.6 * h)), rng.integers(int(0.3 * w), int(0.6 * w))
            size = rng.integers(5, 9)
            label[k, y0:y0 + size, x0:x0 + size] = value
    image = np.choose(label, [5.0, 100.0, 200.0, 30.0]) + rng.normal(0, 4, shape)
    return image.astype(np.float32), label


def write_squares_dataset(raw, n_train: int = 6, n_test: int = 2, direction=AXIAL):
    """Dataset903_Squares: the squares cases with the 4-class labels."""
    folder = raw / "Dataset903_Squares"
    meta = DatasetJson(name=folder.name, labels=dict(CLASSES))
    for i in range(n_train + n_test):
        split = "Tr" if i < n_train else "Ts"
        image, label = squares_case(i)
        geometry = Geometry((48, 48, 6), (0.9, 0.9, 5.0), (-20.0, -25.0, 3.0), direction)
        write_image(image, geometry, folder / f"images{split}" / f"case{i:03d}.nii.gz")
        write_image(label, geometry, folder / f"labels{split}" / f"case{i:03d}.nii.gz")
        meta.cases[f"case{i:03d}"] = CaseMeta(centre="A", disease="MS")
    meta.num_training, meta.num_test = n_train, n_test
    meta.save(folder / "dataset.json")
    return folder


def class_dice(reference: np.ndarray, prediction: np.ndarray, value: int) -> float:
    """Dice of one class value."""
    a, b = reference == value, prediction == value
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


@pytest.mark.slow
def test_a_multiclass_dataset_plans_trains_and_predicts_its_classes(tmp_path, monkeypatch, training_threads):
    """Planned from a binary preset, the plan becomes 4-class with the softmax loss; trained briefly, validation and
    the label maps deepwml_predict writes on the input's (tilted) grid find every class."""
    from deepwml.cli.plan_and_preprocess import main as plan_main
    from deepwml.cli.predict import main as predict_main
    from deepwml.cli.train import main as train_main

    for kind in ("raw", "preprocessed", "results"):
        monkeypatch.setenv(f"DEEPWML_{kind.upper()}", str(tmp_path / kind))
    folder = write_squares_dataset(tmp_path / "raw", direction=oblique_direction())
    preset = tiny_plan(matrix=48, features=(8, 16, 32), norm="instance")
    preset.training.epochs, preset.training.iterations_per_epoch, preset.training.num_workers = 4, 10, 0
    preset.training.learning_rate, preset.training.lr_schedule, preset.training.batch_size = 1e-2, "poly", 8
    preset.training.augmentation.rotation_deg = 0.0
    preset.save(tmp_path / "tiny.json")
    assert plan_main(["-d", "903", "--preset", str(tmp_path / "tiny.json"), "-np", "1"]) == 0
    plan = Plan.load(tmp_path / "preprocessed" / folder.name / "tiny" / "plans.json")
    assert (plan.network.num_classes, plan.training.loss) == (4, "ce_dice")
    assert train_main(["-d", "903", "-p", "tiny", "0", "--num-workers", "0", "--device", "cpu"]) == 0
    summary = json.loads((tmp_path / "results" / folder.name / "tiny" / "fold_0" / "validation" / "summary.json").read_text())
    assert min(summary["class_dice"].values()) > 0.8, summary["class_dice"]
    out = tmp_path / "out"
    assert predict_main(["-i", str(folder / "imagesTs"), "-o", str(out), "-d", "903", "-p", "tiny", "--tta"]) == 0
    for case in ("case006", "case007"):
        predicted = read_image(out / f"{case}.nii.gz", dtype=None)
        reference = read_image(folder / "labelsTs" / f"{case}.nii.gz", dtype=None)
        assert not predicted.geometry.mismatches(reference.geometry) and predicted.array.dtype == np.uint8
        assert min(class_dice(reference.array, predicted.array, v) for v in (1, 2, 3)) > 0.8
        assert not (out / f"{case}_lesions.csv").exists() and (out / "qc" / f"{case}.png").is_file()
    # a multi-class model writes label maps only: lesion options are refused before anything runs
    for option in (["--report"], ["--threshold", "0.7"], ["--min-lesion-ml", "0.01"], ["--min-lesion-peak", "0.7"]):
        assert predict_main(["-i", str(folder / "imagesTs"), "-o", str(tmp_path / "o2"), "-d", "903", "-p", "tiny", *option]) == 2
    assert not (tmp_path / "o2").exists()


def test_a_network_has_one_output_per_class_and_the_binary_head_stays_one_channel():
    """num_classes > 2 gives one logit channel per class; the binary network is the one of every earlier checkpoint."""
    from deepwml.models import build_network, network_spec

    x = torch.zeros(2, 1, 16, 16)
    for architecture in ("unet2d", "resenc_unet2d"):
        binary = NetworkPlan(architecture=architecture, features=[4, 8], norm="instance", deep_supervision=True)
        multi = NetworkPlan(architecture=architecture, features=[4, 8], norm="instance", deep_supervision=True, num_classes=5)
        assert build_network(binary).eval()(x).shape == (2, 1, 16, 16) and build_network(multi).eval()(x).shape == (2, 5, 16, 16)
        for plan in (binary, multi):
            assert network_spec(plan).parameter_count() == sum(p.numel() for p in build_network(plan).parameters())


def test_class_probabilities_resample_exactly_as_the_per_pixel_linear_mix_with_first_class_ties():
    """The class of every output pixel is that of its four input pixels mixed with the linear weights (the same float32
    arithmetic), ties going to the lower class, for up- and downsampling and odd sizes."""
    from deepwml.preprocessing.resample import _linear_taps

    rng = np.random.default_rng(1)
    coarse = rng.random((2, 5, 5, 4)).astype(np.float32)
    logits = resize_slices(coarse.reshape(10, 5, 4), (19, 23), order=3).reshape(2, 5, 19, 23) * 8
    probs = (np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)).astype(np.float32)
    probs[:, :, :4] = 0.25  # four classes tie everywhere here, the fifth below them
    probs[:, 4, :4] = 0.0
    # near class boundaries too: four classes tie, the fifth alternates above and below them
    probs[:, :4, 10:, 12:] = 0.2
    probs[:, 4, 10:, 12:] = np.where(np.add.outer(np.arange(9), np.arange(11)) % 2 == 0, 0.1, 0.3)
    for out_hw in [(40, 31), (19, 23), (7, 50), (60, 60)]:
        y0, y1, wy = _linear_taps(19, out_hw[0])
        x0, x1, wx = _linear_taps(23, out_hw[1])
        a, b = wy[:, None, None], wx[None, :, None]
        mixed = ((1 - a) * (1 - b) * probs.transpose(0, 2, 3, 1)[:, y0][:, :, x0] + (1 - a) * b * probs.transpose(0, 2, 3, 1)[:, y0][:, :, x1]
                 + a * (1 - b) * probs.transpose(0, 2, 3, 1)[:, y1][:, :, x0] + a * b * probs.transpose(0, 2, 3, 1)[:, y1][:, :, x1])
        assert np.array_equal(resize_class_probabilities(probs, out_hw), mixed.argmax(axis=-1))
    assert (resize_class_probabilities(probs, (40, 31))[:, :6] == 0).all()  # rows that mix only tied input rows
