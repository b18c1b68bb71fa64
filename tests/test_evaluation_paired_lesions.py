"""deepwml_evaluate --against, lesion by lesion: which reference lesions each method finds, by size, with McNemar's
exact test on the lesions only one of them finds."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import write_tiny_dataset
from scipy import stats

from deepwml.evaluation import evaluate_folders
from deepwml.evaluation.paired_lesions import mcnemar_exact, paired_detection
from deepwml.imageio import read_image, write_image


def _lesions(found, volumes, case="a"):
    """Reference rows of a per_lesion.csv: lesion k of ``case`` with its volume and whether it was found."""
    n = len(found)
    return pd.DataFrame({"case": [case] * n, "side": ["reference"] * n, "lesion": np.arange(1, n + 1),
                         "volume_ml": volumes, "voxels": np.arange(1, n + 1) * 3, "detected": found})


def test_only_the_lesions_one_method_finds_decide_and_the_test_is_scipys_exact_binomial():
    """Ten small lesions this method finds 8 of and the other none, two large ones both find: the small bin favours
    this method (p = 2 x 0.5^8), the large one has no discordant lesion and no p-value."""
    volumes = [0.01] * 10 + [3.0, 4.0]
    this = _lesions([True] * 8 + [False] * 2 + [True, True], volumes)
    other = _lesions([False] * 10 + [True, True], volumes)
    out = paired_detection(this, other)
    small, large = out["bins"][0], out["bins"][-1]
    assert (small["reference_lesions"], small["found_this"], small["found_other"], small["this_only"], small["other_only"]) == (10, 8, 0, 8, 0)
    assert small["mcnemar_p"] == pytest.approx(stats.binomtest(0, 8, 0.5).pvalue) == pytest.approx(2 * 0.5**8)
    assert small["favours"] == "this"
    assert large["mcnemar_p"] is None and large["favours"] is None and out["overall"]["this_only"] == 8
    assert mcnemar_exact(3, 3) == pytest.approx(1.0) and mcnemar_exact(0, 0) is None


def test_other_reference_lesions_or_no_lesion_table_are_not_compared_and_say_why():
    """Reports of other reference masks (lesions that do not pair up) or an old report without per_lesion.csv."""
    this = _lesions([True, False], [0.01, 0.2])
    assert "differ" in paired_detection(this, _lesions([True], [0.01]))["reason"]
    shifted = _lesions([True, False], [0.01, 0.2]).assign(voxels=[7, 8])
    assert "differ" in paired_detection(this, shifted)["reason"]
    assert "per_lesion.csv" in paired_detection(this, None)["reason"]


def test_against_a_report_of_the_same_cases_pairs_each_reference_lesion(tmp_path):
    """A perfect method against one that predicts nothing: every lesion found here only; the counts are each report's
    own (per_lesion.csv), and table2.md and report.html show the table."""
    folder = write_tiny_dataset(tmp_path / "raw", n_train=4, n_test=0)
    (tmp_path / "empty").mkdir()
    for path in (folder / "labelsTr").iterdir():
        image = read_image(path, dtype=None)
        write_image(np.zeros(image.array.shape, np.uint8), image.geometry, tmp_path / "empty" / path.name)
    evaluate_folders(folder / "labelsTr", tmp_path / "empty", tmp_path / "report_empty")
    summary = evaluate_folders(folder / "labelsTr", folder / "labelsTr", tmp_path / "report", against=tmp_path / "report_empty")
    paired = summary["against"]["lesions_by_size"]
    lesions = pd.read_csv(tmp_path / "report" / "per_lesion.csv")
    n = int((lesions.side == "reference").sum())
    assert paired["testable"] and paired["overall"]["reference_lesions"] == n > 0
    assert (paired["overall"]["found_this"], paired["overall"]["found_other"], paired["overall"]["this_only"]) == (n, 0, n)
    assert "reference lesions found, by lesion size" in (tmp_path / "report" / "table2.md").read_text(encoding="utf-8")
    assert "McNemar" in (tmp_path / "report" / "report.html").read_text(encoding="utf-8")
