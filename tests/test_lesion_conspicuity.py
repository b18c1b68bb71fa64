"""benchmarks/lesion_conspicuity.py: which reference lesions a model finds, by volume and by their contrast to the
tissue around them, from any folder of images, reference masks and predicted masks."""
from __future__ import annotations

import numpy as np
import pytest

from deepwml.imageio import Geometry, write_image
from deepwml_testing.benchmarks import load_benchmark

GEOMETRY = Geometry((40, 40, 3), (1.0, 1.0, 5.0), (0.0, 0.0, 0.0))


def _case():
    """Tissue at 100 with a stripped strip; a bright 45 µl lesion (found), a faint one (missed), a large one (found)."""
    image = np.full((3, 40, 40), 100.0, np.float32)
    image[:, :, :4] = 0.0
    label = np.zeros(image.shape, np.uint8)
    label[0, 5:8, 10:13], image[0, 5:8, 10:13] = 1, 150.0  # 9 voxels x 5 µl
    label[0, 30:32, 30:32], image[0, 30:32, 30:32] = 1, 107.0  # 4 voxels x 5 µl, 1.07 x its ring
    label[2, 10:30, 10:30], image[2, 10:30, 10:30] = 1, 135.0  # 400 voxels x 5 µl
    predicted = label.copy()
    predicted[0, 30:32, 30:32] = 0
    predicted[1, 33:36, 33:36] = 1  # a false lesion in plain tissue: as bright as its ring
    return image, label, predicted


def test_every_reference_lesion_gets_its_volume_contrast_and_whether_it_was_found():
    bench = load_benchmark("lesion_conspicuity")
    image, label, predicted = _case()
    rows = sorted(bench.reference_conspicuity(image, label, predicted, (5.0, 1.0, 1.0)), key=lambda r: r["ul"])
    assert [r["ul"] for r in rows] == [20.0, 45.0, 2000.0]
    assert [r["found"] for r in rows] == [False, True, True]
    assert [round(r["contrast"], 3) for r in rows] == [1.07, 1.5, 1.35]
    table = bench.conspicuity_table(rows)
    lines = table.splitlines()
    assert lines[0].startswith("| reference lesions, µl | contrast 0–1.05: recall (n) | contrast 1.05–1.1")
    assert lines[2] == "| 0–30 | – | 0.00 (1) | – | – | – | – | 0.00 (1) | 1.07 |"
    assert lines[3] == "| 30–100 | – | – | – | – | – | 1.00 (1) | 1.00 (1) | 1.50 |"
    assert lines[-1] == "| all | – | 0.00 (1) | – | – | – | 1.00 (2) | 0.67 (3) | 1.35 |"
    # the predicted lesions the other way round: two true ones that stand out, one false one as bright as its ring
    both = bench.both_ways(image, label, predicted, (5.0, 1.0, 1.0))
    assert bench.conspicuity_table(both) == table
    assert bench.predicted_table(both).splitlines()[-1] == "| count | 0 / 1 | 0 / 0 | 0 / 0 | 0 / 0 | 0 / 0 | 2 / 0 | 0 / 0 |"


def test_the_command_pairs_folders_by_name_and_names_a_file_that_does_not_fit(tmp_path, capsys):
    bench = load_benchmark("lesion_conspicuity")
    image, label, predicted = _case()
    write_image(image, GEOMETRY, tmp_path / "images" / "c1_0000.nii.gz")
    write_image(label, GEOMETRY, tmp_path / "labels" / "c1.nii.gz")
    write_image(predicted, GEOMETRY, tmp_path / "pred" / "c1.nii.gz")
    args = ["-i", str(tmp_path / "images"), "-l", str(tmp_path / "labels"), "-p", str(tmp_path / "pred")]
    assert bench.main(args) == 0
    out = capsys.readouterr().out
    assert "3 reference lesions in 1 cases" in out and "| all |" in out and "| count | 0 / 1 |" in out
    write_image(predicted[:2], Geometry((40, 40, 2), (1.0, 1.0, 5.0), (0.0, 0.0, 0.0)), tmp_path / "pred" / "c1.nii.gz")
    assert bench.main(args) == 2
    err = capsys.readouterr().err
    assert "prediction of c1.nii.gz is not on its label's grid" in err and "Traceback" not in err
    (tmp_path / "pred" / "c1.nii.gz").unlink()
    assert bench.main(args) == 2
    assert "no prediction for c1.nii.gz" in capsys.readouterr().err
    assert bench.main(args + ["--ring-mm", "0"]) == 2
    assert "--ring-mm must be positive" in capsys.readouterr().err


