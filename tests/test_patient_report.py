"""deepwml_predict's issue-#14 outputs end to end with the toy threshold model: the uncertainty map, the lesion
table's confidence, the per-patient report page (self-contained, rendered in a real browser when Chromium is
present, printed to PDF), resume, and deepwml_evaluate reading the folder back with calibration."""
from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import tiny_case
from deepwml.cli.evaluate import main as evaluate_main
from deepwml.cli.predict import main as predict_main
from deepwml.imageio import read_image, write_image
from deepwml.inference.confidence import CONFIDENCE_COLUMNS, binary_entropy
from deepwml.inference.lesion_report import CONTRAST_COLUMNS
from deepwml.inference.patient_report import RESEARCH_NOTICE, find_pdf_converter, lesion_table_html, screenshot
from deepwml.inference.qc import LOCATION_COLOURS
from deepwml.inference.report_images import CONTOUR_RGB
from deepwml_testing.toy_models import tiny_plan, write_model_dir
from test_evaluation_report import _Collector

CARD = "Toy model card: a hand-set threshold network, trained on nothing."


@pytest.fixture
def model_dir(tmp_path) -> Path:
    """A threshold toy model with a model card."""
    folder = write_model_dir(tmp_path / "results" / "Dataset999_Toy" / "tiny", tiny_plan(), folds=(0,), kind="threshold")
    (folder / "MODEL_CARD.md").write_text(CARD + "\n")
    return folder


def _write_case(folder: Path, name: str, seed: int = 0, n_lesions: int = 5) -> np.ndarray:
    """One synthetic case; returns its reference label."""
    image, label, geometry = tiny_case(shape_zyx=(6, 72, 60), spacing_xyz=(0.9, 0.8, 6.0), seed=seed, n_lesions=n_lesions)
    write_image(image, geometry, folder / name)
    write_image(label, geometry, folder.parent / "labels" / name)
    return label


def _predict(*args) -> int:
    return predict_main([str(a) for a in args])


def test_predict_writes_uncertainty_confidence_and_a_self_contained_report(tmp_path, model_dir):
    _write_case(tmp_path / "in", "a.nii.gz", seed=1)
    _write_case(tmp_path / "in", "b.nii.gz", seed=2, n_lesions=0)
    out = tmp_path / "out"
    assert _predict("-i", tmp_path / "in", "-o", out, "-m", model_dir, "--save-probabilities", "--save-uncertainty", "--report") == 0
    probs = read_image(out / "a_prob.nii.gz")
    uncertainty = read_image(out / "a_uncertainty.nii.gz", dtype=None)
    assert uncertainty.array.dtype == np.float32 and uncertainty.geometry.mismatches(probs.geometry) == []
    assert np.allclose(uncertainty.array, binary_entropy(probs.array), atol=0.5 / 256 + 1e-6)  # stored in steps of 1/256
    assert np.array_equal(uncertainty.array * 256, np.round(uncertainty.array * 256))
    assert 0 <= uncertainty.array.min() and uncertainty.array.max() <= 1 and uncertainty.array.max() > 0.5

    summary = pd.read_csv(out / "summary.csv").set_index("case_id")
    lesions = pd.read_csv(out / "a_lesions.csv")
    assert list(lesions.columns[-3:]) == CONFIDENCE_COLUMNS + CONTRAST_COLUMNS and len(lesions) == summary.loc["a", "lesion_count"] > 0
    assert lesions["confidence"].between(0, 1).all() and (lesions["mean_probability"] >= 0.5).all()

    page = (out / "report" / "a.html").read_text()
    tags = _Collector()
    tags.feed(page)
    assert "script" not in tags.tags and "link" not in tags.tags and "iframe" not in tags.tags and "url(" not in page
    assert tags.images and all(u.startswith("data:image/png;base64,") for u in tags.urls)
    assert all(base64.b64decode(u.split(",", 1)[1]).startswith(b"\x89PNG") for u in tags.images)
    assert RESEARCH_NOTICE in page and CARD in page and "Dataset999_Toy / tiny" in page
    assert f"{summary.loc['a', 'total_lesion_volume_ml']:.2f}" in page
    assert len(re.findall(r"<tr><th>\d+</th>", page)) == len(lesions)  # one table row per lesion
    assert "6 axial" in page and "6.00 mm" in page  # slices and slice thickness of the input
    assert "No lesion found" in (out / "report" / "b.html").read_text()
    assert "lesion number: its row in the lesion table" in page  # the pictures number the table's lesions
    assert "lesion number" not in (out / "report" / "b.html").read_text()
    # the findings, as the DICOM findings picture words them, open the page as text to copy
    assert page.index("<h2>Findings (draft for the reader)</h2>") < page.index("<h2>Slices with lesions")
    assert (f"White-matter lesions (automatic): {summary.loc['a', 'lesion_count']} lesions, "
            f"{summary.loc['a', 'total_lesion_volume_ml']:.2f} ml, on ") in page and "Model tiny, DeepWML" in page

    # the report counts as an output for resuming: a run asking for it redoes cases that lack it
    (out / "report" / "b.html").unlink()
    assert _predict("-i", tmp_path / "in", "-o", out, "-m", model_dir, "--save-probabilities", "--save-uncertainty", "--report") == 0
    assert (out / "report" / "b.html").is_file()
    stamp = (out / "report" / "a.html").stat().st_mtime_ns
    assert _predict("-i", tmp_path / "in", "-o", out, "-m", model_dir, "--save-probabilities", "--save-uncertainty", "--report") == 0
    assert (out / "report" / "a.html").stat().st_mtime_ns == stamp  # done cases are not redone

    # deepwml_evaluate reads the folder as it is (uncertainty maps are not masks) and measures calibration
    assert evaluate_main(["-ref", str(tmp_path / "labels"), "-pred", str(out), "-o", str(tmp_path / "eval")]) == 0
    assert (tmp_path / "eval" / "figures" / "reliability.png").is_file()


