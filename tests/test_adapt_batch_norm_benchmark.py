"""benchmarks/adapt_batch_norm.py: each scan gets a copy of the model whose batch-norm statistics are mixed with the
scan's own, and is segmented with it; mix 0 is the model as it is."""
from __future__ import annotations

import pytest
import torch

from deepwml.imageio import read_image, write_image
from deepwml.inference.model_loading import build_fold_networks, check_model, load_fold_states
from deepwml.pretrained import builtin_model_dir
from deepwml_testing.benchmarks import load_benchmark
from deepwml_testing.toy_models import tiny_plan, write_model_dir
from deepwml_testing.cases import input_case


def test_statistics_are_the_scan_s_own_and_mixed_by_share():
    bench = load_benchmark("adapt_batch_norm")
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.BatchNorm2d(2)).eval()
    slices = torch.randn(20, 1, 4, 4) * 3 + 5
    scan = bench.scan_statistics(net, slices)
    assert torch.equal(net[1].running_mean, torch.zeros(2))  # the model itself is left alone
    features = net[0](slices).detach()
    # a plain average of the batches' means (8, 8, 4 slices)
    means = torch.stack([features[i:i + 8].mean(dim=(0, 2, 3)) for i in (0, 8, 16)])
    torch.testing.assert_close(scan["1.running_mean"], means.mean(0))
    stored = net.state_dict()
    half = bench.mixed_state(stored, scan, 0.5)
    torch.testing.assert_close(half["1.running_mean"], 0.5 * scan["1.running_mean"])
    assert torch.equal(half["0.weight"], stored["0.weight"])
    assert all(torch.equal(bench.mixed_state(stored, scan, 0.0)[k], v) for k, v in stored.items())
    with pytest.raises(ValueError, match=r"--mix must lie in \[0, 1\], not 1.5"):
        bench.mixed_state(stored, scan, 1.5)


def test_each_scan_is_segmented_with_its_adapted_model_and_mix_0_is_the_model(tmp_path):
    bench = load_benchmark("adapt_batch_norm")
    case = input_case("MS#1", index=1, seed=3)
    write_image(case.image, case.geometry, tmp_path / "work" / "images" / "scan_5mm.nii.gz")
    assert bench.main(["--work", str(tmp_path / "work"), "--mix", "0", "1", "--no-score"]) == 0
    adabn = tmp_path / "work" / "adabn"
    spec = check_model(builtin_model_dir(), checkpoint="latest")
    shipped = build_fold_networks(spec, load_fold_states(spec))[0].state_dict()
    for mix in ("0", "1"):
        mask = read_image(adabn / f"mix_{mix}" / "pred" / "scan_5mm.nii.gz")
        assert mask.array.shape == case.image.shape
        saved = torch.load(adabn / f"mix_{mix}" / "models" / "scan_5mm" / "fold_0" / "checkpoint_latest.pth",
                           weights_only=True)["model"]
        same = [torch.equal(saved[k], v) for k, v in shipped.items() if k.endswith("running_mean")]
        assert all(same) if mix == "0" else not any(same)
        assert all(torch.equal(saved[k], v) for k, v in shipped.items() if not k.endswith(("running_mean", "running_var")))


def test_a_model_without_batch_norm_or_a_work_folder_without_stacks_is_refused(tmp_path):
    bench = load_benchmark("adapt_batch_norm")
    with pytest.raises(SystemExit, match="no stacks"):
        bench.main(["--work", str(tmp_path)])
    model = write_model_dir(tmp_path / "plain", tiny_plan(norm="none"))
    case = input_case("MS#1", index=1, seed=3)
    write_image(case.image, case.geometry, tmp_path / "images" / "scan.nii.gz")
    with pytest.raises(SystemExit, match="has no batch norm to adapt"):
        bench.main(["--work", str(tmp_path), "-m", str(model), "--checkpoint", "best", "--no-score"])
