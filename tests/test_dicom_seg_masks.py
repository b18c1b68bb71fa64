"""Lesion masks kept as DICOM SEG read back onto their series' grid: DeepWML's own SEG round-trips (classic and
multi-frame series, 3D series in sagittal or coronal partitions), the lesion segments are chosen among others, a SEG
of another series or a broken file is a clear error; a SEG works as a training label in a CSV manifest and as a
reader's mask in deepwml_compare."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from conftest import tiny_case
from dataset_conversion import csv_manifest
from deepwml.cli.compare import main as compare_main
from deepwml.cli.predict import main as predict_main
from deepwml.datasets.raw_dataset import RawDataset
from deepwml.imageio import Geometry, read_image
from deepwml.imageio.dicom_seg_masks import is_dicom_seg, read_seg_mask
from deepwml.utils.errors import ImageError
from deepwml_testing.toy_models import tiny_plan, write_model_dir
from test_dicom import UID_ROOT, write_dicom_series
from test_dicom_study import _multiframe

hd = pytest.importorskip("highdicom", reason="DICOM SEG needs highdicom (pip install 'deepwml[dicom]')")


@pytest.fixture
def model_dir(tmp_path) -> Path:
    """A threshold toy model (deterministic lesion masks)."""
    return write_model_dir(tmp_path / "results" / "Dataset999_Toy" / "tiny", tiny_plan(), folds=(0,), kind="threshold")


def _series(folder: Path, seed: int, uid: str) -> Path:
    image, _, geometry = tiny_case(shape_zyx=(5, 64, 56), spacing_xyz=(0.9, 0.9, 6.5), seed=seed, n_lesions=5)
    return write_dicom_series(folder, np.round(image * 10).astype(np.int16), geometry, uid)


def _predicted(tmp_path: Path, model_dir: Path, folder: Path) -> tuple:
    """deepwml_predict --dicom-seg of one series folder: (its NIfTI mask, its SEG)."""
    out = tmp_path / f"out_{folder.name}"
    assert predict_main(["-i", str(folder), "-o", str(out), "-m", str(model_dir), "--dicom-seg"]) == 0
    return read_image(out / f"{folder.name}.nii.gz", dtype=None).array, out / f"{folder.name}_seg.dcm"


def test_deepwml_s_seg_reads_back_as_its_mask(tmp_path, model_dir):
    folder = _series(tmp_path / "patient1", 1, UID_ROOT + "95.1")
    mask, seg = _predicted(tmp_path, model_dir, folder)
    assert mask.any() and is_dicom_seg(seg) and not is_dicom_seg(tmp_path / "out_patient1" / "patient1.nii.gz")
    assert np.array_equal(read_seg_mask(seg, folder), mask > 0)


@pytest.mark.filterwarnings("ignore")
def test_a_multiframe_series_seg_reads_back_as_its_mask(tmp_path, model_dir):
    classic = _series(tmp_path / "classic", 2, UID_ROOT + "95.2")
    folder = _multiframe(classic, tmp_path / "patient2").parent
    mask, seg = _predicted(tmp_path, model_dir, folder)
    assert mask.any() and not mask.all(axis=(1, 2)).any()
    assert np.array_equal(read_seg_mask(seg, folder), mask > 0)


def _seg(folder: Path, masks: dict, path: Path) -> Path:
    """A SEG of the series in ``folder`` with one segment per (label, property) -> (z, y, x) mask, in that order."""
    from pydicom.sr.codedict import codes

    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.iterdir())]
    headers.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
    algorithm = hd.AlgorithmIdentificationSequence(name="test", family=codes.cid7162.ArtificialIntelligence, version="1")
    segments = [hd.seg.SegmentDescription(
        segment_number=k, segment_label=label, segmented_property_category=codes.SCT.Tissue, segmented_property_type=kind,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm,
    ) for k, (label, kind) in enumerate(masks, start=1)]
    pixels = np.stack([m.astype(np.uint8) for m in masks.values()], axis=-1)
    seg = hd.seg.Segmentation(
        source_images=headers, pixel_array=pixels, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segments, series_instance_uid=hd.UID(), series_number=5, sop_instance_uid=hd.UID(),
        instance_number=1, manufacturer="test", manufacturer_model_name="test", software_versions="1",
        device_serial_number="1",
    )
    seg.save_as(path)
    return path


#: a 3D series stored in 1.2 mm sagittal or coronal partitions (right-handed, as a scanner's slice normal runs): the
#: numpy (S-I, A-P, L-R) volume -> the stored (z, y, x) array, the stored file's size and the direction of its axes,
#: and the spacing (x, y, z) the same voxels have stored axially
PARTITIONS = {
    "sagittal": (lambda v: v.transpose(2, 0, 1), (48, 30, 40), (0, 0, 1, 1, 0, 0, 0, 1, 0), (1.2, 1.0, 1.0)),  # x A-P, y S-I, z L-R
    "coronal": (lambda v: v.transpose(1, 0, 2)[::-1], (40, 30, 48), (1, 0, 0, 0, 0, -1, 0, 1, 0), (1.0, 1.2, 1.0)),  # z P-A
}


@pytest.mark.parametrize("plane", sorted(PARTITIONS))
def test_a_3d_series_in_sagittal_or_coronal_partitions_gets_a_seg_on_its_own_frames(tmp_path, model_dir, plane):
    """A 3D FLAIR series acquired sagittally or coronally is segmented in axial planes, as the same voxels stored
    axially are (the same mask voxel for voxel), and its SEG, written on the series' own partitions, reads back as
    its mask."""
    image, _, _ = tiny_case(shape_zyx=(30, 48, 40), spacing_xyz=(1.0, 1.0, 1.0), seed=5, n_lesions=6)
    volume = np.round(image * 10).astype(np.int16)  # numpy (S-I, A-P, L-R)
    stored, size, direction, axial_spacing = PARTITIONS[plane]
    axial = write_dicom_series(tmp_path / "axial", volume, Geometry((40, 48, 30), axial_spacing, (0.0, 0.0, 0.0)),
                               UID_ROOT + "96.1")
    folder = write_dicom_series(tmp_path / plane, np.ascontiguousarray(stored(volume)),
                                Geometry(size, (1.0, 1.0, 1.2), (0.0, 0.0, 0.0), direction),
                                UID_ROOT + "96.2", description=f"{plane[:3].upper()} 3D FLAIR")
    axial_mask, _ = _predicted(tmp_path, model_dir, axial)
    mask, seg = _predicted(tmp_path, model_dir, folder)
    assert axial_mask.any() and np.array_equal(mask, stored(axial_mask))
    assert np.array_equal(read_seg_mask(seg, folder), mask > 0)
    # read in its 30 axial planes, not in its partitions
    with open(tmp_path / f"out_{plane}" / "summary.csv", newline="") as f:
        assert [row["slices"] for row in csv.DictReader(f)] == ["30"]


def test_the_lesion_segments_are_chosen_among_others(tmp_path):
    from pydicom.sr.codedict import codes

    folder = _series(tmp_path / "series", 3, UID_ROOT + "95.3")
    shape = read_image(folder).array.shape
    brain, lesion, other = (np.zeros(shape, bool) for _ in range(3))
    brain[:, 10:50, 10:45] = True
    lesion[2, 20:24, 20:26] = True
    other[4, 30:33, 30:33] = True
    # a brain segment beside a lesion segment: the lesion only
    seg = _seg(folder, {("Brain", codes.SCT.Brain): brain, ("Lesion", codes.SCT.Lesion): lesion}, tmp_path / "a.dcm")
    assert np.array_equal(read_seg_mask(seg, folder), lesion)
    # labels count too ("WMH", "plaque"), and every lesion segment is taken
    seg = _seg(folder, {("WMH", codes.SCT.Tissue): lesion, ("plaque 2", codes.SCT.Tissue): other,
                        ("brain", codes.SCT.Brain): brain}, tmp_path / "b.dcm")
    assert np.array_equal(read_seg_mask(seg, folder), lesion | other)
    # one segment, whatever its name: taken whole
    seg = _seg(folder, {("Segment_1", codes.SCT.Tissue): lesion}, tmp_path / "c.dcm")
    assert np.array_equal(read_seg_mask(seg, folder), lesion)
    # two segments, neither a lesion: an error naming them
    seg = _seg(folder, {("Brain", codes.SCT.Brain): brain, ("Tumour", codes.SCT.Tissue): other}, tmp_path / "d.dcm")
    with pytest.raises(ImageError, match=r"d.dcm.*none of the SEG's 2 segments is a lesion segment.*1 'Brain', 2 'Tumour'"):
        read_seg_mask(seg, folder)


def test_a_seg_of_another_series_or_a_broken_file_is_an_error(tmp_path, model_dir):
    folder = _series(tmp_path / "patient4", 4, UID_ROOT + "95.4")
    other = _series(tmp_path / "patient5", 5, UID_ROOT + "95.5")
    _, seg = _predicted(tmp_path, model_dir, folder)
    with pytest.raises(ImageError, match=rf"patient4_seg.dcm.*outlines series {UID_ROOT}95.4, not the series {UID_ROOT}95.5"):
        read_seg_mask(seg, other)
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(seg.read_bytes()[:2000])
    with pytest.raises(ImageError, match="broken.dcm.*not a readable DICOM SEG"):
        read_seg_mask(broken, folder)


def test_a_seg_is_a_training_label_in_a_csv_manifest(tmp_path, model_dir):
    export = tmp_path / "export"
    folder = _series(export / "PAT1", 6, UID_ROOT + "95.6")
    mask, seg = _predicted(tmp_path, model_dir, folder)
    (export / "PAT1_seg.dcm").write_bytes(seg.read_bytes())
    image, _, geometry = tiny_case(seed=7)
    from deepwml.imageio import write_image

    write_image(image, geometry, export / "nifti.nii.gz")
    rows = [{"image": "PAT1", "label": "PAT1_seg.dcm", "disease": "MS"}]
    with open(export / "m.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["image", "label", "disease"])
        writer.writeheader()
        writer.writerows(rows)
    raw = tmp_path / "raw"
    assert csv_manifest.main([str(export / "m.csv"), "--id", "611", "--name", "SegLabels", "--raw", str(raw)]) == 0
    case = RawDataset.find(raw, "611").cases("Tr")[0]
    label, scan = read_image(case.label, dtype=None), read_image(case.image)
    assert np.array_equal(label.array > 0, mask > 0) and not label.geometry.mismatches(scan.geometry, tol=1e-4)
    # a SEG beside a NIfTI image has no series to lie on: a manifest problem, nothing written
    with open(export / "bad.csv", "w", newline="") as f:
        f.write("image,label\nnifti.nii.gz,PAT1_seg.dcm\n")
    assert csv_manifest.main([str(export / "bad.csv"), "--id", "612", "--name", "Bad", "--raw", str(raw)]) != 0
    assert not list(raw.glob("Dataset612*"))


def test_a_reader_s_seg_stands_for_a_visit_in_deepwml_compare(tmp_path, model_dir):
    base = _series(tmp_path / "visit1", 8, UID_ROOT + "95.8")
    follow = _series(tmp_path / "visit2", 8, UID_ROOT + "95.9")  # the same head again: nothing new
    base_mask, base_seg = _predicted(tmp_path, model_dir, base)
    follow_mask, follow_seg = _predicted(tmp_path, model_dir, follow)
    out = tmp_path / "change"
    assert compare_main(["-b", str(base), "-f", str(follow), "-o", str(out), "--baseline-mask", str(base_seg),
                         "--followup-mask", str(follow_seg), "--no-picture"]) == 0
    summary = json.loads((out / "change.json").read_text())
    assert summary["new_lesions"] == 0 and summary["followup_lesion_count"] == summary["baseline_lesion_count"] > 0
