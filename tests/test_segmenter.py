"""deepwml.Segmenter: a model loaded once segments scans given as files or held in memory (numpy, SimpleITK, nibabel)
exactly as deepwml_predict segments them, returns arrays on the scan's own grid, and refuses bad scans by name."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from conftest import tiny_case
from deepwml.cli.predict import main as predict_main
from deepwml.imageio import Geometry, read_image, write_image
from deepwml.inference.outputs import write_csv
from deepwml.inference.segmenter import Segmenter
from deepwml.utils.errors import DeepWMLError
from deepwml_testing.toy_models import tiny_plan, write_model_dir


@pytest.fixture(scope="module")
def scan(tmp_path_factory) -> Path:
    """Ten central slices of an oblique 512² synthetic MS scan with lesions, as a NIfTI file."""
    from deepwml_testing.cases import input_case

    case = input_case("MS#3", index=2, seed=4242)
    middle = case.image.shape[0] // 2
    image = case.image[middle - 5:middle + 5]
    # the first kept slice's position moves the origin along the slice axis
    geometry = case.geometry
    origin = np.asarray(geometry.origin) + geometry.direction_matrix[:, 2] * geometry.spacing[2] * (middle - 5)
    geometry = Geometry(image.shape[::-1], geometry.spacing, tuple(origin), geometry.direction)
    return write_image(image, geometry, tmp_path_factory.mktemp("scan") / "patient.nii.gz")


@pytest.fixture(scope="module")
def shipped() -> Segmenter:
    """The shipped lesion and anatomy models, loaded once for the module."""
    return Segmenter()


@pytest.fixture(scope="module")
def cli_outputs(scan, tmp_path_factory) -> Path:
    """deepwml_predict's outputs for ``scan`` with its defaults and the probability map, which (like the Segmenter's)
    mirrors every slice under flip TTA."""
    out = tmp_path_factory.mktemp("cli") / "out"
    assert predict_main(["-i", str(scan), "-o", str(out), "--no-qc", "--save-probabilities"]) == 0
    return out


def _same_table_as_written(lesions: pd.DataFrame, written: Path, tmp_path: Path, exact: bool = True) -> None:
    """The lesion table as deepwml_predict's writer writes it is the file it wrote: byte for byte, or (``exact``
    False) to 1e-5 (nibabel computes a NIfTI's affine in its own rounding, so centroids may move by 1e-6 mm)."""
    write_csv(lesions, tmp_path / "again.csv")
    if exact:
        assert (tmp_path / "again.csv").read_bytes() == written.read_bytes()
    else:
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "again.csv"), pd.read_csv(written), check_exact=False, atol=1e-5)


def test_a_file_an_itk_image_and_a_nibabel_image_give_deepwml_predicts_mask_table_and_summary(shipped, scan, cli_outputs, tmp_path):
    import nibabel

    written = read_image(cli_outputs / "patient.nii.gz")
    probabilities = read_image(next(cli_outputs.glob("patient_prob*"))).array
    row = pd.read_csv(cli_outputs / "summary.csv").iloc[0]
    assert written.array.sum() > 50  # the scan has lesions to compare
    for given in (scan, str(scan), sitk.ReadImage(str(scan)), nibabel.load(str(scan))):
        result = shipped.segment(given, case_id="patient")
        assert np.array_equal(result.mask, written.array) and result.mask.dtype == np.uint8
        assert not result.geometry.mismatches(written.geometry)
        _same_table_as_written(result.lesions, cli_outputs / "patient_lesions.csv", tmp_path, exact=not isinstance(given, nibabel.Nifti1Image))
        assert result.summary["lesion_count"] == row["lesion_count"] > 0
        for column in ("total_lesion_volume_ml", "brain_volume_ml", "fazekas_periventricular", "fazekas_deep",
                       "periventricular_count", "lesions_dropped_faint_in_cortex"):
            assert result.summary[column] == pytest.approx(row[column], abs=1e-4), column  # the CSV keeps 4 decimals
        assert result.volume_ml == pytest.approx(row["total_lesion_volume_ml"], abs=1e-4)
        assert result.anatomy.shape == result.mask.shape == result.probabilities.shape
        # the calibrated probabilities the mask thresholds
        assert result.probabilities.dtype == np.float32 and np.array_equal(result.probabilities, probabilities)
        assert result.probabilities[result.mask > 0].min() >= shipped.mask_settings.threshold
    assert shipped.segment(scan).case_id == "patient"  # a file's case is named as deepwml_predict names it


