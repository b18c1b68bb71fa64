"""deepwml_predict's skull stripping (the default with an anatomy model; --skull-strip, --no-skull-strip): the lesion
model sees only the brain the anatomy model finds."""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from deepwml.anatomy.labels import BACKGROUND, CORTEX, VENTRICLE, WHITE_MATTER
from deepwml.cli import predict as predict_cli
from deepwml.imageio import Geometry, Image, read_image, write_image
from deepwml.inference import pipeline
from deepwml.inference.lesion_report import SKULL_STRIP_COLUMN
from deepwml.inference.skull_strip import (ALREADY_STRIPPED, NO_BRAIN, STRIPPED, already_stripped, brain_region,
                                           lesion_model_channels, run_skull_strip, strip_images, strip_warning)
from deepwml.utils.errors import DeepWMLError
from test_anatomy_model import models  # noqa: F401 - the fixture


def _anatomy(shape=(4, 40, 40)) -> np.ndarray:
    """A square brain in slices 1-2 (white matter in a cortex ring, a ventricle, a background hole for a sulcus)."""
    anatomy = np.zeros(shape, np.uint8)
    anatomy[1:3, 10:30, 10:30] = CORTEX
    anatomy[1:3, 12:28, 12:28] = WHITE_MATTER
    anatomy[1:3, 18:22, 18:22] = VENTRICLE
    anatomy[1, 14:16, 24:26] = BACKGROUND  # enclosed: filled
    return anatomy


def learned_stripped(model_dir, count: int = 3) -> None:
    """Record in a toy model's fingerprint that it learned ``count`` skull-stripped scans (what makes the default strip)."""
    (model_dir / "fingerprint.json").write_text(json.dumps({"dataset_summary": {"skull_stripped_cases": count}}))


def test_the_brain_region_is_every_class_holes_filled_and_grown_in_plane_by_millimetres_not_across_slices():
    # spacing x 1.0 mm (columns), y 0.5 mm (rows), 6 mm slices: 3 mm is 3 columns and 6 rows
    geometry = Geometry((40, 40, 4), (1.0, 0.5, 6.0), (0.0, 0.0, 0.0))
    region = brain_region(_anatomy(), geometry)
    assert region.dtype == bool and region.shape == (4, 40, 40)
    assert not region[0].any() and not region[3].any()  # no brain there: nothing grows into it from a slice beside
    assert region[1, 14:16, 24:26].all()  # the enclosed hole
    expected = np.zeros((40, 40), bool)
    yy, xx = np.mgrid[:40, :40]
    # the square rows 10-29, columns 10-29, grown by an ellipse of 6 rows x 3 columns
    dy = np.maximum(np.maximum(10 - yy, yy - 29), 0) * 0.5
    dx = np.maximum(np.maximum(10 - xx, xx - 29), 0) * 1.0
    expected[np.hypot(dy, dx) <= 3.0] = True
    assert np.array_equal(region[1], expected) and np.array_equal(region[2], expected)
    unfilled = _anatomy() != BACKGROUND
    filled = unfilled.copy()
    filled[1, 14:16, 24:26] = True
    assert np.array_equal(brain_region(_anatomy(), geometry, margin_mm=0), filled)


def test_the_brain_region_follows_a_slice_axis_that_is_not_the_first_numpy_axis():
    # sagittal stack: x is the coarsest (6 mm), so the slices run along numpy's last axis
    geometry = Geometry((4, 40, 40), (6.0, 0.5, 1.0), (0.0, 0.0, 0.0))
    anatomy = np.moveaxis(_anatomy(), 0, 2)
    region = brain_region(anatomy, geometry, margin_mm=1.0)
    assert region.shape == anatomy.shape
    assert not region[:, :, 0].any() and not region[:, :, 3].any()
    # 1 mm is one z-row (1.0 mm) and two y-rows (0.5 mm) here
    assert region[9, 10, 1] and not region[8, 10, 1]
    assert region[10, 8, 1] and not region[10, 7, 1]


