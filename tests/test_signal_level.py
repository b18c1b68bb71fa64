"""A scan stored with an offset, or shared z-scored, is segmented as the scan itself (deepwml.inference.signal_level)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from deepwml.cli import predict as predict_cli
from deepwml.evaluation.case_metrics import dice
from deepwml.imageio import Image, read_image, write_image
from deepwml.inference.signal_level import NoSignal, from_no_signal, kept_level_note, level_note, no_signal
from deepwml.synthetic.generate import generate_case
from deepwml_testing.benchmarks import load_benchmark
from deepwml_testing.cases import input_case


@pytest.fixture(scope="module")
def scan():
    """A generator scan with its skull (scanner noise in the air around the head) and lesions."""
    return input_case("MS#2", index=2, seed=4343, skull_stripped=False)


def test_a_scan_as_a_scanner_stores_it_starts_at_zero_and_is_left_as_it_is(scan):
    """Air with scanner noise, a stripped scan's zero background, or a -1024 fill around a magnitude image: no offset,
    and the very same image comes back (nothing a scanner's scan gets is changed)."""
    assert no_signal(scan.image).level == 0.0
    stripped = np.where(scan.image > np.percentile(scan.image, 60), scan.image, 0)
    assert no_signal(stripped).level == 0.0
    padded = scan.image.astype(np.float32).copy()
    padded[:, :, :20] = -1024  # a field of view padded with a marker value: the rest starts at 0
    assert no_signal(padded).level == 0.0
    framed = np.pad(scan.image.astype(np.float32), ((0, 0), (12, 12), (12, 12)), constant_values=-1024)
    assert no_signal(framed).level == 0.0  # padding on all four edges: the air just inside it starts at 0
    image = read_image_of(scan)
    assert from_no_signal(image) is image


def test_an_offset_or_a_z_scored_scan_is_measured_from_its_background(scan):
    """A stored offset, every voxel negative, a z-scored scan with its noisy air, a z-scored brain whose stripped
    background is one value: the level found is where the scan as stored had 0, up to the air's noise."""
    base = scan.image.astype(np.float64)
    near = 0.05 * np.ptp(base)
    for offset in (1000.0, -3000.0):
        assert abs(no_signal(base + offset).level - offset) < near
    zscored = (base - base.mean()) / base.std()
    assert abs(no_signal(zscored).level - (0 - base.mean()) / base.std()) < near / base.std()
    brain = base > np.percentile(base, 60)
    stripped_z = np.where(brain, (base - base[brain].mean()) / base[brain].std(), -3.5)
    assert no_signal(stripped_z).level == -3.5
    # a stripped brain (its fill on every edge) meets the fill with tissue, not air: the fill is its level
    stripped_offset = np.where(brain, base + 500.0, 500.0)
    assert no_signal(stripped_offset).level == 500.0
    # ... even where its darkest tissue (the partial volume at its border) lands near 0, as in this stripped scan
    # z-scored as a whole: the fill does not frame a rectangle, so it is no padding around air
    stripped_scan = generate_case("MS#1", index=6, seed=5000, skull_stripped=True).image.astype(np.float64)
    whole_z = (stripped_scan - stripped_scan.mean()) / stripped_scan.std()
    assert no_signal(whole_z).level == whole_z.min()
    assert no_signal(np.full((3, 8, 8), 7.0)).level == 0.0
    # stored as integers with air noise of 0-2 (0 on a sixth of the voxels, not all around the head), then z-scored:
    # the lowest value, held by many voxels, is the air's floor, not a stripped fill nor the darkest tissue of a crop
    air = base < np.percentile(base, 30)
    integers = np.maximum(np.round(base / np.percentile(base[air], 90) * 2), 0)
    assert np.mean(integers == 0) > 0.1
    z_integers = (integers - integers.mean()) / integers.std()
    assert no_signal(z_integers).level == pytest.approx((0 - integers.mean()) / integers.std())
    shifted = from_no_signal(read_image_of(scan, base + 1000.0))
    assert shifted.array.dtype == np.float32 and abs(float(np.median(shifted.array[base < near]))) < near


def test_signed_noise_around_zero_is_no_offset(scan):
    """A scan stored signed, its air's noise centred on 0 (negative values in the background), starts at 0 as it is."""
    noisy = scan.image.astype(np.float64) + np.random.default_rng(0).normal(0, 0.03 * scan.image.max(), scan.image.shape)
    assert noisy.min() < -0.05 * scan.image.max() and no_signal(noisy).level == 0.0


def test_a_scan_without_air_around_the_head_is_read_as_stored(scan):
    """Cropped to the brain (no air at the planes' edges) the darkest class is tissue, whose level is no zero of
    anything: the scan and its offset copy are read as stored rather than shifted by a guess."""
    base = scan.image.astype(np.float64)
    z, h, w = base.shape
    cropped = base[z // 4:3 * z // 4, int(0.3 * h):int(0.7 * h), int(0.3 * w):int(0.7 * w)]  # inside the head
    assert cropped.min() > 0.05 * base.max()  # no air left
    assert no_signal(cropped).level == 0.0 and no_signal(cropped + 1000).level == 0.0


@pytest.fixture(scope="module")
def stripped():
    """A skull-stripped generator scan (its background 0) with lesions."""
    return generate_case("MS#4", index=1, seed=4345, skull_stripped=True)


def z_scored_in_brain(image: np.ndarray) -> np.ndarray:
    """A stripped scan z-scored within its brain, the background left at 0 (research pipelines' "nonzero" z-score)."""
    a = image.astype(np.float32)
    brain = a != 0
    return np.where(brain, (a - a[brain].mean()) / a[brain].std(), 0.0).astype(np.float32)


def test_a_stripped_brain_normalised_within_itself_starts_at_its_lowest_values_and_its_background_there(stripped, scan):
    """Its background 0 lies among the brain's values (about half of them negative): the brain's lowest values stand
    in for no signal and the background is set there when read, so it reads as a stripped magnitude scan does."""
    z = z_scored_in_brain(stripped.image)
    start = no_signal(z)
    brain = z != 0
    assert start.fill == 0.0 and start.level == pytest.approx(np.percentile(z[brain], 0.5), abs=0.05)
    read = from_no_signal(read_image_of(stripped, z)).array
    assert np.all(read[~brain] == 0) and np.mean(read[brain] < 0) < 0.01
    # the brain's median over its lowest values keeps what the stored magnitudes give, within the stand-in's error
    as_stored = stripped.image[brain].astype(np.float64)
    assert np.median(read[brain]) / np.percentile(read[brain], 75) == pytest.approx(
        np.median(as_stored) / np.percentile(as_stored, 75), abs=0.05)
    assert "normalised within the brain" in level_note(start) and kept_level_note(level_note(start)) == level_note(start)
    # a stripped magnitude scan, its fill the lowest value, is as stored; and so is a scan with air (no one edge value)
    assert no_signal(stripped.image) == NoSignal(0.0) and no_signal(scan.image) == NoSignal(0.0)


@pytest.mark.slow
def test_a_stripped_brain_normalised_within_itself_gets_the_lesions_of_the_scan_as_stored(tmp_path, stripped):
    """deepwml_predict on the stripped scan and its copy z-scored within the brain (background 0): before, the copy's
    background read as bright as the brain's mean, and its mask had a Dice of 0.28-0.49 with the scan's."""
    write_image(stripped.image, stripped.geometry, tmp_path / "in" / "as_stored.nii.gz")
    write_image(z_scored_in_brain(stripped.image), stripped.geometry, tmp_path / "in" / "z_brain.nii.gz")
    assert predict_cli.main(["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--no-qc"]) == 0
    masks = [read_image(tmp_path / "out" / f"{n}.nii.gz").array > 0 for n in ("as_stored", "z_brain")]
    assert masks[0].sum() > 200 and dice(*masks) > 0.9
    warnings = pd.read_csv(tmp_path / "out" / "summary.csv", keep_default_na=False).set_index("case_id")["acquisition_warning"]
    assert "normalised within the brain" in warnings["z_brain"] and "not like a T2-FLAIR" not in warnings["z_brain"]


def test_the_level_note_is_found_again_among_a_row_s_warnings():
    """A resumed run keeps the note its earlier run wrote (the mask on disk cannot tell the level): found among the
    other warnings of the row, and nothing in a row without it or in an empty cell."""
    note = level_note(-1234.0)
    assert note.startswith("intensities start at -1234, not 0")
    assert kept_level_note(f"slices 3 mm; {note}; bright brain") == note and kept_level_note(note) == note
    assert kept_level_note("slices 3 mm") == "" and kept_level_note(float("nan")) == "" and level_note(0.0) == ""


def read_image_of(scan, array=None) -> Image:
    """The scan as deepwml reads it (an Image on its geometry), optionally with other intensities."""
    return Image(np.asarray(scan.image if array is None else array), scan.geometry)


@pytest.mark.slow
def test_offset_negative_and_z_scored_copies_of_a_scan_get_its_lesions(tmp_path, scan):
    """deepwml_predict with the shipped model (skull stripping, contrast filter, cortex bound: each reads intensities
    from 0) gives a scan stored with an offset of +1000, every voxel negative, or z-scored the lesions of the scan as
    stored; before, +1000 lost a third of the volume and the negative copy every lesion."""
    base = scan.image.astype(np.float32)
    copies = {"as_stored": scan.image, "plus_1000": base + 1000, "all_negative": base - 3000,
              "z_scored": (base - base.mean()) / base.std()}
    for name, array in copies.items():
        write_image(array, scan.geometry, tmp_path / "in" / f"{name}.nii.gz")
    assert predict_cli.main(["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--no-qc"]) == 0
    masks = {name: read_image(tmp_path / "out" / f"{name}.nii.gz").array > 0 for name in copies}
    reference = masks["as_stored"]
    assert reference.sum() > 200
    for name in ("plus_1000", "all_negative", "z_scored"):
        assert dice(reference, masks[name]) > 0.97, (name, dice(reference, masks[name]))
    # and summary.csv says which scans were measured from elsewhere than 0
    warnings = pd.read_csv(tmp_path / "out" / "summary.csv", keep_default_na=False).set_index("case_id")["acquisition_warning"]
    assert "intensities start at" not in warnings["as_stored"]
    assert all("intensities start at" in warnings[name] and "z-scored?" in warnings[name]
               for name in ("plus_1000", "all_negative", "z_scored"))
    # a second run resumes every case from its mask, which cannot tell the level: the earlier run's note is kept
    assert predict_cli.main(["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--no-qc"]) == 0
    again = pd.read_csv(tmp_path / "out" / "summary.csv", keep_default_na=False).set_index("case_id")["acquisition_warning"]
    assert again.to_dict() == warnings.to_dict()


@pytest.mark.slow
def test_the_benchmark_prints_each_copy_s_volume_and_dice_and_resumes(tmp_path, scan, capsys):
    """benchmarks/stored_offsets.py on a folder of one scan: a row with the scan as stored and its four copies, the
    lowest Dice of each copy, and a second run that reuses the copies and predictions."""
    bench = load_benchmark("stored_offsets")
    write_image(scan.image, scan.geometry, tmp_path / "scans" / "one.nii.gz")
    args = ["--work", str(tmp_path / "work"), "-i", str(tmp_path / "scans")]
    assert bench.main(args) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| one |"))
    assert row.count("(") == 4
    lowest = out.split("lowest Dice against the scan as stored: ")[1].splitlines()[0]
    assert all(float(part.split()[-1]) > 0.97 for part in lowest.split(", "))
    assert len(list((tmp_path / "work" / "copies").glob("*.nii.gz"))) == 5
    assert bench.main(args) == 0
    assert "0 case(s) predicted, 5 already done" in capsys.readouterr().out
