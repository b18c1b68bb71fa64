"""Prediction on ONNX Runtime (deepwml.inference.onnx_backend): the engine chosen, graphs that agree with torch, the
user cache that spares later runs torch, and a clear fall-back or refusal when a model cannot be exported."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from deepwml.cli.predict import main as predict_main
from deepwml.imageio import read_image, write_image
from deepwml.inference import onnx_backend
from deepwml.inference.model_loading import build_fold_networks, check_model, load_fold_states
from deepwml.inference.onnx_backend import GraphPredictor, GraphUnavailable, choose_backend, fold_graphs
from deepwml.inference.predictor import SlicePredictor
from deepwml.models import NORMS
from deepwml.planning.plan import Plan
from deepwml.preprocessing.transforms import preprocess_arrays
from deepwml.pretrained import ANATOMY_DIR, builtin_model_dir
from deepwml.training.checkpoint import read_checkpoint
from deepwml.training.device import DeviceSetup
from deepwml.utils.errors import DeepWMLError
from deepwml.utils.user_cache import cache_dir
from deepwml_testing.toy_models import tiny_plan, write_model_dir
from deepwml_testing.cases import input_case
from tests.conftest import tiny_case


def _cpu() -> DeviceSetup:
    return DeviceSetup(torch.device("cpu"), None, channels_last=True, threads=1)


def test_auto_takes_onnx_runtime_on_a_cpu_and_torch_where_torch_serves_better(tmp_path, monkeypatch):
    narrow, wide = tiny_plan(), Plan()  # the paper's U-Net: 31 M parameters
    assert choose_backend("auto", "cpu", [narrow]).name == "onnx"
    assert choose_backend("auto", "auto", [narrow]).name == "onnx"  # this CI's torch is a CPU build
    assert choose_backend("torch", "cpu", [narrow]).name == "torch"
    assert "wide" in choose_backend("auto", "cpu", [narrow, wide]).reason
    assert "int8" in choose_backend("auto", "cpu", [narrow], int8="on").reason
    assert choose_backend("auto", "cpu", [narrow], int8="auto").name == "onnx"
    assert "bf16" in choose_backend("auto", "cpu", [narrow], force_bf16=True).reason
    assert "CPU" in choose_backend("auto", "cuda", [narrow]).reason
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("DEEPWML_CACHE_DIR", str(blocker / "cache"))
    assert "cannot be made" in choose_backend("auto", "cpu", [narrow]).reason
    monkeypatch.setenv("DEEPWML_CACHE_DIR", "off")
    assert "is off" in choose_backend("auto", "cpu", [narrow]).reason
    monkeypatch.setattr(onnx_backend, "runtime_available", lambda: False)
    assert choose_backend("auto", "cpu", [narrow]) == onnx_backend.BackendChoice("torch", "onnxruntime is not installed")


def test_whether_a_gpu_is_possible_is_known_without_torch_where_the_machine_says(monkeypatch, tmp_path):
    """The default Linux torch is a CUDA build: on a machine without a GPU driver auto must not import torch (2 s)
    to learn there is no GPU; with a driver's files present, only torch can tell."""
    monkeypatch.setattr(onnx_backend, "torch_is_cpu_build", lambda: False)
    monkeypatch.setattr(onnx_backend.sys, "platform", "linux")
    monkeypatch.setattr(onnx_backend, "GPU_DEVICE_FILES", (str(tmp_path / "no_driver"),))
    assert not onnx_backend.gpu_possible()
    (tmp_path / "dxg").touch()
    monkeypatch.setattr(onnx_backend, "GPU_DEVICE_FILES", (str(tmp_path / "no_driver"), str(tmp_path / "dxg")))
    assert onnx_backend.gpu_possible()
    monkeypatch.setattr(onnx_backend.sys, "platform", "darwin")
    assert not onnx_backend.gpu_possible()
    monkeypatch.setattr(onnx_backend.sys, "platform", "linux")
    monkeypatch.setattr(onnx_backend, "torch_is_cpu_build", lambda: True)
    assert not onnx_backend.gpu_possible()


def test_asking_for_onnx_where_it_cannot_run_is_an_error_that_says_why(monkeypatch):
    with pytest.raises(DeepWMLError, match="--backend onnx: it runs on the CPU, and --device cuda"):
        choose_backend("onnx", "cuda", [tiny_plan()])
    with pytest.raises(DeepWMLError, match="--backend must be one of auto, torch, onnx"):
        choose_backend("tensorrt", "cpu", [tiny_plan()])
    plan = tiny_plan()
    plan.network.norm = "my_norm"
    NORMS.register("my_norm", nn.Identity)
    try:
        with pytest.raises(DeepWMLError, match="comes from a plugin"):
            choose_backend("onnx", "cpu", [plan])
    finally:
        NORMS.unregister("my_norm")


