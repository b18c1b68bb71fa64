"""The fingerprint reports each centre's known spacings, thicknesses, matrices and lesion loads, with bounded memory."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import pytest

from conftest import tiny_case
from deepwml.datasets import CaseMeta, DatasetJson, RawDataset
from deepwml.imageio import read_label, write_image
from deepwml.planning import fingerprint as fp
from deepwml.utils.errors import DatasetError

#: two centres with known, different acquisitions: (centre, disease, shape zyx, spacing xyz)
CENTRES = {
    "GE": ("MS", (5, 48, 48), (0.5, 0.5, 7.5)),
    "SIE": ("CSVD", (7, 40, 32), (0.9, 1.0, 5.0)),
}


def write_multicentre_dataset(root: Path, n_per_centre: int = 3, name: str = "Dataset901_Multi", centres: Dict = CENTRES) -> Path:
    """A raw dataset whose cases have per-centre spacing, thickness and matrix; returns its folder."""
    folder = Path(root) / name
    meta = DatasetJson(name=name, file_ending=".nii.gz")
    i = 0
    for centre, (disease, shape, spacing) in centres.items():
        for _ in range(n_per_centre):
            cid = f"{centre}_{i:03d}"
            image, label, geometry = tiny_case(shape_zyx=shape, spacing_xyz=spacing, seed=i)
            write_image(image, geometry, folder / "imagesTr" / f"{cid}.nii.gz")
            write_image(label, geometry, folder / "labelsTr" / f"{cid}.nii.gz")
            meta.cases[cid] = CaseMeta(centre=centre, disease=disease)
            i += 1
    meta.num_training = i
    meta.save(folder / "dataset.json")
    return folder


def expected_lesion_ml(folder: Path, spacing: Sequence[float]) -> List[float]:
    """Lesion volume of every training case computed directly from the label files."""
    out = []
    for path in sorted((folder / "labelsTr").glob("*.nii.gz")):
        out.append(float((read_label(path).array == 1).sum() * np.prod(spacing) / 1000))
    return out


def test_fingerprint_reports_known_spacings_thickness_and_matrices(tmp_path):
    folder = write_multicentre_dataset(tmp_path)
    f = fp.compute_fingerprint(RawDataset(folder), n_jobs=1)
    assert f["n_cases"] == 6
    ge, sie = f["by_centre"]["GE"], f["by_centre"]["SIE"]
    assert ge["n"] == 3 and sie["n"] == 3
    assert ge["slice_thickness_range"] == [7.5, 7.5] and sie["slice_thickness_range"] == [5.0, 5.0]
    assert ge["inplane_spacing_range"] == [0.5, 0.5] and sie["inplane_spacing_range"] == [0.9, 1.0]
    assert ge["matrix_sizes"] == ["48x48"] and sie["matrix_sizes"] == ["40x32"]
    # canonical in-plane order is (rows, columns) = (y, x): spacing (1.0, 0.9), FOV 40 mm × 28.8 mm
    case = f["cases"]["SIE_003"]
    assert case["inplane_spacing"] == [1.0, 0.9]
    assert case["fov_mm"] == pytest.approx([40.0, 28.8])
    assert case["slice_axis"] == 2 and case["n_slices"] == 7 and case["axis_codes"] == "LPS"
    assert f["dataset_summary"]["slice_thickness_range"] == [5.0, 7.5]
    assert set(f["by_disease"]) == {"MS", "CSVD"}


def test_lesion_volumes_match_the_labels(tmp_path):
    folder = write_multicentre_dataset(tmp_path, centres={"GE": CENTRES["GE"]})
    f = fp.compute_fingerprint(RawDataset(folder))
    got = [f["cases"][cid]["lesion"]["volume_ml"] for cid in sorted(f["cases"])]
    assert got == pytest.approx(expected_lesion_ml(folder, (0.5, 0.5, 7.5)), rel=1e-5)
    case = f["cases"]["GE_000"]["lesion"]
    # per slice: area (mm²) × thickness = volume; the slices add up to the case
    assert np.allclose(np.asarray(case["area_mm2_per_slice"]) * 7.5 / 1000, case["volume_ml_per_slice"], rtol=1e-5)
    assert sum(case["volume_ml_per_slice"]) == pytest.approx(case["volume_ml"], rel=1e-5)
    groups = f["dataset_summary"]["lesion_volume_per_slice_groups"]
    assert sum(groups.values()) == sum(f["cases"][c]["lesion"]["slices_with_lesion"] for c in f["cases"])


def test_intensity_statistics_separate_head_and_lesion(tmp_path):
    folder = write_multicentre_dataset(tmp_path, n_per_centre=2)
    f = fp.compute_fingerprint(RawDataset(folder))
    for case in f["cases"].values():
        # tiny_case: head ≈ 100, ventricles ≈ 40, lesions ≈ 160, background ≈ 5
        assert 80 < case["head"]["percentiles"]["p50"] < 110
        assert 150 < case["lesion"]["median"] < 170
        assert case["intensity_percentiles"]["p0.5"] < 10
        assert 0.3 < case["head"]["fraction"] < 0.7


def test_memory_is_bounded_by_a_fixed_sample_per_case(tmp_path, monkeypatch):
    folder = write_multicentre_dataset(tmp_path, n_per_centre=2)
    monkeypatch.setattr(fp, "SAMPLES_PER_CASE", 500)
    monkeypatch.setattr(fp, "MAX_SAMPLES", 1200)
    f = fp.compute_fingerprint(RawDataset(folder))
    # the cap wins over the per-case size: 1200 // 4 cases = 300 voxels each
    assert f["samples_per_case"] == 300
    assert f["dataset_summary"]["head_intensity_samples"] == 1200


def test_fingerprint_is_reused_until_a_file_changes(tmp_path):
    folder = write_multicentre_dataset(tmp_path, n_per_centre=1)
    out = tmp_path / "fingerprint.json"
    first, reused = fp.load_or_compute_fingerprint(RawDataset(folder), out)
    assert not reused and out.is_file()
    again, reused = fp.load_or_compute_fingerprint(RawDataset(folder), out)
    assert reused and fp.fingerprint_hash(again) == fp.fingerprint_hash(first)
    image, label, geometry = tiny_case(shape_zyx=(5, 48, 48), spacing_xyz=(0.5, 0.5, 3.0), seed=0)
    write_image(image, geometry, folder / "imagesTr" / "GE_000.nii.gz")
    write_image(label, geometry, folder / "labelsTr" / "GE_000.nii.gz")
    changed, reused = fp.load_or_compute_fingerprint(RawDataset(folder), out)
    assert not reused
    assert changed["cases"]["GE_000"]["slice_thickness"] == 3.0
    assert fp.fingerprint_hash(changed) != fp.fingerprint_hash(first)


def test_hash_ignores_file_stamps_but_not_content(tmp_path):
    folder = write_multicentre_dataset(tmp_path, n_per_centre=1)
    f = fp.compute_fingerprint(RawDataset(folder))
    stamped = dict(f, sources={"x": [1, 2, 3, 4]})
    assert fp.fingerprint_hash(stamped) == fp.fingerprint_hash(f)
    assert fp.fingerprint_hash(dict(f, n_cases=99)) != fp.fingerprint_hash(f)


def test_table_lists_every_centre(tmp_path):
    folder = write_multicentre_dataset(tmp_path, n_per_centre=1)
    table = fp.format_table(fp.compute_fingerprint(RawDataset(folder)))
    lines = table.splitlines()
    assert lines[0].split()[:2] == ["centre", "n"]
    rows = {line.split()[0]: line for line in lines[2:]}
    assert set(rows) == {"GE", "SIE", "all"}
    assert "7.5" in rows["GE"] and "48x48" in rows["GE"] and "40x32" in rows["SIE"]


def test_missing_label_is_an_error_naming_the_file(tmp_path):
    folder = write_multicentre_dataset(tmp_path, n_per_centre=1)
    (folder / "labelsTr" / "GE_000.nii.gz").unlink()
    with pytest.raises(DatasetError, match=r"labelsTr/GE_000.nii.gz.*no label"):
        fp.compute_fingerprint(RawDataset(folder))


def test_label_on_another_grid_is_an_error_naming_the_label(tmp_path):
    folder = write_multicentre_dataset(tmp_path, n_per_centre=1)
    _, label, geometry = tiny_case(shape_zyx=(5, 40, 48), spacing_xyz=(0.5, 0.5, 7.5))
    write_image(label, geometry, folder / "labelsTr" / "GE_000.nii.gz")
    with pytest.raises(DatasetError, match=r"labelsTr/GE_000.nii.gz.*not on the image's grid"):
        fp.compute_fingerprint(RawDataset(folder))


def test_the_fingerprint_records_which_scans_are_skull_stripped(tmp_path):
    """A scan whose background outside the head is one value (a stripped scan's 0) is counted as skull-stripped, one
    with a scanner's noise around the head is not: deepwml_predict strips by default only for a model that learned
    stripped scans."""
    folder = write_multicentre_dataset(tmp_path, n_per_centre=2)
    stripped = sorted((folder / "imagesTr").glob("GE_*.nii.gz"))[0]
    image, label, geometry = tiny_case(shape_zyx=(5, 48, 48), spacing_xyz=(0.5, 0.5, 7.5), seed=0)
    head = image > 50
    write_image(np.where(head, image, 0.0).astype(np.float32), geometry, stripped)
    result = fp.compute_fingerprint(RawDataset(folder))
    flags = {cid: case["skull_stripped"] for cid, case in result["cases"].items()}
    assert flags == {cid: cid == stripped.name[:-len(".nii.gz")] for cid in flags}
    assert result["dataset_summary"]["skull_stripped_cases"] == 1
    # case summaries from before the field (a reused fingerprint) give no count rather than a wrong one
    assert "skull_stripped_cases" not in fp._group_summary([{k: v for k, v in case.items() if k != "skull_stripped"}
                                                            for case in result["cases"].values()])