def test_a_numpy_array_is_segmented_as_the_same_scan_on_an_axial_grid_of_its_spacing(shipped, scan, tmp_path):
    array = read_image(scan).array
    spacing = (6.5, 0.4492, 0.4492)  # (slice, row, column) as the array's axes
    from_array = shipped.segment(array, spacing=spacing)
    assert from_array.geometry.spacing == pytest.approx(spacing[::-1]) and from_array.geometry.size == array.shape[::-1]
    axial = write_image(array, Geometry(array.shape[::-1], spacing[::-1], (0.0, 0.0, 0.0)), tmp_path / "axial.nii.gz")
    from_file = shipped.segment(axial)
    assert np.array_equal(from_array.mask, from_file.mask) and from_array.mask.any()
    assert from_array.case_id == "scan" and from_file.case_id == "axial"
    # integer voxels as scanners store them are read as numbers, as a file's are
    assert np.array_equal(shipped.segment(np.round(array).astype(np.int16), spacing=spacing).mask,
                          shipped.segment(np.round(array).astype(np.float32), spacing=spacing).mask)


def test_results_save_and_convert_on_the_scans_own_grid(shipped, scan, tmp_path):
    result = shipped.segment(scan)
    grid = read_image(scan).geometry
    for which, ending in (("mask", ".nii.gz"), ("probabilities", ".nrrd"), ("anatomy", ".mgz")):
        path = result.save(tmp_path / f"out_{which}{ending}", which)
        back = read_image(path, dtype=None)
        assert np.array_equal(back.array, getattr(result, which)) and not back.geometry.mismatches(grid)
        image = result.image(which)
        assert np.array_equal(sitk.GetArrayFromImage(image), getattr(result, which))
        assert not Geometry.from_sitk(image).mismatches(grid)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out_anatomy.mgz", "out_mask.nii.gz", "out_probabilities.nrrd"]
    with pytest.raises(DeepWMLError, match="no output 'lesions'"):
        result.save(tmp_path / "x.nii.gz", "lesions")


def test_a_result_writes_the_files_deepwml_predict_writes_for_the_scan(shipped, scan, tmp_path):
    """Segmentation.write: mask, lesion table, QC picture and, as asked, the probability, anatomy, lesion-id and
    uncertainty maps, under deepwml_predict's names and with its contents; a scan given in memory too; a folder where
    the mask would replace the scan is refused with nothing written."""
    import re

    extras = ["--save-probabilities", "--save-anatomy", "--save-lesion-ids", "--save-uncertainty", "--report"]
    assert predict_main(["-i", str(scan), "-o", str(tmp_path / "cli"), *extras]) == 0
    result = shipped.segment(scan)
    written = result.write(tmp_path / "mine", probabilities=True, anatomy=True, lesion_ids=True, uncertainty=True,
                           report=True)
    assert sorted(written) == ["anatomy", "lesion_ids", "lesions", "mask", "probabilities", "qc", "report", "uncertainty"]
    for kind, path in written.items():
        theirs = tmp_path / "cli" / path.relative_to(tmp_path / "mine")
        if path.suffix == ".gz":
            ours_image, their_image = read_image(path, dtype=None), read_image(theirs, dtype=None)
            assert np.array_equal(ours_image.array, their_image.array) and ours_image.geometry == their_image.geometry, kind
        elif kind == "report":  # the same page but for the moment it was made (the model and its settings named alike)
            pages = [re.sub(r"DeepWML [^<,]+, [0-9T:+-]+<", "DeepWML, WHEN<", p.read_text(encoding="utf-8")) for p in (path, theirs)]
            assert pages[0] == pages[1] and "threshold" in pages[0]
        else:  # the lesion table and the QC picture, byte for byte
            assert path.read_bytes() == theirs.read_bytes(), kind
    assert (tmp_path / "mine" / "patient_lesionids.txt").read_bytes() == (tmp_path / "cli" / "patient_lesionids.txt").read_bytes()
    assert not (tmp_path / "mine" / "summary.csv").exists()  # one scan's row is result.summary; a folder's table is the caller's
    # only what is asked for
    assert sorted(result.write(tmp_path / "plain", qc=False)) == ["lesions", "mask"]
    assert sorted(p.name for p in (tmp_path / "plain").iterdir()) == ["patient.nii.gz", "patient_lesions.csv"]
    # a scan in memory is named as given
    in_memory = shipped.segment(read_image(scan).array, spacing=(6.5, 0.4492, 0.4492), case_id="visit1")
    assert in_memory.write(tmp_path / "memory")["mask"] == tmp_path / "memory" / "visit1.nii.gz"
    assert (tmp_path / "memory" / "qc" / "visit1.png").is_file()
    with pytest.raises(DeepWMLError, match="folder of the input file patient.nii.gz"):
        result.write(scan.parent)
    assert sorted(p.name for p in scan.parent.iterdir()) == ["patient.nii.gz"]
    with pytest.raises(DeepWMLError, match="dicom_seg answers a DICOM series, and this scan was not read from one"):
        result.write(tmp_path / "seg", dicom_seg=True)
    assert not (tmp_path / "seg").exists()


