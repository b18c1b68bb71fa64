"""An archive (ZIP or tar) as deepwml_predict's input (and the Segmenter's): read as the folder it holds, named by the archive in
what the user reads, unpacked into a temporary folder that goes when the run ends; unsafe or broken archives refused."""
from __future__ import annotations

import io
import shutil
import stat
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import oblique_direction, tiny_case
from deepwml.cli.predict import main as predict_main
from deepwml.imageio import read_image, write_image
from deepwml.imageio.archives import unpack
from deepwml.utils.errors import ImageError
from deepwml_testing.dicom_series import write_dicom_series
from deepwml_testing.toy_models import tiny_plan, write_model_dir


@pytest.fixture
def model(tmp_path) -> Path:
    """A threshold toy model: deterministic masks."""
    return write_model_dir(tmp_path / "model" / "Dataset999_Toy" / "tiny", tiny_plan(), kind="threshold")


@pytest.fixture(autouse=True)
def scratch(tmp_path, monkeypatch) -> Path:
    """Temporary files of this test in a folder of its own, to see that the unpacked archive goes."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def _zip(archive: Path, root: Path, prefix: str = "") -> Path:
    """Every file below ``root`` into ``archive`` under ``prefix``, as a PACS export or Finder zips a folder."""
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                z.write(path, prefix + path.relative_to(root).as_posix())
    return archive


def _series(folder: Path, seed: int, uid: str) -> None:
    image, _, geometry = tiny_case(shape_zyx=(5, 64, 56), spacing_xyz=(0.9, 0.9, 6.5), direction=oblique_direction(12),
                                   seed=seed, n_lesions=5)
    write_dicom_series(folder, np.round(image * 10).astype(np.int16), geometry, uid)


def _outputs(out: Path) -> dict:
    """case id -> (mask, lesion table text) of a run's folder."""
    summary = pd.read_csv(out / "summary.csv", dtype={"case_id": str})
    return {cid: (read_image(out / f"{cid}.nii.gz", dtype=None).array, (out / f"{cid}_lesions.csv").read_text())
            for cid in summary["case_id"]}


@pytest.mark.parametrize("layout", ["series-at-top", "media-export", "top-folder", "nifti-files"])
def test_an_archive_gives_the_cases_and_masks_of_the_folder_it_holds(tmp_path, model, scratch, layout):
    folder = tmp_path / "export"
    if layout == "nifti-files":
        for name, seed in (("a", 1), ("b", 2)):
            image, _, geometry = tiny_case(seed=seed)
            write_image(image, geometry, folder / f"{name}.nii.gz")
    else:
        _series(folder / "DICOM" / "SE1" if layout == "media-export" else folder, 4, "1.2.826.0.1.3680043.8.498.72.1")
    prefix = "export/" if layout == "top-folder" else ""
    archive = _zip(tmp_path / "export.zip", folder, prefix)
    given = folder if not prefix else tmp_path  # the folder the archive holds
    if prefix:
        shutil.move(str(folder), str(tmp_path / "held" / "export"))
        given = tmp_path / "held"
    assert predict_main(["-i", str(given), "-o", str(tmp_path / "out_folder"), "-m", str(model), "--no-qc"]) == 0
    assert predict_main(["-i", str(archive), "-o", str(tmp_path / "out_zip"), "-m", str(model), "--no-qc", "--report"]) == 0
    from_folder, from_zip = _outputs(tmp_path / "out_folder"), _outputs(tmp_path / "out_zip")
    assert list(from_zip) == list(from_folder)  # a series at the top is the case "export" either way
    for (mask, table), (mask_zip, table_zip) in zip(from_folder.values(), from_zip.values()):
        assert np.array_equal(mask, mask_zip) and mask.any() and table == table_zip
    assert not list(scratch.iterdir())  # unpacked for the run, removed after it
    page = next((tmp_path / "out_zip" / "report").glob("*.html")).read_text(encoding="utf-8")
    assert f"<dt>Source</dt><dd>{archive}" in page and str(scratch) not in page
    # run again: the finished cases are found in the output folder and not predicted anew
    assert predict_main(["-i", str(archive), "-o", str(tmp_path / "out_zip"), "-m", str(model), "--no-qc", "--report"]) == 0
    assert not list(scratch.iterdir())


