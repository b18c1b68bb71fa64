"""Converters turn each public layout (and a CSV manifest) into a raw dataset that verifies, without altering voxels."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import nibabel
import numpy as np
import pytest

from conftest import oblique_direction, tiny_case
from deepwml.datasets import CaseMeta, RawDataset, case_id_problem
from deepwml.datasets.dataset_writer import SourceCase, safe_case_id, write_dataset
from deepwml.datasets.verify import verify_dataset
from deepwml.imageio import Geometry, read_image, read_label, write_image
from deepwml.utils.errors import DatasetError

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # dataset_conversion/ is a top-level folder, not part of the installed package
    sys.path.insert(0, str(REPO))

from dataset_conversion import csv_manifest, msseg, wmh2017  # noqa: E402
from test_dicom import UID_ROOT, write_dicom_series  # noqa: E402

SHAPE = (5, 32, 32)


def _case(folder: Path, image_name: str, seed: int, label_name: Optional[str] = None, label: Optional[np.ndarray] = None,
          direction: Tuple[float, ...] = (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)) -> Geometry:
    """Write a tiny FLAIR (and optionally a label) below ``folder``; returns the geometry."""
    image, lesion, geometry = tiny_case(shape_zyx=SHAPE, seed=seed, direction=direction)
    _stamp(write_image(image, geometry, folder / image_name))
    if label_name:
        _stamp(write_image(lesion if label is None else label, geometry, folder / label_name))
    return geometry


def _stamp(path: Path) -> None:
    """Mark a NIfTI header as a scanner export would, so that a file re-written instead of copied is detectable."""
    if path.name.endswith((".nii", ".nii.gz")):
        img = nibabel.load(str(path), mmap=False)  # the file is overwritten below
        img.header["descrip"] = b"exported by the scanner"
        nibabel.save(nibabel.Nifti1Image(img.dataobj.get_unscaled(), None, img.header), str(path))


def _same_bytes(a: Path, b: Path) -> bool:
    """True when two files hold the same bytes (a copy, not a re-write)."""
    return a.read_bytes() == b.read_bytes()


# --- WMH 2017 -------------------------------------------------------------------------------------------------


@pytest.fixture
def wmh_root(tmp_path: Path) -> Path:
    """The challenge's public layout: training/ with three sites (Amsterdam nested), test/ with one case."""
    root = tmp_path / "WMH"
    for seed, case_dir in enumerate(["training/Utrecht/0", "training/Singapore/50", "training/Amsterdam/GE3T/100",
                                     "test/Amsterdam/GE1T5/137"]):
        _, lesion, _ = tiny_case(shape_zyx=SHAPE, seed=seed)
        wmh = lesion.copy()
        wmh[0, :3, :3] = 2  # "other pathology"
        _case(root / case_dir, "pre/FLAIR.nii.gz", seed, "wmh.nii.gz", wmh)
        _case(root / case_dir, "orig/FLAIR.nii.gz", seed + 10)  # never used: the challenge's masks are on pre/
    return root


def test_wmh2017_conversion_keeps_files_and_declares_ignore(wmh_root, tmp_path, capsys):
    raw = tmp_path / "raw"
    assert wmh2017.main([str(wmh_root), "--raw", str(raw)]) == 0
    assert "no problems" in capsys.readouterr().out
    ds = RawDataset.find(raw, "510")
    assert ds.name == "Dataset510_WMH2017"
    assert ds.meta.labels == {"background": 0, "lesion": 1, "ignore": 2}
    train = {c.case_id: c for c in ds.cases("Tr")}
    test = {c.case_id: c for c in ds.cases("Ts")}
    assert sorted(train) == ["Amsterdam_GE3T_100", "Singapore_50", "Utrecht_0"]
    assert list(test) == ["Amsterdam_GE1T5_137"] and test["Amsterdam_GE1T5_137"].label is not None
    utrecht = train["Utrecht_0"]
    assert (utrecht.meta.centre, utrecht.meta.disease, utrecht.meta.vendor, utrecht.meta.field_strength) == ("Utrecht", "CSVD", "Philips", 3.0)
    assert (train["Singapore_50"].meta.vendor, train["Amsterdam_GE3T_100"].meta.vendor) == ("Siemens", "GE")
    assert test["Amsterdam_GE1T5_137"].meta.field_strength == 1.5
    assert _same_bytes(utrecht.image, wmh_root / "training/Utrecht/0/pre/FLAIR.nii.gz")
    assert _same_bytes(utrecht.label, wmh_root / "training/Utrecht/0/wmh.nii.gz")
    assert 2 in read_label(utrecht.label).array
    assert not list(raw.glob(".*")), "staging folder left behind"


