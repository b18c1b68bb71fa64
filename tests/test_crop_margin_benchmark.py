"""benchmarks/crop_margin.py: how far masks cropped to the head at each margin are from the whole slices', and the
time; instance-norm networks are refused, since they are never cropped."""
from __future__ import annotations

import numpy as np

from deepwml.imageio import write_image
from deepwml_testing.benchmarks import load_benchmark
from deepwml_testing.toy_models import tiny_plan, write_model_dir
from deepwml_testing.cases import input_case


def test_agreement_of_identical_and_of_differing_predictions():
    bench = load_benchmark("crop_margin")
    head = np.zeros((2, 8, 8), np.uint8)
    head[:, 2:6, 2:6] = 1
    whole = np.zeros((2, 8, 8), np.float32)
    whole[0, 3:5, 3:5] = 0.9
    assert bench.agreement(whole, whole, head, 0.5) == {"score": 1.0, "differ": 0, "gap": 0.0}
    cropped = whole.copy()
    cropped[0, 3, 3] = 0.2
    got = bench.agreement(cropped, whole, head, 0.5)
    assert got["differ"] == 1 and abs(got["score"] - 6 / 7) < 1e-9 and abs(got["gap"] - 0.7) < 1e-6
    # a multi-class map: the share of head voxels with the same argmax
    classes = np.stack([1 - whole, whole], axis=1)
    moved = np.stack([1 - cropped, cropped], axis=1)
    assert abs(bench.agreement(moved, classes, head, 0.5)["score"] - (1 - 1 / 32)) < 1e-9


def test_a_batch_norm_model_gets_a_row_per_margin_and_an_instance_norm_model_is_refused(tmp_path, capsys):
    bench = load_benchmark("crop_margin")
    case = input_case("MS#1", index=1, seed=3)
    scan = tmp_path / "scan.nii.gz"
    write_image(case.image.astype(np.float32), case.geometry, scan)
    model = write_model_dir(tmp_path / "bn" / "tiny", tiny_plan(matrix=64, norm="batch"), kind="random")
    assert bench.main(["-m", str(model), "-f", "0", "--checkpoint", "best", "-i", str(scan), "--margins", "0", "32",
                       "--runs", "1"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.split() and line.split()[0] in ("0", "32")]
    assert [r[0] for r in rows] == ["0", "32"] and all(0.0 <= float(r[1]) <= 1.0 for r in rows), out
    model_in = write_model_dir(tmp_path / "in" / "tiny", tiny_plan(matrix=64, norm="instance"), kind="random")
    assert bench.main(["-m", str(model_in), "--checkpoint", "best", "-i", str(scan)]) == 1
    assert "never cropped" in capsys.readouterr().out