def test_a_bad_scan_in_an_archive_fails_by_the_archives_name_and_the_rest_go_on(tmp_path, model, scratch):
    folder = tmp_path / "scans"
    image, _, geometry = tiny_case(seed=1)
    write_image(image, geometry, folder / "good.nii.gz")
    image[0, 0, 0] = np.nan
    write_image(image, geometry, folder / "bad.nii.gz")
    archive = _zip(tmp_path / "scans.zip", folder)
    assert predict_main(["-i", str(archive), "-o", str(tmp_path / "out"), "-m", str(model), "--no-qc"]) == 1
    summary = pd.read_csv(tmp_path / "out" / "summary.csv").set_index("case_id")
    assert summary.loc["good", "status"] == "ok" and summary.loc["bad", "status"] == "failed"
    assert f"{archive}/bad.nii.gz" in summary.loc["bad", "error"] and str(scratch) not in summary.loc["bad", "error"]
    assert "NaN" in summary.loc["bad", "error"] and not list(scratch.iterdir())


def test_macos_resource_forks_in_an_archive_are_left_out(tmp_path, model):
    folder = tmp_path / "scans"
    image, _, geometry = tiny_case(seed=1)
    write_image(image, geometry, folder / "scan.nii.gz")
    archive = _zip(tmp_path / "scans.zip", folder)
    with zipfile.ZipFile(archive, "a") as z:
        z.writestr("__MACOSX/._scan.nii.gz", b"\x00\x05\x16\x07 resource fork")
    assert predict_main(["-i", str(archive), "-o", str(tmp_path / "out"), "-m", str(model), "--no-qc"]) == 0
    assert pd.read_csv(tmp_path / "out" / "summary.csv")["case_id"].tolist() == ["scan"]


def _member(archive: Path, name: str, data: bytes = b"data", attr: int = 0) -> Path:
    with zipfile.ZipFile(archive, "w") as z:
        info = zipfile.ZipInfo(name)
        info.external_attr = attr
        z.writestr(info, data)
    return archive


def _encrypted(archive: Path) -> Path:
    """A member marked encrypted (bit 0 of the general-purpose flags, in its local and central headers)."""
    _member(archive, "scan.nii.gz")
    raw = bytearray(archive.read_bytes())
    raw[raw.index(b"PK\x03\x04") + 6] |= 0x1
    raw[raw.index(b"PK\x01\x02") + 8] |= 0x1
    archive.write_bytes(bytes(raw))
    return archive


def _not_a_zip(archive: Path) -> Path:
    archive.write_bytes(b"PK\x03\x04 not really")
    return archive


def _damaged(archive: Path) -> Path:
    """One stored member whose bytes no longer match its CRC."""
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as z:
        z.writestr("scan.nii.gz", b"A" * 1000)
    raw = bytearray(archive.read_bytes())
    raw[raw.index(b"A" * 1000) + 500] = ord("B")
    archive.write_bytes(bytes(raw))
    return archive


@pytest.mark.parametrize("make,message", [
    (lambda a: _member(a, "../outside.nii.gz"), "points outside the archive's folder"),
    (lambda a: _member(a, "/etc/outside.nii.gz"), "points outside the archive's folder"),
    (lambda a: _member(a, "scans/../../outside.nii.gz"), "points outside the archive's folder"),
    (lambda a: _member(a, "link.nii.gz", b"/etc/passwd", attr=(stat.S_IFLNK | 0o777) << 16), "is a symbolic link"),
    (_encrypted, "is encrypted"),
    (_damaged, r"member scan.nii.gz of the ZIP archive cannot be unpacked \(Bad CRC-32"),
    (_not_a_zip, "is not a readable ZIP archive"),
    (lambda a: _member(a, "__MACOSX/._x", b"fork"), "holds no files"),
], ids=["dot-dot", "absolute", "nested-dot-dot", "symlink", "encrypted", "damaged", "not-a-zip", "empty"])
def test_unsafe_or_broken_archives_are_refused_by_name_before_anything_is_written(tmp_path, model, scratch, capsys, make, message):
    archive = make(tmp_path / "scans.zip")
    assert predict_main(["-i", str(archive), "-o", str(tmp_path / "out"), "-m", str(model)]) == 2
    err = capsys.readouterr().err
    assert str(archive) in err and message.replace("\\", "") in err.replace("\\", "") or pytest.fail(err)
    assert not (tmp_path / "out").exists() and not list(scratch.iterdir())
    assert not (tmp_path / "outside.nii.gz").exists()


