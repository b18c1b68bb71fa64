"""Flip TTA mirrors only the slices whose first pass could still reach the mask threshold (deepwml.inference.batches
.mirror_floor): the masks, lesion tables and summaries are those of full TTA, in both engines, and every output that
shows the probabilities under the threshold (--save-probabilities, --save-uncertainty, --report) keeps full TTA."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from deepwml.calibration.temperature import calibrate_probabilities, uncalibrated
from deepwml.cli.predict import main as predict_main
from deepwml.imageio import read_image, write_image
from deepwml.inference import onnx_backend
from deepwml.inference.batches import MIRROR_FLOOR_MARGIN, mirror_floor, slices_to_mirror
from deepwml.inference.model_loading import build_fold_networks, check_model, load_fold_states
from deepwml.inference.onnx_backend import GraphPredictor, fold_graphs
from deepwml.inference.predictor import SlicePredictor
from deepwml.inference.run import run_mirror_floor
from deepwml.synthetic.generate import generate_case
from deepwml.training.device import DeviceSetup
from deepwml_testing.toy_models import tiny_plan, write_model_dir


@pytest.mark.parametrize("temperatures", [(1.0, 1.0), (1.36, 3.7), (0.5, 0.8)])
def test_uncalibrated_inverts_the_calibration(temperatures):
    """The network probability that calibration maps to p, for p on both sides of 0.5; 0 and 1 stay."""
    for p in (0.02, 0.3, 0.5, 0.55, 0.7, 0.9):  # float32 saturates near 1 at high temperatures
        raw = uncalibrated(p, temperatures)
        assert calibrate_probabilities(np.float32([raw]), temperatures)[0] == pytest.approx(p, abs=1e-4)
    assert uncalibrated(0.0, temperatures) == 0.0 and uncalibrated(1.0, temperatures) == 1.0


def test_the_floor_is_the_bound_no_mirrored_pass_can_cross():
    """A slice whose first pass p stays under 2 t - 1 averages under t whatever the mirrored pass (at most 1) says;
    a threshold at or under 0.5 leaves every slice to mirror."""
    assert mirror_floor(0.5) is None and mirror_floor(0.4) is None
    floor = mirror_floor(0.7)
    assert floor == pytest.approx(0.4 - MIRROR_FLOOR_MARGIN)
    assert (floor + 1.0) / 2 < 0.7
    np.testing.assert_array_equal(slices_to_mirror(np.array([0.1, 0.5, floor, 0.2]), floor), [1, 2])
    np.testing.assert_array_equal(slices_to_mirror(np.array([0.1, 0.5]), None), [0, 1])


def test_run_floor_follows_the_threshold_the_calibration_and_the_outputs():
    """No TTA or an output that shows sub-threshold probabilities: every slice mirrored; else the floor of the
    threshold taken back through the calibration."""
    assert run_mirror_floor(False, 0.7, (1.0, 1.0), False) is None
    assert run_mirror_floor(True, 0.7, (1.0, 1.0), True) is None
    assert run_mirror_floor(True, 0.5, (1.0, 1.0), False) is None
    assert run_mirror_floor(True, 0.7, (1.0, 1.0), False) == pytest.approx(mirror_floor(0.7))
    assert run_mirror_floor(True, 0.55, (1.36, 3.7), False) == pytest.approx(mirror_floor(uncalibrated(0.55, (1.36, 3.7))))


def _cpu() -> DeviceSetup:
    return DeviceSetup(torch.device("cpu"), None, channels_last=True, threads=1)


def test_both_engines_mirror_only_the_slices_at_or_over_the_floor(tmp_path, monkeypatch):
    """Two folds of a random model: the slices under the floor get the first pass alone (fewer images through the
    network), the others the full flip average; torch and ONNX Runtime agree."""
    model = write_model_dir(tmp_path / "Dataset999_Toy" / "tiny", tiny_plan(), folds=(0, 1), kind="random", seed=3)
    spec = check_model(model)
    rng = np.random.default_rng(0)
    stack = rng.standard_normal((1, 8, 64, 64)).astype(np.float32) * np.linspace(0.1, 3, 8)[None, :, None, None]
    nets = build_fold_networks(spec, load_fold_states(spec))
    once = SlicePredictor(nets, spec.plan, _cpu(), crop=False).predict(stack)
    full = SlicePredictor(nets, spec.plan, _cpu(), tta=True, crop=False).predict(stack)
    first_max = once.reshape(8, -1).max(axis=1)
    floor = float(np.median(first_max))
    below = first_max < floor
    assert below.any() and not below.all()
    torch_floored = SlicePredictor(nets, spec.plan, _cpu(), tta=True, crop=False, mirror_floor=floor).predict(stack)
    graphs = fold_graphs(spec)
    graph_floored = GraphPredictor(graphs, spec.plan, threads=1, tta=True, crop=False, mirror_floor=floor).predict(stack)
    for floored in (torch_floored, graph_floored):
        np.testing.assert_allclose(floored[below], once[below], atol=1e-4)
        np.testing.assert_allclose(floored[~below], full[~below], atol=1e-4)
    # the network sees the mirrored images of the kept slices only
    sessions_fed = []
    monkeypatch.setattr(onnx_backend, "session", _feeding(onnx_backend.session, sessions_fed))
    GraphPredictor(graphs, spec.plan, threads=1, tta=True, crop=False, mirror_floor=floor).predict(stack)
    assert sum(sessions_fed) == 2 * (8 + int((~below).sum()))
    sessions_fed.clear()
    GraphPredictor(graphs, spec.plan, threads=1, tta=True, crop=False).predict(stack)
    assert sum(sessions_fed) == 2 * 16


def _feeding(make_session, fed):
    """onnx_backend.session whose sessions add the number of images of every run to ``fed``."""
    class Counted:
        def __init__(self, inner):
            self.inner = inner

        def run(self, outputs, feeds):
            fed.append(len(next(iter(feeds.values()))))
            return self.inner.run(outputs, feeds)

    return lambda graph, threads: Counted(make_session(graph, threads))


@pytest.fixture(scope="module")
def scan(tmp_path_factory) -> Path:
    """Twelve central slices of a synthetic MS scan with lesions, for the shipped model."""
    case = generate_case("MS#1", index=0, seed=5)
    first = (case.image.shape[0] - 12) // 2
    origin = np.asarray(case.geometry.origin) + case.geometry.direction_matrix @ (
        np.array([0.0, 0.0, first]) * np.asarray(case.geometry.spacing))
    geometry = dataclasses.replace(case.geometry, size=(*case.geometry.size[:2], 12), origin=tuple(float(v) for v in origin))
    return write_image(case.image[first:first + 12], geometry, tmp_path_factory.mktemp("scan") / "scan.nii.gz")


def test_the_shipped_model_skips_mirrored_slices_and_writes_the_masks_full_tta_writes(scan, tmp_path, monkeypatch):
    """deepwml_predict with the shipped model (flip TTA stored): by default some slices are not mirrored, and the mask,
    lesion table and summary are byte for byte those of a run that mirrors every slice (--save-probabilities)."""
    picked = []
    real = onnx_backend.slices_to_mirror

    def spy(first_max, floor):
        chosen = real(first_max, floor)
        picked.append((len(first_max), len(chosen), floor))
        return chosen

    monkeypatch.setattr(onnx_backend, "slices_to_mirror", spy)
    fast, full = tmp_path / "fast", tmp_path / "full"
    assert predict_main(["-i", str(scan), "-o", str(fast), "--no-qc", "--backend", "onnx"]) == 0
    fast_picks, picked[:] = list(picked), []
    assert predict_main(["-i", str(scan), "-o", str(full), "--no-qc", "--backend", "onnx", "--save-probabilities"]) == 0
    assert fast_picks and all(floor is not None for _, _, floor in fast_picks)
    assert sum(n for _, n, _ in fast_picks) < sum(n for n, _, _ in fast_picks)  # some slices skipped
    assert all(floor is None and n == m for m, n, floor in picked)  # every slice mirrored
    mask = read_image(fast / "scan.nii.gz").array
    assert mask.any()
    np.testing.assert_array_equal(mask, read_image(full / "scan.nii.gz").array)
    assert (fast / "scan_lesions.csv").read_bytes() == (full / "scan_lesions.csv").read_bytes()
    assert (fast / "summary.csv").read_text() == (full / "summary.csv").read_text()
    picked.clear()
    assert predict_main(["-i", str(scan), "-o", str(tmp_path / "uncertain"), "--no-qc", "--backend", "onnx",
                         "--save-uncertainty"]) == 0
    assert picked and all(floor is None and n == m for m, n, floor in picked)