def test_stripping_sets_every_channel_to_zero_outside_the_region_and_refuses_a_scan_without_brain(tmp_path):
    geometry = Geometry((40, 40, 4), (1.0, 1.0, 6.0), (0.0, 0.0, 0.0))
    images = [Image(np.full((4, 40, 40), v, np.int16), geometry, tmp_path / f"c{v}.nii.gz") for v in (7, 9)]
    region = brain_region(_anatomy(), geometry)
    for image, value in zip(strip_images(images, region), (7, 9)):
        assert image.array.dtype == np.int16 and image.geometry == geometry
        assert (image.array[region] == value).all() and (image.array[~region] == 0).all()
    with pytest.raises(DeepWMLError, match=r"c7.nii.gz: --skull-strip: the anatomy model finds no brain"):
        strip_images(images, np.zeros((4, 40, 40), bool))


def _head(stripped: bool, seed: int = 0) -> Image:
    """A 5 x 64 x 64 axial stack: a brain (rows and columns 16-47) with, unless ``stripped``, a bright scalp ring around
    it and background noise; stripped, the background is 0."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:64, :64]
    r = np.hypot(yy - 31.5, xx - 31.5)
    slice_ = np.where(r < 16, 100.0, 0.0)
    if not stripped:
        slice_ = np.where((r >= 20) & (r < 28), 150.0, slice_) + rng.rayleigh(5.0, (64, 64))
    array = np.repeat(slice_[None], 5, axis=0).astype(np.int16)
    return Image(array, Geometry((64, 64, 5), (1.0, 1.0, 6.0), (0.0, 0.0, 0.0)))


def test_a_scan_is_taken_as_stripped_already_only_with_a_constant_background_and_its_head_inside_the_brain():
    brain = np.zeros((5, 64, 64), np.uint8)
    yy, xx = np.mgrid[:64, :64]
    brain[:, np.hypot(yy - 31.5, xx - 31.5) < 16] = WHITE_MATTER
    geometry = _head(True).geometry
    region = brain_region(brain, geometry)
    assert already_stripped(_head(True), region)
    assert not already_stripped(_head(False), region)  # scalp outside the brain, noise in the background
    # a scan whose background is zero-filled but which keeps its scalp is stripped all the same
    zero_filled = _head(False)
    zero_filled.array[zero_filled.array < 20] = 0
    assert not already_stripped(zero_filled, region)
    # a zero background alone is not enough: most of the head must lie in the brain region (a quarter of the disc
    # outside it is still stripped, three quarters not)
    most = brain.copy()
    most[:, :, :25] = BACKGROUND  # with the 3 mm margin: columns 22-47 of the disc at 16-47
    assert already_stripped(_head(True), brain_region(most, geometry))
    quarter = brain.copy()
    quarter[:, :, :32] = BACKGROUND
    quarter[:, :32, :] = BACKGROUND
    assert not already_stripped(_head(True), brain_region(quarter, geometry))


def test_the_lesion_model_channels_are_stripped_left_as_they_are_when_stripped_already_and_without_a_brain_only_by_default():
    brain = np.zeros((5, 64, 64), np.uint8)
    yy, xx = np.mgrid[:64, :64]
    brain[:, np.hypot(yy - 31.5, xx - 31.5) < 16] = WHITE_MATTER
    region = brain_region(brain, _head(True).geometry)
    with_skull, stripped = _head(False), _head(True)
    channels, state = lesion_model_channels(with_skull, [with_skull], region, required=False)
    assert state == STRIPPED and (channels[0].array[~region] == 0).all() and with_skull.array[~region].any()
    channels, state = lesion_model_channels(stripped, [stripped], region, required=True)
    assert state == ALREADY_STRIPPED and channels[0] is stripped
    # no brain found: the default predicts the scan as given and says so; asked for, the scan is refused
    nothing = np.zeros_like(region)
    channels, state = lesion_model_channels(with_skull, [with_skull], nothing, required=False)
    assert state == NO_BRAIN and channels[0] is with_skull
    with pytest.raises(DeepWMLError, match="finds no brain in this scan .* with --no-skull-strip"):
        lesion_model_channels(with_skull, [with_skull], nothing, required=True)
    assert strip_warning({SKULL_STRIP_COLUMN: NO_BRAIN}).startswith("not skull-stripped for the lesion model: the anatomy "
                                                                   "model finds almost no brain")
    assert strip_warning({SKULL_STRIP_COLUMN: STRIPPED}) == strip_warning({SKULL_STRIP_COLUMN: ALREADY_STRIPPED}) == ""
    assert strip_warning({}) == ""


def test_the_default_strips_for_a_model_that_learned_stripped_scans_only(tmp_path):
    assert run_skull_strip(None, True, 30) == (True, "")
    assert run_skull_strip(True, True, 0) == run_skull_strip(True, True, None) == (True, "")
    assert run_skull_strip(False, True, 30) == run_skull_strip(None, False, 30) == (False, "")
    assert run_skull_strip(None, True, 0) == (False, "not skull-stripped: the model learned no skull-stripped scans "
                                                    "(--skull-strip strips anyway)")
    assert "does not record" in run_skull_strip(None, True, None)[1]
    # what a model learned: its fingerprint's count, else a synthetic dataset.json's per-case record, else unknown
    from deepwml.inference.acquisition import learned_stripped_scans
    from deepwml.pretrained import BUILTIN_DIR

    assert learned_stripped_scans(tmp_path) is None
    (tmp_path / "dataset.json").write_text(json.dumps({"cases": {"a": {"skull_stripped": True}, "b": {"skull_stripped": False}}}))
    assert learned_stripped_scans(tmp_path) == 1
    learned_stripped(tmp_path, 0)
    assert learned_stripped_scans(tmp_path) == 0
    assert learned_stripped_scans(BUILTIN_DIR) == 30  # the shipped model: 30 of its 125 synthetic training scans


def test_the_report_says_what_the_lesion_model_was_shown_for_each_case(tmp_path):
    from deepwml.inference.patient_report import ModelInfo, model_html

    stripping = ModelInfo.describe(tmp_path, "plan", ["0"], "best", True, 0.5, skull_strip=True)
    for state, said in ((STRIPPED, "the brain the anatomy model finds, the rest blanked"),
                        (ALREADY_STRIPPED, "the scan as given: it was skull-stripped already"),
                        (NO_BRAIN, "the whole scan as given: the anatomy model found no brain to strip it to")):
        assert said in model_html(stripping, state)
    plain = ModelInfo.describe(tmp_path, "plan", ["0"], "best", True, 0.5)
    assert "<dt>Input segmented</dt><dd>the whole scan as given</dd>" in model_html(plain)


def test_a_scan_without_brain_is_predicted_as_given_and_flagged_by_default_and_fails_when_stripping_was_asked_for(
        tmp_path, models, capsys, monkeypatch):  # noqa: F811
    lesion, anatomy, inputs = models
    learned_stripped(lesion)
    shape = read_image(inputs / "scan.nii.gz").array.shape
    monkeypatch.setattr(pipeline, "anatomy_map", lambda probs, props: np.zeros(shape, np.uint8))
    common = ["-i", str(inputs), "-m", str(lesion), "--no-qc", "--anatomy-model", str(anatomy)]
    assert predict_cli.main(common + ["-o", str(tmp_path / "default"), "--report", "html"]) == 0
    assert predict_cli.main(common + ["-o", str(tmp_path / "plain"), "--no-skull-strip"]) == 0
    row = pd.read_csv(tmp_path / "default" / "summary.csv").iloc[0]
    assert row["status"] == "ok" and row[SKULL_STRIP_COLUMN] == NO_BRAIN
    assert "the anatomy model finds almost no brain" in row["acquisition_warning"]
    # the patient report says so twice: in its notice and in what the lesion model was shown
    page = next((tmp_path / "default").rglob("*.html")).read_text()
    assert "This scan is not skull-stripped for the lesion model" in page
    assert "the whole scan as given: the anatomy model found no brain to strip it to" in page
    # the lesion model saw the scan as a run without stripping shows it
    assert np.array_equal(read_image(tmp_path / "default" / "scan.nii.gz", dtype=None).array,
                          read_image(tmp_path / "plain" / "scan.nii.gz", dtype=None).array)
    # a resumed run keeps the flag
    capsys.readouterr()
    assert predict_cli.main(common + ["-o", str(tmp_path / "default"), "--report", "html"]) == 0
    assert "1 already done" in capsys.readouterr().out
    assert "the anatomy model finds almost no brain" in pd.read_csv(tmp_path / "default" / "summary.csv").loc[0, "acquisition_warning"]
    assert predict_cli.main(common + ["-o", str(tmp_path / "asked"), "--skull-strip"]) == 1
    row = pd.read_csv(tmp_path / "asked" / "summary.csv").iloc[0]
    assert row["status"] != "ok" and "finds no brain in this scan" in row["error"]


def test_without_an_anatomy_model_nothing_is_stripped_unless_asked_for_which_is_refused(tmp_path, models, capsys):  # noqa: F811
    lesion, _, inputs = models
    common = ["-i", str(inputs), "-m", str(lesion), "--no-qc", "--no-anatomy"]
    assert predict_cli.main(common + ["-o", str(tmp_path / "default")]) == 0
    assert '"skull_strip": false' in (tmp_path / "default" / ".deepwml_output.json").read_text()
    assert "skull stripped" not in capsys.readouterr().out
    assert predict_cli.main(common + ["-o", str(tmp_path / "asked"), "--skull-strip"]) == 2
    assert "--no-anatomy contradicts" in capsys.readouterr().err and not (tmp_path / "asked").exists()
    with pytest.raises(SystemExit):
        predict_cli.main(common + ["-o", str(tmp_path / "both"), "--skull-strip", "--no-skull-strip"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_predict_with_skull_strip_is_the_plain_prediction_of_the_scan_stripped_by_its_anatomy_map(tmp_path, models, capsys,  # noqa: F811
                                                                                                  monkeypatch):
    """What the lesion model sees is the input with everything outside the anatomy map's brain region set to 0: the
    same mask as predicting that stripped scan without the option; a bright spot outside the brain, which a plain run
    calls lesion, is not lesion with it. (The toy anatomy model's map is replaced by a box of white matter.)"""
    lesion, anatomy, inputs = models
    scan = read_image(inputs / "scan.nii.gz")
    box = np.zeros(scan.array.shape, np.uint8)
    box[:, 20:36, 16:32] = WHITE_MATTER
    monkeypatch.setattr(pipeline, "anatomy_map", lambda probs, props: box.copy())
    region = brain_region(box, scan.geometry)
    assert 0.1 < region.mean() < 0.5
    z, y, x = 2, 10, 24  # in the head, outside the region
    assert not region[z, y, x]
    bright = scan.array.copy()
    bright[z, y - 2:y + 3, x - 3:x + 4] = scan.array.max()
    write_image(bright, scan.geometry, tmp_path / "in" / "scan.nii.gz")
    common = ["-i", str(tmp_path / "in"), "-m", str(lesion), "--no-qc", "--anatomy-model", str(anatomy)]
    # a model that does not record what it learned is shown the scan as given unless stripping is asked for
    assert predict_cli.main(common + ["-o", str(tmp_path / "unrecorded")]) == 0
    assert ("not skull-stripped: the model does not record whether it learned skull-stripped scans "
            "(--skull-strip strips anyway)") in capsys.readouterr().out
    assert SKULL_STRIP_COLUMN not in pd.read_csv(tmp_path / "unrecorded" / "summary.csv").columns
    learned_stripped(lesion)
    assert predict_cli.main(common + ["-o", str(tmp_path / "strip"), "--skull-strip"]) == 0
    assert "skull stripped: the lesion model saw only the anatomy model's brain" in capsys.readouterr().out
    # a plain run: the scan as given, keeping lesions outside the brain (which a default run drops from its mask)
    assert predict_cli.main(common + ["-o", str(tmp_path / "plain"), "--no-skull-strip", "--keep-outside-brain"]) == 0
    # for a model that learned stripped scans the default strips as --skull-strip does
    assert predict_cli.main(common + ["-o", str(tmp_path / "default")]) == 0
    assert "skull stripped: the lesion model saw only" in capsys.readouterr().out
    (stripped,) = strip_images([read_image(tmp_path / "in" / "scan.nii.gz")], region)
    write_image(stripped.array, scan.geometry, tmp_path / "by_hand" / "scan.nii.gz")
    assert predict_cli.main(["-i", str(tmp_path / "by_hand"), "-o", str(tmp_path / "plain_of_stripped"), "-m", str(lesion),
                             "--no-qc", "--no-anatomy"]) == 0
    mask = read_image(tmp_path / "strip" / "scan.nii.gz", dtype=None).array
    plain = read_image(tmp_path / "plain" / "scan.nii.gz", dtype=None).array
    assert mask.any() and np.array_equal(mask, read_image(tmp_path / "plain_of_stripped" / "scan.nii.gz", dtype=None).array)
    assert plain[z, y, x] == 1 and mask[z, y, x] == 0
    assert not (mask.astype(bool) & ~region).any()
    assert np.array_equal(mask, read_image(tmp_path / "default" / "scan.nii.gz", dtype=None).array)
    for folder in ("strip", "default"):
        assert pd.read_csv(tmp_path / folder / "summary.csv").loc[0, SKULL_STRIP_COLUMN] == STRIPPED
    assert SKULL_STRIP_COLUMN not in pd.read_csv(tmp_path / "plain" / "summary.csv").columns


def test_a_folder_predicted_with_skull_strip_is_not_resumed_without_it(tmp_path, models, capsys):  # noqa: F811
    lesion, anatomy, inputs = models
    learned_stripped(lesion)
    args = ["-i", str(inputs), "-o", str(tmp_path / "out"), "-m", str(lesion), "--no-qc", "--anatomy-model", str(anatomy)]
    assert predict_cli.main(args + ["--skull-strip", "--report", "html"]) == 0
    # the report says what the model was shown
    (page,) = (tmp_path / "out").rglob("*.html")
    assert "the brain the anatomy model finds, the rest blanked (skull stripping; --no-skull-strip" in page.read_text()
    capsys.readouterr()
    assert predict_cli.main(args + ["--no-skull-strip"]) == 2
    assert "skull_strip True -> False" in capsys.readouterr().err
    assert predict_cli.main(args + ["--skull-strip", "--report", "html"]) == 0
    assert "1 already done" in capsys.readouterr().out
    # stripping is the default, so a run without the option resumes it
    assert predict_cli.main(args + ["--report", "html"]) == 0
    assert "1 already done" in capsys.readouterr().out
    # the masks depend on the anatomy model here: another one is not resumed either (a run whose masks do not depend
    # on it, --keep-outside-brain --min-cortex-contrast 0 --no-skull-strip, resumes across it)
    from deepwml_testing.toy_models import write_model_dir
    from test_anatomy_model import anatomy_plan

    other = write_model_dir(tmp_path / "anat2" / "Dataset998_Anat" / "anatomy_tiny", anatomy_plan(), kind="random", seed=7,
                            dataset_json=json.loads((anatomy / "dataset.json").read_text()))
    moved = [str(other) if a == str(anatomy) else a for a in args]
    assert predict_cli.main(moved + ["--skull-strip"]) == 2
    assert "the anatomy model's weights" in capsys.readouterr().err
    plain = ["-i", str(inputs), "-o", str(tmp_path / "plain"), "-m", str(lesion), "--no-qc", "--keep-outside-brain",
             "--min-cortex-contrast", "0", "--no-skull-strip"]
    assert predict_cli.main(plain + ["--anatomy-model", str(anatomy)]) == 0
    assert predict_cli.main(plain + ["--anatomy-model", str(other)]) == 0
    assert "1 already done" in capsys.readouterr().out.splitlines()[-1]
    # by default lesions outside the anatomy model's brain are dropped, so the masks depend on it
    default = ["-i", str(inputs), "-o", str(tmp_path / "default"), "-m", str(lesion), "--no-qc"]
    assert predict_cli.main(default + ["--anatomy-model", str(anatomy)]) == 0
    capsys.readouterr()
    assert predict_cli.main(default + ["--anatomy-model", str(other)]) == 2
    assert "the anatomy model's weights" in capsys.readouterr().err


def test_a_label_map_model_refuses_skull_strip(tmp_path, models, capsys):  # noqa: F811
    _, anatomy, inputs = models
    assert predict_cli.main(["-i", str(inputs), "-o", str(tmp_path / "out"), "-m", str(anatomy), "--skull-strip"]) == 2
    assert re.search(r"--skull-strip need\(s\) a lesion model", capsys.readouterr().err)


def test_the_input_scaling_benchmark_prints_each_image_and_refuses_what_it_cannot_measure(tmp_path, models, capsys):  # noqa: F811
    """benchmarks/input_scaling.py: one row per image with both masks' voxel counts; the toy threshold model has no
    instance norm, so moving its input moves its mask (the benchmark measures, it does not assume)."""
    from deepwml_testing.benchmarks import load_benchmark

    bench = load_benchmark("input_scaling")
    lesion, _, inputs = models
    assert bench.main(["-i", str(inputs), "-m", str(lesion), "--scale", "1.0", "--shift", "0.0"]) == 0
    out = capsys.readouterr().out
    row = re.search(r"\| scan.nii.gz \| (\d+) \| (\d+) \| 1.000 \| 0 \|", out)
    assert row and int(row.group(1)) > 0
    assert bench.main(["-i", str(inputs), "-m", str(lesion), "--scale", "1.0", "--shift", "2.0"]) == 0
    moved = re.search(r"\| scan.nii.gz \| (\d+) \| (\d+) \|", capsys.readouterr().out)
    assert int(moved.group(2)) > int(moved.group(1))  # everything brighter than the threshold: more lesion
    assert bench.main(["-i", str(tmp_path / "empty"), "-m", str(lesion)]) == 2
    assert "holds no image files" in capsys.readouterr().err
    assert bench.main(["-i", str(inputs), "-m", str(lesion), "--scale", "-1"]) == 2
    assert "--scale must be positive" in capsys.readouterr().err


def test_deepwml_bids_takes_skull_strip_and_never_mixes_it_in_one_derivatives_folder(tmp_path, capsys):
    """The BIDS app passes --skull-strip to the prediction (the shipped lesion and anatomy models), a later run with
    --no-skull-strip is refused, naming the option, and one with neither (stripping is the default) resumes."""
    from deepwml.cli.bids_app import main as bids_main
    from test_bids_app import make_bids

    root = make_bids(tmp_path / "clinic")
    out = tmp_path / "deriv"
    base = [str(root), str(out), "participant", "--no-bf16", "--device", "cpu", "--participant-label", "01"]
    assert bids_main(base + ["--skull-strip"]) == 0
    sidecars = [json.loads(p.read_text()) for p in out.rglob("*_mask.json")]
    assert sidecars and all('"skull_strip": true' in json.dumps(s) for s in sidecars)
    capsys.readouterr()
    assert bids_main(base + ["--no-skull-strip"]) == 2
    assert "skull_strip True -> False" in capsys.readouterr().err
    assert bids_main(base) == 0


def test_deepwml_compare_segments_both_visits_with_skull_strip_and_does_not_reuse_them_without_it(tmp_path, capsys):
    from deepwml.cli.compare import main as compare_main
    from deepwml.inference.output_folder import MARKER_NAME
    from test_longitudinal import two_visits

    paths, _, _, _ = two_visits(tmp_path)
    out = tmp_path / "out"
    args = ["-b", str(paths["baseline"]), "-f", str(paths["followup"]), "-o", str(out), "--no-picture"]
    assert compare_main(args + ["--skull-strip"]) == 0
    for visit in ("baseline", "followup"):
        assert '"skull_strip": true' in (out / visit / MARKER_NAME).read_text()
    capsys.readouterr()
    assert compare_main(args + ["--no-skull-strip"]) == 2
    assert "skull_strip True -> False" in capsys.readouterr().err
    assert compare_main(args) == 0  # the default strips: both visits are reused


def test_the_skull_pairs_benchmark_reports_the_volume_ratio_of_the_pairs_and_refuses_a_work_folder_in_the_repository(capsys):
    from deepwml_testing.benchmarks import load_benchmark

    bench = load_benchmark("skull_pairs")
    skull = {"a": {"pred_volume_ml": 2.0}, "b": {"pred_volume_ml": 3.0}, "c": {"pred_volume_ml": 1.0}, "d": {"pred_volume_ml": 0.0}}
    stripped = {"a": {"pred_volume_ml": 1.0}, "b": {"pred_volume_ml": 3.0}, "c": {"pred_volume_ml": 2.0}, "d": {"pred_volume_ml": 1.0}}
    # ratios 2, 1, 0.5 (d predicts nothing with skull: left out)
    assert bench.ratio_line(skull, stripped) == ("median 1.000 (IQR 0.750-1.500), mean |log ratio| "
                                                 f"{2 * np.log(2) / 3:.3f}, 3 cases")
    assert bench.ratio_line({"d": {"pred_volume_ml": 0.0}}, {"d": {"pred_volume_ml": 0.0}}) == "no case with lesion predicted in both"
    assert bench.main(["--work", str(bench.REPO_ROOT / "tmp_pairs")]) == 2
    assert "outside the repository" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["predict", "listen", "bids_app", "compare"])