def test_a_result_prints_its_report_to_pdf_with_chromium_and_says_when_there_is_none(shipped, scan, tmp_path, monkeypatch):
    from deepwml.inference.patient_report import find_pdf_converter

    result = shipped.segment(scan)
    with pytest.raises(DeepWMLError, match="report is True"):
        result.write(tmp_path / "x", report="docx")
    if find_pdf_converter() is None:
        pytest.skip("no chromium on PATH: install it (apt-get install chromium) to print the report")
    written = result.write(tmp_path / "pdf", qc=False, report="pdf")
    assert written["report_pdf"] == tmp_path / "pdf" / "report" / "patient.pdf" and written["report"].is_file()
    assert written["report_pdf"].read_bytes().startswith(b"%PDF")
    monkeypatch.setenv("PATH", str(tmp_path))  # no browser to be found
    with pytest.raises(DeepWMLError, match="none is on PATH"):
        result.write(tmp_path / "none", report="pdf")
    assert not (tmp_path / "none").exists() and not (tmp_path / "x").exists()


def test_results_of_several_scans_make_deepwml_predicts_summary_table(shipped, scan, cli_outputs, tmp_path):
    """deepwml.write_summary: the summary.csv deepwml_predict writes for the same scan, byte for byte; a row per
    scan sorted by case id; case ids that repeat are refused by name."""
    import deepwml

    result = shipped.segment(scan)
    assert deepwml.write_summary([result], tmp_path / "summary.csv").read_bytes() == (cli_outputs / "summary.csv").read_bytes()
    other = shipped.segment(read_image(scan).array, spacing=(6.5, 0.4492, 0.4492), case_id="a_visit")
    table = pd.read_csv(deepwml.write_summary([result, other], tmp_path / "two.csv"))
    assert list(table["case_id"]) == ["a_visit", "patient"] and (table["status"] == "ok").all()
    assert table.loc[1, "lesion_count"] == result.summary["lesion_count"]
    with pytest.raises(DeepWMLError, match="share the case id.* patient"):
        deepwml.write_summary([result, result], tmp_path / "doubled.csv")
    assert not (tmp_path / "doubled.csv").exists()


def test_settings_are_deepwml_predicts_by_name(scan, cli_outputs, tmp_path):
    strict = Segmenter(threshold=0.9, anatomy=False, threads=1)
    assert strict.threads == 1 and strict.anatomy_model is None and strict.mask_settings.threshold == 0.9
    out = tmp_path / "out"
    assert predict_main(["-i", str(scan), "-o", str(out), "--no-qc", "--threshold", "0.9", "--no-anatomy"]) == 0
    result = strict.segment(scan)
    assert np.array_equal(result.mask, read_image(out / "patient.nii.gz").array)
    assert result.mask.sum() < read_image(cli_outputs / "patient.nii.gz").array.sum()
    assert result.anatomy is None and "fazekas_deep" not in result.summary
    with pytest.raises(DeepWMLError, match="without the anatomy model"):
        result.save(tmp_path / "anatomy.nii.gz", "anatomy")
    with pytest.raises(DeepWMLError, match="takes no setting overwrite"):
        Segmenter(overwrite=True)
    with pytest.raises(DeepWMLError, match="threshold must lie between 0 and 1"):
        Segmenter(threshold=1.5)
    with pytest.raises(DeepWMLError, match="min-lesion-ml"):  # refused as the command refuses it (it was taken)
        Segmenter(min_lesion_ml=-1)
    with pytest.raises(DeepWMLError, match="int8"):
        Segmenter(int8="sometimes")
    with pytest.raises(DeepWMLError, match="threads must be at least 1"):
        Segmenter(threads=0)
    with pytest.raises(DeepWMLError, match="not found"):
        Segmenter(model=tmp_path / "no_model")


