"""Prediction start-up and per-case overheads (issue #15): lazy imports, the numpy/Pillow QC montage, lesion tables."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from conftest import tiny_case
from deepwml.imageio import Geometry, write_image
from deepwml.inference.lesion_report import lesion_table
from deepwml.inference.qc import GAP_PIXELS, PANEL_PIXELS, TITLE_PIXELS, panel_size, write_qc_montage
from deepwml_testing.toy_models import tiny_plan, write_model_dir

REPO = Path(__file__).resolve().parents[1]


def _modules_after(code: str) -> set:
    """The heavy modules loaded by ``code`` in a fresh interpreter importing this checkout's deepwml."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    probe = code + "\nimport sys, json; print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
    probe += "('matplotlib', 'pandas', 'torch', 'SimpleITK', 'scipy') or m in ('scipy.stats', 'scipy.optimize'))))"
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True, timeout=300)
    return {m if m in ("scipy.stats", "scipy.optimize") else m.split(".")[0] for m in json.loads(out.stdout.strip().splitlines()[-1])}


def test_predict_help_imports_none_of_the_heavy_libraries():
    """A user types deepwml_predict --help: it answers at once, without loading torch, pandas or matplotlib."""
    loaded = _modules_after(
        "import contextlib, io\nfrom deepwml.cli.predict import main\n"
        "try:\n    with contextlib.redirect_stdout(io.StringIO()):\n        main(['--help'])\n"
        "except SystemExit as e:\n    assert e.code == 0, e.code"
    )
    assert loaded.isdisjoint({"torch", "pandas", "matplotlib", "SimpleITK", "scipy.stats"}), loaded


def test_a_whole_prediction_run_never_imports_matplotlib_or_scipy_stats_and_torch_only_once(tmp_path):
    """A user predicts a scan with QC pictures on: the run writes them without ever loading matplotlib, nor the
    scipy.stats and scipy.optimize that only evaluation and calibration need (0.2-0.8 s of start-up each), nor
    scipy.spatial (0.07 s: the lesion numbers measure their pieces' distances themselves). The first
    run of a model exports its networks for ONNX Runtime with torch; the next run in a new process finds them in the
    user cache and never imports torch (2 s)."""
    image, _, geometry = tiny_case(shape_zyx=(3, 64, 64), seed=3)
    write_image(image, geometry, tmp_path / "in" / "a.nii.gz")
    model = write_model_dir(tmp_path / "m" / "Dataset999_Toy" / "tiny", tiny_plan())
    runs = [_modules_after(
        "from deepwml.cli.predict import main\n"
        f"assert main(['-i', {str(tmp_path / 'in')!r}, '-o', {str(tmp_path / out)!r}, '-m', {str(model)!r}]) == 0"
    ) for out in ("first", "second")]
    assert (tmp_path / "first" / "qc" / "a.png").is_file() and (tmp_path / "second" / "qc" / "a.png").is_file()
    assert "torch" in runs[0] and "torch" not in runs[1], runs
    assert all(loaded.isdisjoint({"matplotlib", "scipy.stats", "scipy.optimize", "scipy.spatial"}) for loaded in runs), runs


def test_qc_montage_is_a_valid_png_of_the_layout_size_with_the_mask_outlined_where_it_is(tmp_path):
    """A reader opens qc/CASE.png: one panel per lesion slice, the red outline around the lesion and nowhere else."""
    shape = (5, 200, 160)
    image, _, geometry = tiny_case(shape_zyx=shape, seed=4, n_lesions=0)
    mask = np.zeros(shape, np.uint8)
    mask[2, 60:80, 100:120] = 1  # one lesion, on one slice, right of the image centre
    path = write_qc_montage(image, mask, geometry, tmp_path / "qc" / "a.png", title="a: 1 lesion")
    with PILImage.open(path) as png:
        png.verify()
    with PILImage.open(path) as png:
        assert png.format == "PNG"
        rgb = np.asarray(png.convert("RGB")).astype(int)
    # one panel: the picture is one panel wide, one panel high plus the title bar
    assert rgb.shape[1] == PANEL_PIXELS + GAP_PIXELS
    assert rgb.shape[0] >= TITLE_PIXELS + 0.6 * PANEL_PIXELS
    red = (rgb[..., 0] > 200) & (rgb[..., 1] < 80) & (rgb[..., 2] < 80)
    assert red.sum() > 20
    rows, cols = np.flatnonzero(red.any(axis=1)), np.flatnonzero(red.any(axis=0))
    # the outline encloses a square (as wide as high) in the right half of the panel, below the title
    assert rows[0] > TITLE_PIXELS and cols[0] > PANEL_PIXELS // 2
    assert abs((rows[-1] - rows[0]) - (cols[-1] - cols[0])) <= 3


