"""deepwml_bids: a BIDS dataset's T2-FLAIR scans in, a BIDS-derivatives dataset and a cohort table out."""
from __future__ import annotations

import html
import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import tiny_case
from deepwml.anatomy.location import SPLIT_COLUMNS
from deepwml.bids.group import SPLIT_CHANGE_COLUMNS
from deepwml.cli.bids_app import main as bids_main
from deepwml.cli.predict import main as predict_main
from deepwml.imageio import read_image, write_image

#: (participant, session, seed); sub-03 has no session folder
SCANS = (("01", "1", 0), ("01", "2", 1), ("02", "1", 2))


def make_bids(root: Path) -> Path:
    """A small BIDS dataset: FLAIRs (and a T1w beside each) of two participants with sessions and participants.tsv
    / sessions.tsv."""
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "Clinic", "BIDSVersion": "1.9.0"}))
    (root / "participants.tsv").write_text("participant_id\tage\tsex\nsub-01\t61\tF\nsub-02\tn/a\tM\n")
    (root / "sub-01").mkdir()
    (root / "sub-01" / "sub-01_sessions.tsv").write_text("session_id\tacq_time\nses-1\t2020-01-01T10:00:00\nses-2\t2021-03-01T10:00:00\n")
    for sub, ses, seed in SCANS:
        image, _, geometry = tiny_case(seed=seed)
        folder = root / f"sub-{sub}" / f"ses-{ses}" / "anat"
        write_image(image, geometry, folder / f"sub-{sub}_ses-{ses}_FLAIR.nii.gz")
        write_image(image[::-1].copy(), geometry, folder / f"sub-{sub}_ses-{ses}_T1w.nii.gz")
    return root


@pytest.fixture(scope="module")
def derived(tmp_path_factory):
    """The dataset and its derivatives after one participant-level run with the shipped model."""
    tmp = tmp_path_factory.mktemp("bids")
    root = make_bids(tmp / "clinic")
    out = root / "derivatives" / "deepwml"
    assert bids_main([str(root), str(out), "participant", "--save-probabilities", "--save-anatomy", "--save-lesion-ids", "--device", "cpu"]) == 0
    return root, out


def test_every_flair_is_segmented_into_a_bids_derivatives_tree_as_deepwml_predict_segments_it(derived, tmp_path):
    root, out = derived
    anat = out / "sub-01" / "ses-2" / "anat"
    mask = anat / "sub-01_ses-2_desc-wmh_mask.nii.gz"
    for path in (mask, anat / "sub-01_ses-2_desc-wmh_mask.json", anat / "sub-01_ses-2_desc-wmh_lesions.tsv",
                 anat / "sub-01_ses-2_label-WMH_probseg.nii.gz", out / "sub-01" / "figures" / "sub-01_ses-2_desc-wmh_FLAIR.png",
                 out / "sub-02" / "ses-1" / "anat" / "sub-02_ses-1_desc-wmh_mask.nii.gz"):
        assert path.is_file(), path
    # only the FLAIRs: three masks, none for the T1w beside them
    assert len(list(out.glob("sub-*/ses-*/anat/*_desc-wmh_mask.nii.gz"))) == 3
    assert not list(out.glob("**/*T1w*"))
    # the same mask, lesion table and figures as deepwml_predict gives for the file itself
    flair = root / "sub-01" / "ses-2" / "anat" / "sub-01_ses-2_FLAIR.nii.gz"
    alone = tmp_path / "alone"
    assert predict_main(["-i", str(flair), "-o", str(alone), "--device", "cpu"]) == 0
    assert np.array_equal(read_image(mask).array, read_image(alone / "sub-01_ses-2_FLAIR.nii.gz").array)
    ours = pd.read_csv(anat / "sub-01_ses-2_desc-wmh_lesions.tsv", sep="\t", na_values=["n/a"])
    theirs = pd.read_csv(alone / "sub-01_ses-2_FLAIR_lesions.csv")
    pd.testing.assert_frame_equal(ours, theirs, check_dtype=False)
    sidecar = json.loads((anat / "sub-01_ses-2_desc-wmh_mask.json").read_text())
    assert sidecar["Type"] == "Lesion" and sidecar["Sources"] == ["bids:raw:sub-01/ses-2/anat/sub-01_ses-2_FLAIR.nii.gz"]
    row = pd.read_csv(alone / "summary.csv").iloc[0]
    assert sidecar["DeepWML"]["summary"]["lesion_count"] == row["lesion_count"]
    assert sidecar["DeepWML"]["summary"]["total_lesion_volume_ml"] == pytest.approx(row["total_lesion_volume_ml"])
    assert sidecar["LesionProbabilityThreshold"] == _shipped_threshold()
    # a derivatives dataset that points back at its raw dataset, and says what made it
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative" and description["GeneratedBy"][0]["Name"] == "DeepWML"
    assert "shipped with DeepWML" in description["GeneratedBy"][0]["Description"]
    assert (out / description["DatasetLinks"]["raw"]).resolve() == root.resolve()
    columns = json.loads((out / "desc-wmh_lesions.json").read_text())
    assert set(ours.columns) <= set(columns)
    # the anatomy map's values are named in the dataset's look-up table, as BIDS asks of a dseg
    anatomy = read_image(anat / "sub-01_ses-2_desc-anatomy_dseg.nii.gz").array
    lookup = pd.read_csv(out / "desc-anatomy_dseg.tsv", sep="\t")
    assert set(np.unique(anatomy)) <= set(lookup["index"]) and "ventricle" in set(lookup["name"])
    # each lesion under its id, the ids named in the file's own look-up table (they differ from scan to scan)
    ids = read_image(anat / "sub-01_ses-2_desc-lesionids_dseg.nii.gz", dtype=None).array
    named = pd.read_csv(anat / "sub-01_ses-2_desc-lesionids_dseg.tsv", sep="\t")
    assert list(named["index"]) == list(ours["lesion_id"]) and len(named) > 0
    assert named["name"].iloc[0].startswith(f"lesion 1: {ours['volume_ml'].iloc[0]:.3f} ml")
    assert set(np.unique(ids)) == {0, *ours["lesion_id"]} and np.array_equal(ids > 0, read_image(mask).array > 0)
    # the derivatives share their data with the kept prediction (hard links), so they cost no extra disk
    kept = out / ".deepwml_bids" / "predict" / "sub-01_ses-2_desc-wmh_mask.nii.gz"
    assert os.path.samefile(kept, mask)


