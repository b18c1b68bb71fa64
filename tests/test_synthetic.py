"""The synthetic multi-centre FLAIR generator: protocols per centre, lesions, mimics, determinism, dataset writing."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from deepwml.cli import make_synthetic
from deepwml.constants import LV_GROUP_NAMES
from deepwml.datasets import RawDataset
from deepwml.datasets.verify import verify_dataset
from deepwml.imageio import read_geometry, read_image, read_label
from deepwml.synthetic import CENTRES, generate_case, generate_dataset, plan_cases, select_centres
from deepwml.synthetic import dataset as dataset_module
from deepwml.synthetic.acquisition import Stack, sample_stack
from deepwml.synthetic.centres import matrix_for_spacing
from deepwml.synthetic.realism import case_figures, group_shares
from deepwml.utils.errors import DatasetError, DeepWMLError

#: Two centres with different vendors, field strengths, voxel orders and protocols; 4 cases, 2 of them test cases.
SMALL = dict(dataset_id=777, name="SynthTest", centres="MS#1,CSVD#2", scale=0.07, seed=3, test_fraction=0.5)


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory) -> Path:
    """A 4-case synthetic dataset written once for the module (two worker processes)."""
    return generate_dataset(tmp_path_factory.mktemp("raw"), n_jobs=2, **SMALL)


def test_each_centre_uses_only_its_own_thicknesses_and_spacings():
    for centre in CENTRES.values():
        rng = np.random.default_rng(0)
        stacks = [sample_stack(centre, rng, head_width_mm=160.0) for _ in range(300)]
        assert {s.thickness for s in stacks} == set(centre.thicknesses_mm), centre.name
        assert {s.spacing for s in stacks} == set(centre.spacings_mm), centre.name
        for s in stacks:
            assert 17 <= s.n_slices <= 30
            ny, nx = s.matrix
            assert ny == matrix_for_spacing(s.spacing) and nx <= ny
            assert nx % s.work_factor == 0 and ny % s.work_factor == 0
        mean_slices = np.mean([s.n_slices for s in stacks])
        assert abs(mean_slices - np.clip(centre.slices / centre.patients, 17, 30)) < 1.0, centre.name


def test_matrix_follows_field_of_view():
    assert matrix_for_spacing(0.4688) == 512
    assert matrix_for_spacing(0.9375) == 256
    assert matrix_for_spacing(0.7188) == 320


def test_written_cases_follow_their_centre_and_load_as_a_raw_dataset(small_dataset):
    ds = RawDataset(small_dataset)
    train, test = ds.cases("Tr"), ds.cases("Ts")
    assert len(train) == 2 and len(test) == 2
    assert {c.meta.centre for c in test} == {"MS#1", "CSVD#2"}, "test cases are stratified by centre"
    for case in train + test:
        centre = CENTRES[case.meta.centre]
        assert (case.meta.disease, case.meta.vendor, case.meta.field_strength) == (centre.disease, centre.vendor, centre.field_strength)
        assert case.meta.scanner in centre.scanners
        image, label = read_geometry(case.image), read_geometry(case.label)
        assert image.mismatches(label) == []
        assert image.slice_axis == 2
        assert round(image.slice_thickness, 4) in centre.thicknesses_mm
        assert round(image.inplane_spacing[0], 4) in centre.spacings_mm
        assert case.meta.extra["slice_thickness"] == pytest.approx(image.slice_thickness)
        if centre.storage == "RAS":
            assert image.direction_matrix[0, 0] < 0 and image.direction_matrix[1, 1] < 0
        values = read_label(case.label).array
        assert set(np.unique(values)) <= {0, 1} and values.any()


def test_generated_dataset_passes_verify_dataset(small_dataset):
    assert verify_dataset(small_dataset) == []


def test_lesions_smaller_than_ten_pixels_occur(small_dataset):
    small = 0
    for case in RawDataset(small_dataset).cases("Tr") + RawDataset(small_dataset).cases("Ts"):
        for sl in read_label(case.label).array:
            components, n = ndimage.label(sl)
            small += int((np.bincount(components.ravel())[1:] < 10).sum())
    assert small > 0


def test_bright_periventricular_rim_exists_and_is_not_lesion():
    case = generate_case("MS#3", 1, seed=0, truth=True)
    rim = case.truth["rim"] & case.truth["brain"]
    brain = case.truth["brain"] & (case.label == 0)
    assert rim.sum() > 200
    image = case.image.astype(np.float32)
    # brighter than normal brain (a lesion mimic), yet labelled lesion almost nowhere
    assert np.median(image[rim]) > 1.08 * np.median(image[brain])
    assert (case.label[rim] > 0).mean() < 0.05


def test_contrast_within_the_real_ranges():
    figures = case_figures(generate_case("CSVD#1", 2, seed=0, truth=True))
    assert 1.15 < figures["lesion_ratio"] < 1.8
    assert 0.2 < figures["csf_ratio"] < 0.75
    assert 1.0 < figures["lesion_iqr_units"] < 3.5


def test_same_seed_same_case_other_seed_other_case():
    a = generate_case("NMOSD#2", 1, seed=5)
    b = generate_case("NMOSD#2", 1, seed=5, truth=True)  # asking for the truth masks does not change the case
    c = generate_case("NMOSD#2", 1, seed=6)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label) and a.geometry == b.geometry
    assert a.image.shape != c.image.shape or not np.array_equal(a.image, c.image)


def test_files_are_identical_whatever_the_number_of_workers(tmp_path):
    args = dict(centres="NMOSD#2,MS#2", scale=0.01, seed=11, test_fraction=0.0)
    one = generate_dataset(tmp_path / "a", n_jobs=1, **args)
    two = generate_dataset(tmp_path / "b", n_jobs=2, **args)
    files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    assert len(files) == 5  # 2 images, 2 labels, dataset.json
    for rel in files:
        assert (one / rel).read_bytes() == (two / rel).read_bytes(), rel


def test_oblique_and_reversed_storage_describe_the_same_world():
    lps = Stack(20, 6.5, 0.4688, (512, 416), 12.0, (1.0, 15.0, 20.0), "LPS").geometry()
    ras = Stack(20, 6.5, 0.4688, (512, 416), 12.0, (1.0, 15.0, 20.0), "RAS").geometry()
    assert not np.allclose(lps.direction_matrix, np.eye(3))
    idx = np.array([[0, 0, 0], [10, 500, 3], [415, 7, 19]], float)
    flipped = np.column_stack([415 - idx[:, 0], 511 - idx[:, 1], idx[:, 2]])
    assert np.allclose(lps.index_to_world(idx), ras.index_to_world(flipped))


@pytest.mark.slow
def test_all_five_lesion_volume_groups_occur_over_a_few_patients():
    # seed 1: a draw (generator v9) whose few patients reach every group; no seed is special otherwise
    specs = plan_cases(select_centres("MS#4,NMOSD#1,CSVD#1", None), 0.1, 1, 0.0)
    assert len(specs) <= 10
    seen = set()
    for spec in specs:
        case = generate_case(spec.centre, spec.index, spec.seed, truth=True)
        shares = group_shares(case_figures(case)["slice_volumes_ml"])
        seen |= {g for g, share in shares.items() if share > 0}
        if seen == set(LV_GROUP_NAMES):
            break
    assert seen == set(LV_GROUP_NAMES)


def test_scale_centres_and_diseases_select_the_cases():
    specs = plan_cases(select_centres(None, "NMOSD"), 0.1, 0, 0.2)
    assert {s.centre for s in specs} == {"NMOSD#1", "NMOSD#2", "NMOSD#3", "NMOSD#4"}
    counts = {c: sum(s.centre == c for s in specs) for c in {s.centre for s in specs}}
    assert counts == {"NMOSD#1": 1, "NMOSD#2": 1, "NMOSD#3": 1, "NMOSD#4": 4}
    assert [s.case_id for s in specs if s.centre == "NMOSD#4"] == [f"NMOSD4_{i:03d}" for i in range(1, 5)]
    assert sum(s.split == "Ts" for s in specs) == 1  # one of NMOSD#4's four; single-patient centres stay training
    with pytest.raises(DeepWMLError, match="unknown centre"):
        select_centres("MS#9", None)
    with pytest.raises(DeepWMLError, match="no centre matches"):
        select_centres("MS#1", "CSVD")


def test_existing_dataset_is_never_overwritten_without_flag(tmp_path, capsys):
    base = ["-o", str(tmp_path), "--centres", "NMOSD#2", "--scale", "0.01", "--test-fraction", "0"]
    assert make_synthetic.main(base) == 0
    image = tmp_path / "Dataset501_Synth" / "imagesTr" / "NMOSD2_001.nii.gz"
    before = image.read_bytes()
    assert make_synthetic.main(base) == 0  # same request: already complete, nothing rewritten
    assert "already complete" in capsys.readouterr().err
    assert make_synthetic.main(base + ["--seed", "1"]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err
    assert image.read_bytes() == before
    assert make_synthetic.main(base + ["--seed", "1", "--overwrite"]) == 0
    assert image.read_bytes() != before
    assert json.loads((tmp_path / "Dataset501_Synth" / "dataset.json").read_text())["synthetic"]["seed"] == 1


def test_foreign_folder_and_taken_id_are_refused(tmp_path):
    (tmp_path / "Dataset501_Synth").mkdir()
    (tmp_path / "Dataset501_Synth" / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not a synthetic dataset"):
        generate_dataset(tmp_path, centres="NMOSD#3", scale=0.01)
    (tmp_path / "Dataset502_Other").mkdir()
    with pytest.raises(DatasetError, match="already used by Dataset502_Other"):
        generate_dataset(tmp_path, dataset_id=502, centres="NMOSD#3", scale=0.01)


def test_interrupted_run_resumes_without_redoing_finished_cases(tmp_path, monkeypatch):
    real = dataset_module.make_case
    calls = []

    def interrupted(spec, folder) -> str:
        if calls:
            raise KeyboardInterrupt
        calls.append(spec.case_id)
        return real(spec, folder)

    monkeypatch.setattr(dataset_module, "make_case", interrupted)
    args = dict(centres="MS#2,NMOSD#2", scale=0.01, test_fraction=0.0)
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(tmp_path, **args)
    folder = tmp_path / "Dataset501_Synth"
    assert not (folder / "dataset.json").exists()
    finished = folder / "imagesTr" / f"{calls[0]}.nii.gz"
    stamp = finished.stat().st_mtime_ns
    monkeypatch.setattr(dataset_module, "make_case", real)
    generate_dataset(tmp_path, **args)
    assert finished.stat().st_mtime_ns == stamp
    assert RawDataset(folder).meta.num_training == 2
    assert read_image(folder / "imagesTr" / "NMOSD2_001.nii.gz").array.max() > 0


def test_csvd_cases_record_their_drawn_fazekas_grades_without_changing_the_case():
    import hashlib

    case = generate_case("CSVD#1", 5, seed=0)
    # this case's label digest and image slice means (generator v12): recording the grades draws nothing, so they
    # change only with GENERATOR_VERSION. The image's bytes are not pinned: with the same code and the same label they
    # differed between two machines of this project (presumably float rounding before the int16 conversion)
    assert hashlib.sha256(case.label.tobytes()).hexdigest() == "4a8858d5b67d8fbd66fc0a4a70cbcdf0ce7eb09f58bcdfe208d40080a2de3cdb"
    np.testing.assert_allclose(case.image.mean(axis=(1, 2)), [
        337.27, 325.81, 359.29, 360.66, 398.95, 407.52, 461.54, 464.21, 489.55, 462.63, 472.07, 433.68, 452.6, 425.72,
        416.86, 361.88, 341.54, 293.79, 264.38, 207.97, 174.89, 169.81], rtol=1e-3)
    # severity 0.53: a periventricular halo (band of 2.5 mm nominal or more), punctate deep foci, no confluence yet
    assert (case.meta.extra["fazekas_pv"], case.meta.extra["fazekas_deep"]) == (2, 1)


def test_drawn_fazekas_grades_follow_the_lesion_types_placed():
    from deepwml.synthetic.lesions import Lesions, drawn_fazekas

    assert drawn_fazekas("CSVD", Lesions()) == (0, 1)  # punctate deep foci only
    assert drawn_fazekas("CSVD", Lesions(band_mm=1.8)) == (1, 1)  # caps and a pencil-thin lining
    assert drawn_fazekas("CSVD", Lesions(band_mm=3.0)) == (2, 1)  # a halo
    assert drawn_fazekas("CSVD", Lesions(band_mm=3.3, confluence=2.6)) == (2, 2)  # beginning confluence
    assert drawn_fazekas("CSVD", Lesions(band_mm=5.5, confluence=1.9)) == (3, 3)  # band into large confluent areas
    assert drawn_fazekas("MS", Lesions(band_mm=3.0)) is None


def test_dataset_json_carries_the_drawn_fazekas_grades_of_csvd_cases(small_dataset):
    cases = json.loads((small_dataset / "dataset.json").read_text())["cases"]
    assert {meta["disease"] for meta in cases.values()} == {"MS", "CSVD"}
    for case_id, meta in cases.items():
        if meta["disease"] == "CSVD":
            assert meta["fazekas_pv"] in (0, 1, 2, 3) and meta["fazekas_deep"] in (1, 2, 3), case_id
        else:
            assert "fazekas_pv" not in meta, case_id