def test_every_command_built_on_deepwml_predict_takes_both_options_and_leaves_the_default_to_the_model(command, tmp_path):
    """None (the default: strip when the lesion model learned stripped scans), --skull-strip True, --no-skull-strip
    False, both refused, as every command that segments through deepwml_predict parses them."""
    import importlib

    parser = importlib.import_module(f"deepwml.cli.{command}").build_parser()
    base = {"predict": ["-i", "in", "-o", "out"], "listen": [str(tmp_path / "node")],
            "bids_app": [str(tmp_path), str(tmp_path / "out"), "participant"],
            "compare": ["-b", "a.nii.gz", "-f", "b.nii.gz", "-o", "out"]}[command]
    assert parser.parse_args(base).skull_strip is None
    assert parser.parse_args(base + ["--skull-strip"]).skull_strip is True
    assert parser.parse_args(base + ["--no-skull-strip"]).skull_strip is False
    with pytest.raises(SystemExit):
        parser.parse_args(base + ["--skull-strip", "--no-skull-strip"])
    if command == "listen":  # and the DICOM node hands it on to every prediction
        from deepwml.cli import listen

        assert listen._request(parser.parse_args(base + ["--no-skull-strip"])).skull_strip is False
        assert listen._request(parser.parse_args(base)).skull_strip is None