def test_a_second_run_predicts_nothing_and_restores_a_deleted_file(derived, capsys):
    root, out = derived
    mask = out / "sub-02" / "ses-1" / "anat" / "sub-02_ses-1_desc-wmh_mask.nii.gz"
    stamp = mask.stat().st_mtime_ns
    (out / "sub-01" / "figures" / "sub-01_ses-1_desc-wmh_FLAIR.png").unlink()
    capsys.readouterr()
    assert bids_main([str(root), str(out), "participant", "--save-probabilities", "--save-anatomy", "--save-lesion-ids", "--device", "cpu"]) == 0
    assert "0 predicted now, 3 in the derivatives dataset" in capsys.readouterr().out
    assert mask.stat().st_mtime_ns == stamp
    assert (out / "sub-01" / "figures" / "sub-01_ses-1_desc-wmh_FLAIR.png").is_file()


def test_the_group_table_joins_participants_and_sessions(derived, capsys):
    root, out = derived
    assert bids_main([str(root), str(out), "group"]) == 0
    table = pd.read_csv(out / "wmh_summary.tsv", sep="\t", dtype=str, keep_default_na=False)
    assert list(table["participant_id"]) == ["sub-01", "sub-01", "sub-02"]
    assert list(table["session_id"]) == ["ses-1", "ses-2", "ses-1"]
    assert list(table["age"]) == ["61", "61", "n/a"] and list(table["sex"]) == ["F", "F", "M"]
    assert list(table["acq_time"]) == ["2020-01-01T10:00:00", "2021-03-01T10:00:00", "n/a"]
    assert table["source"].iloc[2] == "sub-02/ses-1/anat/sub-02_ses-1_FLAIR.nii.gz"
    for _, row in table.iterrows():
        anat = out / Path(row["source"]).parent
        sidecar = json.loads(next(anat.glob("*_desc-wmh_mask.json")).read_text())
        assert float(row["total_lesion_volume_ml"]) == pytest.approx(sidecar["DeepWML"]["summary"]["total_lesion_volume_ml"])
        lesions = pd.read_csv(next(anat.glob("*_desc-wmh_lesions.tsv")), sep="\t")
        assert int(row["lesion_count"]) == len(lesions)
    assert "lesion_area_mm2_per_slice" not in table
    described = json.loads((out / "wmh_summary.json").read_text())
    assert described["total_lesion_volume_ml"]["Units"] == "ml"
    # the anatomy map's figures are there and described: counts and volumes per location, the 10 mm split
    for column in ("deep_count", "deep_volume_ml", "volume_within_10mm_of_ventricles_ml", "volume_beyond_10mm_of_ventricles_ml"):
        assert column in table and column in described, column
    assert described["volume_beyond_10mm_of_ventricles_ml"]["Units"] == "ml"
    # volumes by a participants.tsv column on the cohort page; a column that does not exist is named
    assert bids_main([str(root), str(out), "group", "--group-by", "sex"]) == 0
    capsys.readouterr()
    stamp = (out / "wmh_summary.tsv").stat().st_mtime_ns
    assert bids_main([str(root), str(out), "group", "--group-by", "diagnosis"]) == 2
    assert (out / "wmh_summary.tsv").stat().st_mtime_ns == stamp  # refused before anything was written
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--group-by 'diagnosis' is not a column of participants.tsv" in err[0] and "sex" in err[0]
    # --participant-label limits the group level too
    assert bids_main([str(root), str(out), "group", "--participant-label", "02"]) == 0
    assert list(pd.read_csv(out / "wmh_summary.tsv", sep="\t")["participant_id"]) == ["sub-02"]