@pytest.mark.parametrize("text, expected", [("scan 2", "scan_2"), ("Philips_VU .PETMR_01.", "Philips_VU_.PETMR_01"),
                                            ("../etc/passwd", "etc_passwd"), ("a..b", "a_b"), ("__", "case")])
def test_derived_case_ids_are_safe(text, expected):
    assert safe_case_id(text) == expected and case_id_problem(safe_case_id(text)) is None


def test_wmh2017_unknown_site_gets_unknown_scanner(tmp_path):
    _case(tmp_path / "WMH" / "Leiden" / "7", "pre/FLAIR.nii.gz", 0, "wmh.nii.gz")
    (case,) = wmh2017.find_cases(tmp_path / "WMH")
    assert (case.meta.centre, case.meta.vendor, case.meta.field_strength) == ("Leiden", "unknown", None)


def test_wmh2017_empty_source_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert wmh2017.main([str(tmp_path / "empty"), "--raw", str(tmp_path / "raw")]) == 2
    assert "no WMH 2017 cases found" in capsys.readouterr().err


def test_existing_dataset_is_kept_unless_overwrite(wmh_root, tmp_path, capsys):
    raw = tmp_path / "raw"
    assert wmh2017.main([str(wmh_root), "--raw", str(raw)]) == 0
    marker = raw / "Dataset510_WMH2017" / "imagesTr" / "Utrecht_0.nii.gz"
    before = marker.read_bytes()
    # the source changes; without --overwrite nothing is touched
    _case(wmh_root / "training/Utrecht/0", "pre/FLAIR.nii.gz", 99)
    assert wmh2017.main([str(wmh_root), "--raw", str(raw)]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert marker.read_bytes() == before
    assert wmh2017.main([str(wmh_root), "--raw", str(raw), "--overwrite"]) == 0
    assert _same_bytes(marker, wmh_root / "training/Utrecht/0/pre/FLAIR.nii.gz")
    assert sorted(p.name for p in raw.iterdir()) == ["Dataset510_WMH2017"]


def test_dataset_id_used_by_another_dataset_is_refused(wmh_root, tmp_path, capsys):
    (tmp_path / "raw" / "Dataset510_Other").mkdir(parents=True)
    assert wmh2017.main([str(wmh_root), "--raw", str(tmp_path / "raw")]) == 2
    assert "already used by Dataset510_Other" in capsys.readouterr().err
    assert wmh2017.main([str(wmh_root), "--raw", str(tmp_path / "raw"), "--id", "520", "--name", "WMH"]) == 0


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_links_instead_of_copies(wmh_root, tmp_path, link):
    raw = tmp_path / "raw"
    assert wmh2017.main([str(wmh_root), "--raw", str(raw), "--link", link]) == 0
    image = raw / "Dataset510_WMH2017" / "imagesTr" / "Utrecht_0.nii.gz"
    source = wmh_root / "training/Utrecht/0/pre/FLAIR.nii.gz"
    if link == "symlink":
        assert image.is_symlink() and image.resolve() == source.resolve()
    else:
        assert not image.is_symlink() and os.path.samefile(image, source)


def test_other_file_ending_is_converted_losslessly(wmh_root, tmp_path):
    raw = tmp_path / "raw"
    assert wmh2017.main([str(wmh_root), "--raw", str(raw), "--file-ending", ".mha"]) == 0
    converted = read_image(raw / "Dataset510_WMH2017" / "imagesTr" / "Utrecht_0.mha")
    source = read_image(wmh_root / "training/Utrecht/0/pre/FLAIR.nii.gz")
    assert np.array_equal(converted.array, source.array)
    assert not converted.geometry.mismatches(source.geometry, tol=1e-6)


def test_verification_problems_are_reported_after_conversion(wmh_root, tmp_path, capsys):
    _, lesion, geometry = tiny_case(shape_zyx=SHAPE, seed=1)
    shifted = Geometry(geometry.size, (1.0, 1.0, 6.0), geometry.origin)
    write_image(lesion, shifted, wmh_root / "training/Singapore/50/wmh.nii.gz")
    assert wmh2017.main([str(wmh_root), "--raw", str(tmp_path / "raw")]) == 1
    out = capsys.readouterr().out
    assert "labelsTr/Singapore_50.nii.gz: geometry differs" in out and "1 problem(s)" in out


# --- ISBI 2015 / MSSEG 2016 -----------------------------------------------------------------------------------


def _raters(folder: Path, names: List[str], geometry: Geometry, seed: int) -> List[np.ndarray]:
    """Write one random rater mask per name; returns the masks."""
    rng = np.random.default_rng(seed)
    masks = [(rng.random(SHAPE) < 0.3).astype(np.uint8) for _ in names]
    for mask, name in zip(masks, names):
        write_image(mask, geometry, folder / name)
    return masks


def test_msseg_majority_vote_of_several_raters(tmp_path):
    root = tmp_path / "MSSEG"
    patient = root / "Center_01" / "Patient_01"
    geometry = _case(patient, "Preprocessed_Data/FLAIR_preprocessed.nii.gz", 0, direction=oblique_direction(10))
    _case(patient, "Raw_Data/3DFLAIR.nii.gz", 5)  # not picked: the masks are on the preprocessed image
    masks = _raters(patient / "Masks", [f"ManualSegmentation_{i}.nii.gz" for i in (1, 2, 3)], geometry, seed=1)
    single = root / "Center_03" / "Patient_02"
    single_geometry = _case(single, "FLAIR.nii.gz", 2)
    _raters(single, ["ManualSegmentation_1.nii.gz"], single_geometry, seed=2)
    _case(root / "Center_03" / "Patient_03", "FLAIR.nii.gz", 3)  # no rater: a test case

    raw = tmp_path / "raw"
    assert msseg.main([str(root), "--raw", str(raw)]) == 0
    ds = RawDataset.find(raw, "Dataset511_MSSEG2016")
    cases = {c.case_id: c for c in ds.cases("Tr") + ds.cases("Ts")}
    assert sorted(cases) == ["Center_01_Patient_01", "Center_03_Patient_02", "Center_03_Patient_03"]
    assert cases["Center_03_Patient_03"].split == "Ts" and cases["Center_03_Patient_03"].label is None
    consensus = read_label(cases["Center_01_Patient_01"].label)
    expected = (np.sum(masks, axis=0) >= 2).astype(np.int16)
    assert np.array_equal(consensus.array, expected)
    assert not consensus.geometry.mismatches(geometry)
    assert _same_bytes(cases["Center_03_Patient_02"].label, single / "ManualSegmentation_1.nii.gz")
    meta = cases["Center_01_Patient_01"].meta
    assert (meta.centre, meta.disease, meta.extra["raters"]) == ("Center_01", "MS", 3)


@pytest.mark.parametrize("ties, tie_value", [("background", 0), ("lesion", 1), ("ignore", 2)])
def test_isbi_two_raters_ties_follow_the_rule(tmp_path, ties, tie_value):
    root = tmp_path / "ISBI" / "training"
    patient = root / "training01"
    raters = {}
    for tp in ("01", "02"):
        geometry = _case(patient, f"preprocessed/training01_{tp}_flair_pp.nii", int(tp))
        _case(patient, f"orig/training01_{tp}_flair.nii.gz", 7)  # must not be taken for a second FLAIR
        raters[tp] = _raters(patient / "masks", [f"training01_{tp}_mask1.nii", f"training01_{tp}_mask2.nii"], geometry, int(tp))

    raw = tmp_path / "raw"
    assert msseg.main([str(root), "--layout", "isbi", "--ties", ties, "--raw", str(raw)]) == 0
    ds = RawDataset.find(raw, "512")
    assert ds.file_ending == ".nii"
    assert ("ignore" in ds.meta.labels) == (ties == "ignore")
    cases = {c.case_id: c for c in ds.cases("Tr")}
    assert sorted(cases) == ["training01_01", "training01_02"]
    a, b = raters["02"]
    label = read_label(cases["training01_02"].label).array
    assert np.array_equal(label[(a == 1) & (b == 1)], np.ones(int(((a == 1) & (b == 1)).sum())))
    assert np.all(label[(a == 0) & (b == 0)] == 0)
    tie = a != b
    assert tie.any() and np.all(label[tie] == tie_value)
    assert (cases["training01_01"].meta.vendor, cases["training01_01"].meta.field_strength) == ("Philips", 3.0)


def test_msseg_rater_on_another_grid_is_an_error_naming_the_mask(tmp_path, capsys):
    patient = tmp_path / "MS" / "p1"
    geometry = _case(patient, "FLAIR.nii.gz", 0)
    _raters(patient, ["ManualSegmentation_1.nii.gz"], geometry, 1)
    _raters(patient, ["ManualSegmentation_2.nii.gz"], Geometry(geometry.size, (2.0, 2.0, 6.0), geometry.origin), 2)
    assert msseg.main([str(tmp_path / "MS"), "--raw", str(tmp_path / "raw")]) == 2
    err = capsys.readouterr().err
    assert "ManualSegmentation_2.nii.gz: rater mask is not on the grid" in err and "spacing" in err


def test_msseg_ambiguous_layout_lists_every_problem(tmp_path):
    root = tmp_path / "MS"
    geometry = _case(root / "p1", "FLAIR.nii.gz", 0)
    _case(root / "p1", "FLAIR_2.nii.gz", 1)
    _raters(root / "p2", ["ManualSegmentation_1.nii.gz"], geometry, 1)
    with pytest.raises(DatasetError) as info:
        msseg.find_cases(root, msseg.LAYOUTS["msseg"])
    assert "several FLAIR images" in str(info.value) and "rater masks without a FLAIR" in str(info.value)


def test_majority_vote_rule():
    votes = np.array([0, 1, 2, 3, 4])
    assert msseg.majority_vote(votes, 4).tolist() == [0, 0, 0, 1, 1]
    assert msseg.majority_vote(votes, 4, "lesion").tolist() == [0, 0, 1, 1, 1]
    assert msseg.majority_vote(votes, 4, "ignore").tolist() == [0, 0, 2, 1, 1]
    assert msseg.majority_vote(votes[:4], 3).tolist() == [0, 0, 1, 1]


# --- CSV manifest ---------------------------------------------------------------------------------------------


def _write_csv(path: Path, rows: List[Dict[str, str]]) -> Path:
    """Write ``rows`` as a CSV whose columns are the union of the rows' keys (missing cells empty)."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    lines = [",".join(columns)] + [",".join(row.get(c, "") for c in columns) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_csv_manifest_with_files_and_a_dicom_series(tmp_path):
    export = tmp_path / "export"
    _case(export, "a/flair.nii.gz", 0, "a/mask.nii.gz")
    _case(export, "b/scan 2.nii.gz", 1, "b/scan 2_mask.nii.gz")
    _case(export, "c.mha", 2, "c_mask.mha")
    image, _, geometry = tiny_case(shape_zyx=SHAPE, seed=3, direction=oblique_direction(12))
    dicom = (np.round(image * 10)).astype(np.int16)
    write_dicom_series(export / "dicom" / "PAT9_FLAIR", dicom, geometry, UID_ROOT + "9.1")
    # a second series (a repeat scan) in the same folder: the manifest names the one to take
    write_dicom_series(export / "dicom" / "PAT9_FLAIR", dicom[::-1].copy(), geometry, UID_ROOT + "9.2", prefix="repeat")
    manifest = _write_csv(export / "manifest.csv", [
        {"case_id": "A1", "image": "a/flair.nii.gz", "label": "a/mask.nii.gz", "Center": "Hospital A", "disease": "ms",
         "vendor": "GE", "scanner": "Signa", "field_strength": "3T", "slice_thickness": "6"},
        {"image": "b/scan 2.nii.gz", "label": "b/scan 2_mask.nii.gz", "Center": "Hospital A", "disease": "NMOSD", "field_strength": "1.5"},
        {"image": str(export / "c.mha"), "label": "c_mask.mha", "Center": "Hospital B", "disease": "CSVD"},
        {"image": "dicom/PAT9_FLAIR", "Center": "Hospital B", "disease": "other", "series_uid": UID_ROOT + "9.1"},
    ])
    raw = tmp_path / "raw"
    assert csv_manifest.main([str(manifest), "--id", "601", "--name", "ClinicA", "--raw", str(raw)]) == 0
    ds = RawDataset.find(raw, "601")
    assert ds.file_ending == ".nii.gz"  # the most common ending: those files are copied as they are
    train = {c.case_id: c for c in ds.cases("Tr")}
    test = {c.case_id: c for c in ds.cases("Ts")}
    assert sorted(train) == ["A1", "c", "scan_2"] and list(test) == ["PAT9_FLAIR"]
    a1 = train["A1"].meta
    assert (a1.centre, a1.disease, a1.vendor, a1.scanner, a1.field_strength) == ("Hospital A", "MS", "GE", "Signa", 3.0)
    assert a1.extra["slice_thickness"] == 6
    assert train["scan_2"].meta.field_strength == 1.5 and train["c"].meta.vendor == "unknown"
    assert _same_bytes(train["A1"].image, export / "a/flair.nii.gz")
    # .mha and DICOM are re-written as .nii.gz with the same voxels and geometry
    mha, converted = read_image(export / "c.mha"), read_image(train["c"].image)
    assert np.array_equal(mha.array, converted.array) and not mha.geometry.mismatches(converted.geometry, tol=1e-6)
    from_dicom = read_image(test["PAT9_FLAIR"].image, dtype=None)
    assert np.array_equal(from_dicom.array, dicom) and not geometry.mismatches(from_dicom.geometry, tol=1e-4)
    assert verify_dataset(ds.folder) == []


def test_csv_manifest_problems_are_listed_with_line_numbers(tmp_path, capsys):
    export = tmp_path / "export"
    _case(export, "x.nii.gz", 0, "x_mask.nii.gz")
    manifest = _write_csv(export / "m.csv", [
        {"image": "x.nii.gz", "label": "x_mask.nii.gz", "disease": "flu"},
        {"image": "missing.nii.gz", "label": "x_mask.nii.gz"},
        {"image": "x.nii.gz", "split": "train"},
        {"case_id": "../up", "image": "x.nii.gz", "field_strength": "strong"},
    ])
    assert csv_manifest.main([str(manifest), "--id", "602", "--name", "Bad", "--raw", str(tmp_path / "raw")]) == 2
    err = capsys.readouterr().err
    for expected in ["line 2: disease 'flu'", "line 3: image not found", "line 4: a training case needs a label",
                     "line 5: case id '../up' contains a path separator", "line 5: field_strength 'strong'"]:
        assert expected in err, expected
    assert not (tmp_path / "raw").exists(), "nothing may be written when the manifest is wrong"


def test_csv_manifest_duplicate_case_ids_are_refused(tmp_path):
    export = tmp_path / "export"
    _case(export, "one/flair.nii.gz", 0, "one/mask.nii.gz")
    _case(export, "two/flair.nii.gz", 1, "two/mask.nii.gz")
    manifest = _write_csv(export / "m.csv", [
        {"image": "one/flair.nii.gz", "label": "one/mask.nii.gz"},
        {"image": "two/flair.nii.gz", "label": "two/mask.nii.gz"},
    ])
    with pytest.raises(DatasetError, match="line 3: case id 'flair' is already used on line 2"):
        csv_manifest.read_manifest(manifest)


# --- the writer: resume and atomicity -------------------------------------------------------------------------


class _FailingLabel:
    """A computed label that fails, as an interrupted conversion would."""

    def key(self) -> str:
        """A fixed key."""
        return "failing"

    def write(self, target: Path) -> None:
        """Stop the conversion the way Ctrl-C does."""
        raise KeyboardInterrupt


def test_interrupted_conversion_resumes_without_redoing_finished_files(tmp_path):
    source = tmp_path / "src"
    cases = []
    for i in range(3):
        _case(source, f"img{i}.nii.gz", i, f"lab{i}.nii.gz")
        cases.append(SourceCase(f"c{i}", source / f"img{i}.nii.gz", source / f"lab{i}.nii.gz", CaseMeta(centre="X", disease="MS")))
    raw = tmp_path / "raw"
    broken = cases[:2] + [SourceCase("c2", cases[2].image, _FailingLabel(), cases[2].meta)]
    with pytest.raises(KeyboardInterrupt):
        write_dataset(broken, raw, 700, "Resume")
    staging = raw / ".Dataset700_Resume.partial"
    assert not (raw / "Dataset700_Resume").exists() and staging.is_dir()
    first = staging / "imagesTr" / "c0.nii.gz"
    inode = first.stat().st_ino
    result = write_dataset(cases, raw, 700, "Resume")
    assert result.problems == []
    assert (raw / "Dataset700_Resume" / "imagesTr" / "c0.nii.gz").stat().st_ino == inode, "finished file was redone"
    assert not staging.exists()
    spec = json.loads((raw / "Dataset700_Resume" / "dataset.json").read_text())
    assert spec["numTraining"] == 3 and spec["name"] == "Dataset700_Resume"


def test_converters_answer_help():
    for name in ("wmh2017", "msseg", "csv_manifest"):
        done = subprocess.run([sys.executable, "-m", f"dataset_conversion.{name}", "--help"], cwd=REPO,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and "--overwrite" in done.stdout, done.stderr