def test_uncertainty_map_name_clashing_with_another_case_is_refused_before_anything_runs(tmp_path, model_dir, capsys):
    """A case called A_uncertainty would have its mask overwritten by case A's uncertainty map."""
    _write_case(tmp_path / "in", "a.nii.gz", seed=1)
    _write_case(tmp_path / "in", "a_uncertainty.nii.gz", seed=2)
    assert _predict("-i", tmp_path / "in", "-o", tmp_path / "out", "-m", model_dir, "--save-uncertainty") == 2
    assert "uncertainty map of a" in capsys.readouterr().err
    assert not (tmp_path / "out" / "a.nii.gz").exists()


def test_lesion_table_shows_further_columns_after_the_known_ones():
    lesions = pd.DataFrame({"lesion_id": [1], "volume_ml": [0.5], "voxels": [40], "first_slice": [2], "last_slice": [3],
                            "centroid_x_mm": [1.0], "centroid_y_mm": [2.0], "centroid_z_mm": [3.0], "confidence": [0.8],
                            "location": ["periventricular"]})  # fmt: skip
    table = lesion_table_html(lesions)
    headers = re.findall(r"<th>([^<]*)</th>", table.split("</thead>")[0])
    assert headers == ["Lesion", "Volume (ml)", "Voxels", "Slices", "Centroid x, y, z (mm, LPS)", "Confidence", "location"]
    assert "2–3" in table and "periventricular" in table and "0.80" in table