def test_an_archive_larger_than_the_free_disk_is_refused(tmp_path, monkeypatch):
    archive = _member(tmp_path / "big.zip", "scan.nii.gz", b"x" * 4096)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10**6, 10**6 - 1000, 1000))
    with pytest.raises(ImageError, match=r"need 0.00 GB, more than the temporary folder's disk has free"):
        unpack(archive, tmp_path / "into")


def test_the_unpacked_folder_goes_when_a_run_is_interrupted(tmp_path, model, scratch, monkeypatch):
    from deepwml.inference import run

    image, _, geometry = tiny_case(seed=1)
    write_image(image, geometry, tmp_path / "scans" / "scan.nii.gz")
    archive = _zip(tmp_path / "scans.zip", tmp_path / "scans")

    def interrupted(request, archive=None):
        assert list(scratch.iterdir())  # unpacked while the run runs
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "_predict", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run.predict(run.PredictRequest(input=archive, output=tmp_path / "out", model_dir=model))
    assert not list(scratch.iterdir())


def test_the_segmenter_reads_an_archive_as_the_folder_it_holds(tmp_path, model, scratch):
    from deepwml.inference.segmenter import Segmenter

    _series(tmp_path / "series", 4, "1.2.826.0.1.3680043.8.498.73.1")
    archive = _zip(tmp_path / "patient3.zip", tmp_path / "series")
    assert predict_main(["-i", str(tmp_path / "series"), "-o", str(tmp_path / "out"), "-m", str(model), "--no-qc"]) == 0
    result = Segmenter(model).segment(archive)
    assert result.case_id == "patient3" and np.array_equal(result.mask, read_image(tmp_path / "out" / "series.nii.gz", dtype=None).array)
    assert "AX FLAIR" in result.summary["source_series"] and not list(scratch.iterdir())


def test_pseudonymised_cases_of_an_archive_are_recorded_by_the_archives_name(tmp_path, model, scratch):
    image, _, geometry = tiny_case(seed=1)
    write_image(image, geometry, tmp_path / "scans" / "scan.nii.gz")
    archive = _zip(tmp_path / "scans.zip", tmp_path / "scans")
    (tmp_path / "keys").mkdir()
    assert predict_main(["-i", str(archive), "-o", str(tmp_path / "out"), "-m", str(model), "--no-qc",
                         "--pseudonymise", str(tmp_path / "keys" / "key")]) == 0
    record = pd.read_csv(tmp_path / "keys" / "pseudonyms.csv")
    assert record["case_id"].tolist() == ["scan"] and record["source"].tolist() == [f"{archive}: scan.nii.gz"]