def test_participants_and_sessions_are_chosen_by_label(tmp_path, capsys):
    root = make_bids(tmp_path / "clinic")
    out = tmp_path / "deriv"
    assert bids_main([str(root), str(out), "participant", "--participant_label", "sub-01", "--session-label", "2",
                      "--no-anatomy", "--device", "cpu"]) == 0
    assert [p.name for p in out.glob("sub-*/ses-*/anat/*_mask.nii.gz")] == ["sub-01_ses-2_desc-wmh_mask.nii.gz"]
    assert "1 T2-FLAIR scan(s) of 1 participant(s)" in capsys.readouterr().out
    assert bids_main([str(root), str(out), "participant", "--participant-label", "07", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "no participant sub-07" in err and "01, 02" in err and len(err.strip().splitlines()) == 1


def _shipped_threshold() -> float:
    """The mask threshold the shipped model's stored postprocessing sets (what a run without --threshold uses)."""
    from deepwml.inference.model_loading import check_model, load_fold_states
    from deepwml.pretrained import builtin_model_dir

    spec = check_model(builtin_model_dir(), None, "latest")
    load_fold_states(spec)
    return spec.stored_postprocessing().threshold


def test_another_threshold_is_refused_and_mixed_settings_never_reach_the_table(tmp_path, capsys):
    root = make_bids(tmp_path / "clinic")
    out = tmp_path / "deriv"
    base = [str(root), str(out), "participant", "--no-anatomy", "--no-bf16", "--device", "cpu"]
    assert bids_main(base) == 0
    capsys.readouterr()
    assert bids_main(base + ["--threshold", "0.7"]) == 2
    err = capsys.readouterr().err
    assert f"{out}: " in err and f"threshold {_shipped_threshold():g} -> 0.7" in err and "output_dir" in err and ".deepwml_bids" not in err
    # --overwrite for one participant leaves the other's masks at the old threshold: said at once, refused by the group
    assert bids_main(base + ["--threshold", "0.7", "--overwrite", "--participant-label", "01"]) == 0
    assert "mixes scans segmented with different settings" in capsys.readouterr().err
    assert bids_main([str(root), str(out), "group"]) == 2
    err = capsys.readouterr().err
    assert "threshold 0.7" in err and f"threshold {_shipped_threshold():g}" in err and not (out / "wmh_summary.tsv").exists()
    # the participants redone alike make a table of their own
    assert bids_main([str(root), str(out), "group", "--participant-label", "01"]) == 0
    assert set(pd.read_csv(out / "wmh_summary.tsv", sep="\t")["participant_id"]) == {"sub-01"}


def test_a_scan_that_cannot_be_read_fails_alone(tmp_path, capsys):
    root = make_bids(tmp_path / "clinic")
    bad = root / "sub-02" / "ses-1" / "anat" / "sub-02_ses-1_FLAIR.nii.gz"
    bad.write_bytes(bad.read_bytes()[:300])
    out = tmp_path / "deriv"
    assert bids_main([str(root), str(out), "participant", "--no-anatomy", "--device", "cpu"]) == 1
    captured = capsys.readouterr()
    assert "sub-02/ses-1/anat/sub-02_ses-1_FLAIR.nii.gz:" in captured.err
    assert "2 in the derivatives dataset, 1 failed" in captured.out
    assert not (out / "sub-02").exists() and len(list(out.glob("sub-01/ses-*/anat/*_desc-wmh_mask.json"))) == 2


@pytest.mark.parametrize("problem, message", [
    ("no_description", "is not a BIDS dataset: it holds no dataset_description.json"),
    ("no_flair", "holds no T2-FLAIR"),
    ("output_is_dataset", "output folder is the BIDS dataset itself"),
    ("foreign_derivative", "holds another dataset's dataset_description.json"),
    ("group_first", "run the participant level first"),
    ("bad_label", "not a BIDS label"),
])
def test_user_errors_are_one_line_naming_the_folder(tmp_path, capsys, problem, message):
    root = make_bids(tmp_path / "clinic")
    out = tmp_path / "deriv"
    level = "participant"
    extra = []
    if problem == "no_description":
        (root / "dataset_description.json").unlink()
    elif problem == "no_flair":
        for f in root.glob("sub-*/ses-*/anat/*_FLAIR.nii.gz"):
            f.unlink()
    elif problem == "output_is_dataset":
        out = root
    elif problem == "foreign_derivative":
        out.mkdir()
        (out / "dataset_description.json").write_text(json.dumps({"Name": "fmriprep", "GeneratedBy": [{"Name": "fMRIPrep"}]}))
    elif problem == "group_first":
        level = "group"
    elif problem == "bad_label":
        extra = ["--participant-label", "sub-0_1"]
    assert bids_main([str(root), str(out), level, "--device", "cpu", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    if problem == "foreign_derivative":
        assert sorted(p.name for p in out.iterdir()) == ["dataset_description.json"]


def test_a_flair_named_for_another_session_is_skipped_with_a_note(tmp_path, capsys):
    from deepwml.bids.layout import find_flair_scans

    root = make_bids(tmp_path / "clinic")
    anat = root / "sub-02" / "ses-1" / "anat"
    (anat / "sub-02_ses-1_FLAIR.nii.gz").rename(anat / "sub-02_ses-3_FLAIR.nii.gz")
    image, _, geometry = tiny_case()
    write_image(image, geometry, root / "sub-03" / "anat" / "sub-03_acq-tse_run-2_FLAIR.nii")
    scans = find_flair_scans(root)
    assert [s.relative for s in scans] == ["sub-01/ses-1/anat/sub-01_ses-1_FLAIR.nii.gz", "sub-01/ses-2/anat/sub-01_ses-2_FLAIR.nii.gz",
                                           "sub-03/anat/sub-03_acq-tse_run-2_FLAIR.nii"]
    assert "skipped sub-02/ses-1/anat/sub-02_ses-3_FLAIR.nii.gz: its name does not match its folder" in capsys.readouterr().err
    # a dataset without sessions, an uncompressed NIfTI and extra entities keep their names
    assert scans[2].session is None and scans[2].prefix == "sub-03_acq-tse_run-2" and scans[2].ending == ".nii"


def test_longitudinal_compares_each_session_with_the_one_acquired_before(tmp_path, capsys):
    from deepwml.cli.compare import main as compare_main
    from test_longitudinal import two_visits

    visits, _, _, _ = two_visits(tmp_path)
    root = tmp_path / "cohort"
    root.mkdir()
    (root / "dataset_description.json").write_text(json.dumps({"Name": "Cohort", "BIDSVersion": "1.9.0"}))
    # the labels sort the other way round from the acquisition times: the times decide
    for session, visit in (("b", "baseline"), ("a", "followup")):
        folder = root / "sub-01" / f"ses-{session}" / "anat"
        folder.mkdir(parents=True)
        (folder / f"sub-01_ses-{session}_FLAIR.nii.gz").write_bytes(visits[visit].read_bytes())
    (root / "sub-01" / "sub-01_sessions.tsv").write_text("session_id\tacq_time\nses-a\t2021-03-02\nses-b\t2020-03-01\n")
    # a scan of its own kind (acq-tse) in one session only, and a participant seen once: nothing to compare them with
    (root / "sub-01" / "ses-a" / "anat" / "sub-01_ses-a_acq-tse_FLAIR.nii.gz").write_bytes(visits["baseline"].read_bytes())
    (root / "sub-02" / "ses-a" / "anat").mkdir(parents=True)
    (root / "sub-02" / "ses-a" / "anat" / "sub-02_ses-a_FLAIR.nii.gz").write_bytes(visits["baseline"].read_bytes())
    out = tmp_path / "deriv"
    args = [str(root), str(out), "participant", "--longitudinal", "--device", "cpu"]
    assert bids_main(args) == 0
    printed = capsys.readouterr().out
    assert [p.name for p in out.glob("sub-*/longitudinal/*")] == ["sesb_to_sesa"]
    folder = out / "sub-01" / "longitudinal" / "sesb_to_sesa"
    record = json.loads((folder / "visits.json").read_text())
    assert record["ordered_by"] == "acq_time" and record["interval_days"] == 366 and record["compared_with"] == "previous"
    assert record["baseline_source"] == "sub-01/ses-b/anat/sub-01_ses-b_FLAIR.nii.gz"
    change = json.loads((folder / "change.json").read_text())
    assert f"sub-01 ses-b -> ses-a: {change['findings']}" in printed
    # the comparison deepwml_compare makes of the two scans and their published masks
    anat = {s: out / "sub-01" / f"ses-{s}" / "anat" / f"sub-01_ses-{s}_desc-wmh_mask.nii.gz" for s in "ab"}
    by_hand = tmp_path / "by_hand"
    assert compare_main(["-b", str(visits["baseline"]), "-f", str(visits["followup"]), "-o", str(by_hand),
                         "--baseline-mask", str(anat["b"]), "--followup-mask", str(anat["a"]), "--no-picture"]) == 0
    expected = json.loads((by_hand / "change.json").read_text())
    counts = ("new_lesions", "enlarging_lesions", "resolved_baseline_lesions", "baseline_volume_ml", "followup_volume_ml")
    assert {k: change[k] for k in counts} == {k: expected[k] for k in counts}
    assert change["new_lesions"] >= 1  # the follow-up's inserted lesion
    # the new lesions are located from the published lesion table
    assert "location" in pd.read_csv(folder / "followup_lesions_change.csv")
    # each visit's 10 mm split as its published sidecar gives it (the masks alone, by hand, carry none)
    for session, visit in (("b", "baseline"), ("a", "followup")):
        summary = json.loads(anat[session].with_name(anat[session].name.replace(".nii.gz", ".json")).read_text())["DeepWML"]["summary"]
        for column in SPLIT_COLUMNS:
            assert change[f"{visit}_{column}"] == pytest.approx(summary[column], abs=1e-4)
    assert "within 10 mm of the ventricles" in change["findings"]
    assert not any(f"baseline_{column}" in expected for column in SPLIT_COLUMNS)
    # a second run compares nothing again
    stamp = (folder / "change.json").stat().st_mtime_ns
    assert bids_main(args) == 0
    assert (folder / "change.json").stat().st_mtime_ns == stamp
    # the group level tabulates the comparison
    capsys.readouterr()
    assert bids_main([str(root), str(out), "group"]) == 0
    assert "wmh_change.tsv" in capsys.readouterr().out
    table = pd.read_csv(out / "wmh_change.tsv", sep="\t")
    # the cohort page: volumes and the change drawn, the comparison listed, scans linked to their QC pictures
    page = (out / "wmh_report.html").read_text()
    assert page.count("<img") == 2 and "Over time" in page and html.escape(change["findings"]) in page
    links = re.findall(r'<a href="([^"]+)">', page)
    assert len(set(links)) == 4 and all((out / link).is_file() for link in links)  # each of the 4 scans
    assert len(table) == 1 and table.loc[0, "baseline_session"] == "ses-b" and table.loc[0, "followup_session"] == "ses-a"
    assert table.loc[0, "compared_with"] == "previous"
    assert table.loc[0, "new_lesions"] == change["new_lesions"] and table.loc[0, "findings"] == change["findings"]
    for column in SPLIT_CHANGE_COLUMNS:
        assert table.loc[0, column] == pytest.approx(change[column])
    # asked for against the first session too, the one comparison serves both and is not made again
    assert bids_main(args[:4] + ["both"] + args[4:]) == 0
    assert (folder / "change.json").stat().st_mtime_ns == stamp
    assert json.loads((folder / "visits.json").read_text())["compared_with"] == "previous and first"
    # without acquisition times the labels order the sessions
    (root / "sub-01" / "sub-01_sessions.tsv").unlink()
    assert bids_main(args + ["--overwrite"]) == 0
    assert json.loads((out / "sub-01" / "longitudinal" / "sesa_to_sesb" / "visits.json").read_text())["ordered_by"] == "label"


def test_sessions_are_ordered_by_time_else_naturally_by_label_and_compared_with_the_previous_or_first():
    from datetime import datetime

    from deepwml.bids.layout import BidsScan
    from deepwml.bids.longitudinal import Visit, session_pairs

    def visit(session, when=None, acq=""):
        stem = f"sub-1_ses-{session}{acq}_FLAIR"
        scan = BidsScan(Path(stem), f"sub-1/ses-{session}/anat/{stem}.nii.gz", "1", session, stem, ".nii.gz")
        return Visit(scan, Path("m"), None, datetime.fromisoformat(when) if when else None)

    labels = [visit(s) for s in ("10", "2", "1")]
    assert [(a.scan.session, b.scan.session, how) for a, b, how, _ in session_pairs(labels)] == [("1", "2", "label"), ("2", "10", "label")]
    timed = [visit("10", "2020-01-01"), visit("2", "2022-01-01"), visit("1", "2021-01-01")]
    assert [(a.scan.session, b.scan.session) for a, b, _, _ in session_pairs(timed)] == [("10", "1"), ("1", "2")]
    # against the first session; or both, the second session's one comparison serving both
    assert [(a.scan.session, b.scan.session) for a, b, _, _ in session_pairs(timed, "first")] == [("10", "1"), ("10", "2")]
    assert [(a.scan.session, b.scan.session, kind) for a, b, _, kind in session_pairs(timed, "both")] == [
        ("10", "1", "previous and first"), ("1", "2", "previous"), ("10", "2", "first")]
    # one session without a time: the labels decide for the whole chain; other acquisitions are chains of their own
    mixed = [visit("2", "2020-01-01"), visit("1"), visit("1", acq="_acq-tse"), visit("3", acq="_acq-tse")]
    assert [(a.scan.stem, b.scan.stem) for a, b, _, _ in session_pairs(mixed)] == [
        ("sub-1_ses-1_FLAIR", "sub-1_ses-2_FLAIR"), ("sub-1_ses-1_acq-tse_FLAIR", "sub-1_ses-3_acq-tse_FLAIR")]


def test_the_benchmark_times_both_ways_and_refuses_a_work_folder_in_the_repository(tmp_path, capsys):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import bids_app

    with pytest.raises(SystemExit):
        bids_app.main(["--work", str(Path(__file__).resolve().parent / "scratch")])
    assert "outside the repository" in capsys.readouterr().err
    assert bids_app.main(["--work", str(tmp_path / "w"), "--participants", "1", "--slices", "6", "--runs", "1"]) == 0
    printed = capsys.readouterr().out
    assert "2 FLAIRs (1 participants x 2 sessions)" in printed and "participant level / deepwml_predict" in printed
    assert (tmp_path / "w" / "derivatives" / "sub-01" / "longitudinal" / "ses1_to_ses2" / "change.json").is_file()


def test_participants_run_side_by_side_and_a_later_run_keeps_their_figures(tmp_path):
    """Array jobs: one run per participant at the same time on one derivatives folder, then a run over all."""
    import subprocess
    import sys

    root = make_bids(tmp_path / "clinic")
    out = tmp_path / "deriv"
    command = [sys.executable, "-m", "deepwml.cli.bids_app", str(root), str(out), "participant", "--device", "cpu", "-np", "1"]
    jobs = [subprocess.Popen(command + ["--participant-label", label], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for label in ("01", "02")]
    results = [job.communicate(timeout=600) + (job.returncode,) for job in jobs]
    assert all(code == 0 for _, _, code in results), results
    sidecars = sorted(out.glob("sub-*/ses-*/anat/*_desc-wmh_mask.json"))
    assert len(sidecars) == 3
    before = {p: p.read_text() for p in sidecars}
    assert all("fazekas_periventricular" in text for text in before.values())
    assert not list((out / ".deepwml_bids").glob("input*"))  # each run removed its own input folder
    # and both runs' anatomy figures are in the prediction folder's one record of them
    record = json.loads((out / ".deepwml_bids" / "predict" / ".deepwml_anatomy_rows.json").read_text())
    assert sorted(record) == ["sub-01_ses-1_FLAIR", "sub-01_ses-2_FLAIR", "sub-02_ses-1_FLAIR"]
    # a run over every participant predicts nothing and leaves every figure as it was
    assert bids_main([str(root), str(out), "participant", "--device", "cpu"]) == 0
    assert {p: p.read_text() for p in sidecars} == before


def test_a_bids_dataset_with_manual_masks_becomes_a_manifest_for_fine_tuning_and_a_raw_dataset(tmp_path, capsys):
    from dataset_conversion.bids import main as convert_main
    from deepwml.datasets.manifest import read_manifest

    root = make_bids(tmp_path / "clinic")
    (root / "participants.tsv").write_text("participant_id\tage\tsite\tdx\nsub-01\t61\tParis\tMS\nsub-02\tn/a\tLyon\tcsvd\n")
    manual = root / "derivatives" / "manual"
    _, label, geometry = tiny_case(seed=0)
    # sub-01 ses-1 has two masks: the first ending of --mask-suffix wins; sub-02 ses-1 a raw-style lesion ROI
    write_image(label, geometry, manual / "sub-01" / "ses-1" / "anat" / "sub-01_ses-1_label-WMH_mask.nii.gz")
    write_image(np.zeros_like(label), geometry, manual / "sub-01" / "ses-1" / "anat" / "sub-01_ses-1_desc-lesion_mask.nii.gz")
    write_image(label, geometry, manual / "sub-02" / "ses-1" / "anat" / "sub-02_ses-1_label-lesion_roi.nii")
    sidecar = {"Manufacturer": "Siemens", "ManufacturersModelName": "Skyra", "MagneticFieldStrength": 3}
    (root / "sub-01" / "ses-1" / "anat" / "sub-01_ses-1_FLAIR.json").write_text(json.dumps(sidecar))
    (root / "FLAIR.json").write_text(json.dumps({"Manufacturer": "GE", "MagneticFieldStrength": 1.5}))  # inherited by the rest
    manifest = tmp_path / "labelled.csv"
    assert convert_main([str(root), "--masks", str(manual), "-o", str(manifest), "--centre-column", "site",
                         "--disease-column", "dx"]) == 0
    assert "3 FLAIR(s), 2 with a mask" in capsys.readouterr().out
    rows = pd.read_csv(manifest, dtype=str, keep_default_na=False).set_index("case_id")
    assert list(rows.index) == ["sub-01_ses-1", "sub-01_ses-2", "sub-02_ses-1"]
    assert rows.loc["sub-01_ses-1", "label"].endswith("sub-01_ses-1_label-WMH_mask.nii.gz")
    assert rows.loc["sub-01_ses-2", "label"] == "" and rows.loc["sub-02_ses-1", "label"].endswith("_label-lesion_roi.nii")
    assert list(rows["vendor"]) == ["Siemens", "GE", "GE"] and list(rows["field_strength"]) == ["3", "1.5", "1.5"]
    assert list(rows["centre"]) == ["Paris", "Paris", "Lyon"] and list(rows["bids_age"]) == ["61", "61", ""]
    # what deepwml_finetune reads: the labelled rows train, the others are test cases
    cases = {c.case_id: c for c in read_manifest(manifest)}
    assert sorted(k for k, c in cases.items() if c.label is not None) == ["sub-01_ses-1", "sub-02_ses-1"]
    assert cases["sub-02_ses-1"].meta.disease == "CSVD" and cases["sub-01_ses-1"].meta.field_strength == 3.0
    # straight to a raw dataset, verified as every converter's is
    assert convert_main([str(root), "--masks", str(manual), "--id", "611", "--name", "Clinic", "--raw", str(tmp_path / "raw")]) == 0
    dataset = tmp_path / "raw" / "Dataset611_Clinic"
    assert "no problems" in capsys.readouterr().out
    assert sorted(p.name for p in (dataset / "labelsTr").iterdir()) == ["sub-01_ses-1.nii.gz", "sub-02_ses-1.nii.gz"]
    assert np.array_equal(read_image(dataset / "labelsTr" / "sub-01_ses-1.nii.gz").array, label)


@pytest.mark.parametrize("problem, message", [
    ("no_masks", "holds no mask for any of the 3 FLAIR(s)"),
    ("no_column", "participants.tsv has no column 'site'"),
    ("no_output", "say where to write"),
    ("bad_participants", "participants.tsv: cannot read as a BIDS table"),
    ("bad_sidecar", "sub-01_ses-1_FLAIR.json: is not a readable JSON sidecar"),
])
def test_conversion_errors_are_one_line(tmp_path, capsys, problem, message):
    from dataset_conversion.bids import main as convert_main

    root = make_bids(tmp_path / "clinic")
    (tmp_path / "empty").mkdir()
    args = {"no_masks": ["--masks", str(tmp_path / "empty"), "-o", str(tmp_path / "m.csv")],
            "no_column": ["--centre-column", "site", "-o", str(tmp_path / "m.csv")], "no_output": []}.get(
                problem, ["-o", str(tmp_path / "m.csv")])
    if problem == "bad_participants":
        (root / "participants.tsv").write_bytes(b"participant_id\tage\n\xff\xfe\x00sub-01\t\x81\n")
    elif problem == "bad_sidecar":
        (root / "sub-01" / "ses-1" / "anat" / "sub-01_ses-1_FLAIR.json").write_text('{"Manufacturer": "GE",')
    assert convert_main([str(root), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "m.csv").exists()


def test_the_group_level_scores_the_published_masks_against_a_readers(derived, tmp_path, capsys):
    from deepwml.evaluation.case_metrics import case_metrics

    root, out = derived
    readers = tmp_path / "manual"
    ours = out / "sub-01" / "ses-1" / "anat" / "sub-01_ses-1_desc-wmh_mask.nii.gz"
    published = read_image(ours)
    # the reader agreed exactly on one scan, drew a lesion of their own on another, and did not label the third
    (readers / "sub-01" / "ses-1" / "anat").mkdir(parents=True)
    write_image(published.array, published.geometry, readers / "sub-01" / "ses-1" / "anat" / "sub-01_ses-1_label-WMH_mask.nii.gz")
    _, label, geometry = tiny_case(seed=1)
    write_image(label * 255, geometry, readers / "sub-01" / "ses-2" / "anat" / "sub-01_ses-2_desc-lesion_mask.nii.gz")
    capsys.readouterr()
    assert bids_main([str(root), str(out), "group", "--reference", str(readers)]) == 0
    printed = capsys.readouterr().out
    assert "2 scan(s) against the reader's masks (1 published scan(s) without a reader mask left out)" in printed
    table = pd.read_csv(out / "wmh_agreement.tsv", sep="\t").set_index("session_id")
    assert table.loc["ses-1", "dice"] == 1.0 and table.loc["ses-1", "reference"].endswith("_label-WMH_mask.nii.gz")
    theirs = read_image(out / "sub-01" / "ses-2" / "anat" / "sub-01_ses-2_desc-wmh_mask.nii.gz")
    expected = case_metrics(label > 0, theirs.array > 0, theirs.geometry)
    for figure in ("dice", "lesion_f1", "ref_volume_ml", "pred_lesion_count"):
        assert table.loc["ses-2", figure] == pytest.approx(expected[figure], nan_ok=True)
    # a reader's 'other pathology' (2, the WMH challenge's format) where neither mask has lesion: with --ignore-label
    # 2 it counts for neither side (the figures stay those above); without it, as a lesion we missed
    other = label.astype(np.uint8)
    free = (label == 0) & (theirs.array == 0)
    other[1:3, 2:10, 2:10][free[1:3, 2:10, 2:10]] = 2
    assert (other == 2).sum() > 50
    write_image(other, geometry, readers / "sub-01" / "ses-2" / "anat" / "sub-01_ses-2_desc-lesion_mask.nii.gz")
    for extra, dice in ((["--ignore-label", "2"], expected["dice"]),
                        ([], case_metrics(other > 0, theirs.array > 0, theirs.geometry)["dice"])):
        assert bids_main([str(root), str(out), "group", "--reference", str(readers), *extra]) == 0
        table = pd.read_csv(out / "wmh_agreement.tsv", sep="\t").set_index("session_id")
        assert table.loc["ses-2", "dice"] == pytest.approx(dice)
    assert case_metrics(other > 0, theirs.array > 0, theirs.geometry)["dice"] < expected["dice"]
    assert bids_main([str(root), str(out), "group", "--ignore-label", "2"]) == 2
    assert "--ignore-label needs --reference" in capsys.readouterr().err
    # a reader mask on another grid is named, not scored
    from deepwml.imageio import Geometry

    half = Geometry((64, 32, 6), geometry.spacing, geometry.origin, geometry.direction)
    write_image(label[:, :32].copy(), half, readers / "sub-01" / "ses-1" / "anat" / "sub-01_ses-1_label-WMH_mask.nii.gz")
    assert bids_main([str(root), str(out), "group", "--reference", str(readers)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sub-01_ses-1_label-WMH_mask.nii.gz: is not on the grid of the FLAIR it labels" in err[0]


def test_the_cohort_page_lists_what_to_review_and_draws_the_volumes(tmp_path):
    from deepwml.bids.cohort_report import _in_session_order, review_flags, write_cohort_report

    table = pd.DataFrame({
        "participant_id": ["sub-01", "sub-02", "sub-03", "sub-04", "sub-05"],
        "source": [f"sub-0{k}/anat/sub-0{k}_FLAIR.nii.gz" for k in range(1, 6)],
        "total_lesion_volume_ml": [2.0, 3.0, 2.5, 3.5, 60.0],
        "acquisition_warning": ["", "the slices are 1 mm thick; the model learned 4-8 mm", "", "", ""],
        "unclassified_count": [0, 0, 2, 0, 0],
        "lesions_dropped_outside_brain": [0, 0, 0, 1, float("nan")],  # nan: a scan predicted without the drop
    })
    changes = pd.DataFrame({
        "participant_id": ["sub-01", "sub-04"], "baseline_session": ["ses-1", "ses-1"], "followup_session": ["ses-2", "ses-2"],
        "baseline_volume_ml": [2.0, 10.0], "followup_volume_ml": [2.1, 3.5],
        "warnings": ["the aligned scans agree poorly (correlation 0.41)", ""],
    })
    flags = review_flags(table, changes)
    reasons = {(who, what.split("/")[0]): why for who, what, why in flags}
    assert "1 mm thick" in reasons[("sub-02", "sub-02")]
    assert "2 lesion(s) outside the brain" in reasons[("sub-03", "sub-03")]
    assert "far above the cohort's" in reasons[("sub-05", "sub-05")]
    assert "1 lesion(s) outside the brain left out of the mask" in reasons[("sub-04", "sub-04")]
    assert "agree poorly" in reasons[("sub-01", "ses-1 -> ses-2")]
    assert "fell from 10.00 to 3.50 ml" in reasons[("sub-04", "ses-1 -> ses-2")]
    assert len(flags) == 6  # and nothing else: sub-01's scan is unremarkable
    # a participant's comparisons are drawn first session first, whatever order their folders sort in
    chain = pd.DataFrame({"baseline_session": ["ses-10", "ses-2", "ses-9"], "followup_session": ["ses-11", "ses-9", "ses-10"]})
    assert list(_in_session_order(chain)["baseline_session"]) == ["ses-2", "ses-9", "ses-10"]
    # each scan's row gives the volumes by the 10 mm rule when its figures have them (n/a for an older run's)
    table["lesion_count"] = [3, 4, 5, 6, 40]
    table["volume_within_10mm_of_ventricles_ml"] = [1.5, 2.25, 2.0, 3.0, float("nan")]
    table["volume_beyond_10mm_of_ventricles_ml"] = [0.5, 0.75, 0.5, 0.5, float("nan")]
    # and the lesions' share of the brain, naming where a brain runs past its scan
    table["lesion_percent_of_brain"] = [0.2, 0.3, 0.25, 0.35, float("nan")]
    table["brain_coverage"] = ["complete", "cut at the bottom", "complete", "complete", float("nan")]
    page = write_cohort_report(tmp_path, tmp_path / "bids", table, None, "m").read_text()
    scans = page[page.index("within 10 mm of the ventricles (ml)"):]
    assert "<td>2.25</td><td>0.75</td><td>0.30 (cut at the bottom)</td><td>4</td>" in scans
    assert "<td>1.50</td><td>0.50</td><td>0.20</td><td>3</td>" in scans
    assert "<td>n/a</td><td>n/a</td><td>n/a</td><td>40</td>" in scans


@pytest.mark.slow
def test_deepwml_finetune_takes_a_bids_dataset_with_its_readers_masks(tmp_path, capfd):
    from deepwml.cli.finetune import main as finetune_main

    root = make_bids(tmp_path / "clinic")
    manual = root / "derivatives" / "manual"
    for sub, ses, seed in SCANS[:2]:
        _, label, geometry = tiny_case(seed=seed)
        write_image(label, geometry, manual / f"sub-{sub}" / f"ses-{ses}" / "anat" / f"sub-{sub}_ses-{ses}_label-WMH_mask.nii.gz")
    model = tmp_path / "models" / "clinic"
    args = [str(root), "--masks", str(manual), "-o", str(model), "--epochs", "1", "--iterations", "1"]
    assert finetune_main(args) == 0
    out = capfd.readouterr().out
    assert "2 labelled scan(s)" in out and "1 row(s) without a label left out" in out
    assert "Fine-tuned on: 2 labelled scan(s)" in (model / "MODEL_CARD.md").read_text(encoding="utf-8")
    # the same dataset again is the same run: resumed, nothing trained again
    assert finetune_main(args + ["--overwrite"]) == 0
    assert "deepwml_train" not in capfd.readouterr().out
    # a BIDS dataset without --masks, and --masks with a CSV manifest, are refused with one line
    assert finetune_main([str(root), "-o", str(tmp_path / "m2")]) == 2
    assert "a BIDS dataset needs --masks" in capfd.readouterr().err
    (tmp_path / "m.csv").write_text("image,label\n")
    with pytest.raises(SystemExit):
        finetune_main([str(tmp_path / "m.csv"), "--masks", str(manual), "-o", str(tmp_path / "m3")])
    assert "--masks: only with a BIDS dataset" in capfd.readouterr().err


def test_the_group_line_gives_the_lesion_volume_agreement_from_three_scans():
    """With three or more scans scored, the line gives the volumes' Bland-Altman mean difference, limits and ICC(A,1)
    (as deepwml_evaluate computes them); with two, only Dice and lesion F1."""
    from deepwml.bids.agreement import describe
    from deepwml.evaluation.volume_agreement import volume_agreement

    table = pd.DataFrame({"dice": [0.7, 0.6, 0.8], "lesion_f1": [0.5, 0.4, 0.6],
                          "ref_volume_ml": [2.0, 10.0, 30.0], "pred_volume_ml": [1.5, 8.0, 24.0]})
    expected = volume_agreement(table["ref_volume_ml"], table["pred_volume_ml"])
    line = describe(table, 0)
    low, high = expected["limits_of_agreement_ml"]
    assert f"mean difference {expected['mean_difference_ml']:+.2f} ml (95 % limits {low:+.2f} to {high:+.2f})" in line
    assert f"ICC(A,1) {expected['icc_a1']['value']:.3f}" in line and "Dice mean 0.700" in line
    assert "ICC" not in describe(table.iloc[:2], 0)
