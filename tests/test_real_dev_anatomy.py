"""benchmarks/real_dev_anatomy.py: references read from a stripped 1 mm FLAIR, scoring, and a run on made-up scans."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from deepwml.imageio import Geometry, write_image
from deepwml_testing.benchmarks import load_benchmark
from deepwml_testing.toy_models import tiny_plan, write_model_dir


def _benchmark():
    """benchmarks/real_dev_anatomy.py as a module."""
    return load_benchmark("real_dev_anatomy")


def _head(n: int = 64) -> tuple:
    """A stripped 1 mm 'brain' (a ball at 100) with a dark ventricle deep inside and a dark sulcus from its surface."""
    zz, yy, xx = np.mgrid[:n, :n, :n] - n // 2
    brain = zz**2 + yy**2 + xx**2 < 28**2
    ventricle = (zz / 8.0) ** 2 + (yy / 10.0) ** 2 + (xx / 5.0) ** 2 < 1.0
    sulcus = brain & (np.abs(xx) <= 2) & (yy > 14)  # 5 mm wide, from the surface 14 mm inwards
    flair = np.where(brain, 100.0, 0.0)
    flair[ventricle | sulcus] = 10.0
    return flair.astype(np.float32), ventricle, sulcus


def test_clear_ventricles_keep_deep_csf_and_leave_sulci_reaching_the_surface_out():
    """What the reference calls ventricle: the dark CSF deep inside, not the sulcus that opens onto the surface."""
    flair, ventricle, sulcus = _head()
    reference = _benchmark().clear_ventricles(flair)
    assert (reference & ventricle).sum() >= 0.9 * ventricle.sum()
    assert not (reference & sulcus).any()
    assert not _benchmark().clear_ventricles(np.zeros_like(flair)).any()  # an empty scan: no ventricles, no error


def test_a_stack_is_scored_by_brain_dice_and_ventricle_recall_precision_and_volume():
    """Known maps: the figures are counted as documented (precision with one pixel of in-plane tolerance)."""
    brain = np.zeros((2, 10, 10), bool)
    brain[:, 1:9, 1:9] = True
    ventricle = np.zeros_like(brain)
    ventricle[0, 4:6, 4:6] = True  # 4 reference voxels
    anatomy = np.where(brain, 1, 0)
    anatomy[0, 4:6, 4:7] = 2  # all 4 reference voxels, and 2 one pixel beside them (tolerated)
    anatomy[1, 4, 4] = 2  # one voxel a slice away: not tolerated
    row = _benchmark().score_stack(anatomy, brain, ventricle, voxel_ml=0.005)
    assert row["brain_dice"] == 1.0
    assert row["recall"] == 1.0
    assert row["precision"] == 6 / 7
    assert row["volume_ratio"] == 7 / 4
    assert row["reference_ml"] == 4 * 0.005


def _scans(tmp_path: Path) -> Path:
    """Two made-up stripped 1 mm scans in the development layout (no lesion masks needed)."""
    flair, _, _ = _head()
    for k, name in enumerate(("patient01", "patient02")):
        geometry = Geometry((64, 64, 64), (1.0, 1.0, 1.0), (-32.0, -32.0, -32.0 + k))
        write_image(flair * (1.0 + 0.1 * k), geometry, tmp_path / "data" / name / "flair.nii.gz")
    return tmp_path / "data"


def test_the_benchmark_prints_a_row_per_scan_and_thickness_with_the_shipped_anatomy_model(tmp_path, capsys):
    """End to end: references, stacks, the shipped anatomy model's maps, one table and the time."""
    code = _benchmark().main(["--data", str(_scans(tmp_path)), "--thickness", "5", "8", "--work", str(tmp_path / "work"),
                              "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0, out
    rows = [line.split("|")[1].strip() for line in out.splitlines() if line.startswith("| patient")]
    assert rows == ["patient01_5mm", "patient01_8mm", "patient02_5mm", "patient02_8mm"]
    assert "**mean, 4 stacks**" in out and "time:" in out
    assert sorted(p.name for p in (tmp_path / "work" / "anatomy").glob("*.nii.gz")) == [f"{r}.nii.gz" for r in rows]


def test_a_lesion_model_is_refused_naming_its_folder(tmp_path, capsys):
    """Only a model with a ventricle class can be scored; another is one clear line and exit 2."""
    model = write_model_dir(tmp_path / "results" / "Dataset998_Toy" / "toy", tiny_plan(matrix=64))
    code = _benchmark().main(["--data", str(_scans(tmp_path)), "-m", str(model), "--work", str(tmp_path / "work")])
    err = capsys.readouterr().err
    assert code == 2
    assert "not an anatomy model" in err and str(model) in err and "Traceback" not in err


def test_field_pads_stacks_and_both_references_alike(tmp_path, capsys):
    """--field 80: the stacks, and the brain and ventricle references scored against them, come padded to 80 x 80."""
    from deepwml.imageio import read_image

    code = _benchmark().main(["--data", str(_scans(tmp_path)), "--thickness", "8", "--field", "80",
                              "--work", str(tmp_path / "work"), "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "padded to a 80 mm square field" in out
    for folder in ("images", "brain_stacks", "anatomy"):
        assert read_image(tmp_path / "work" / folder / "patient01_8mm.nii.gz").array.shape == (8, 80, 80), folder


def test_tta_asks_the_anatomy_model_for_flip_tta_and_says_so(tmp_path, capsys, monkeypatch):
    """--tta reaches deepwml_predict's request (without it the model predicts as its plan says) and the header."""
    from deepwml.utils.errors import DeepWMLError

    module = _benchmark()
    asked = []

    def fake_predict(request):
        asked.append(request.tta)
        raise DeepWMLError("stopped after the request")

    monkeypatch.setattr(module, "predict", fake_predict)
    for extra in ([], ["--tta"]):
        code = module.main(["--data", str(_scans(tmp_path)), "--thickness", "8", "--work", str(tmp_path / "work"), *extra])
        assert code == 2
    out = capsys.readouterr().out
    assert asked == [None, True]
    assert out.count("the model with flip TTA") == 1
