"""benchmarks/dicom_outputs.py: every DICOM output of a synthetic case is written and timed, the SEG also split by
location as deepwml_predict writes it with the anatomy map."""
from __future__ import annotations

import numpy as np
import pytest

from deepwml_testing.benchmarks import load_benchmark

hd = pytest.importorskip("highdicom", reason="DICOM outputs need highdicom (pip install 'deepwml[dicom]')")


def test_a_short_run_times_each_output_and_the_location_seg_splits_the_case_s_mask(tmp_path, capsys):
    from deepwml.imageio.dicom_seg_masks import read_seg_mask

    bench = load_benchmark("dicom_outputs")
    bench.main(["--work", str(tmp_path / "work"), "--cases", "1", "--slices", "6", "--runs", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert "SEG by location" in lines[0] and lines[-1].split()[0] == "median"
    assert len(lines[-1].split()) == 1 + 5 and all(v.endswith("s") for v in lines[-1].split()[1:])
    mask = bench.synthetic_stack(0, 6)[2]
    seg_path = tmp_path / "work" / "out" / "case0_seg.dcm"
    seg = hd.seg.segread(seg_path)
    assert len(seg.SegmentSequence) >= 2  # a segment per location class, at least two on this case
    assert np.array_equal(read_seg_mask(seg_path, tmp_path / "work" / "case0") > 0, mask > 0)
