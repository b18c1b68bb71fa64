"""benchmarks/real_dev_finetune.py: leave-one-scan-out datasets, resumable options, the work folder rule, a tiny run.

Everything runs on small volumes the tests make: the real scans are never needed (CI may not have them).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deepwml.datasets.dataset_json import DatasetJson
from deepwml.datasets.dataset_writer import write_dataset
from deepwml.imageio import Geometry, read_image, read_label, write_image
from deepwml.synthetic.thick_slices import SlabSpec
from deepwml.utils.errors import DeepWMLError
from deepwml_testing.benchmarks import load_benchmark
from deepwml_testing.toy_models import tiny_plan, write_model_dir

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"


def _benchmark():
    """benchmarks/real_dev_finetune.py as a module."""
    return load_benchmark("real_dev_finetune")


def _scans(folder: Path, names) -> Path:
    """Small 1 mm 'scans' (a disc of head with one bright lesion each, placed differently) as real_dev reads them."""
    rng = np.random.default_rng(2)
    geometry = Geometry((64, 64, 30), (1.0, 1.0, 1.0), (-32.0, -32.0, -15.0))
    zz, yy, xx = np.mgrid[:30, :64, :64]
    for k, name in enumerate(names):
        head = (yy - 32) ** 2 + (xx - 32) ** 2 < 28**2
        lesion = ((yy - 25 - 3 * k) ** 2 + (xx - 30) ** 2 < 16) & (zz >= 8) & (zz < 22)
        flair = np.where(head, 100.0, 0.0) + 150.0 * lesion + rng.normal(0, 5, head.shape) * head
        write_image(flair.astype(np.float32), geometry, folder / name / "flair.nii.gz")
        write_image(lesion.astype(np.uint8), geometry, folder / name / "wmh.nii.gz")
    return folder


def test_leave_one_out_holds_out_each_scan_once_and_trains_on_the_others():
    """Three scans give three folds; no fold trains on the scan it holds out; one scan is refused."""
    folds = _benchmark().leave_one_out(["p07", "p19", "p26"])
    assert folds == [("p07", ["p19", "p26"]), ("p19", ["p07", "p26"]), ("p26", ["p07", "p19"])]
    with pytest.raises(DeepWMLError, match="at least two scans, found 1"):
        _benchmark().leave_one_out(["p07"])


def test_fold_dataset_trains_on_the_other_scans_stacks_and_tests_on_the_held_out_ones(tmp_path):
    """Every thickness × in-plane stack of the other scans is a training case with its slab label; the held-out
    scan's stacks are test cases only, so that plan_and_preprocess and fold 'all' never see them."""
    bench = _benchmark()
    scans = bench.find_scans(_scans(tmp_path / "data", ["patient01", "patient02", "patient03"]))
    images, labels = tmp_path / "stacks" / "images", tmp_path / "stacks" / "labels"
    stacks = []
    for inplane in (None, 0.5):
        spec_for = {t: SlabSpec(t, 0.0, inplane) for t in (5.0, 6.5)}
        stacks += bench.make_stacks(scans, spec_for, images, labels, bench.inplane_suffix(inplane))
    assert bench.inplane_suffix(0.47) == "_ip0p47" and bench.inplane_suffix(None) == ""
    result = write_dataset(bench.fold_sources(stacks, "patient02", images, labels), tmp_path / "raw", 531, "LOO")
    assert result.problems == []
    raw = result.folder
    train = sorted(p.name for p in (raw / "imagesTr").iterdir())
    assert train == sorted(f"{s}_{t}{ip}.nii.gz" for s in ("patient01", "patient03") for t in ("5mm", "6p5mm")
                           for ip in ("", "_ip0p5"))
    assert sorted(p.name for p in (raw / "imagesTs").iterdir()) == [
        "patient02_5mm.nii.gz", "patient02_5mm_ip0p5.nii.gz", "patient02_6p5mm.nii.gz", "patient02_6p5mm_ip0p5.nii.gz"]
    spec = DatasetJson.load(raw / "dataset.json")
    assert (spec.num_training, spec.num_test) == (8, 4)
    meta = spec.cases["patient01_6p5mm_ip0p5"]
    assert (meta.centre, meta.disease, meta.extra["slice_thickness"], meta.extra["scan"]) == ("MSLUB", "MS", 6.5, "patient01")
    # the training label is the slab label the scoring uses, on the stack's own grid (0.5 mm in-plane: 128²)
    case = next(c for c in stacks if c.case_id == "patient03_5mm_ip0p5")
    label = read_label(raw / "labelsTr" / "patient03_5mm_ip0p5.nii.gz")
    np.testing.assert_array_equal(label.array == 1, case.label)
    assert label.array.sum() > 0 and label.geometry.size == (128, 128, 6)
    assert read_image(raw / "imagesTr" / "patient03_5mm_ip0p5.nii.gz").geometry.mismatches(case.geometry) == []