def test_page_says_when_not_every_lesion_slice_is_shown_and_puts_summary_sections_first():
    from deepwml.imageio import Geometry
    from deepwml.inference.lesion_report import CaseSummary
    from deepwml.inference.patient_report import ModelInfo, build_patient_report
    from deepwml.inference.report_images import Panel

    summary = CaseSummary("c", "ok", total_lesion_volume_ml=1.0, lesion_count=30, slices=25, slices_with_lesion=25)
    lesions = pd.DataFrame({"lesion_id": [1], "volume_ml": [1.0], "voxels": [10]})
    panels = [Panel(k, b"\x89PNG") for k in range(20)]
    model = ModelInfo(Path("m"), "Dataset1_X", "p", ("0",), "best", False, 0.5)
    page = build_patient_report(summary, lesions, panels, Geometry((8, 8, 25), (1.0, 1.0, 5.0), (0.0, 0.0, 0.0)),
                                Path("c.nii.gz"), model, False, extra_sections=[("Fazekas estimate", "<p>grade</p>")])
    assert "20 of the 25 slices with lesion are shown" in page
    assert page.index("Fazekas estimate") < page.index("Slices with lesions") < page.index("<h2>Lesions</h2>")
    assert "uncertainty (blue" not in page  # no legend for a map the page does not show
    assert "lesion mask outline" in page and "by location" not in page  # a table without locations: one red outline


def test_with_locations_the_legend_names_each_class_shown_in_its_colour():
    from deepwml.inference.patient_report import panels_html
    from deepwml.inference.report_images import Panel

    page = panels_html([Panel(0, b"\x89PNG", True)], True, ["deep", "periventricular", "deep"])
    swatches = re.findall(r'background:(#[0-9a-f]{6})"></span>([a-z]+)', page)
    # the classes of the table, in the QC legend's order, each in its QC colour
    assert swatches == [(f"#{r:02x}{g:02x}{b:02x}", name) for name, (r, g, b) in LOCATION_COLOURS.items()
                        if name in ("deep", "periventricular")]
    assert "lesion mask outline" not in page and "uncertainty (blue" in page and "lesion number" in page


def test_the_totals_count_the_lesions_a_reader_would_measure_beside_every_speck():
    """With the anatomy map's long axes, a card says how many lesions reach the 3 mm McDonald counts; not without."""
    from deepwml.imageio import Geometry
    from deepwml.inference.lesion_report import CaseSummary
    from deepwml.inference.patient_report import ModelInfo, build_patient_report

    summary = CaseSummary("c", "ok", total_lesion_volume_ml=1.0, lesion_count=4, slices=25, slices_with_lesion=3)
    model = ModelInfo(Path("m"), "Dataset1_X", "p", ("0",), "best", False, 0.5)
    geometry = Geometry((8, 8, 25), (1.0, 1.0, 5.0), (0.0, 0.0, 0.0))
    lesions = pd.DataFrame({"lesion_id": [1, 2, 3, 4], "volume_ml": [0.8, 0.1, 0.05, 0.05], "voxels": [80, 10, 5, 5],
                            "long_axis_mm": [12.0, 3.0, 2.9, 1.15]})

    def cards(page: str):
        return {k: v for v, k in re.findall(r'<div class="card"><b>([^<]*)</b><span>([^<]*)</span></div>', page)}

    page = build_patient_report(summary, lesions, [], geometry, Path("c.nii.gz"), model, False)
    assert cards(page)["lesions"] == "4" and cards(page)["lesions of 3 mm or more (long axis)"] == "2", cards(page)
    page = build_patient_report(summary, lesions.drop(columns="long_axis_mm"), [], geometry, Path("c.nii.gz"), model, False)
    assert "lesions" in cards(page) and not any("3 mm" in k for k in cards(page))


def test_report_pdf_is_skipped_with_a_note_when_no_chromium_is_found(tmp_path, model_dir, monkeypatch, capsys):
    import deepwml.inference.run as run

    monkeypatch.setattr(run, "find_pdf_converter", lambda: None)
    _write_case(tmp_path / "in", "a.nii.gz", seed=1)
    assert _predict("-i", tmp_path / "in", "-o", tmp_path / "out", "-m", model_dir, "--report", "pdf") == 0
    assert "no Chromium on PATH" in capsys.readouterr().err
    assert (tmp_path / "out" / "report" / "a.html").is_file() and not (tmp_path / "out" / "report" / "a.pdf").exists()


