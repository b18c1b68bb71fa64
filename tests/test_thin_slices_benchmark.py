"""benchmarks/thin_slices.py: the generator's patients acquired in thin slices, predicted at each --thin-slab-mm
setting and scored; the work folder resumes."""
from __future__ import annotations

import json
import re

from deepwml_testing.benchmarks import load_benchmark
from deepwml_testing.toy_models import tiny_plan, write_model_dir


def test_each_setting_is_a_row_and_a_second_run_reuses_the_volumes(tmp_path, capsys):
    bench = load_benchmark("thin_slices")
    model = write_model_dir(tmp_path / "lesion" / "Dataset999_Toy" / "tiny", tiny_plan())
    (model / "fingerprint.json").write_text(json.dumps({"dataset_summary": {
        "slice_thickness_range": [4.0, 8.0], "inplane_spacing_range": [0.41, 0.94]}}))
    args = ["--work", str(tmp_path / "w"), "-m", str(model), "--centres", "MS#3", "--per-centre", "1",
            "--thickness", "2.5", "--slabs", "0", "auto", "6", "-np", "1"]
    assert bench.main(args) == 0
    out = capsys.readouterr().out
    assert "1 synthetic volumes, 2.5 mm slices, generator seed 3000" in out
    rows = re.findall(r"^\| (0|auto \(2 mm\)|6) \| 1 \| ([\d.]+) \|", out, re.M)
    assert [r[0] for r in rows] == ["0", "auto (2 mm)", "6"]
    volume = next((tmp_path / "w" / "images").glob("*.nii.gz"))
    assert volume.name.startswith("MS3") and (tmp_path / "w" / "labels" / volume.name).is_file()
    markers = {d: json.loads((tmp_path / "w" / d / ".deepwml_output.json").read_text())["predicted_with"]["thin_slab_mm"]
               for d in ("pred_0mm", "pred_auto", "pred_6mm")}
    assert markers == {"pred_0mm": 0.0, "pred_auto": 2.0, "pred_6mm": 6.0}
    stamp = volume.stat().st_mtime_ns
    assert bench.main(args) == 0  # resumed: the volume is not drawn again, the predictions are kept
    assert volume.stat().st_mtime_ns == stamp
    assert bench.main(["--work", str(tmp_path / "w"), "--slabs", "wide"]) == 2
    assert "--slabs takes 'auto' or widths in mm, not 'wide'" in capsys.readouterr().err
