"""benchmarks/postprocessing_counts.py: the search's counting timed on the same maps here and in another checkout,
with the counts compared."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from conftest import tiny_case
from deepwml.calibration.postprocessing_search import SearchGrid, case_counts
from deepwml.imageio import write_image
from deepwml.inference.postprocessing import MaskSettings
from deepwml_testing.benchmarks import load_benchmark

REPO = Path(__file__).resolve().parents[1]


def test_a_checkout_times_each_map_and_counts_as_the_search_does(tmp_path):
    bench = load_benchmark("postprocessing_counts")
    image, label, geometry = tiny_case(shape_zyx=(4, 48, 48), n_lesions=4)
    probs = bench.barely_trained(image)
    # the stand-in for a barely trained model: the whole head over the lowest threshold, the lesions near 1
    assert (probs >= 0.2).mean() > 0.4 and probs[label > 0].min() > 0.9
    paths = {k: str(tmp_path / f"{k}.nii.gz") for k in ("image", "label", "shipped", "barely_trained")}
    for key, array in (("image", image), ("label", label), ("shipped", probs * 0.5), ("barely_trained", probs)):
        write_image(array, geometry, paths[key])
    cases_file = tmp_path / "cases.json"
    cases_file.write_text(json.dumps([paths]))
    result = bench.in_checkout(REPO, cases_file, runs=2)  # the baseline's side: another process, its own folder
    assert set(result) == {"image.nii.gz shipped", "image.nii.gz barely_trained"}
    candidates = SearchGrid().candidates(MaskSettings(0.5, 0.0, 0.0, False, 0.0))
    expected = case_counts(probs, label > 0, None, float(np.prod(geometry.spacing)) / 1000, candidates, image, geometry)
    assert result["image.nii.gz barely_trained"]["counts"] == expected.tolist()
    assert all(r["seconds"] > 0 for r in result.values())


def test_with_anatomy_the_candidates_lose_what_the_map_s_rules_drop(tmp_path):
    """--anatomy: every candidate mask without the lesions the map drops, as the search does by default."""
    from deepwml.anatomy.labels import BACKGROUND, WHITE_MATTER
    from deepwml.calibration.fit_input import FitInput, anatomy_rules
    from deepwml.constants import MIN_CORTEX_CONTRAST

    bench = load_benchmark("postprocessing_counts")
    image, label, geometry = tiny_case(shape_zyx=(4, 48, 48), n_lesions=4)
    probs = bench.barely_trained(image)
    anatomy = np.full(image.shape, WHITE_MATTER, np.uint8)
    anatomy[:, :, :20] = BACKGROUND  # a third of the head outside the map's brain: its lesions go
    paths = {k: str(tmp_path / f"{k}.nii.gz") for k in ("image", "label", "shipped", "barely_trained", "anatomy")}
    for key, array in (("image", image), ("label", label), ("shipped", probs * 0.5), ("barely_trained", probs),
                       ("anatomy", anatomy)):
        write_image(array, geometry, paths[key])
    cases_file = tmp_path / "cases.json"
    cases_file.write_text(json.dumps([paths]))
    result = bench.in_checkout(REPO, cases_file, runs=1, anatomy=True)
    candidates = SearchGrid().candidates(MaskSettings(0.5, 0.0, 0.0, False, 0.0))
    rules = anatomy_rules(FitInput(tmp_path, drop_outside=True, cortex_contrast=MIN_CORTEX_CONTRAST), anatomy, image, geometry)
    args = (probs, label > 0, None, float(np.prod(geometry.spacing)) / 1000, candidates, image, geometry)
    expected = case_counts(*args, keep_lesions=rules)
    assert result["image.nii.gz barely_trained"]["counts"] == expected.tolist()
    assert expected.tolist() != case_counts(*args).tolist()