def test_a_work_folder_resumes_only_with_the_options_it_was_made_with(tmp_path):
    """The first run records its options; the same options resume; other ones are refused, naming what changed."""
    bench = _benchmark()
    path = tmp_path / "work" / "options.json"
    options = {"epochs": 8, "iterations": 25, "thickness": [5.0, 6.5], "inplane": None}
    bench.check_options(path, options)
    assert path.is_file()
    bench.check_options(path, dict(options))
    with pytest.raises(DeepWMLError, match=r"other options \(epochs: 8 then, 10 now\).*new --work folder"):
        bench.check_options(path, {**options, "epochs": 10})


def test_work_folder_inside_the_repository_is_refused_before_anything_is_written(tmp_path, capsys):
    """Stacks and models derived from the real scans must never land where git could pick them up: exit 2, one line."""
    data = _scans(tmp_path / "data", ["patient01", "patient02"])
    work = BENCHMARKS / "realft_work_test"
    code = _benchmark().main(["--work", str(work), "--data", str(data)])
    err = capsys.readouterr().err
    assert code == 2 and "inside the repository" in err and len(err.strip().splitlines()) == 1
    assert not work.exists()


@pytest.mark.slow
def test_benchmark_runs_end_to_end_on_made_up_scans_and_resumes(tmp_path, capsys):
    """Two small scans, a tiny pretrained toy model: both folds train twice, and a second run retrains nothing."""
    data = _scans(tmp_path / "data", ["patient01", "patient02"])
    model = write_model_dir(tmp_path / "pre" / "Dataset998_Toy" / "tiny", tiny_plan(matrix=64), kind="threshold")
    argv = ["--work", str(tmp_path / "work"), "--data", str(data), "--pretrained", str(model), "--epochs", "1",
            "--iterations", "1", "--thickness", "5", "6.5", "--device", "cpu", "-np", "1"]
    assert _benchmark().main(argv) == 0
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in out.splitlines()
            if line.startswith(("| zero-shot", "| from scratch", "| fine-tuned"))}
    assert list(rows) == ["zero-shot", "from scratch", "fine-tuned"]
    # the zero-shot threshold model finds the bright lesions; the site images are 1 epoch x 1 iteration x batch 8
    assert float(rows["zero-shot"][0]) > 0.5, out
    assert [r[-2].strip() for r in rows.values()] == ["0", "8", "8"]
    assert rows["zero-shot"][-1].strip() == "-" and rows["fine-tuned"][-1].strip() != "-"
    for held in ("patient01", "patient02"):
        fold = tmp_path / "work" / f"heldout_{held}"
        assert sorted(p.name for p in (fold / "pred_finetuned").glob("*.nii.gz")) == [f"{held}_5mm.nii.gz", f"{held}_6p5mm.nii.gz"]
        assert all(held not in p.name for p in (fold / "raw" / "Dataset531_MSLUBLeaveOut" / "imagesTr").iterdir())
    assert _benchmark().main(argv) == 0
    again = capsys.readouterr().out
    assert "deepwml_train" not in again and "| fine-tuned |" in again
    trained = {line.split("|")[1].strip(): line.split("|")[-2].strip() for line in again.splitlines() if line.startswith("| f")}
    assert trained == {"from scratch": "-", "fine-tuned": "-"}


def test_the_mslub_development_scans_are_refused(tmp_path, capsys):
    """Their README forbids tuning a model on them: pointing --data at them stops with one line, nothing written."""
    work = tmp_path / "work"
    bench = _benchmark()
    code = bench.main(["--work", str(work), "--data", str(bench.DEFAULT_DATA)])
    err = capsys.readouterr().err
    assert code == 2 and "must not be trained on" in err and len(err.strip().splitlines()) == 1
    assert not work.exists()