@pytest.mark.parametrize("ring_mm,expected", [(1.0, 1.5), (3.0, 1.5)])
def test_the_ring_width_is_in_millimetres_in_plane(ring_mm, expected):
    """A 0.5 mm grid reaches twice as many voxels for the same ring; the lesion's neighbours a slab away never count."""
    bench = load_benchmark("lesion_conspicuity")
    image = np.full((3, 40, 40), 100.0, np.float32)
    image[0] = 400.0
    label = np.zeros(image.shape, bool)
    label[1, 18:21, 18:21], image[1, 18:21, 18:21] = True, 150.0
    row = bench.reference_conspicuity(image, label, label, (5.0, 0.5, 0.5), ring_mm)[0]
    assert row["contrast"] == pytest.approx(expected) and row["found"]


def test_the_filter_table_counts_what_each_rule_drops_of_the_true_and_the_false_lesions():
    bench = load_benchmark("lesion_conspicuity")
    rows = [{"kind": "predicted", "found": True, "contrast": 1.12, "spread": 3.0, "ul": 30.0},
            {"kind": "predicted", "found": True, "contrast": 1.40, "spread": 5.0, "ul": 90.0},
            {"kind": "predicted", "found": False, "contrast": 1.10, "spread": 1.6, "ul": 10.0},
            {"kind": "reference", "found": False, "contrast": 1.0, "spread": 0.0, "ul": 5.0}]
    lines = bench.filter_table(rows).splitlines()
    assert lines[0].startswith("| filter (2 true / 1 false predicted lesions)")
    assert "| ratio < 1.15 | 0.50 | 0.25 | 1.00 |" in lines and "| spread < 2 | 0.00 | 0.00 | 1.00 |" in lines
    assert "| ratio < 1.15 and spread < 2.25 | 0.00 | 0.00 | 1.00 |" in lines
    assert lines[-1] == "| AUC, true against false | ratio 1.000 | spread 1.000 | |"


def test_each_contrast_rule_is_scored_on_the_masks_it_leaves(tmp_path, capsys):
    """--rules: the predicted masks after each rule drops its lesions, scored as deepwml_evaluate scores a case: the
    false lesion as bright as its ring goes under the ratio rule and the Dice rises."""
    from deepwml.evaluation.case_metrics import case_metrics

    bench = load_benchmark("lesion_conspicuity")
    image, label, predicted = _case()
    scores = bench.rule_scores(image, label > 0, predicted > 0, GEOMETRY)
    assert list(scores) == [name for name, _, _ in bench.RULES]
    assert scores["none"]["dice"] == pytest.approx(case_metrics(label > 0, predicted > 0, GEOMETRY)["dice"])
    without_false = predicted.copy()
    without_false[1] = 0
    assert scores["ratio < 1.15 (shipped 2026-12-05)"]["dice"] == pytest.approx(case_metrics(label > 0, without_false > 0, GEOMETRY)["dice"])
    assert scores["ratio < 1.15 (shipped 2026-12-05)"]["lesion_f1"] > scores["none"]["lesion_f1"]
    write_image(image, GEOMETRY, tmp_path / "images" / "c1_0000.nii.gz")
    write_image(label, GEOMETRY, tmp_path / "labels" / "c1.nii.gz")
    write_image(predicted, GEOMETRY, tmp_path / "pred" / "c1.nii.gz")
    assert bench.main(["-i", str(tmp_path / "images"), "-l", str(tmp_path / "labels"), "-p", str(tmp_path / "pred"), "--rules"]) == 0
    out = capsys.readouterr().out
    assert f"| ratio < 1.15 (shipped 2026-12-05) | {scores['ratio < 1.15 (shipped 2026-12-05)']['dice']:.3f} |" in out