@pytest.mark.parametrize("scan_of,spacing,message", [
    (lambda a: a[0], (1, 1, 1), r"is a 2D array of shape \(512, 512\)"),
    (lambda a: a[None], (1, 1, 1), "is a 4D array"),
    (lambda a: np.where(np.arange(a.size).reshape(a.shape) == 7, np.nan, a), (6.5, 0.45, 0.45), "contains 1 NaN/Inf voxels"),
    (lambda a: np.full_like(a, 3.0), (6.5, 0.45, 0.45), "image is empty: every voxel is 3"),
    (lambda a: a, None, "needs its spacing in mm"),
    (lambda a: a, (0.45, 0.45), "spacing takes 3 values"),
    (lambda a: a, (6.5, 0.0, 0.45), r"voxel spacing along y \(j\) is 0"),
    (lambda a: a, (6.5, -1, 0.45), r"voxel spacing along y \(j\) is -1"),
    (lambda a: a.transpose(2, 1, 0), (0.45, 0.45, 6.5), r"the slices are along axis 2 \(spacing 6.5 mm of \[0.45, 0.45, 6.5\]\); "
     r"a numpy scan takes its slices first: np.moveaxis\(array, 2, 0\)"),
    (lambda a: a.astype(complex), (6.5, 0.45, 0.45), "voxels of type complex128"),
    (lambda a: {"image": a}, None, "a dict is not a scan"),
    (lambda a: [], None, "no scan given: an empty list"),
    (lambda a: [a, a], (6.5, 0.45, 0.45), r"the model takes 1 channel\(s\) per scan; 2 given"),
    (lambda a: sitk.GetImageFromArray(a), (6.5, 0.45, 0.45), "spacing is for numpy arrays"),
    (lambda a: "/no/such/scan.nii.gz", (6.5, 0.45, 0.45), "spacing is for numpy arrays; a file or an image object"),
    (lambda a: sitk.GetImageFromArray(np.stack([a, a], -1), isVector=True), None, "has 2 components per voxel"),
], ids=["2d", "4d", "nan", "constant", "no-spacing", "two-spacings", "zero-spacing", "negative-spacing", "slices-last", "complex", "dict", "empty-list",
        "channels", "spacing-with-image", "spacing-with-file", "vector-image"])
def test_bad_scans_in_memory_are_refused_by_name(shipped, scan, scan_of, spacing, message):
    array = read_image(scan).array
    with pytest.raises(DeepWMLError, match=message):
        shipped.segment(scan_of(array), spacing=spacing)