def test_qc_panels_keep_the_physical_aspect_and_a_one_voxel_lesion_stays_visible(tmp_path):
    """A 512x512 scan with a single-voxel lesion: the panel shrinks the slice, the lesion is still outlined."""
    shape = (3, 512, 512)
    image = np.zeros(shape, np.float32)
    yy, xx = np.mgrid[-1:1:512j, -1:1:512j]
    image[:] = 100.0 * ((yy / 0.9) ** 2 + (xx / 0.8) ** 2 < 1)
    image[1, 256, 256] = 150.0
    mask = np.zeros(shape, np.uint8)
    mask[1, 256, 256] = 1
    geometry = Geometry((512, 512, 3), (0.45, 0.45, 6.0), (0.0, 0.0, 0.0))
    path = write_qc_montage(image, mask, geometry, tmp_path / "b.png")
    with PILImage.open(path) as png:
        rgb = np.asarray(png.convert("RGB")).astype(int)
    red = (rgb[..., 0] > 200) & (rgb[..., 1] < 80) & (rgb[..., 2] < 80)
    assert red.any()
    assert panel_size((100, 200), 1.0, 1.0) == (round(0.6 * PANEL_PIXELS), PANEL_PIXELS)  # height clamped at 0.6
    assert panel_size((200, 100), 0.5, 1.0) == (PANEL_PIXELS, PANEL_PIXELS)  # 0.5 mm rows: square in mm


