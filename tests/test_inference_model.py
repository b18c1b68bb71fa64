"""Model loading (plan-hash checks, folds, safe loading) and the slice predictor (ensemble, TTA, batching, head crop)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from deepwml.inference.model_loading import build_fold_networks, check_model, load_checkpoint, load_fold_states, resolve_model_dir
from deepwml.inference.predictor import SlicePredictor, inference_batches
from deepwml.models import network_spec
from deepwml_testing.toy_models import tiny_plan, write_model_dir
from deepwml.training.device import DeviceSetup
from deepwml.utils.errors import DeepWMLError

FP32 = DeviceSetup(torch.device("cpu"), None, channels_last=True, threads=2)
BF16 = DeviceSetup(torch.device("cpu"), torch.bfloat16, channels_last=True, threads=2)


@pytest.fixture(autouse=True)
def _few_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


def _model(tmp_path, folds=(0,), kind="random", plan=None):
    return write_model_dir(tmp_path / "results" / "Dataset999_Toy" / "tiny", plan or tiny_plan(), folds, kind=kind)


def _predictor(model_dir, folds=None, tta=False, batch_size=None, crop=True):
    spec = check_model(model_dir, folds)
    nets = build_fold_networks(spec, load_fold_states(spec))
    return SlicePredictor(nets, spec.plan, FP32, tta=tta, batch_size=batch_size, crop=crop)


def test_model_is_found_by_folder_or_by_dataset_and_plan(tmp_path):
    model_dir = _model(tmp_path)
    assert resolve_model_dir(model_dir=model_dir) == model_dir
    assert resolve_model_dir(dataset="999", plan="tiny", results_root=tmp_path / "results") == model_dir
    with pytest.raises(DeepWMLError, match="not both"):
        resolve_model_dir(model_dir=model_dir, dataset="999", plan="tiny")
    with pytest.raises(DeepWMLError, match="no plans.json"):
        resolve_model_dir(model_dir=model_dir.parent)
    with pytest.raises(DeepWMLError, match="Dataset999_Toy"):
        resolve_model_dir(dataset="998", plan="tiny", results_root=tmp_path / "results")


def test_default_folds_are_the_trained_ones_and_a_missing_fold_is_named(tmp_path):
    model_dir = _model(tmp_path, folds=(0, 2, 1))
    assert check_model(model_dir).folds == ["0", "1", "2"]
    with pytest.raises(DeepWMLError, match="fold 3 is missing"):
        check_model(model_dir, folds=[0, 3])
    write_model_dir(model_dir, tiny_plan(), folds=(4,), checkpoint="checkpoint_latest.pth")
    with pytest.raises(DeepWMLError, match="fold 4 is missing.*--checkpoint latest"):
        check_model(model_dir, folds=[4])
    assert check_model(model_dir, folds=[4], checkpoint="latest").checkpoints[0].name == "checkpoint_latest.pth"


def test_plans_json_edited_after_training_is_refused(tmp_path):
    model_dir = _model(tmp_path)
    plan = tiny_plan()
    plan.inference.threshold = 0.3
    plan.save(model_dir / "plans.json")
    with pytest.raises(DeepWMLError, match="fold_0.*plans.json changed after training"):
        load_fold_states(check_model(model_dir))


def test_folds_trained_with_different_plans_are_refused(tmp_path):
    model_dir = _model(tmp_path, folds=(0,))
    other = tiny_plan(features=(4, 8, 16))
    write_model_dir(tmp_path / "other", other, folds=(1,))
    (tmp_path / "other" / "fold_1").rename(model_dir / "fold_1")
    with pytest.raises(DeepWMLError, match="different plans.*fold 0.*fold 1"):
        load_fold_states(check_model(model_dir))


def test_checkpoints_load_weights_only_and_old_numpy_rng_states_still_load(tmp_path):
    """Old checkpoints (numpy RNG state inside) load; anything needing another pickled class is refused, by name."""
    import fractions

    path = tmp_path / "ckpt.pth"
    torch.save({"model": {}, "plan_hash": "x", "rng": {"numpy": np.random.get_state()}}, path)
    assert load_checkpoint(path)["plan_hash"] == "x"
    torch.save({"model": {}, "plan_hash": "x", "extra": fractions.Fraction(1, 3)}, path)
    with pytest.raises(DeepWMLError, match=r"ckpt\.pth: holds pickled objects other than tensors.*fractions\.Fraction.*never unpickles code"):
        load_checkpoint(path)
    torch.save({"model": [1, 2], "plan_hash": "x"}, path)
    with pytest.raises(DeepWMLError, match="not a mapping of names to tensors"):
        load_checkpoint(path)


def test_threshold_toy_network_computes_the_documented_function(tmp_path):
    predictor = _predictor(_model(tmp_path, kind="threshold"), crop=False)
    x = np.random.default_rng(0).normal(0, 1.5, (3, 64, 64)).astype(np.float32)
    smoothed = np.maximum(ndimage.uniform_filter(x, size=(1, 3, 3), mode="constant"), 0)
    expected = 1 / (1 + np.exp(-4.0 * (smoothed - 1.5)))
    assert np.allclose(predictor.predict(x), expected, atol=1e-5)


def test_ensemble_is_the_mean_of_its_folds_and_batching_changes_nothing(tmp_path):
    model_dir = _model(tmp_path, folds=(0, 1))
    x = np.random.default_rng(1).normal(0, 1, (5, 64, 64)).astype(np.float32)
    both = _predictor(model_dir, batch_size=2, crop=False).predict(x)
    single = [_predictor(model_dir, folds=[k], batch_size=5, crop=False).predict(x) for k in (0, 1)]
    assert not np.allclose(single[0], single[1], atol=1e-3)  # the folds really differ
    assert np.allclose(both, (single[0] + single[1]) / 2, atol=1e-5)


def test_flip_tta_makes_the_prediction_mirror_symmetric(tmp_path):
    predictor = _predictor(_model(tmp_path), tta=True, crop=False)
    x = np.random.default_rng(2).normal(0, 1, (2, 64, 64)).astype(np.float32)
    assert np.allclose(predictor.predict(x[..., ::-1]), predictor.predict(x)[..., ::-1], atol=1e-5)
    plain = _predictor(_model(tmp_path), crop=False)
    assert not np.allclose(plain.predict(x[..., ::-1]), plain.predict(x)[..., ::-1], atol=1e-3)


def test_each_batch_is_cropped_to_its_own_head_box_and_headless_slices_are_skipped():
    plan = tiny_plan(matrix=128, features=(8, 16, 32, 64))
    head = np.zeros((6, 128, 128), bool)
    head[1:3, 40:70, 50:61] = True  # small head on the first batch's slices
    head[3:5, 10:120, 5:100] = True  # large head on the second batch's
    batches = inference_batches(head, head.shape, network_spec(plan.network), batch_size=2, margin=8)
    assert [b.slices.tolist() for b in batches] == [[1, 2], [3, 4]]
    for b, (r0, r1), (c0, c1) in zip(batches, [(40, 70), (10, 120)], [(50, 61), (5, 100)]):
        for span, lo, hi in ((b.rows, r0, r1), (b.cols, c0, c1)):
            assert (span.start <= max(0, lo - 8) and span.stop >= min(128, hi + 8)) and 0 <= span.start < span.stop <= 128
            assert (span.stop - span.start) % 8 == 0 or span == slice(0, 128)
    assert batches[0].rows.stop - batches[0].rows.start < 64  # not the union of both heads
    # instance norm's statistics change with the crop: the network says so and gets whole slices
    instance = inference_batches(head, head.shape, network_spec(tiny_plan(norm="instance").network), batch_size=4)
    assert all((b.rows, b.cols) == (slice(0, 128), slice(0, 128)) for b in instance)
    assert [b.slices.tolist() for b in instance] == [[1, 2, 3, 4]]


def test_cropped_prediction_matches_the_full_one_inside_the_head(tmp_path):
    predictor = _predictor(_model(tmp_path, kind="threshold"))
    x = np.full((3, 64, 64), -1.0, np.float32)
    x[:, 20:44, 16:40] = np.random.default_rng(3).normal(1, 1.5, (3, 24, 24))
    head = np.zeros(x.shape, bool)
    head[:2, 20:44, 16:40] = True  # slice 2 holds no head
    cropped = predictor.predict(x, head)
    full = _predictor(_model(tmp_path, kind="threshold"), crop=False).predict(x)
    assert np.allclose(cropped[:2][head[:2]], full[:2][head[:2]], atol=1e-6)
    assert not cropped[2].any()


def test_a_cropped_batch_norm_network_pools_on_the_whole_slices_grid_and_matches_it_inside_the_head(tmp_path):
    """A crop starts on the U-Net's pooling grid (a multiple of 2 ** poolings), so with a margin wider than the
    network's reach the head's probabilities are the whole slice's; a crop one pixel off that grid pools other pixels
    together and changes them."""
    plan = tiny_plan(matrix=128, norm="batch")
    model_dir = _model(tmp_path, kind="random", plan=plan)
    x = np.full((2, 128, 128), -1.0, np.float32)
    x[:, 37:75, 41:83] = np.random.default_rng(5).normal(1, 1.5, (2, 38, 42))
    head = np.zeros(x.shape, bool)
    head[:, 37:75, 41:83] = True
    network = network_spec(plan.network)
    (region,) = inference_batches(head, head.shape, network, batch_size=2, margin=32)
    multiple = network.size_multiple
    assert multiple == 4 and region.rows.start % multiple == 0 and region.cols.start % multiple == 0
    assert region.rows.start <= 37 - 32 and region.rows != slice(0, 128)
    cropped = _predictor(model_dir).predict(x, head)
    full = _predictor(model_dir, crop=False).predict(x)
    assert np.allclose(cropped[head], full[head], atol=1e-5)
    # the same crop shifted off the grid by one pixel is what the network would compute without the alignment
    spec = check_model(model_dir)
    net = build_fold_networks(spec, load_fold_states(spec))[0].eval()
    rows, cols = slice(region.rows.start + 1, region.rows.stop - 3), region.cols
    with torch.no_grad():
        off = torch.sigmoid(net(torch.from_numpy(x[:, None, rows, cols]))).numpy()[:, 0]
    inner = head[:, rows, cols]
    assert np.abs(off[inner] - full[:, rows, cols][inner]).max() > 1e-3


def test_sizes_that_do_not_divide_by_the_poolings_are_padded_and_cut_back(tmp_path):
    predictor = _predictor(_model(tmp_path, kind="threshold"), crop=False)
    x = np.random.default_rng(4).normal(0, 1.5, (2, 50, 70)).astype(np.float32)
    probs = predictor.predict(x)
    assert probs.shape == x.shape and probs.dtype == np.float32
    smoothed = np.maximum(ndimage.uniform_filter(x, size=(1, 3, 3), mode="constant"), 0)
    inner = (slice(None), slice(1, -1), slice(1, -1))  # replicate padding only touches the outermost ring
    assert np.allclose(probs[inner], (1 / (1 + np.exp(-4.0 * (smoothed - 1.5))))[inner], atol=1e-5)


def test_bf16_prediction_stays_close_to_fp32(tmp_path):
    model_dir = _model(tmp_path, kind="threshold")
    spec = check_model(model_dir)
    nets = build_fold_networks(spec, load_fold_states(spec))
    x = np.random.default_rng(5).normal(0, 1.5, (2, 64, 64)).astype(np.float32)
    fp32 = SlicePredictor(nets, spec.plan, FP32).predict(x)
    bf16 = SlicePredictor(nets, spec.plan, BF16).predict(x)
    assert bf16.dtype == np.float32 and np.abs(bf16 - fp32).max() < 0.05