def test_bad_files_are_refused_as_deepwml_predict_refuses_them(shipped, scan, tmp_path):
    with pytest.raises(DeepWMLError, match="input not found"):
        shipped.segment(tmp_path / "missing.nii.gz")
    (tmp_path / "broken.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(DeepWMLError, match="broken.nii.gz"):
        shipped.segment(tmp_path / "broken.nii.gz")
    folder = tmp_path / "two"
    for name in ("a", "b"):
        (folder / f"{name}.nii.gz").parent.mkdir(exist_ok=True)
        (folder / f"{name}.nii.gz").write_bytes(scan.read_bytes())
    with pytest.raises(DeepWMLError, match="holds 2 scans; Segmenter.segment takes one"):
        shipped.segment(folder)


def test_a_two_channel_model_takes_its_channels_as_files_or_arrays_and_keeps_the_callers_torch_threads(tmp_path):
    import torch

    from test_channels_context import t1_of

    plan = tiny_plan()
    plan.preprocessing.channels = [{"name": "FLAIR", "normalization": "zscore_head"}, {"name": "T2", "normalization": "zscore"}]
    plan.network.in_channels = 2
    model = write_model_dir(tmp_path / "model" / "Dataset999_Toy" / "tiny", plan, kind="random")
    image, _, geometry = tiny_case(seed=3)
    flair = write_image(image, geometry, tmp_path / "in" / "a_0000.nii.gz")
    second = write_image(t1_of(image), geometry, tmp_path / "in" / "a_0001.nii.gz")
    assert predict_main(["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-m", str(model), "--no-qc",
                         "--backend", "torch"]) == 0
    written = read_image(tmp_path / "out" / "a.nii.gz").array
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        segmenter = Segmenter(model, backend="torch", threads=2)
        results = [segmenter.segment(flair), segmenter.segment([flair, second]),
                   segmenter.segment([sitk.ReadImage(str(flair)), sitk.ReadImage(str(second))])]
        assert torch.get_num_threads() == 1  # the caller's count, not the Segmenter's
    finally:
        torch.set_num_threads(before)
    assert [r.case_id for r in results] == ["a", "a", "scan"]
    for result in results:
        assert np.array_equal(result.mask, written)
    shifted = sitk.ReadImage(str(second))
    shifted.SetOrigin((5.0, 0.0, 0.0))
    with pytest.raises(DeepWMLError, match="channel 1 is not on channel 0's grid"):
        segmenter.segment([sitk.ReadImage(str(flair)), shifted])
    with pytest.raises(DeepWMLError, match="every channel as a file, or every channel as an image"):
        segmenter.segment([flair, sitk.ReadImage(str(second))])


def test_the_package_offers_the_segmenter_without_importing_a_network_engine():
    """``from deepwml import Segmenter`` is the documented entry point; it loads neither torch nor ONNX Runtime until a
    model is read (the commands import the package too, and most of them need neither)."""
    import subprocess
    import sys

    code = ("import sys; from deepwml import Segmenter, Segmentation; import deepwml.inference.segmenter as m; "
            "assert Segmenter is m.Segmenter and Segmentation is m.Segmentation; "
            "assert not {'torch', 'onnxruntime'} & set(sys.modules), sorted({'torch', 'onnxruntime'} & set(sys.modules))")
    subprocess.run([sys.executable, "-c", code], check=True)
    import deepwml

    with pytest.raises(AttributeError, match="no attribute 'Segmentor'"):
        deepwml.Segmentor  # noqa: B018


def test_a_dicom_series_folder_is_read_as_deepwml_predict_reads_it(tmp_path):
    from test_dicom import UID_ROOT, write_dicom_series

    from conftest import oblique_direction

    model = write_model_dir(tmp_path / "model" / "Dataset999_Toy" / "tiny", tiny_plan(), kind="threshold")
    image, _, geometry = tiny_case(shape_zyx=(5, 64, 56), spacing_xyz=(0.9, 0.9, 6.5), direction=oblique_direction(12),
                                   seed=4, n_lesions=5)
    write_dicom_series(tmp_path / "dicom" / "patient7", np.round(image * 10).astype(np.int16), geometry, UID_ROOT + "71.1")
    assert predict_main(["-i", str(tmp_path / "dicom"), "-o", str(tmp_path / "out"), "-m", str(model), "--no-qc"]) == 0
    written = read_image(tmp_path / "out" / "patient7.nii.gz", dtype=None)
    result = Segmenter(model).segment(tmp_path / "dicom" / "patient7")
    assert result.case_id == "patient7" and result.mask.any()
    assert np.array_equal(result.mask, written.array) and not result.geometry.mismatches(written.geometry)
    _same_table_as_written(result.lesions, tmp_path / "out" / "patient7_lesions.csv", tmp_path)
    # the DICOM outputs of deepwml_predict, answering the series read
    pydicom = pytest.importorskip("pydicom")
    pytest.importorskip("highdicom")
    files = result.write(tmp_path / "mine", qc=False, dicom_seg=True, dicom_sr=True, dicom_findings=True)
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["patient7.nii.gz", "patient7_findings.dcm",
                                                                    "patient7_lesions.csv", "patient7_seg.dcm", "patient7_sr.dcm"]
    source = pydicom.dcmread(next(p for p in (tmp_path / "dicom" / "patient7").iterdir()), stop_before_pixels=True)
    seg, sr = pydicom.dcmread(files["dicom_seg"]), pydicom.dcmread(files["dicom_sr"])
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    assert seg.StudyInstanceUID == sr.StudyInstanceUID == source.StudyInstanceUID
    assert pydicom.dcmread(files["dicom_findings"]).StudyInstanceUID == source.StudyInstanceUID


def test_two_threads_may_segment_with_one_segmenter_at_once(shipped, scan):
    """A service may share one Segmenter between its threads: each scan gets what it gets alone."""
    import threading

    array = read_image(scan).array
    jobs = {"file": lambda: shipped.segment(scan), "flipped": lambda: shipped.segment(array[::-1].copy(), spacing=(6.5, 0.4492, 0.4492))}
    alone = {name: job() for name, job in jobs.items()}
    together = {}
    threads = [threading.Thread(target=lambda n=name, j=job: together.__setitem__(n, j())) for name, job in jobs.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name in jobs:
        assert np.array_equal(together[name].mask, alone[name].mask) and together[name].mask.any()
        assert np.array_equal(together[name].probabilities, alone[name].probabilities)
        pd.testing.assert_frame_equal(together[name].lesions, alone[name].lesions)