def test_lesion_table_of_lesions_at_the_image_edges_is_unchanged_by_cropping_to_the_lesions():
    """Lesions in the first and last slice, row and column: slice spans and centroids are those of the full grid."""
    mask = np.zeros((6, 30, 40), np.uint8)
    mask[0, 0, 0] = 1
    mask[5, 29, 39] = mask[4, 28, 38] = 1  # corner-connected across slices: one lesion
    mask[2, 10:13, 20:22] = 1
    geometry = Geometry((40, 30, 6), (0.5, 0.7, 5.0), (1.0, 2.0, 3.0))
    table = lesion_table(mask, geometry)
    assert table["voxels"].tolist() == [6, 2, 1]
    assert table[["first_slice", "last_slice"]].values.tolist() == [[2, 2], [4, 5], [0, 0]]
    expected = geometry.index_to_world(np.array([[20.5, 11.0, 2.0], [38.5, 28.5, 4.5], [0.0, 0.0, 0.0]]))
    assert np.allclose(table[["centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]].to_numpy(), expected)


def test_neither_pandas_nor_torch_is_loaded_by_importing_prediction():
    """pandas takes ~0.5 s to import: the prediction modules load it when a case worker first writes a table, so it
    overlaps the other worker's network instead of delaying the first case. torch (2 s) is imported only by a run
    that computes with it, not by a run on ONNX Runtime."""
    loaded = _modules_after("import deepwml.inference.run, deepwml.inference.case_workers, deepwml.inference.pipeline, "
                            "deepwml.cli.predict")
    assert "SimpleITK" in loaded and "torch" not in loaded and "pandas" not in loaded, loaded


def test_the_one_case_benchmark_times_the_whole_command_and_its_imports(tmp_path, capsys):
    """benchmarks/predict_one_case.py: each variant is a real deepwml_predict process that writes its mask; the
    medians printed are the runs' own, and the imports-only line is there to read the rest against."""
    from deepwml_testing.benchmarks import load_benchmark

    bench = load_benchmark("predict_one_case")
    image, _, geometry = tiny_case(shape_zyx=(5, 96, 80), seed=4)
    scan = write_image(image, geometry, tmp_path / "mine" / "scan.nii.gz")  # small, so the test is quick
    assert bench.main(["--runs", "1", "--work", str(tmp_path), "--scan", str(scan)]) == 0
    out = capsys.readouterr().out
    assert "5 slices of 80x96" in out
    lines = {line.split(" median ")[0].strip(): line for line in out.splitlines() if " median " in line}
    assert list(lines) == ["default outputs", "--no-tta", "--keep-outside-brain", "--no-skull-strip", "--no-anatomy --no-qc", "--backend torch", "--backend torch --no-anatomy --no-qc",
                           "imports only, ONNX Runtime", "imports only, torch",
                           "Segmenter: import, load models", "Segmenter: first scan", "Segmenter: each further scan"]
    for line in lines.values():
        median, runs = line.split(" median ")[1].split(" s  (")
        assert float(median) == float(runs.rstrip(")")) > 0  # one run: its median is itself
    assert (tmp_path / "predict_one_case_out" / "scan.nii.gz").is_file() and not (tmp_path / "predict_one_case_out" / "qc").exists()  # the last variant's


def test_the_one_case_benchmark_times_this_checkout_against_a_baseline(tmp_path, capsys):
    """--baseline: the default outputs here and in another checkout (here: this one again), alternately, and the median
    ratio of the pairs; a folder that is not a checkout is refused by name before anything runs."""
    from deepwml_testing.benchmarks import load_benchmark

    bench = load_benchmark("predict_one_case")
    image, _, geometry = tiny_case(shape_zyx=(5, 96, 80), seed=4)
    scan = write_image(image, geometry, tmp_path / "mine" / "scan.nii.gz")
    with pytest.raises(SystemExit, match="not a DeepWML checkout"):
        bench.main(["--baseline", str(tmp_path), "--scan", str(scan), "--work", str(tmp_path)])
    repo = Path(__file__).resolve().parents[1]
    assert bench.main(["--runs", "2", "--work", str(tmp_path), "--scan", str(scan), "--baseline", str(repo)]) == 0
    out = capsys.readouterr().out
    medians = [line for line in out.splitlines() if " median " in line]
    assert [m.split(" median ")[0].strip() for m in medians] == ["default outputs, this checkout", f"default outputs, {repo}"]
    ratio = float(out.split(f"this checkout / {repo}: ")[1].split()[0])
    assert 0 < ratio and "median of 2 interleaved pairs" in out
    assert (tmp_path / "predict_one_case_out" / "scan.nii.gz").is_file()


def test_the_one_case_benchmark_times_a_model_against_the_shipped_one(tmp_path, capsys):
    """--model PLAN --against-shipped: that model's default outputs and the shipped model's, alternately, and the
    median ratio; --against-shipped without --model, or a folder that is no model, is refused before anything runs."""
    from deepwml_testing.benchmarks import load_benchmark
    from deepwml_testing.toy_models import tiny_plan, write_model_dir

    bench = load_benchmark("predict_one_case")
    image, _, geometry = tiny_case(shape_zyx=(5, 96, 80), seed=4)
    scan = write_image(image, geometry, tmp_path / "mine" / "scan.nii.gz")
    with pytest.raises(SystemExit, match="needs --model"):
        bench.main(["--against-shipped", "--scan", str(scan), "--work", str(tmp_path)])
    with pytest.raises(SystemExit, match="no plans.json"):
        bench.main(["--model", str(tmp_path), "--against-shipped", "--scan", str(scan), "--work", str(tmp_path)])
    model = write_model_dir(tmp_path / "model" / "tiny", tiny_plan(norm="batch"), kind="random")
    assert bench.main(["--runs", "1", "--work", str(tmp_path), "--scan", str(scan), "--model", str(model),
                       "--against-shipped"]) == 0
    out = capsys.readouterr().out
    assert f"model {model} (best)" in out
    medians = [line.split(" median ")[0].strip() for line in out.splitlines() if " median " in line]
    assert medians == ["default outputs, model tiny", "default outputs, shipped model"]
    assert float(out.split("model tiny / shipped model: ")[1].split()[0]) > 0
