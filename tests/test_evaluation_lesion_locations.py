"""Lesion detection by location (deepwml_evaluate with anatomy maps): reference and predicted lesions located as
deepwml_predict locates them, pooled per location class; bad or missing maps are named."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from deepwml.cli.evaluate import main as evaluate_main
from deepwml.cli.predict import main as predict_main
from deepwml.evaluation import evaluate_folders
from deepwml.imageio import read_image, write_image
from deepwml.utils.errors import DeepWMLError


@pytest.fixture(scope="module")
def predicted(tmp_path_factory):
    """A synthetic patient predicted by the shipped models with its anatomy map saved, and its drawn lesion mask."""
    from deepwml.synthetic.generate import generate_case

    root = tmp_path_factory.mktemp("locations")
    case = generate_case("MS#1", index=1, seed=4343)
    write_image(case.image, case.geometry, root / "in" / "p1.nii.gz")
    write_image(case.label, case.geometry, root / "ref" / "p1.nii.gz")
    assert predict_main(["-i", str(root / "in"), "-o", str(root / "pred"), "--save-anatomy", "--no-qc", "--device", "cpu"]) == 0
    return root


def test_lesions_are_located_as_deepwml_predict_locates_them_and_pooled_per_class(predicted):
    """The map beside the masks is found by itself; the predicted lesions get the locations deepwml_predict's lesion
    table gives them; each class's counts add up to all lesions, and the table reaches table2.md and report.html."""
    root = predicted
    summary = evaluate_folders(root / "ref", root / "pred", root / "report")
    lesions = pd.read_csv(root / "report" / "per_lesion.csv")
    assert lesions["location"].notna().all()
    ours = sorted(lesions.loc[lesions.side == "prediction", "location"])
    table = pd.read_csv(root / "pred" / "p1_lesions.csv")
    assert ours == sorted(table["location"]) and len(ours) > 0
    by_location = summary["lesions_by_location"]
    assert by_location["cases_without_map"] == []
    rows = by_location["locations"]
    assert [r["group"] for r in rows] == ["periventricular", "juxtacortical", "cortical", "deep", "infratentorial", "unclassified"]
    assert sum(r["reference_lesions"] for r in rows) == by_location["overall"]["reference_lesions"] == (lesions.side == "reference").sum()
    assert sum(r["predicted_false"] for r in rows) == by_location["overall"]["predicted_false"]
    periventricular = lesions[(lesions.side == "reference") & (lesions.location == "periventricular")]
    assert rows[0]["reference_found"] == periventricular["detected"].sum()
    assert "## Lesion detection by location" in (root / "report" / "table2.md").read_text(encoding="utf-8")
    assert "<h2>Lesion detection by location</h2>" in (root / "report" / "report.html").read_text(encoding="utf-8")


def test_without_maps_there_is_no_location_table_and_an_empty_folder_given_is_an_error(predicted, tmp_path, capsys):
    """Masks without maps: no location section and empty locations; --anatomy naming a folder without maps, or a map
    on another grid, stops with one line naming the folder or file."""
    root = predicted
    (tmp_path / "pred").mkdir()
    (tmp_path / "pred" / "p1.nii.gz").write_bytes((root / "pred" / "p1.nii.gz").read_bytes())
    summary = evaluate_folders(root / "ref", tmp_path / "pred", tmp_path / "report")
    assert summary["lesions_by_location"] is None
    assert pd.read_csv(tmp_path / "report" / "per_lesion.csv")["location"].isna().all()
    assert "by location" not in (tmp_path / "report" / "table2.md").read_text(encoding="utf-8")
    (tmp_path / "maps").mkdir()
    with pytest.raises(DeepWMLError, match="holds no anatomy maps"):
        evaluate_folders(root / "ref", tmp_path / "pred", tmp_path / "report", anatomy_dir=tmp_path / "maps")
    anatomy = read_image(root / "pred" / "p1_anatomy.nii.gz", dtype=None)
    short = dataclasses.replace(anatomy.geometry, size=anatomy.geometry.size[:2] + (anatomy.geometry.size[2] - 1,))
    write_image(anatomy.array[:-1], short, tmp_path / "maps" / "p1_anatomy.nii.gz")  # one slice short
    capsys.readouterr()
    assert evaluate_main(["-ref", str(root / "ref"), "-pred", str(tmp_path / "pred"), "-o", str(tmp_path / "r2"),
                          "--anatomy", str(tmp_path / "maps")]) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if "error" in line]
    assert len(err) == 1 and "p1_anatomy.nii.gz" in err[0] and "not on the grid" in err[0], err


def test_cases_without_a_map_are_left_out_of_the_location_table_and_named(predicted, tmp_path):
    """One case with a map and one without: the located lesions are the first case's, the other is named in the
    notes and the table's note."""
    root = predicted
    for folder in ("ref", "pred"):
        (tmp_path / folder).mkdir()
        for name in ("p1", "p2"):
            image = read_image(root / folder / "p1.nii.gz", dtype=None)
            write_image(image.array, image.geometry, tmp_path / folder / f"{name}.nii.gz")
    anatomy = read_image(root / "pred" / "p1_anatomy.nii.gz", dtype=None)
    write_image(anatomy.array, anatomy.geometry, tmp_path / "pred" / "p1_anatomy.nii.gz")
    summary = evaluate_folders(tmp_path / "ref", tmp_path / "pred", tmp_path / "report")
    assert summary["lesions_by_location"]["cases_without_map"] == ["p2"]
    lesions = pd.read_csv(tmp_path / "report" / "per_lesion.csv")
    assert lesions.loc[lesions.case == "p1", "location"].notna().all() and lesions.loc[lesions.case == "p2", "location"].isna().all()
    assert summary["lesions_by_location"]["overall"]["reference_lesions"] == ((lesions.case == "p1") & (lesions.side == "reference")).sum()
    assert any("without one: p2" in n for n in summary["notes"])
    assert np.isfinite(summary["lesions_by_size"]["overall"]["recall"])
