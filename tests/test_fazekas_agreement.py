"""benchmarks/fazekas_agreement.py: the location-class comparison of a predicted anatomy map with the truth one."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from deepwml.imageio import Geometry
from deepwml_testing.benchmarks import load_benchmark


def test_location_report_counts_agreement_and_the_mcdonald_region_apart(capsys):
    """Agreement over lesions, cortical and juxtacortical counted as one region, and the confusion rows per truth
    class; a map never given (no pairs) prints nothing; the true lesions' agreement is printed apart."""
    bench = load_benchmark("fazekas_agreement")
    pairs = {"cleaned": [("deep", "deep"), ("cortical", "juxtacortical"), ("cortical", "deep"), ("periventricular", "periventricular")],
             "raw": []}
    bench.location_report(pairs)
    out = capsys.readouterr().out
    assert "as deepwml_predict makes it) against truth anatomy: agreement 0.500, cortical and juxtacortical as one 0.750 (n=4)" in out
    assert "without its cleanup" not in out
    assert "rows truth, columns model: periventricular / cortical / juxtacortical / deep" in out
    # the truth 'deep' row: one read cortical, one deep
    assert out.splitlines()[-1].split() == ["0", "1", "0", "1"]
    bench.location_report(dict(pairs, cleaned_true=pairs["cleaned"][:1]))
    assert "true lesions only against truth anatomy: agreement 1.000, cortical and juxtacortical as one 1.000 (n=1)" in capsys.readouterr().out


def test_true_lesions_are_those_touching_the_truth_mask_in_the_lesion_tables_order():
    """Each predicted lesion, in the lesion table's order (largest first), is true when any voxel of it is a truth
    lesion voxel."""
    bench = load_benchmark("fazekas_agreement")
    geometry = Geometry((12, 12, 3), (1.0, 1.0, 5.0), (0.0, 0.0, 0.0))
    mask = np.zeros((3, 12, 12), bool)
    mask[1, 1:3, 1:3] = True  # 4 voxels, touches the truth below
    mask[1, 6:9, 6:9] = True  # 9 voxels (the table's first row), false
    mask[1, 10, 10] = True  # 1 voxel, touches the truth
    truth = np.zeros_like(mask)
    truth[1, 2:5, 2:5] = True
    truth[1, 10, 10] = True
    case = SimpleNamespace(geometry=geometry, label=truth.astype(np.uint8))
    assert bench.touches_reference(mask, case) == [False, True, True]


def test_ten_mm_report_sets_each_map_and_mask_against_the_truth(capsys):
    """The volumes within / beyond 10 mm of the ventricles: the truth's medians and share within, then each model
    pairing's median absolute difference (also over the truth's median) and correlation; a pairing never made is
    left out."""
    bench = load_benchmark("fazekas_agreement")
    truth = [(1.0, 3.0), (2.0, 2.0), (3.0, 1.0)]
    bench.ten_mm_report({"truth": truth, "model_anatomy": [(1.5, 2.5), (2.5, 1.5), (3.0, 1.0)], "model_both": []})
    out = capsys.readouterr().out
    assert "truth mask and anatomy: median 2.00 / 2.00 ml, share within 0.50 (n=3)" in out
    assert "truth mask, model anatomy: within: median |difference| 0.500 ml (25% of the truth's median), r = 0.982" in out
    assert "beyond: median |difference| 0.500 ml" in out and "share within 0.58" in out
    assert "model mask" not in out
