"""End to end: evaluate_folders on a tiny dataset writes CSVs, summary.json, table2.md, figures and a
self-contained report.html; resuming reuses unchanged cases; the report renders in headless chromium if present."""
from __future__ import annotations

import base64
import json
import os
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import write_tiny_dataset

import deepwml.evaluation.run_cases as run_cases
from deepwml.cli.evaluate import main as cli_main
from deepwml.evaluation import evaluate_folders
from deepwml.imageio import read_image, write_image
from deepwml.inference.patient_report import screenshot

N_CASES = 6
N_SLICES = 6


def make_predictions(labels: Path, out: Path) -> None:
    """Predictions from the labels: perfect, shrunk, shifted, empty, and with a false-positive slice."""
    out.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(sorted(labels.iterdir())):
        image = read_image(path, dtype=None)
        lab = image.array.astype(bool)
        pred = lab.copy()
        if i == 1:
            pred = np.roll(lab, 2, axis=2)
        elif i == 2:
            pred = np.zeros_like(lab)
        elif i >= 3:
            free = np.flatnonzero(~lab.any(axis=(1, 2)))
            pred[free[0], 30:34, 30:34] = True  # false positives on a slice without reference lesion
        write_image(pred.astype(np.uint8), image.geometry, out / path.name)
    write_image(np.zeros_like(lab, np.float32), image.geometry, out / path.name.replace(".nii.gz", "_prob.nii.gz"))


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """A tiny dataset with predictions, evaluated once with -d."""
    root = tmp_path_factory.mktemp("eval")
    folder = write_tiny_dataset(root / "raw", n_train=N_CASES, n_test=0, centres=("A", "B", "C"), diseases=("MS", "CSVD"))
    make_predictions(folder / "labelsTr", root / "pred")
    summary = evaluate_folders(folder / "labelsTr", root / "pred", root / "report", dataset="900", raw_root=root / "raw")
    return root, summary


def test_outputs_exist_and_agree(evaluated):
    root, summary = evaluated
    report = root / "report"
    for name in ("per_slice.csv", "per_case.csv", "summary.json", "table2.md", "report.html"):
        assert (report / name).stat().st_size > 0, name
    assert sorted(p.name for p in (report / "figures").iterdir()) == [
        "fig3_by_centre.png", "fig3_by_disease.png", "fig4_by_lv_group.png", "fig_by_thickness.png",
        "reliability.png",  # one case has a probability map beside its mask: calibration over that case
        "volume_agreement.png",
    ]  # fmt: skip
    slices = pd.read_csv(report / "per_slice.csv")
    cases = pd.read_csv(report / "per_case.csv")
    assert len(slices) == N_CASES * N_SLICES and len(cases) == N_CASES
    assert set(cases["centre"]) == {"A", "B", "C"} and set(slices["disease"]) == {"MS", "CSVD"}
    perfect = cases.set_index("case").loc["case000"]
    assert perfect.dice == 1.0 and perfect.hd95_mm == 0.0 and perfect.lesion_f1 == 1.0 and perfect.avd_percent == 0.0
    empty = cases.set_index("case").loc["case002"]
    assert empty.dice == 0.0 and empty.lesion_recall == 0.0 and np.isnan(empty.hd95_mm)
    # slices without reference lesion are kept, flagged, and counted as false-positive slices where predicted
    fp = slices[slices.false_positive_slice]
    assert len(fp) == N_CASES - 3 and (fp.fp_area_mm2 > 0).all() and fp.dice.isna().all()
    assert summary["slices"]["n_false_positive_slices"] == len(fp)
    assert summary["slices"]["n_with_reference_lesion"] == int(slices.has_reference_lesion.sum())
    assert summary["cases"]["n_cases"] == N_CASES and summary["dataset"] == "Dataset900_Tiny"


def test_summary_json_is_strict_and_holds_statistics(evaluated):
    root, _ = evaluated
    text = (root / "report" / "summary.json").read_text()
    summary = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    kw = summary["statistics"]["slices"]["disease"]["dice"]["kruskal_wallis"]
    assert "testable" in kw
    assert set(summary["slices"]["by"]) == {"centre", "disease", "lv_group", "thickness_band"}
    assert summary["slices"]["by"]["lv_group"].keys() == {"G1", "G2", "G3", "G4", "G5"}


def test_table2_markdown_has_centre_disease_and_overall_columns(evaluated):
    root, _ = evaluated
    md = (root / "report" / "table2.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| Metric"))
    assert header == "| Metric | Centre A | Centre B | Centre C | MS | CSVD | Overall |"
    assert "| Dice |" in md and "| Sensitivity |" in md and "| Precision |" in md


class _Collector(HTMLParser):
    """Collects tags and their URL-bearing attributes."""

    def __init__(self) -> None:
        """Empty collections."""
        super().__init__()
        self.tags, self.urls, self.images = [], [], []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        """Record the tag and any URL it carries."""
        self.tags.append(tag)
        for key, value in attrs:
            if key in ("src", "href", "srcset", "data"):
                self.urls.append(value or "")
                if tag == "img":
                    self.images.append(value or "")


