"""benchmarks/threshold_sweep.py: every mask setting scored on labelled scans, and apart on the heavily loaded ones."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from deepwml.anatomy.labels import WHITE_MATTER
from deepwml.imageio import Geometry, write_image
from deepwml.inference import pipeline
from deepwml_testing.benchmarks import load_benchmark
from deepwml_testing.toy_models import tiny_plan, write_model_dir


def _raw(tmp_path: Path) -> Path:
    """Two labelled 64² x 6 scans (1 x 1 x 5 mm): 'heavy' with a large bright lesion, 'light' with a small one."""
    raw = tmp_path / "raw"
    geometry = Geometry((64, 64, 6), (1.0, 1.0, 5.0), (0.0, 0.0, 0.0))
    zz, yy, xx = np.mgrid[:6, :64, :64]
    rng = np.random.default_rng(3)
    for name, radius in (("heavy", 9), ("light", 3)):
        head = (yy - 32) ** 2 + (xx - 32) ** 2 < 28**2
        lesion = ((yy - 30) ** 2 + (xx - 34) ** 2 < radius**2) & (zz >= 1) & (zz < 5)
        image = np.where(head, 100.0, 0.0) + 150.0 * lesion + rng.normal(0, 3, head.shape) * head
        write_image(image.astype(np.float32), geometry, raw / "imagesTr" / f"{name}.nii.gz")
        write_image(lesion.astype(np.uint8), geometry, raw / "labelsTr" / f"{name}.nii.gz")
    return raw


def test_sweep_scores_each_contrast_and_the_heavy_cases_apart(tmp_path, capsys):
    """--min-lesion-contrast values are swept beside the threshold (a lesion 2.5 x its ring goes only at C = 3), and
    --heavy-ml prints the same table again over the cases carrying at least that much lesion."""
    raw = _raw(tmp_path)
    model = write_model_dir(tmp_path / "model" / "toy", tiny_plan(matrix=64), kind="threshold")
    bench = load_benchmark("threshold_sweep")
    code = bench.main(["--raw", str(raw), "--work", str(tmp_path / "work"), "-m", str(model), "--thresholds", "0.5",
                       "--min-lesion-contrast", "0", "3", "--heavy-ml", "1"])
    assert code == 0
    out = capsys.readouterr().out
    rows = [line.split("|") for line in out.splitlines() if line.startswith("| 0.5 |")]
    assert len(rows) == 4  # two settings, over all cases and over the heavy one
    contrast, dice = [r[4].strip() for r in rows], [float(r[9]) for r in rows]
    assert contrast == ["0", "3", "0", "3"]
    assert dice[0] > 0.7 and dice[2] > 0.7, out  # the threshold model finds both bright lesions
    assert dice[1] == 0.0 and dice[3] == 0.0, out  # C = 3 drops them: 250 / 100 = 2.5 x their ring
    # the large lesion (radius 9 mm, 4 slices of 5 mm: ~5 ml) is the only case over 1 ml
    assert "the 1 case(s) with >= 1 ml of reference lesion:" in out


def test_with_skull_strip_the_sweep_predicts_the_scans_stripped_into_a_folder_of_their_own(tmp_path, capsys, monkeypatch):
    """--skull-strip: the model sees each scan stripped to the anatomy model's brain, and nothing else of the anatomy
    rules changes the maps (lesions outside the brain kept, no cortex bound); the plain maps stay apart. (The shipped
    anatomy model finds no brain in these discs, which fails a stripped case: the sweep says so; then its map is
    replaced by the disc.)"""
    raw = _raw(tmp_path)
    model = write_model_dir(tmp_path / "model" / "toy", tiny_plan(matrix=64), kind="threshold")
    bench = load_benchmark("threshold_sweep")
    with pytest.raises(SystemExit, match="could not predict heavy: .*finds no brain in this scan"):
        bench.main(["--raw", str(raw), "--work", str(tmp_path / "failing"), "-m", str(model), "--thresholds", "0.5",
                    "--skull-strip"])
    _, yy, xx = np.mgrid[:6, :64, :64]
    disc = np.where((yy - 32) ** 2 + (xx - 32) ** 2 < 26**2, WHITE_MATTER, 0).astype(np.uint8)
    monkeypatch.setattr(pipeline, "anatomy_map", lambda probs, props: disc.copy())
    args = ["--raw", str(raw), "--work", str(tmp_path / "work"), "-m", str(model), "--thresholds", "0.5"]
    assert bench.main(args + ["--skull-strip"]) == 0
    record = json.loads((tmp_path / "work" / "pred_skull_strip" / ".deepwml_output.json").read_text())["predicted_with"]
    assert record["skull_strip"] is True and record["outside_brain_dropped"] is False
    assert record["min_cortex_contrast"] == 0.0
    assert not (tmp_path / "work" / "pred").exists()
    # the stripped scans' lesions lie in the brain: the threshold model still finds them
    stripped_rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 0.5 |")]
    assert len(stripped_rows) == 1 and float(stripped_rows[0].split("|")[9]) > 0.7
    assert bench.main(args) == 0
    assert json.loads((tmp_path / "work" / "pred" / ".deepwml_output.json").read_text())["predicted_with"]["skull_strip"] is False
    assert capsys.readouterr().out.count("| 0.5 |") == 1