def _synthetic_stack(plan: Plan):
    """A synthetic 512² scan (29 slices) preprocessed with ``plan``."""
    case = input_case("NMOSD#4", index=1, seed=77)
    from deepwml.imageio import Image

    return preprocess_arrays(Image(case.image, case.geometry), plan)


def test_the_shipped_models_graphs_give_torchs_fp32_masks_and_anatomy_maps():
    """The same synthetic scan through both engines: lesion masks and anatomy labels agree within what torch's
    own fp32 varies between memory layouts (instance norm on near-empty slices amplifies float rounding)."""
    for folder, binary in ((builtin_model_dir(), True), (ANATOMY_DIR, False)):
        spec = check_model(folder)
        prepared = _synthetic_stack(spec.plan)
        networks = build_fold_networks(spec, load_fold_states(spec))
        torch_probs = SlicePredictor(networks, spec.plan, _cpu()).predict(prepared.image, prepared.head)
        graph_probs = GraphPredictor(fold_graphs(spec), spec.plan, threads=1).predict(prepared.image, prepared.head)
        assert graph_probs.shape == torch_probs.shape and graph_probs.dtype == np.float32
        assert np.abs(graph_probs - torch_probs).mean() < 1e-5
        if binary:
            a, b = torch_probs >= 0.5, graph_probs >= 0.5
            assert a.sum() > 200 and 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.999
        else:
            assert (torch_probs.argmax(axis=1) == graph_probs.argmax(axis=1)).mean() > 0.9999


def test_an_ensemble_of_folds_with_tta_averages_as_torch_does(tmp_path):
    """Two folds of a 2.5D model (three neighbouring slices as channels), mirrored and not: the same average."""
    plan = tiny_plan()
    plan.network.context_slices, plan.network.in_channels = 3, 3
    model = write_model_dir(tmp_path / "Dataset999_Toy" / "tiny", plan, folds=(0, 1), kind="random", seed=11)
    spec = check_model(model)
    assert spec.folds == ["0", "1"]
    stack = np.random.default_rng(1).standard_normal((1, 5, 64, 64)).astype(np.float32)
    torch_probs = SlicePredictor(build_fold_networks(spec, load_fold_states(spec)), spec.plan, _cpu(), tta=True).predict(stack)
    graph_probs = GraphPredictor(fold_graphs(spec), spec.plan, threads=1, tta=True).predict(stack)
    single = GraphPredictor(fold_graphs(spec)[:1], spec.plan, threads=1, tta=True).predict(stack)
    assert graph_probs.shape == (5, 64, 64) and np.abs(graph_probs - torch_probs).max() < 1e-4
    assert np.abs(single - graph_probs).max() > 1e-3  # the second fold counts