def test_report_html_is_self_contained_with_tables_and_figures(evaluated):
    root, _ = evaluated
    text = (root / "report" / "report.html").read_text()
    parser = _Collector()
    parser.feed(text)
    assert "script" not in parser.tags and "link" not in parser.tags and "iframe" not in parser.tags
    assert 'src="http' not in text and "url(" not in text
    # 4 box plots, the reliability diagram and the volume agreement
    assert len(parser.images) == 6 and all(u.startswith("data:image/png;base64,") for u in parser.urls)
    for uri in parser.images:
        assert base64.b64decode(uri.split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")
    assert "Table 2. Per-slice segmentation performance" in text and "<table>" in text
    assert all(f"case{i:03d}" in text for i in range(N_CASES))


def test_without_dataset_centre_and_disease_are_skipped_with_a_note(evaluated, tmp_path, capsys):
    root, _ = evaluated
    labels = root / "raw" / "Dataset900_Tiny" / "labelsTr"
    code = cli_main(["-ref", str(labels), "-pred", str(root / "pred"), "-o", str(tmp_path / "r")])
    captured = capsys.readouterr()
    assert code == 0 and "stratification by centre and disease skipped" in captured.err
    assert "per slice  median Dice" in captured.out
    assert not (tmp_path / "r" / "figures" / "fig3_by_centre.png").exists()
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert set(summary["slices"]["by"]) == {"lv_group", "thickness_band"} and summary["dataset"] is None
    assert "| Metric | Overall |" in (tmp_path / "r" / "table2.md").read_text()


def test_resume_reuses_unchanged_cases_and_recomputes_changed_ones(evaluated, tmp_path, monkeypatch):
    root, _ = evaluated
    labels = root / "raw" / "Dataset900_Tiny" / "labelsTr"
    pred = tmp_path / "pred"
    shutil.copytree(root / "pred", pred)
    first = evaluate_folders(labels, pred, tmp_path / "r")
    calls = []
    original = run_cases.evaluate_case
    monkeypatch.setattr(run_cases, "evaluate_case", lambda pair, ignore: calls.append(pair.case_id) or original(pair, ignore))
    assert evaluate_folders(labels, pred, tmp_path / "r")["cases"]["overall"] == first["cases"]["overall"]
    assert calls == []
    image = read_image(pred / "case000.nii.gz", dtype=None)
    write_image(np.zeros_like(image.array), image.geometry, pred / "case000.nii.gz")
    os.utime(pred / "case000.nii.gz", ns=(1, 1))  # a different mtime even on coarse file systems
    evaluate_folders(labels, pred, tmp_path / "r")
    assert calls == ["case000"]
    assert pd.read_csv(tmp_path / "r" / "per_case.csv").set_index("case").loc["case000"].dice == 0.0


@pytest.mark.slow  # worker start-up (loky) takes several seconds on a busy 2-core machine
def test_parallel_run_gives_the_same_numbers(evaluated, tmp_path):
    root, summary = evaluated
    labels = root / "raw" / "Dataset900_Tiny" / "labelsTr"
    parallel = evaluate_folders(labels, root / "pred", tmp_path / "r", dataset="900", raw_root=root / "raw", n_jobs=2, resume=False)
    assert parallel["slices"]["overall"] == summary["slices"]["overall"]
    assert parallel["cases"]["overall"] == summary["cases"]["overall"]
    a = pd.read_csv(root / "report" / "per_slice.csv")
    b = pd.read_csv(tmp_path / "r" / "per_slice.csv")
    pd.testing.assert_frame_equal(a, b)


def test_report_renders_in_headless_chromium(evaluated):
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no chromium on PATH: install it (apt-get install chromium) to render report.html in a real browser")
    import matplotlib.image

    root, _ = evaluated
    shot = screenshot(root / "report" / "report.html", root / "report.png", browser, 1280, 2000)
    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.shape[:2] == (2000, 1280)
    ink = (pixels.mean(axis=2) < 0.6).mean()  # dark text, table borders and plot boxes
    colour = (np.ptp(pixels, axis=2) > 0.2).mean()  # the box plots' coloured boxes
    assert ink > 0.005 and colour > 0.005, (ink, colour)


def test_all_empty_references_give_a_report_not_a_crash(tmp_path):
    from deepwml.imageio import Geometry

    g = Geometry((16, 16, 4), (1.0, 1.0, 5.0), (0, 0, 0))
    for i in range(3):
        write_image(np.zeros((4, 16, 16), np.uint8), g, tmp_path / "ref" / f"e{i}.nii.gz")
        pred = np.zeros((4, 16, 16), np.uint8)
        pred[i, 2:4, 2:4] = i > 0  # two cases predict lesion where there is none
        write_image(pred, g, tmp_path / "pred" / f"e{i}.nii.gz")
    summary = evaluate_folders(tmp_path / "ref", tmp_path / "pred", tmp_path / "out")
    assert summary["slices"]["n_with_reference_lesion"] == 0 and summary["slices"]["overall"]["dice"]["median"] is None
    assert summary["slices"]["n_false_positive_slices"] == 2
    assert summary["slices"]["false_positive_area_mm2_total"] == pytest.approx(8.0)
    assert summary["statistics"]["slices"]["lv_group"]["dice"]["kruskal_wallis"]["testable"] is False
    cases = pd.read_csv(tmp_path / "out" / "per_case.csv")
    assert list(cases.dice) == [1.0, 0.0, 0.0] and cases.avd_percent.isna().tolist() == [False, True, True]
    assert (tmp_path / "out" / "report.html").exists() and (tmp_path / "out" / "figures" / "fig4_by_lv_group.png").exists()
