"""deepwml_finetune: a site's labelled scans (a CSV manifest) in, a fine-tuned model folder out that deepwml_predict
takes with -m; it starts from the shipped weights, says what it was tuned on, resumes, and refuses what it must."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from deepwml.cli.finetune import main as finetune_main
from deepwml.cli.predict import main as predict_main
from deepwml.imageio import read_image, write_image
from deepwml.pretrained import builtin_model_dir
from deepwml_testing.cases import input_case


#: slices kept of each synthetic scan of a site (its middle ones, where most lesions lie): what the commands do to a
#: scan does not depend on how many slices it has, and fewer keep the fine-tuning tests fast
SITE_SLICES = 10


def _site(folder: Path, n: int = 2, unlabelled: int = 1) -> Path:
    """n labelled synthetic scans (their middle SITE_SLICES slices) and ``unlabelled`` scans without a mask, listed in
    folder/m.csv."""
    from deepwml.imageio import Geometry

    rows = ["image,label,centre,disease"]
    for k in range(n + unlabelled):
        case = input_case("CSVD#1", index=k, seed=91)
        first = (case.image.shape[0] - SITE_SLICES) // 2
        g = case.geometry
        geometry = Geometry((g.size[0], g.size[1], SITE_SLICES), g.spacing, tuple(g.index_to_world(np.array([0, 0, first]))),
                            g.direction)
        kept = slice(first, first + SITE_SLICES)
        write_image(case.image[kept], geometry, folder / f"s{k}.nii.gz")
        label = ""
        if k < n:
            write_image(case.label[kept], geometry, folder / f"s{k}_mask.nii.gz")
            label = f"s{k}_mask.nii.gz"
        rows.append(f"s{k}.nii.gz,{label},Site A,CSVD")
    (folder / "m.csv").write_text("\n".join(rows) + "\n")
    return folder / "m.csv"


class _SetMade(Exception):
    """Raised where deepwml_finetune would plan: the fine-tuning set is made."""


def _stop_once_the_set_is_made(monkeypatch) -> type:
    """Make deepwml_finetune stop once its raw dataset is written (planning and training are the other tests'
    business); returns the exception it then raises."""
    import deepwml.pretrained.site_finetune as site_finetune

    def stop(*args, **kwargs):
        raise _SetMade

    monkeypatch.setattr(site_finetune, "run_command", stop)
    return _SetMade


@pytest.mark.slow
def test_labelled_scans_in_a_fine_tuned_model_out(tmp_path, capfd):
    manifest = _site(tmp_path / "site")
    model = tmp_path / "models" / "siteA"
    args = [str(manifest), "-o", str(model), "--epochs", "1", "--iterations", "1"]
    assert finetune_main(args) == 0
    out = capfd.readouterr().out
    assert "2 labelled scan(s)" in out and "1 row(s) without a label left out" in out
    assert "--pretrained" in out and "deepwml_predict -i SCANS -o OUT -m" in out
    # a model folder deepwml_predict takes, started from the shipped weights, with a card saying what it was tuned on
    checkpoint = torch.load(model / "fold_all" / "checkpoint_latest.pth", map_location="cpu", weights_only=True)
    shipped_plan = json.loads((builtin_model_dir() / "plans.json").read_text())
    assert checkpoint["pretrained"]["source"].endswith("wmh_flair2d") and checkpoint["plan"]["name"] == shipped_plan["name"]
    assert checkpoint["plan"]["network"] == shipped_plan["network"]  # the shipped network itself, no norm bridged
    card = (model / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "Fine-tuned on: 2 labelled scan(s)" in card and "wmh_flair2d" in card and "1 epochs x 1 iterations" in card
    assert "no figure here measures the model on scans it has not seen" in card
    # the shipped model predicts with flip TTA: so does the fine-tuned one, at the plan's threshold, no lesion filter
    assert checkpoint["postprocessing"]["tta"] is True and checkpoint["postprocessing"]["threshold"] == 0.5
    assert checkpoint["postprocessing"]["min_lesion_ml"] == 0 and checkpoint["postprocessing"]["min_lesion_peak"] == 0
    assert "Predicts with left-right flip TTA" in card and "predicts with left-right flip TTA" in out
    assert "deepwml_calibrate --tta, then deepwml_find_postprocessing --tta" in card
    assert predict_main(["-i", str(tmp_path / "site" / "s2.nii.gz"), "-o", str(tmp_path / "pred"), "-m", str(model)]) == 0
    assert read_image(tmp_path / "pred" / "s2.nii.gz").array.shape == read_image(tmp_path / "site" / "s2.nii.gz").array.shape
    assert "left-right flip TTA" in capfd.readouterr().out
    # an installed model is not replaced without --overwrite; with it, the finished training is reused, not redone
    assert finetune_main(args) == 2
    assert "exists; give another -o or --overwrite" in capfd.readouterr().err
    assert finetune_main(args + ["--overwrite"]) == 0
    assert "deepwml_train" not in capfd.readouterr().out
    # a training interrupted before its end continues from its checkpoint (its origin and rate kept), not anew
    import shutil

    fold = next((tmp_path / "models" / ".siteA.work").glob("results/Dataset*/*/fold_all"))
    shutil.rmtree(fold / "validation")
    assert finetune_main(args + ["--overwrite"]) == 0
    out = capfd.readouterr().out
    assert "--continue" in out and "--pretrained" not in out.split("deepwml_train", 1)[1].splitlines()[0]
    assert "fine-tuning from" in out and "lr 0.0002 " in out
    assert "0.0002 (the fine-tuning default, 0.1 x the plan's)" in (model / "MODEL_CARD.md").read_text(encoding="utf-8")
    # the work folder belongs to that manifest and schedule: another one is refused, not mixed in
    assert finetune_main([str(manifest), "-o", str(model), "--epochs", "2", "--iterations", "1", "--overwrite"]) == 2
    assert "holds a fine-tuning run with another epochs" in capfd.readouterr().err


def test_what_deepwml_finetune_refuses(tmp_path, capsys):
    site = tmp_path / "site"
    site.mkdir()
    case = input_case("CSVD#1", index=0, seed=92)
    write_image(case.image, case.geometry, site / "s0.nii.gz")
    (site / "unlabelled.csv").write_text("image\ns0.nii.gz\n")
    assert finetune_main([str(site / "unlabelled.csv"), "-o", str(tmp_path / "m")]) == 2
    assert "unlabelled.csv: no row has a label" in capsys.readouterr().err
    write_image(case.label, case.geometry, site / "s0_mask.nii.gz")
    (site / "m.csv").write_text("image,label\ns0.nii.gz,s0_mask.nii.gz\n")
    assert finetune_main([str(site / "m.csv"), "-o", str(tmp_path / "m"), "--from", str(site)]) == 2
    assert "--from: not a model's PLAN folder (no plans.json)" in capsys.readouterr().err
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    assert finetune_main([str(site / "m.csv"), "-o", str(tmp_path / "m"), "--work", str(tmp_path / "busy")]) == 2
    assert "is not empty and holds no deepwml_finetune run" in capsys.readouterr().err
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine" and not (tmp_path / "m").exists()
    with pytest.raises(SystemExit):
        finetune_main([str(site / "m.csv"), "-o", str(tmp_path / "m"), "--epochs", "0"])
    assert "--epochs and --iterations must be at least 1" in capsys.readouterr().err


def test_scans_replaced_under_an_unchanged_manifest_are_not_taken_for_the_prepared_ones(tmp_path):
    """The work folder is bound to the manifest's scans and labels too (path, size, time of every file, each file of
    a DICOM folder), so a second run after images were replaced is refused instead of training on the old data."""
    import os

    from deepwml.datasets.manifest import read_manifest
    from deepwml.pretrained.site_finetune import _claim, _scans_digest
    from deepwml.utils.errors import DeepWMLError

    manifest = _site(tmp_path / "site", n=1, unlabelled=0)
    dicom = tmp_path / "site" / "dicom"
    dicom.mkdir()
    (dicom / "IM0001").write_bytes(b"slice")
    cases = read_manifest(manifest)
    identity = {"scans": _scans_digest(cases)}
    _claim(tmp_path / "work", identity)
    _claim(tmp_path / "work", {"scans": _scans_digest(read_manifest(manifest))})  # nothing changed: the same run
    image = tmp_path / "site" / "s0.nii.gz"
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))  # rewritten in place
    with pytest.raises(DeepWMLError, match="holds a fine-tuning run with another scans"):
        _claim(tmp_path / "work", {"scans": _scans_digest(read_manifest(manifest))})
    # every file of a DICOM folder counts
    from dataclasses import replace

    folder_case = [replace(cases[0], image=dicom)]
    before = _scans_digest(folder_case)
    (dicom / "IM0002").write_bytes(b"another slice")
    assert _scans_digest(folder_case) != before


@pytest.mark.slow
def test_cross_validation_scores_every_scan_out_of_fold_and_ships_the_fold_networks(tmp_path, capfd):
    """--folds K: one network per fold, every trained scan segmented by the fold that never trained on it, both models
    scored on all of them in the card, the threshold and filters chosen on those predictions, the K networks installed
    as one model; a second run redoes none of it. --holdout N keeps N scans out of every fold (the test split only)
    and scores the installed model and the start model on them."""
    import json
    import os

    import numpy as np

    from deepwml.evaluation.case_metrics import case_metrics
    from deepwml.inference.postprocessing import MaskSettings

    MASK_FIELDS = ("threshold", "min_lesion_ml", "min_lesion_peak", "tta", "min_lesion_contrast", "min_lesion_spread")
    manifest = _site(tmp_path / "site", n=5, unlabelled=0)
    model = tmp_path / "models" / "siteA"
    args = [str(manifest), "-o", str(model), "--epochs", "1", "--iterations", "1", "--folds", "2", "--holdout", "1"]
    assert finetune_main(args) == 0
    out = capfd.readouterr().out
    work = tmp_path / "models" / ".siteA.work"
    scores = json.loads((work / "crossval" / "crossval.json").read_text())
    held = json.loads((work / "holdout" / "holdout.json").read_text())["cases"]
    splits = json.loads(next(work.glob("preprocessed/Dataset*/splits.json")).read_text())
    assert len(splits["folds"]) == 2 and len(scores["cases"]) == 4 and not set(held) & set(scores["cases"])
    # each scan is predicted by the fold that held it out, and by that fold only
    for k, fold in enumerate(splits["folds"]):
        assert scores["folds"][str(k)] == sorted(fold["val"])
        for case_id in scores["cases"]:
            predicted = (work / "crossval" / "finetuned" / f"fold_{k}" / f"{case_id}.nii.gz").is_file()
            assert predicted == (case_id in fold["val"]) and (scores["models"]["finetuned"]["per_case"][case_id]["fold"] == str(k)) == predicted
    # the figures are each mask against its label, and the search's starting point is the same predictions
    for name, folder in (("finetuned", None), ("start", work / "crossval" / "start")):
        dices = []
        for case_id in scores["cases"]:
            fold = scores["models"]["finetuned"]["per_case"][case_id]["fold"]
            predicted = read_image((folder or work / "crossval" / "finetuned" / f"fold_{fold}") / f"{case_id}.nii.gz")
            reference = read_image(next(work.glob(f"raw/Dataset*/labelsTr/{case_id}.nii.gz"))).array > 0
            dices.append(case_metrics(reference, predicted.array > 0, predicted.geometry)["dice"])
        assert np.isclose(scores["models"][name]["mean_dice"], np.mean(dices))
    checkpoints = [torch.load(model / f"fold_{k}" / "checkpoint_latest.pth", map_location="cpu", weights_only=True)
                   for k in range(2)]
    record = checkpoints[0]["postprocessing"]["record"]
    assert record["folds"] == ["0", "1"] and sorted(record["cases"]) == scores["cases"] and record["tta"] is True
    assert np.isclose(record["before"]["dice"], scores["models"]["finetuned"]["mean_dice"], atol=5e-4)
    assert checkpoints[1]["postprocessing"] == checkpoints[0]["postprocessing"]
    assert all(c["pretrained"]["source"].endswith("wmh_flair2d") for c in checkpoints)
    # the probabilities calibrated on the same out-of-fold predictions, with TTA, before the threshold was chosen on them
    calibration = checkpoints[0]["calibration"]
    assert calibration["folds"] == ["0", "1"] and sorted(calibration["cases"]) == scores["cases"] and calibration["tta"] is True
    assert "out of fold" in calibration["source"] and checkpoints[1]["temperature"] == checkpoints[0]["temperature"]
    assert record["temperatures"] == checkpoints[0]["temperature"]
    card = (model / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "2 folds (one network per fold" in card and "Cross-validated on all 4 scans it was tuned on" in card
    assert {c["centre"] for m in scores["models"].values() for c in m["per_case"].values()} == {"Site A"}
    assert "by centre" not in card  # one centre: its figures are the ones above
    assert f"fine-tuned (out of fold) {scores['models']['finetuned']['mean_dice']:.3f}" in card
    assert f"as it predicts {scores['models']['start']['mean_dice']:.3f}" in card
    searched = ("Postprocessing searched (`deepwml_find_postprocessing`) on the same out-of-fold predictions: no "
                "threshold or lesion filter beat the plan's" if record["before"] == record["after"] else
                f"Postprocessing chosen (`deepwml_find_postprocessing`) on the same out-of-fold predictions: "
                f"{MaskSettings(**{k: checkpoints[0]['postprocessing'].get(k, 0.0) for k in MASK_FIELDS}).describe()}")
    assert searched in card
    assert (f"Probabilities calibrated (`deepwml_calibrate`) on the same out-of-fold predictions: temperatures "
            f"{calibration['temperature_below']} below and {calibration['temperature_above']} above") in card
    assert "fine-tuning" in out and "out of fold on the 4 scans" in out and "1 kept aside to score the models on" in out
    # the scan kept aside: in the test split only, and scored with each model's mask of it against its label
    (kept,) = held
    assert not list(work.glob(f"raw/Dataset*/imagesTr/{kept}*")) and list(work.glob(f"raw/Dataset*/imagesTs/{kept}*"))
    holdout = json.loads((work / "holdout" / "holdout.json").read_text())
    reference = read_image(next(work.glob(f"raw/Dataset*/labelsTs/{kept}.nii.gz"))).array > 0
    for name, folder in (("finetuned", "finetuned_0-1"), ("start", "start")):
        predicted = read_image(work / "holdout" / folder / f"{kept}.nii.gz")
        assert np.isclose(holdout["models"][name]["mean_dice"], case_metrics(reference, predicted.array > 0, predicted.geometry)["dice"])
        assert f"{holdout['models'][name]['mean_dice']:.3f}" in card
    assert f"kept aside (not trained on: {kept})" in card and "Fine-tuned on: 4 labelled scan(s)" in card
    assert not (model / "fold_all").exists()
    # the installed model predicts with both fold networks and the chosen settings
    assert predict_main(["-i", str(tmp_path / "site" / "s0.nii.gz"), "-o", str(tmp_path / "pred"), "-m", str(model)]) == 0
    assert "folds 0 1" in capfd.readouterr().out
    # a second run reuses the folds, the predictions and the choice
    stamp = (work / "crossval" / "start" / f"{scores['cases'][0]}.nii.gz").stat().st_mtime_ns
    assert finetune_main(args + ["--overwrite"]) == 0
    again = capfd.readouterr().out
    assert "deepwml_train" not in again and "deepwml_find_postprocessing" not in again and "deepwml_calibrate" not in again
    assert (work / "crossval" / "start" / f"{scores['cases'][0]}.nii.gz").stat().st_mtime_ns == stamp
    assert os.path.isfile(model / "fold_1" / "checkpoint_latest.pth")
    # --ship all: the same folds, figures and choice, then one network on every scan with the choice, installed alone
    assert finetune_main(args + ["--overwrite", "--ship", "all"]) == 0
    shipped = capfd.readouterr().out
    assert shipped.count("$ deepwml_train") == 1 and " 590 all " in shipped and "deepwml_find_postprocessing" not in shipped
    assert sorted(p.name for p in model.glob("fold_*")) == ["fold_all"]
    single = torch.load(model / "fold_all" / "checkpoint_latest.pth", map_location="cpu", weights_only=True)
    assert ({k: single["postprocessing"].get(k, 0.0) for k in MASK_FIELDS}
            == {k: checkpoints[0]["postprocessing"].get(k, 0.0) for k in MASK_FIELDS})
    assert single["postprocessing"]["record"]["applied_to"].startswith("fold all") and single["pretrained"]["source"].endswith("wmh_flair2d")
    assert single["temperature"] == checkpoints[0]["temperature"] and single["calibration"]["applied_to"].startswith("fold all")
    card = (model / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "which is what is installed" in card and "Installed: the network fine-tuned on every scan" in card
    assert f"fine-tuned (out of fold) {scores['models']['finetuned']['mean_dice']:.3f}" in card
    # the scan kept aside is segmented by the installed network, not read from the folds' masks
    holdout = json.loads((work / "holdout" / "holdout.json").read_text())
    predicted = read_image(work / "holdout" / "finetuned_all" / f"{kept}.nii.gz")
    assert np.isclose(holdout["models"]["finetuned"]["mean_dice"], case_metrics(reference, predicted.array > 0, predicted.geometry)["dice"])
    assert finetune_main([str(manifest), "-o", str(tmp_path / "m3"), "--ship", "all"]) == 2
    assert "'all' only with --folds" in capfd.readouterr().err


def test_a_fold_count_that_cannot_cross_validate_and_a_holdout_of_every_scan_are_refused(tmp_path, capfd):
    manifest = _site(tmp_path / "site", n=3, unlabelled=0)
    for extra, message in ((["--folds", "1"], "--folds must be 2 or more"),
                           (["--folds", "4"], "--folds 4 needs at least 4 labelled scans to train on, and there are 3"),
                           (["--folds", "3", "--holdout", "1"], "needs at least 3 labelled scans to train on, and there are 2"),
                           (["--holdout", "3"], "keeps every one of the 3 labelled scan(s) aside")):
        assert finetune_main([str(manifest), "-o", str(tmp_path / "m")] + extra) == 2
        assert message in capfd.readouterr().err
    assert not (tmp_path / "m").exists() and not (tmp_path / ".m.work").exists()


def test_corrected_lesion_id_maps_are_taken_as_masks(tmp_path, monkeypatch, capfd):
    """--lesion-id-masks: a reader's corrected CASE_lesionids (a false lesion cleared, a missed one painted with a new
    label) becomes the 0/1 mask of the fine-tuning set; a probability map given so is refused naming the file."""
    import numpy as np

    import deepwml.pretrained.site_finetune as site_finetune
    from deepwml.inference.lesion_ids import lesion_id_map

    folder = tmp_path / "site"
    rows = ["image,label"]
    expected = {}
    for k in range(2):
        case = input_case("CSVD#1", index=k, seed=91)
        ids = lesion_id_map(case.label > 0, 0).astype(np.int32)
        assert ids.max() >= 2
        ids[ids == 1] = 0  # the reader clears lesion 1
        ids[0, :3, :3] = 99  # and paints a lesion the model missed
        write_image(case.image, case.geometry, folder / f"s{k}.nii.gz")
        write_image(ids.astype(np.uint16), case.geometry, folder / f"s{k}_lesionids.nii.gz")
        expected[f"s{k}"] = (ids > 0).astype(np.uint8)
        rows.append(f"s{k}.nii.gz,s{k}_lesionids.nii.gz")
    (folder / "m.csv").write_text("\n".join(rows) + "\n")

    Stop = _stop_once_the_set_is_made(monkeypatch)
    work = tmp_path / "work"
    with pytest.raises(Stop):
        finetune_main([str(folder / "m.csv"), "-o", str(tmp_path / "model"), "--work", str(work), "--lesion-id-masks"])
    labels = sorted((work / "raw").glob("Dataset*/labelsTr/*.nii.gz"))
    assert len(labels) == 2
    for path in labels:
        written = read_image(path, dtype=None).array
        assert written.dtype == np.uint8 and np.array_equal(written, expected[path.name.split(".")[0]])

    # the model card says what the masks were
    from deepwml.datasets.manifest import read_manifest
    from deepwml.planning.plan import Plan
    from deepwml.pretrained import builtin_model_dir

    request = site_finetune.FinetuneRequest(manifest=folder / "m.csv", output=tmp_path / "model", lesion_id_masks=True)
    card = site_finetune._card(request, builtin_model_dir(), Plan.load(builtin_model_dir() / "plans.json"),
                               read_manifest(folder / "m.csv"), [tmp_path / "no_fold"])
    assert "masks: corrected lesion-id maps (--lesion-id-masks)" in card

    # a probability map is no lesion-id map
    write_image(expected["s0"] * np.float32(0.7), read_image(folder / "s0.nii.gz").geometry, folder / "s0_lesionids.nii.gz")
    assert finetune_main([str(folder / "m.csv"), "-o", str(tmp_path / "model2"), "--work", str(tmp_path / "w2"),
                          "--lesion-id-masks"]) == 2
    assert "s0_lesionids.nii.gz" in capfd.readouterr().err


def test_masks_in_the_wmh_challenge_format_need_ignore_label_which_keeps_value_2_out(tmp_path, monkeypatch, capfd):
    """Masks holding 2 (the WMH challenge's other pathology): refused without --ignore-label, naming the file; with
    --ignore-label 2 the fine-tuning set declares it its ignore value and keeps it as it is (training leaves it out);
    the model card says so; --ignore-label with --lesion-id-masks, or 0/1, is refused."""
    import json

    import numpy as np

    import deepwml.pretrained.site_finetune as site_finetune

    folder = tmp_path / "site"
    rows = ["image,label"]
    for k in range(2):
        case = input_case("CSVD#1", index=k, seed=91)
        mask = case.label.astype(np.uint8)
        mask[0, :4, :4] = 2
        write_image(case.image, case.geometry, folder / f"s{k}.nii.gz")
        write_image(mask, case.geometry, folder / f"s{k}_wmh.nii.gz")
        rows.append(f"s{k}.nii.gz,s{k}_wmh.nii.gz")
    (folder / "m.csv").write_text("\n".join(rows) + "\n")
    assert finetune_main([str(folder / "m.csv"), "-o", str(tmp_path / "m0"), "--work", str(tmp_path / "w0")]) == 2
    err = capfd.readouterr().err
    assert "s0_wmh.nii.gz" in err or "s1_wmh.nii.gz" in err, err
    assert "needs --ignore-label V" in err

    Stop = _stop_once_the_set_is_made(monkeypatch)
    work = tmp_path / "work"
    with pytest.raises(Stop):
        finetune_main([str(folder / "m.csv"), "-o", str(tmp_path / "model"), "--work", str(work), "--ignore-label", "2"])
    (raw,) = (work / "raw").glob("Dataset*")
    assert json.loads((raw / "dataset.json").read_text())["labels"]["ignore"] == 2
    written = read_image(raw / "labelsTr" / "s0.nii.gz", dtype=None).array
    assert (written[0, :4, :4] == 2).all() and set(np.unique(written)) <= {0, 1, 2}
    from deepwml.datasets.manifest import read_manifest
    from deepwml.planning.plan import Plan
    from deepwml.pretrained import builtin_model_dir

    request = site_finetune.FinetuneRequest(manifest=folder / "m.csv", output=tmp_path / "model", ignore_label=2)
    card = site_finetune._card(request, builtin_model_dir(), Plan.load(builtin_model_dir() / "plans.json"),
                               read_manifest(folder / "m.csv"), [tmp_path / "no_fold"])
    assert "mask value 2 left out of training and scores (--ignore-label)" in card
    for extra in (["--ignore-label", "2", "--lesion-id-masks"], ["--ignore-label", "1"]):
        with pytest.raises(SystemExit):
            finetune_main([str(folder / "m.csv"), "-o", str(tmp_path / "m1"), *extra])
        assert "--ignore-label" in capfd.readouterr().err


def test_masks_saved_as_0_255_or_interpolated_are_refused_with_what_to_do_and_0_255_taken_with_lesion_id_masks(
        tmp_path, monkeypatch, capfd):
    """A 0/255 mask (8-bit exports) and a mask with fractions (resampled with a linear interpolator) are refused,
    naming the manifest's mask and saying what to give instead; the 0/255 mask with --lesion-id-masks becomes 0/1."""
    import numpy as np

    folder = tmp_path / "site"
    case = input_case("CSVD#1", index=0, seed=92)
    write_image(case.image, case.geometry, folder / "s0.nii.gz")
    lesion = case.label > 0
    write_image(lesion.astype(np.uint8) * 255, case.geometry, folder / "s0_255.nii.gz")
    write_image(lesion.astype(np.float32) * 0.98, case.geometry, folder / "s0_linear.nii.gz")
    for mask, hint in (("s0_255.nii.gz", "if every value above 0 is lesion (a 0/255 mask"),
                       ("s0_linear.nii.gz", "threshold it at 0.5, or resample it with nearest neighbour")):
        (folder / "m.csv").write_text(f"image,label\ns0.nii.gz,{mask}\n")
        assert finetune_main([str(folder / "m.csv"), "-o", str(tmp_path / "m"), "--work", str(tmp_path / mask)]) == 2
        err = capfd.readouterr().err
        assert f"the masks: s0: {folder / mask}" in err and hint in err, err
    (folder / "m.csv").write_text("image,label\ns0.nii.gz,s0_255.nii.gz\n")
    Stop = _stop_once_the_set_is_made(monkeypatch)
    with pytest.raises(Stop):
        finetune_main([str(folder / "m.csv"), "-o", str(tmp_path / "m"), "--work", str(tmp_path / "w"), "--lesion-id-masks"])
    (written,) = (tmp_path / "w" / "raw").glob("Dataset*/labelsTr/s0.nii.gz")
    assert np.array_equal(read_image(written, dtype=None).array, lesion.astype(np.uint8))


def test_scores_on_scans_kept_aside_leave_the_ignore_value_out(tmp_path):
    """score_holdout with an ignore value: a bright blob marked 2 that the model outlines costs nothing, as in the
    WMH challenge's evaluator; taken as background it would be a false lesion."""
    import numpy as np

    from deepwml.imageio import Geometry
    from deepwml.pretrained.finetune_holdout import score_holdout
    from deepwml_testing.toy_models import tiny_plan, write_model_dir

    model = write_model_dir(tmp_path / "results" / "Dataset998_Toy" / "tiny", tiny_plan(matrix=64), kind="threshold")
    raw = tmp_path / "raw"
    geometry = Geometry((64, 64, 6), (0.9, 0.9, 6.5), (0.0, 0.0, 0.0))
    zz, yy, xx = np.mgrid[:6, :64, :64]
    head = (yy - 32) ** 2 + (xx - 32) ** 2 < 28**2
    lesion = ((yy - 24) ** 2 + (xx - 34) ** 2 < 20) & (zz >= 2) & (zz < 5)
    blob = ((yy - 42) ** 2 + (xx - 24) ** 2 < 30) & (zz >= 1) & (zz < 4)
    rng = np.random.default_rng(0)
    image = np.where(head, 100.0, 0.0) + 150.0 * (lesion | blob) + rng.normal(0, 5, head.shape) * head
    write_image(image.astype(np.float32), geometry, raw / "imagesTs" / "c1.nii.gz")
    write_image((lesion + 2 * blob).astype(np.uint8), geometry, raw / "labelsTs" / "c1.nii.gz")
    from deepwml.evaluation.case_metrics import case_metrics

    kept = score_holdout(tmp_path / "w1", raw, ".nii.gz", ["c1"], {"start": (model, None, "best")}, "cpu", ignore_label=2)
    predicted = read_image(tmp_path / "w1" / "holdout" / "start" / "c1.nii.gz").array > 0
    assert (predicted & blob).sum() > 0.8 * blob.sum()  # the model outlines the blob
    dice = kept["models"]["start"]["mean_dice"]
    assert np.isclose(dice, case_metrics(lesion, predicted & ~blob, geometry)["dice"])
    assert dice > 0.7 > case_metrics(lesion, predicted, geometry)["dice"]  # the blob as background: a false lesion


def _model_copy(folder: Path, fold: str, tta) -> Path:
    """The shipped lesion model copied to ``folder`` with its one fold named ``fold``, its stored postprocessing
    replaced by one with ``tta`` (None: none stored)."""
    import shutil

    from deepwml.calibration.fit import store_in_checkpoints
    from deepwml.inference.model_loading import check_model
    from deepwml.inference.postprocessing import POSTPROCESSING, MaskSettings
    from deepwml.pretrained import builtin_model_dir

    shutil.copytree(builtin_model_dir(), folder)
    (folder / "manifest.json").unlink()
    (folder / "fold_0").rename(folder / f"fold_{fold}")
    spec = check_model(folder, [fold], "latest")
    store_in_checkpoints(spec, {POSTPROCESSING: None if tta is None else MaskSettings(0.4, 0.01, 0.6, tta).as_record()})
    return folder


@pytest.mark.parametrize("start_tta", [True, False, None])
def test_the_fine_tuned_model_takes_the_start_models_flip_tta_and_nothing_else_it_stored(tmp_path, start_tta):
    from deepwml.inference.model_loading import check_model, load_fold_states
    from deepwml.inference.postprocessing import MaskSettings
    from deepwml.pretrained.site_finetune import carry_flip_tta

    start = _model_copy(tmp_path / "start", "0", start_tta)
    tuned = _model_copy(tmp_path / "tuned", "all", None)
    assert carry_flip_tta(start, tuned) is bool(start_tta)
    spec = check_model(tuned, ["all"], "latest")
    load_fold_states(spec)
    # the start's threshold 0.4 and lesion filters were fitted to its own probabilities: the plan's 0.5, no filter
    assert spec.stored_postprocessing() == (MaskSettings(0.5, tta=True) if start_tta else None)
    stamp = spec.checkpoints[0].stat().st_mtime_ns
    assert carry_flip_tta(start, tuned) is bool(start_tta)  # a resumed run: nothing written again
    assert spec.checkpoints[0].stat().st_mtime_ns == stamp


def test_the_cross_validation_lines_say_what_was_measured_and_whether_fine_tuning_helped(tmp_path):
    from deepwml.pretrained.finetune_crossval import card_lines, fold_validation
    from deepwml.utils.errors import DeepWMLError

    scores = {"cases": ["a", "b", "c", "d"], "folds": {"0": ["a", "b"], "1": ["c", "d"]},
              "models": {"finetuned": {"mean_dice": 0.70, "mean_lesion_f1": 0.61, "per_case": {}},
                         "start": {"mean_dice": 0.72, "mean_lesion_f1": 0.66, "per_case": {}}}}
    lines = "\n".join(card_lines(scores))
    assert "Cross-validated on all 4 scans it was tuned on (2 folds" in lines and "fine-tuned (out of fold) 0.700 / 0.610" in lines
    assert "did not raise the mean Dice on these scans (-0.020): the model it started from may serve this site" in lines
    scores["models"]["finetuned"]["mean_dice"] = 0.75
    chosen = {"threshold": 0.4, "min_lesion_ml": 0.0, "min_lesion_peak": 0.0, "tta": True, "min_lesion_contrast": 1.1,
              "record": {"before": {"dice": 0.75, "lesion_f1": 0.61}, "after": {"dice": 0.77, "lesion_f1": 0.68}}}
    lines = "\n".join(card_lines(scores, chosen))
    assert "raised the mean Dice on these scans by 0.030" in lines
    assert "threshold 0.4" in lines and "case mean Dice 0.750 -> 0.770, lesion F1 0.610 -> 0.680" in lines and "optimistic" in lines
    kept = dict(chosen, threshold=0.5, min_lesion_contrast=0.0, record={"before": chosen["record"]["before"],
                                                                         "after": chosen["record"]["before"]})
    assert "no threshold or lesion filter beat the plan's, kept: left-right flip TTA, threshold 0.5" in "\n".join(card_lines(scores, kept))
    assert "by centre" not in lines
    # scans of several centres: both models per centre, as issue #12's bar is judged per site
    scores["models"]["finetuned"]["per_case"] = {"a": {"dice": 0.8, "lesion_f1": 0.7, "centre": "svd"},
                                                 "b": {"dice": 0.6, "lesion_f1": 0.5, "centre": "svd"},
                                                 "c": {"dice": 0.5, "lesion_f1": 0.4, "centre": "ms"}}
    scores["models"]["start"]["per_case"] = {"a": {"dice": 0.7, "lesion_f1": 0.6, "centre": "svd"},
                                             "b": {"dice": 0.5, "lesion_f1": 0.6, "centre": "svd"},
                                             "c": {"dice": 0.45, "lesion_f1": 0.2, "centre": "ms"}}
    lines = card_lines(scores)
    assert "    ms (1 scans): 0.500 / 0.400 against 0.450 / 0.200" in lines
    assert "    svd (2 scans): 0.700 / 0.600 against 0.600 / 0.600" in lines
    # the folds are the dataset's splits; splits of another fold count are refused, naming the file
    (tmp_path / "splits.json").write_text('{"test": [], "folds": [{"train": ["c", "d"], "val": ["b", "a"]}, '
                                          '{"train": ["a", "b"], "val": ["d", "c"]}]}')
    assert fold_validation(tmp_path / "splits.json", 2) == {"0": ["a", "b"], "1": ["c", "d"]}
    with pytest.raises(DeepWMLError, match="holds 2 folds, not the 3 of --folds"):
        fold_validation(tmp_path / "splits.json", 3)


def test_a_folder_of_scans_and_a_folder_of_their_corrected_masks_make_the_set(tmp_path, monkeypatch, capfd):
    """deepwml_finetune SCANS --masks CORRECTED (the masks named by case id, as deepwml_predict --lesion-masks reads a
    reader's corrections): the scans with a mask make the set, the one without is named in a note; a plain folder
    without --masks, or with BIDS-only options, is refused with the reason."""
    import numpy as np

    from conftest import tiny_case

    scans, masks = tmp_path / "scans", tmp_path / "corrected"
    labels = []
    for k in range(3):
        image, label, geometry = tiny_case(seed=k + 1)
        write_image(image.astype(np.float32), geometry, scans / f"s{k}.nii.gz")
        labels.append(label)
        if k < 2:
            write_image(label, geometry, masks / f"s{k}{('.nii.gz', '.mha')[k]}")
    assert finetune_main([str(scans), "-o", str(tmp_path / "m0")]) == 2
    assert "a folder of scans needs --masks" in capfd.readouterr().err
    assert finetune_main([str(scans), "--masks", str(masks), "--participant-label", "01", "-o", str(tmp_path / "m0")]) == 2
    assert "--participant-label apply to BIDS datasets only" in capfd.readouterr().err
    Stop = _stop_once_the_set_is_made(monkeypatch)
    work = tmp_path / "work"
    with pytest.raises(Stop):
        finetune_main([str(scans), "--masks", str(masks), "-o", str(tmp_path / "model"), "--work", str(work)])
    assert "1 scan(s) without a mask in" in capfd.readouterr().err
    (raw,) = (work / "raw").glob("Dataset*")
    written = sorted(p.name for p in (raw / "labelsTr").iterdir())
    assert written == ["s0.nii.gz", "s1.nii.gz"]
    for k in range(2):
        assert np.array_equal(read_image(raw / "labelsTr" / f"s{k}.nii.gz", dtype=None).array > 0, labels[k] > 0)