class _Shift(nn.Module):
    """A 1×1 convolution: mirror-equivariant, so flip TTA must change nothing, padding or not."""

    size_multiple, crop_safe = 4, True  # tiny_plan's U-Net: two poolings

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)
        nn.init.constant_(self.conv.weight, 2.0)
        nn.init.constant_(self.conv.bias, -1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_flip_tta_of_a_padded_batch_averages_the_same_pixels_in_both_engines(tmp_path):
    """A width that the U-Net's multiple does not divide is padded at the far end; the mirrored answer must be
    mirrored back before the padding is cut off, or TTA would average pixels a padding's width apart."""
    plan = tiny_plan()
    stack = np.random.default_rng(0).standard_normal((1, 3, 64, 62)).astype(np.float32)  # 62: padded to 64
    net = _Shift().eval()
    plain = SlicePredictor([net], plan, _cpu(), crop=False).predict(stack)
    flipped = SlicePredictor([net], plan, _cpu(), tta=True, crop=False).predict(stack)
    np.testing.assert_allclose(flipped, plain, atol=1e-6)
    graph = onnx_backend.export_graph(net, plan, tmp_path / "net")
    fold = onnx_backend.FoldGraph(graph, "digest", (1.0, 1.0))
    on_runtime = GraphPredictor([fold], plan, threads=1, tta=True, crop=False).predict(stack)
    np.testing.assert_allclose(on_runtime, plain, atol=1e-6)


def test_the_far_end_is_padded_with_the_plane_s_lowest_value_so_both_edges_of_the_field_read_alike(tmp_path):
    """A head cut by the field of view at the far end of a width the U-Net's multiple does not divide: the padding
    holds each plane's lowest value, as training pads a patch that leaves its slice, so the network reads that edge as
    it reads the near one (a copy of the edge carried the head on into the padding); in both engines."""
    model = write_model_dir(tmp_path / "Dataset999_Toy" / "tiny", tiny_plan(), kind="threshold")  # 3 x 3 mean, > 1.5
    spec = check_model(model)
    stack = np.zeros((1, 2, 64, 62), np.float32)  # 62: padded to 64
    stack[0, 0, 20:40, 50:] = 3.0  # bright tissue cut by the far edge of the field
    stack[0, 1, 20:40, :12] = 3.0  # ... and its mirror image, cut by the near edge
    torch_probs = _predictor_of(spec).predict(stack)
    graph_probs = GraphPredictor(fold_graphs(spec), spec.plan, threads=1, crop=False).predict(stack)
    for probs in (torch_probs, graph_probs):
        np.testing.assert_allclose(probs[0, 20:40, -1], probs[1, 20:40, 0], atol=1e-6)
        assert probs[0, 30, -1] < 0.9  # two thirds of the mean's window: 2.0, not 3.0 (0.88 against 0.998)
    np.testing.assert_allclose(graph_probs, torch_probs, atol=1e-5)


def _predictor_of(spec) -> SlicePredictor:
    """The torch predictor of a model's folds, whole slices."""
    return SlicePredictor(build_fold_networks(spec, load_fold_states(spec)), spec.plan, _cpu(), crop=False)


def test_graphs_come_from_the_cache_until_the_checkpoint_changes(tmp_path, monkeypatch):
    """A second read exports nothing; re-calibrating (a new temperature in the checkpoint) makes a new graph entry
    with the new temperature, in place of the old one."""
    model = write_model_dir(tmp_path / "Dataset999_Toy" / "tiny", tiny_plan(), kind="random")
    spec = check_model(model)
    first = fold_graphs(spec)
    assert first[0].temperatures == (1.0, 1.0) and spec.temperatures == [(1.0, 1.0)]
    monkeypatch.setattr(onnx_backend, "_export_fold", lambda *a: pytest.fail("exported again"))
    assert fold_graphs(check_model(model))[0] == first[0]
    monkeypatch.undo()
    path = spec.checkpoints[0]
    ckpt = read_checkpoint(path)
    ckpt["temperature"] = [1.5, 2.0]
    torch.save(ckpt, path)
    again = fold_graphs(check_model(model))
    assert again[0].temperatures == (1.5, 2.0) and again[0].digest == first[0].digest
    entries = list(Path(cache_dir()).glob("onnx-*.npz"))
    assert sum(e.name.startswith("onnx-" + onnx_backend.content_key([str(path.resolve())])[:16]) for e in entries) == 1


def test_a_cache_entry_this_code_did_not_write_is_not_trusted(tmp_path):
    """An entry under the right name that lacks the weights digest or temperatures is exported again, not used."""
    model = write_model_dir(tmp_path / "Dataset999_Toy" / "tiny", tiny_plan(), kind="random", seed=9)
    spec = check_model(model)
    good = fold_graphs(spec)[0]
    (entry,) = Path(cache_dir()).glob("onnx-" + onnx_backend.content_key([str(spec.checkpoints[0].resolve())])[:16] + "-*.npz")
    np.savez(entry, graph=np.frombuffer(b"not a graph", dtype=np.uint8))
    assert fold_graphs(check_model(model))[0] == good


def test_a_graph_that_disagrees_with_the_network_is_refused(tmp_path, monkeypatch):
    model = write_model_dir(tmp_path / "Dataset999_Toy" / "tiny", tiny_plan(), kind="random", seed=5)
    monkeypatch.setattr(onnx_backend, "EXPORT_TOLERANCE", -1.0)
    with pytest.raises(GraphUnavailable, match="disagrees with the network") as info:
        fold_graphs(check_model(model))
    assert "checkpoint_best.pth" in str(info.value)


def test_auto_predicts_with_torch_when_a_model_cannot_be_exported_and_onnx_refuses(tmp_path, monkeypatch, capfd):
    """Auto: a note naming the reason, then the same masks as torch; --backend onnx: exit 2 with that reason,
    nothing predicted."""
    model = write_model_dir(tmp_path / "Dataset999_Toy" / "tiny", tiny_plan(), kind="threshold", seed=6)
    image, _, geometry = tiny_case(shape_zyx=(4, 64, 64), seed=3)
    scan = write_image(image, geometry, tmp_path / "in" / "scan.nii.gz")

    def no_export(net, plan, source):
        raise GraphUnavailable("the network could not be exported to ONNX (test)", source)

    monkeypatch.setattr(onnx_backend, "export_graph", no_export)
    common = ["-i", str(scan), "-m", str(model), "--no-qc", "--no-anatomy", "--no-bf16"]  # torch in fp32, as the graph
    assert predict_main([*common, "-o", str(tmp_path / "auto")]) == 0
    captured = capfd.readouterr()
    assert "note: predicting with torch: " in captured.err and "could not be exported to ONNX (test)" in captured.err
    assert "ONNX Runtime" not in captured.out and "(torch: the network could not be exported to ONNX (test)" in captured.out
    assert predict_main([*common, "-o", str(tmp_path / "onnx"), "--backend", "onnx"]) == 2
    assert "could not be exported to ONNX (test)" in capfd.readouterr().err
    assert not (tmp_path / "onnx" / "scan.nii.gz").exists()
    monkeypatch.undo()
    assert predict_main([*common, "-o", str(tmp_path / "graph"), "--backend", "onnx"]) == 0
    assert "ONNX Runtime" in capfd.readouterr().out
    torch_mask = read_image(tmp_path / "auto" / "scan.nii.gz", dtype=None).array
    graph_mask = read_image(tmp_path / "graph" / "scan.nii.gz", dtype=None).array
    assert torch_mask.sum() > 50 and 2 * (torch_mask & graph_mask).sum() / (torch_mask.sum() + graph_mask.sum()) > 0.99


def test_a_run_resumed_on_the_other_engine_keeps_its_finished_cases(tmp_path, capfd):
    """The outputs record the weights that made them, not the engine: a torch run resumed on ONNX Runtime skips
    the finished case."""
    model = write_model_dir(tmp_path / "Dataset999_Toy" / "tiny", tiny_plan(), kind="threshold", seed=7)
    for k in range(2):
        image, _, geometry = tiny_case(shape_zyx=(4, 64, 64), seed=10 + k)
        write_image(image, geometry, tmp_path / "in" / f"c{k}.nii.gz")
    common = ["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-m", str(model), "--no-qc", "--no-anatomy"]
    assert predict_main([*common, "--backend", "torch"]) == 0
    (tmp_path / "out" / "c1.nii.gz").unlink()
    capfd.readouterr()
    assert predict_main([*common, "--backend", "onnx"]) == 0
    assert "1 case(s) predicted, 1 already done" in capfd.readouterr().out


def test_a_checkpoint_of_another_plan_is_refused_on_onnx_runtime_too(tmp_path):
    model = write_model_dir(tmp_path / "Dataset999_Toy" / "tiny", tiny_plan(), kind="random", seed=8)
    other = tiny_plan()
    other.network.features = [8, 16, 48]
    other.save(model / "plans.json")
    with pytest.raises(DeepWMLError, match="plans.json changed after training"):
        fold_graphs(check_model(model))



def test_installing_a_model_prepares_its_graphs_so_the_first_prediction_exports_nothing(tmp_path, monkeypatch, capsys):
    """deepwml_install_model pays the export once; the installed model's first prediction reads the cache."""
    from deepwml.cli.install_model import main as install_main
    from deepwml.inference.packaging import export_model

    model = write_model_dir(tmp_path / "Dataset999_Toy" / "tiny", tiny_plan(), kind="random", seed=11)
    export_model(model, tmp_path / "m.zip")
    assert install_main([str(tmp_path / "m.zip"), "--results", str(tmp_path / "site")]) == 0
    assert "prepared for ONNX Runtime" in capsys.readouterr().out
    installed = tmp_path / "site" / "Dataset999_Toy" / "tiny"
    monkeypatch.setattr(onnx_backend, "_export_fold", lambda *a: pytest.fail("exported again"))
    assert len(fold_graphs(check_model(installed))) == 1


@pytest.mark.parametrize("engine", ["torch", "onnx"])
def test_a_plans_crop_margin_sets_both_engines_crop_on_the_pooling_grid(tmp_path, engine):
    """inference.crop_margin (default 32) is the background each engine keeps around the head box of a network that
    may be cropped, the box widened out to the pooling grid (a multiple of 4 for a 3-level U-Net)."""
    x = np.full((1, 2, 128, 128), -1.0, np.float32)
    head = np.zeros((2, 128, 128), bool)
    head[:, 37:75, 41:83] = True
    shapes = {}
    for margin, expected in ((32, (104, 108)), (4, (48, 52)), (0, (40, 44))):
        plan = tiny_plan(matrix=128, norm="batch")
        plan.inference.crop_margin = margin
        spec = check_model(write_model_dir(tmp_path / str(margin) / "tiny", plan, kind="random"))
        if engine == "torch":
            predictor = SlicePredictor(build_fold_networks(spec, load_fold_states(spec)), spec.plan, _cpu())
        else:
            predictor = GraphPredictor(fold_graphs(spec), spec.plan, threads=1)
        forward = predictor.forward
        seen = []
        predictor.forward = lambda batch, seen=seen, forward=forward: seen.append(batch.shape[-2:]) or forward(batch)
        predictor.predict(x, head)
        shapes[margin] = set(seen)
        assert shapes[margin] == {expected}, (margin, shapes[margin])