def test_deepwml_compare_reads_each_visit_from_an_archive_and_resumes(tmp_path, model, scratch, capsys):
    """Two studies downloaded as archives (a ZIP and a tar.gz) compare as the scans they hold: the same change, the
    archives named in the summary and report, nothing of the temporary folders; a second run finds the segmentations
    done; an archive of two scans is refused by its own name."""
    import json

    from deepwml.cli.compare import main as compare_main
    from test_longitudinal import two_visits

    paths, _, _, _ = two_visits(tmp_path / "visits")
    for visit in ("baseline", "followup"):
        (tmp_path / visit).mkdir()
        shutil.copy(paths[visit], tmp_path / visit / "scan.nii.gz")
    packed = {"baseline": _zip(tmp_path / "baseline.zip", tmp_path / "baseline"),
              "followup": _tar(tmp_path / "followup.tar.gz", tmp_path / "followup")}
    common = ["-m", str(model), "--no-picture"]
    assert compare_main(["-b", str(paths["baseline"]), "-f", str(paths["followup"]), "-o", str(tmp_path / "plain"), *common]) == 0
    args = ["-b", str(packed["baseline"]), "-f", str(packed["followup"]), "-o", str(tmp_path / "packed"), *common]
    assert compare_main(args) == 0
    plain, summary = (json.loads((tmp_path / o / "change.json").read_text()) for o in ("plain", "packed"))
    for key in ("new_lesions", "enlarging_lesions", "stable_lesions", "baseline_volume_ml", "followup_volume_ml"):
        assert summary[key] == plain[key]
    assert summary["inputs"]["baseline"] == str(packed["baseline"]) and summary["inputs"]["followup"] == str(packed["followup"])
    written = [f for f in (tmp_path / "packed").rglob("*") if f.is_file() and f.suffix in (".json", ".html", ".csv", ".md")]
    assert written and not any(str(scratch) in f.read_text(encoding="utf-8", errors="replace") for f in written)
    assert not list(scratch.iterdir())
    masks = sorted((tmp_path / "packed").glob("*/scan.nii.gz"))
    stamps = [m.stat().st_mtime_ns for m in masks]
    assert len(masks) == 2 and compare_main(args) == 0 and [m.stat().st_mtime_ns for m in masks] == stamps
    # the DICOM outputs file with the follow-up's series: an archive holding a NIfTI file has none
    capsys.readouterr()
    assert compare_main(args + ["--dicom-seg"]) == 2
    err = capsys.readouterr().err
    assert "--dicom-seg needs the follow-up as a DICOM series folder" in err and str(packed["followup"]) in err
    shutil.copy(paths["followup"], tmp_path / "baseline" / "other.nii.gz")
    two = _zip(tmp_path / "two.zip", tmp_path / "baseline")
    capsys.readouterr()
    assert compare_main(["-b", str(two), "-f", str(packed["followup"]), "-o", str(tmp_path / "two"), *common]) == 2
    err = capsys.readouterr().err
    assert f"{two}: holds 2 scans" in err and str(scratch) not in err and not list(scratch.iterdir())


def test_a_dicom_seg_of_a_series_in_an_archive_references_that_series(tmp_path, model):
    """The SEG is made while the run's unpacked series is there to read its instances; it files with that series."""
    import pydicom

    pytest.importorskip("highdicom", reason="DICOM SEG needs highdicom (pip install 'deepwml[dicom]')")
    uid = "1.2.826.0.1.3680043.8.498.74.1"
    _series(tmp_path / "series", 4, uid)
    archive = _zip(tmp_path / "patient4.zip", tmp_path / "series")
    assert predict_main(["-i", str(archive), "-o", str(tmp_path / "out"), "-m", str(model), "--no-qc", "--dicom-seg"]) == 0
    seg = pydicom.dcmread(tmp_path / "out" / "patient4_seg.dcm")
    assert seg.Modality == "SEG" and seg.ReferencedSeriesSequence[0].SeriesInstanceUID == uid


def test_unpacking_shows_its_progress_in_bytes_when_asked(tmp_path, capsys):
    archive = _member(tmp_path / "big.zip", "scan.nii.gz", b"x" * 300_000)
    unpack(archive, tmp_path / "into", progress=True)
    err = capsys.readouterr().err
    assert "unpacking big.zip" in err and "300k/300k" in err
    assert (tmp_path / "into" / "scan.nii.gz").read_bytes() == b"x" * 300_000
    unpack(archive, tmp_path / "quiet", progress=False)
    assert "unpacking big.zip" not in capsys.readouterr().err


def test_the_segmenter_names_a_bad_scan_in_an_archive_by_the_archive(tmp_path, model, scratch):
    from deepwml.inference.segmenter import Segmenter

    image, _, geometry = tiny_case(seed=1)
    image[0, 0, 0] = np.nan
    write_image(image, geometry, tmp_path / "scans" / "bad.nii.gz")
    archive = _zip(tmp_path / "bad.zip", tmp_path / "scans")
    with pytest.raises(ImageError, match="NaN") as raised:
        Segmenter(model).segment(archive)
    assert raised.value.path == f"{archive}/bad.nii.gz" and str(scratch) not in str(raised.value)
    assert not list(scratch.iterdir())


