"""benchmarks/real_dev_finetune.py: hold-out folds over one or more sites, the fold datasets (stacks or scans as
acquired), resumable options, the work folder rule, issue #12's bar lines, tiny runs.

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


def _thick_scans(folder: Path, names, thickness: float = 6.5, other: bool = False) -> Path:
    """Small clinical-like 2D 'scans' (6 thick axial slices, a bright lesion each) with masks on their own grid;
    ``other``: also a bright blob marked 2, as the WMH challenge marks other pathology (neither lesion nor not)."""
    rng = np.random.default_rng(3)
    geometry = Geometry((64, 64, 6), (0.9, 0.9, thickness), (-28.8, -28.8, -16.0))
    zz, yy, xx = np.mgrid[:6, :64, :64]
    for k, name in enumerate(names):
        head = (yy - 32) ** 2 + (xx - 32) ** 2 < 28**2
        lesion = ((yy - 24 - 3 * k) ** 2 + (xx - 34) ** 2 < 20) & (zz >= 2) & (zz < 5)
        blob = ((yy - 42) ** 2 + (xx - 24) ** 2 < 30) & (zz >= 1) & (zz < 4) & other
        flair = np.where(head, 100.0, 0.0) + 150.0 * (lesion | blob) + rng.normal(0, 5, head.shape) * head
        write_image(flair.astype(np.float32), geometry, folder / name / "flair.nii.gz")
        write_image((lesion + 2 * blob).astype(np.uint8), geometry, folder / name / "wmh.nii.gz")
    return folder


def test_holdout_folds_hold_out_every_scan_once_and_draw_from_the_sites_in_turn():
    """One held out: leave-one-scan-out. Two held out over two sites: each fold holds out one scan of each site (as
    issue #12's 5-fold leave-pair-out over 5 + 5 scans), the odd one last; too few scans or 0 per fold are refused."""
    folds = _benchmark().holdout_folds(["p07", "p19", "p26"])
    assert folds == [(["p07"], ["p19", "p26"]), (["p19"], ["p07", "p26"]), (["p26"], ["p07", "p19"])]
    ids = ["a1", "a2", "a3", "b1", "b2"]
    site_of = {s: s[0] for s in ids}
    folds = _benchmark().holdout_folds(ids, 2, site_of)
    assert [held for held, _ in folds] == [["a1", "b1"], ["a2", "b2"], ["a3"]]
    assert all(sorted(held + train) == ids and not set(held) & set(train) for held, train in folds)
    assert _benchmark().fold_name(["a1", "b1"]) == "heldout_a1+b1"
    with pytest.raises(DeepWMLError, match="needs at least 2 scans, found 1"):
        _benchmark().holdout_folds(["p07"])
    with pytest.raises(DeepWMLError, match="needs at least 3 scans, found 2"):
        _benchmark().holdout_folds(["p07", "p19"], 2)
    with pytest.raises(DeepWMLError, match="--holdout must be 1 or more"):
        _benchmark().holdout_folds(["p07", "p19"], 0)


def test_scans_as_acquired_are_the_fold_cases_on_their_own_grid_with_their_site(tmp_path, capsys):
    """--as-acquired: each 2D scan is one case, its mask the label and the scoring reference on the scan's grid;
    sites prefix the ids and are the cases' centres; a scan without its mask is left out with a note; a mask off its
    FLAIR's grid is refused naming it."""
    bench = _benchmark()
    _thick_scans(tmp_path / "svd", ["patient01", "patient02"], thickness=7.5)
    _thick_scans(tmp_path / "ms", ["patient01", "patient02"])
    (tmp_path / "ms" / "patient02" / "wmh.nii.gz").unlink()
    scans, site_of = bench.find_site_scans([tmp_path / "svd", tmp_path / "ms"])
    assert [s.scan_id for s in scans] == ["svd_patient01", "svd_patient02", "ms_patient01"]
    assert "patient02 is left out: it has no wmh.nii.gz" in capsys.readouterr().err
    images, labels = tmp_path / "stacks" / "images", tmp_path / "stacks" / "labels"
    cases = bench.acquired_cases(scans, images, labels)
    assert [(c.case_id, c.thickness) for c in cases] == [("svd_patient01", 7.5), ("svd_patient02", 7.5), ("ms_patient01", 6.5)]
    source = read_label(tmp_path / "ms" / "patient01" / "wmh.nii.gz")
    np.testing.assert_array_equal(cases[2].label, source.array > 0)
    assert cases[2].geometry.mismatches(source.geometry) == []
    result = write_dataset(bench.fold_sources(cases, ["svd_patient02", "ms_patient01"], images, labels, site_of),
                           tmp_path / "raw", 531, "Sites")
    assert result.problems == []
    spec = DatasetJson.load(result.folder / "dataset.json")
    assert (spec.num_training, spec.num_test) == (1, 2) and spec.cases["svd_patient01"].centre == "svd"
    np.testing.assert_array_equal(read_label(result.folder / "labelsTr" / "svd_patient01.nii.gz").array == 1, cases[0].label)
    with pytest.raises(DeepWMLError, match="share a name"):
        bench.find_site_scans([tmp_path / "svd", tmp_path / "x" / "svd"])
    bad = _thick_scans(tmp_path / "bad", ["patient09"])
    image = read_image(bad / "patient09" / "flair.nii.gz")
    write_image(np.zeros((5, 64, 64), np.uint8), Geometry((64, 64, 5), (0.9, 0.9, 6.5), image.geometry.origin),
                bad / "patient09" / "wmh.nii.gz")
    with pytest.raises(DeepWMLError, match="not on the FLAIR's grid") as error:
        bench.acquired_cases(bench.find_site_scans([bad])[0], images, labels)
    assert "wmh.nii.gz" in str(error.value)


def test_an_ignore_value_is_kept_for_training_and_left_out_of_the_score(tmp_path):
    """A mask holding the WMH challenge's 2 ('other pathology') is refused without --ignore-label, naming the file;
    with it, the training label keeps the value (dataset.json declares it) and the reference leaves it out."""
    bench = _benchmark()
    scans, _ = bench.find_site_scans([_thick_scans(tmp_path / "site", ["patient01"], other=True)])
    images, labels = tmp_path / "stacks" / "images", tmp_path / "stacks" / "labels"
    with pytest.raises(DeepWMLError, match="values other than 0, 1") as error:
        bench.acquired_cases(scans, images, labels)
    assert "patient01/wmh.nii.gz" in str(error.value)
    (case,) = bench.acquired_cases(scans, images, labels, ignore_label=2)
    # the WMH challenge's layout (SUBJECT/pre/FLAIR.nii.gz beside SUBJECT/wmh.nii.gz) is found with --flair-name
    (tmp_path / "site" / "patient01" / "pre").mkdir()
    (tmp_path / "site" / "patient01" / "flair.nii.gz").rename(tmp_path / "site" / "patient01" / "pre" / "FLAIR.nii.gz")
    (found,), _ = bench.find_site_scans([tmp_path / "site"], "pre/FLAIR.nii.gz", "wmh.nii.gz")
    assert found.flair == tmp_path / "site" / "patient01" / "pre" / "FLAIR.nii.gz"
    source = read_label(tmp_path / "site" / "patient01" / "wmh.nii.gz").array
    np.testing.assert_array_equal(read_label(labels / "patient01.nii.gz").array, source)
    np.testing.assert_array_equal(case.label, source == 1)
    np.testing.assert_array_equal(case.ignore, source == 2)


def test_the_bar_lines_judge_each_site_by_its_own_held_out_scans():
    """Zero-shot Dice and lesion F1 against 0.65 / 0.5, fine-tuned against from scratch, per site."""
    bench = _benchmark()

    def rows(values):
        return [{"scan": s, "dice": d, "lesion_f1": f, "failed": False} for s, d, f in values]

    runs = {bench.ZERO_SHOT: bench.ModelRun(rows([("a1", 0.70, 0.6), ("a2", 0.62, 0.5), ("b1", 0.40, 0.7)])),
            bench.SCRATCH: bench.ModelRun(rows([("a1", 0.5, 0.4), ("a2", 0.5, 0.4), ("b1", 0.6, 0.5)])),
            bench.FINETUNED: bench.ModelRun(rows([("a1", 0.7, 0.6), ("a2", 0.6, 0.6), ("b1", 0.5, 0.5)]))}
    a, b = bench.bar_lines(runs, {"svd": ["a1", "a2"], "ms": ["b1"]})
    assert a.startswith("svd (2 scans): zero-shot Dice 0.660, lesion F1 0.55") and "met" in a and "not met" not in a
    assert "fine-tuned Dice 0.650 against from scratch 0.500 (ahead)" in a
    assert b.startswith("ms (1 scans): zero-shot Dice 0.400") and "not met" in b and "(not ahead)" in b


def test_fine_tuned_and_from_scratch_are_compared_stack_by_stack():
    """Over every held-out stack, paired by scan and thickness: scipy's Wilcoxon on the per-stack Dice."""
    from scipy import stats

    bench = _benchmark()
    tuned = [0.71, 0.64, 0.58, 0.69, 0.52, 0.66]
    scratch = [0.60, 0.61, 0.59, 0.50, 0.41, 0.55]
    stacks = [(s, t) for s in ("a1", "b1") for t in (5.0, 6.5, 8.0)]

    def run(values):
        return bench.ModelRun([{"scan": s, "thickness": t, "matrix": "64x64", "dice": d, "failed": False}
                               for (s, t), d in zip(stacks, values)] + [{"scan": "c1", "thickness": 5.0, "failed": True}])

    line = bench.paired_line({bench.FINETUNED: run(tuned), bench.SCRATCH: run(scratch)})
    expected = stats.wilcoxon(tuned, scratch).pvalue
    assert line.startswith("fine-tuned against from scratch, 6 held-out stacks paired: median Dice difference +0.110")
    assert f"p {expected:.3g}" in line and "favour fine-tuning" in line


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
    result = write_dataset(bench.fold_sources(stacks, ["patient02"], images, labels), tmp_path / "raw", 531, "LOO")
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
    assert (meta.centre, meta.extra["slice_thickness"], meta.extra["scan"]) == ("site", 6.5, "patient01")
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
    # fine-tuned at deepwml_finetune's rate
    from deepwml.planning.plan import Plan
    from deepwml.training.pretrained_weights import FINETUNE_LR_FACTOR

    rate = Plan.load(model / "plans.json").training.learning_rate * FINETUNE_LR_FACTOR
    tuned = [line for line in out.splitlines() if "$ deepwml_train" in line and "--pretrained" in line]
    assert tuned and all(f"--lr {rate:.6g}" in line for line in tuned), out
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
    # --tta predicts the trained models with flip TTA, as deepwml_finetune's models predict (nothing is retrained)
    import json

    def tta_of(folder):
        return json.loads((folder / ".deepwml_output.json").read_text())["predicted_with"]["tta"]

    fold = tmp_path / "work" / "heldout_patient01"
    assert tta_of(fold / "pred_finetuned") is False and tta_of(fold / "pred_scratch") is False
    assert _benchmark().main(argv + ["--tta"]) == 0
    assert "deepwml_train" not in capsys.readouterr().out
    assert tta_of(fold / "pred_finetuned") is True and tta_of(fold / "pred_scratch") is True


def test_the_mslub_development_scans_are_refused(tmp_path, capsys):
    """Their README forbids tuning a model on them: pointing --data at them stops with one line, nothing written."""
    work = tmp_path / "work"
    bench = _benchmark()
    code = bench.main(["--work", str(work), "--data", str(bench.DEFAULT_DATA)])
    err = capsys.readouterr().err
    assert code == 2 and "must not be trained on" in err and len(err.strip().splitlines()) == 1
    assert not work.exists()


@pytest.mark.slow
def test_benchmark_on_two_sites_of_scans_as_acquired_holds_out_a_scan_of_each_and_prints_the_bar(tmp_path, capsys):
    """Two sites of two 2D scans each, --as-acquired --holdout 2: two folds, each holding out one scan per site and
    training on the other two; tables per site and over all, the bar per site; --thickness is refused with it. The ms
    scans hold a bright blob marked 2 (--ignore-label 2): the zero-shot threshold model marks it, and it costs nothing."""
    _thick_scans(tmp_path / "svd", ["patient01", "patient02"], thickness=7.5)
    _thick_scans(tmp_path / "ms", ["patient01", "patient02"], other=True)
    model = write_model_dir(tmp_path / "pre" / "Dataset998_Toy" / "tiny", tiny_plan(matrix=64), kind="threshold")
    argv = ["--work", str(tmp_path / "work"), "--data", str(tmp_path / "svd"), str(tmp_path / "ms"), "--as-acquired",
            "--holdout", "2", "--ignore-label", "2", "--pretrained", str(model), "--epochs", "1", "--iterations", "1", "--device", "cpu", "-np", "1"]
    assert _benchmark().main(argv + ["--thickness", "5"]) == 2
    assert "do not apply" in capsys.readouterr().err
    assert _benchmark().main(argv) == 0
    out = capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "work").glob("heldout_*")) == [
        "heldout_svd_patient01+ms_patient01", "heldout_svd_patient02+ms_patient02"]
    fold = tmp_path / "work" / "heldout_svd_patient01+ms_patient01"
    raw = fold / "raw" / "Dataset531_MSLUBLeaveOut"
    assert sorted(p.name for p in (raw / "imagesTr").iterdir()) == ["ms_patient02.nii.gz", "svd_patient02.nii.gz"]
    assert sorted(p.name for p in (fold / "pred_finetuned").glob("*.nii.gz")) == ["ms_patient01.nii.gz", "svd_patient01.nii.gz"]
    assert "svd:" in out and "ms:" in out and "all sites:" in out
    bar = [line for line in out.splitlines() if line.startswith(("svd (2 scans)", "ms (2 scans)"))]
    assert len(bar) == 2 and all("zero-shot Dice" in line and "against from scratch" in line for line in bar), out
    # the zero-shot threshold model finds the bright lesions of the held-out scans of both sites; on the ms site the
    # blob marked 2 is left out of its mask as the MICCAI-2017 evaluator does (counted, it would bring Dice to 0.48;
    # the model's one-voxel halo around it, outside the ignored voxels, still counts as there)
    zero = [line for line in out.splitlines() if line.startswith("| zero-shot")]
    assert len(zero) == 3 and all(float(line.split("|")[2]) > 0.5 for line in zero), out
    assert float(zero[1].split("|")[2]) > 0.7, out
    spec = DatasetJson.load(fold / "raw" / "Dataset531_MSLUBLeaveOut" / "dataset.json")
    assert spec.ignore_label == 2
