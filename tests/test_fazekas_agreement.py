"""benchmarks/fazekas_agreement.py: the location-class comparison of a predicted anatomy map with the truth one."""
from __future__ import annotations

from deepwml_testing.benchmarks import load_benchmark


def test_location_report_counts_agreement_and_the_mcdonald_region_apart(capsys):
    """Agreement over lesions, cortical and juxtacortical counted as one region, and the confusion rows per truth
    class; a map never given (no pairs) prints nothing."""
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