def test_an_archive_written_with_backslashes_between_folders_is_read_as_folders(tmp_path, model):
    """Old Windows tools wrote member names as folder\\file; they are folders as in any other archive."""
    _series(tmp_path / "export" / "DICOM" / "SE1", 4, "1.2.826.0.1.3680043.8.498.75.1")
    for name, separator in (("slashes", "/"), ("backslashes", "\\")):
        with zipfile.ZipFile(tmp_path / f"{name}.zip", "w") as z:
            for path in sorted((tmp_path / "export").rglob("*")):
                if path.is_file():
                    z.write(path, separator.join(path.relative_to(tmp_path / "export").parts))
        assert predict_main(["-i", str(tmp_path / f"{name}.zip"), "-o", str(tmp_path / name), "-m", str(model), "--no-qc"]) == 0
    assert _outputs(tmp_path / "slashes").keys() == _outputs(tmp_path / "backslashes").keys() == {"DICOM"}
    assert np.array_equal(_outputs(tmp_path / "slashes")["DICOM"][0], _outputs(tmp_path / "backslashes")["DICOM"][0])


def test_a_run_refused_inside_an_archive_names_the_archive(tmp_path, model, scratch, capsys):
    archive = _member(tmp_path / "notes.zip", "readme.txt", b"no scans here")
    assert predict_main(["-i", str(archive), "-o", str(tmp_path / "out"), "-m", str(model)]) == 2
    err = capsys.readouterr().err
    assert f"{archive}: no images found" in err and str(scratch) not in err


def test_a_wrong_model_or_option_is_refused_before_the_archive_is_unpacked(tmp_path, model, scratch, monkeypatch, capsys):
    """A typo in -m or a refused setting is said at once, not after the archive is unpacked; an -o beside the archive
    is no clash (its cases are read from the unpacked folder, so their masks never overwrite it)."""
    import deepwml.inference.run as run

    image, _, geometry = tiny_case(seed=1)
    write_image(image, geometry, tmp_path / "scans" / "scan.nii.gz")
    archive = _zip(tmp_path / "scans.zip", tmp_path / "scans")
    unpacking = []
    real = run.unpacked
    monkeypatch.setattr(run, "unpacked", lambda *a, **k: unpacking.append(a) or real(*a, **k))
    for extra, message in ((["-m", str(tmp_path / "no_such_model")], "no_such_model"),
                           (["-m", str(model), "--threshold", "1.5"], "--threshold"),
                           (["-m", str(model), "--num-parts", "2", "--part-id", "2"], "--part-id")):
        assert predict_main(["-i", str(archive), "-o", str(tmp_path / "out"), *extra]) == 2
        assert message in capsys.readouterr().err
    assert not unpacking and not (tmp_path / "out").exists() and not list(scratch.iterdir())
    assert predict_main(["-i", str(archive), "-o", str(tmp_path), "-m", str(model), "--no-qc"]) == 0
    assert unpacking and (tmp_path / "scan.nii.gz").is_file() and archive.is_file()


def _tar(archive: Path, root: Path, prefix: str = "") -> Path:
    """Every file below ``root`` into the tar ``archive`` under ``prefix`` (compressed as its ending says)."""
    mode = {"gz": "w:gz", "tgz": "w:gz", "bz2": "w:bz2", "xz": "w:xz"}.get(archive.name.rsplit(".", 1)[-1], "w")
    with tarfile.open(archive, mode) as t:
        for path in sorted(root.rglob("*")):
            t.add(path, prefix + path.relative_to(root).as_posix(), recursive=False)
    return archive