def test_report_renders_in_headless_chromium_and_prints_to_pdf(tmp_path, model_dir):
    browser = find_pdf_converter()
    if browser is None:
        pytest.skip("no chromium on PATH: install it (apt-get install chromium) to render the report in a real browser")
    import matplotlib.image

    _write_case(tmp_path / "in", "a.nii.gz", seed=1)
    out = tmp_path / "out"
    assert _predict("-i", tmp_path / "in", "-o", out, "-m", model_dir, "--save-uncertainty", "--report", "pdf") == 0
    pdf = (out / "report" / "a.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and len(pdf) > 10_000
    shot = screenshot(out / "report" / "a.html", tmp_path / "page.png", browser, 1100, 1400)
    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.shape[:2] == (1400, 1100)
    ink = (pixels.mean(axis=2) < 0.6).mean()  # text, table borders and the dark slice panels
    # mask outlines: red, or the location classes' colours with the anatomy map
    palette = np.array([CONTOUR_RGB * 255, *LOCATION_COLOURS.values()], float) / 255
    outlines = (np.abs(pixels[..., None, :] - palette).max(axis=-1) < 0.08).any(axis=-1).mean()
    blue = ((pixels[..., 2] > 0.5) & (pixels[..., 2] - pixels[..., 1] > 0.25) & (pixels[..., 2] - pixels[..., 0] > 0.3)).mean()
    assert ink > 0.05 and outlines > 1e-4 and blue > 1e-4, (ink, outlines, blue)  # blue: the uncertainty haze


def test_chromium_lookup_follows_path(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_pdf_converter() is None
    fake = tmp_path / "chromium"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    assert find_pdf_converter() == str(fake)


def _a_periventricular_and_a_deep_lesion():
    """(mask, anatomy map, geometry): a lesion beside a ventricle and one two 6 mm slices away, in white matter."""
    from deepwml.anatomy.labels import VENTRICLE, WHITE_MATTER
    from deepwml.imageio import Geometry

    geometry = Geometry((64, 64, 5), (0.5, 0.5, 6.0), (0.0, 0.0, 0.0))
    anatomy = np.full((5, 64, 64), WHITE_MATTER, np.uint8)
    anatomy[2, 20:30, 20:30] = VENTRICLE
    mask = np.zeros((5, 64, 64), np.uint8)
    mask[2, 22:26, 30:36] = 1
    mask[4, 40:44, 40:44] = 1
    return mask, anatomy, geometry


def test_page_shows_locations_and_the_fazekas_estimate_when_an_anatomy_map_was_given():
    from deepwml.inference.lesion_report import lesion_table, summarize_case
    from deepwml.inference.patient_report import ModelInfo, build_patient_report

    mask, anatomy, geometry = _a_periventricular_and_a_deep_lesion()
    lesions = lesion_table(mask, geometry, anatomy)
    model = ModelInfo(Path("m"), "Dataset1_X", "p", ("0",), "best", False, 0.5)
    with_map = build_patient_report(summarize_case("c", mask, geometry, lesions, anatomy), lesions, [], geometry, Path("c.nii.gz"), model, False)
    assert "Lesion locations and Fazekas estimate" in with_map and "periventricular 1, deep 1" in with_map
    assert "Fazekas deep white matter (estimate)</dt><dd>1: punctate foci" in with_map and "not a diagnosis" in with_map
    # 24 and 16 voxels of 0.0015 ml; the deep lesion lies two 6 mm slices from the ventricle
    assert "Lesion volume per location (ml)</dt><dd>periventricular 0.04, deep 0.02" in with_map
    assert "within / beyond 10 mm of the ventricles (ml)</dt><dd>0.04 / 0.02" in with_map
    assert "part beyond" not in with_map  # no large deep part: the grades read from the lining and the deep lesion
    assert "<th>location</th>" in with_map and "farther than 5 mm" in with_map
    plain_lesions = lesion_table(mask, geometry)
    plain = build_patient_report(summarize_case("c", mask, geometry, plain_lesions), plain_lesions, [], geometry, Path("c.nii.gz"), model, False)
    assert "Fazekas" not in plain and "<th>location</th>" not in plain


def test_the_findings_open_the_page_with_locations_estimates_and_the_scan_s_caution():
    """The reader's draft: the findings picture's sentences, each a paragraph ending in a full stop, before every
    other section, with the scan's caution among them; escaped as HTML."""
    import dataclasses

    from deepwml.inference.findings import findings_lines
    from deepwml.inference.lesion_report import lesion_table, summarize_case
    from deepwml.inference.patient_report import ModelInfo, build_patient_report

    mask, anatomy, geometry = _a_periventricular_and_a_deep_lesion()
    lesions = lesion_table(mask, geometry, anatomy)
    summary = dataclasses.replace(summarize_case("c", mask, geometry, lesions, anatomy),
                                  acquisition_warning="unlike the scans the model learned from: slices <1 mm> thick")
    model = ModelInfo(Path("m"), "Dataset1_X", "p", ("0",), "best", False, 0.5)
    lines = findings_lines(summary, "model p")
    page = build_patient_report(summary, lesions, [], geometry, Path("c.nii.gz"), model, False, findings=lines)
    block = page[page.index('<div class="findings">'):page.index("</div>", page.index('<div class="findings">'))]
    assert page.index("Findings (draft for the reader)") < page.index("Lesion locations and Fazekas estimate")
    assert block.count("<p>") == len(lines) == 7  # totals, locations, 10 mm split, brain, estimates, caution, model
    assert "<p>Brain parenchyma on the scanned slices " in block and "lateral ventricles" in block
    assert "<p>White-matter lesions (automatic): 2 lesions, 0.06 ml, on 2 of 5 slices.</p>" in block
    assert "<p>Locations: periventricular 1, deep 1.</p>" in block and "Fazekas estimate: periventricular" in block
    assert "Caution: unlike the scans the model learned from: slices &lt;1 mm&gt; thick." in block
    assert "Model p, DeepWML" in block and "a qualified reader must review these findings.</p>" in block
    # without findings (a caller that has none) the page has no such section
    assert "Findings (draft" not in build_patient_report(summary, lesions, [], geometry, Path("c.nii.gz"), model, False)


def test_a_grade_three_from_a_periventricular_lesions_deep_part_says_so():
    """Fazekas 3 on both scales can come from one confluent periventricular lesion reaching far into the deep white
    matter; the page names that part, else 'largest deep lesion 9.6 mm' beside deep grade 3 reads as a contradiction."""
    from deepwml.anatomy.labels import VENTRICLE, WHITE_MATTER
    from deepwml.imageio import Geometry
    from deepwml.inference.lesion_report import lesion_table, summarize_case
    from deepwml.inference.patient_report import ModelInfo, build_patient_report

    geometry = Geometry((128, 128, 5), (0.5, 0.5, 6.0), (0.0, 0.0, 0.0))
    anatomy = np.full((5, 128, 128), WHITE_MATTER, np.uint8)
    anatomy[2, 20:30, 20:30] = VENTRICLE
    mask = np.zeros((5, 128, 128), np.uint8)
    mask[2, 22:40, 30:120] = 1  # from the wall 45 mm out: 35 mm of it beyond 10 mm
    lesions = lesion_table(mask, geometry, anatomy)
    summary = summarize_case("c", mask, geometry, lesions, anatomy)
    assert (summary.anatomy["fazekas_periventricular"], summary.anatomy["fazekas_deep"]) == (3, 3)
    model = ModelInfo(Path("m"), "Dataset1_X", "p", ("0",), "best", False, 0.5)
    page = build_patient_report(summary, lesions, [], geometry, Path("c.nii.gz"), model, False)
    part = f"part of a periventricular lesion beyond 10 mm from the ventricles {summary.anatomy['fazekas_pv_deep_part_mm']:.1f} mm across"
    assert page.count(part) == 2 and "3: large confluent areas (largest deep lesion 0.0 mm; " + part in page