@pytest.mark.parametrize("name", ["export.tar.gz", "EXPORT.TGZ", "export.tar", "export.tar.xz", "export.tar.bz2"])
def test_a_tar_archive_gives_the_cases_and_masks_of_the_folder_it_holds(tmp_path, model, scratch, name):
    """A DICOM export as a tar archive, plain or compressed, any letter case: the folder's cases, masks and lesion
    tables, named by the archive; the unpacked folder goes."""
    folder = tmp_path / "export"
    _series(folder / "DICOM" / "SE1", 4, "1.2.826.0.1.3680043.8.498.72.1")
    archive = _tar(tmp_path / name, folder)
    assert predict_main(["-i", str(folder), "-o", str(tmp_path / "out_folder"), "-m", str(model), "--no-qc"]) == 0
    assert predict_main(["-i", str(archive), "-o", str(tmp_path / "out_tar"), "-m", str(model), "--no-qc"]) == 0
    from_folder, from_tar = _outputs(tmp_path / "out_folder"), _outputs(tmp_path / "out_tar")
    assert list(from_tar) == list(from_folder)
    for (mask, table), (mask_tar, table_tar) in zip(from_folder.values(), from_tar.values()):
        assert np.array_equal(mask, mask_tar) and mask.any() and table == table_tar
    assert not list(scratch.iterdir())


def _tar_member(archive: Path, info: tarfile.TarInfo, data: bytes = b"") -> Path:
    with tarfile.open(archive, "w:gz") as t:
        t.addfile(info, io.BytesIO(data) if data else None)
    return archive


def _tar_info(name: str, kind: bytes = tarfile.REGTYPE, size: int = 0, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, size, link
    return info


def _file_and_folder(archive: Path) -> Path:
    """A file 'a' and a file 'a/b.nii.gz': the second needs 'a' as a folder."""
    with tarfile.open(archive, "w:gz") as t:
        for info in (_tar_info("a", size=4), _tar_info("a/b.nii.gz", size=4)):
            t.addfile(info, io.BytesIO(b"data"))
    return archive


def _truncated(archive: Path) -> Path:
    """A gzip-compressed tar cut short inside its one member's data (a download that stopped)."""
    _tar_member(archive, _tar_info("scan.nii.gz", size=40000), np.random.default_rng(0).bytes(40000))
    archive.write_bytes(archive.read_bytes()[:20000])
    return archive


@pytest.mark.parametrize("make,message", [
    (lambda a: _tar_member(a, _tar_info("../outside.nii.gz", size=4), b"data"), "points outside the archive's folder"),
    (lambda a: _tar_member(a, _tar_info("/etc/outside.nii.gz", size=4), b"data"), "points outside the archive's folder"),
    (lambda a: _tar_member(a, _tar_info("link.nii.gz", tarfile.SYMTYPE, link="/etc/passwd")), "is a symbolic link"),
    (lambda a: _tar_member(a, _tar_info("hard.nii.gz", tarfile.LNKTYPE, link="/etc/passwd")), "is a hard link"),
    (lambda a: _tar_member(a, _tar_info("pipe", tarfile.FIFOTYPE)), "is not a regular file"),
    (lambda a: _tar_member(a, _tar_info("dev", tarfile.CHRTYPE)), "is not a regular file"),
    (_truncated, "is not a readable tar archive"),
    (lambda a: a.write_bytes(b"\x1f\x8b not really gzip") and a, "is not a readable tar archive"),
    (lambda a: _tar_member(a, _tar_info("__MACOSX/._x", size=4), b"fork"), "the tar archive holds no files"),
    (_file_and_folder, "member a/b.nii.gz of the tar archive cannot be unpacked"),
], ids=["dot-dot", "absolute", "symlink", "hardlink", "fifo", "device", "truncated", "not-a-tar", "empty", "file-as-folder"])
def test_unsafe_or_broken_tar_archives_are_refused_by_name_before_anything_is_written(tmp_path, model, scratch, capsys,
                                                                                       make, message):
    archive = make(tmp_path / "scans.tar.gz")
    assert predict_main(["-i", str(archive), "-o", str(tmp_path / "out"), "-m", str(model)]) == 2
    err = capsys.readouterr().err
    assert str(archive) in err and message in err or pytest.fail(err)
    assert not (tmp_path / "out").exists() and not list(scratch.iterdir())
    assert not (tmp_path / "outside.nii.gz").exists()
