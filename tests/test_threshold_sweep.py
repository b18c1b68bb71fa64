"""benchmarks/threshold_sweep.py: every mask setting scored on labelled scans, and apart on the heavily loaded ones."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from deepwml.imageio import Geometry, write_image
from deepwml_testing.benchmarks import load_benchmark
from deepwml_testing.toy_models import tiny_plan, write_model_dir


def _raw(tmp_path: Path) -> Path:
    """Two labelled 64² x 6 scans (1 x 1 x 5 mm): 'heavy' with a large bright lesion, 'light' with a small one."""
    raw = tmp_path / "raw"
    geometry = Geometry((64, 64, 6), (1.0, 1.0, 5.0), (0.0, 0.0, 0.0))
    zz, yy, xx = np.mgrid[:6, :64, :64]
    rng = np.random.default_rng(3)
    for name, radius in (("heavy", 9), ("light", 3)):
        head = (yy - 32) ** 2 + (xx - 32) ** 2 < 28**2
        lesion = ((yy - 30) ** 2 + (xx - 34) ** 2 < radius**2) & (zz >= 1) & (zz < 5)
        image = np.where(head, 100.0, 0.0) + 150.0 * lesion + rng.normal(0, 3, head.shape) * head
        write_image(image.astype(np.float32), geometry, raw / "imagesTr" / f"{name}.nii.gz")
        write_image(lesion.astype(np.uint8), geometry, raw / "labelsTr" / f"{name}.nii.gz")
    return raw


def test_sweep_scores_each_contrast_and_the_heavy_cases_apart(tmp_path, capsys):
    """--min-lesion-contrast values are swept beside the threshold (a lesion 2.5 x its ring goes only at C = 3), and
    --heavy-ml prints the same table again over the cases carrying at least that much lesion."""
    raw = _raw(tmp_path)
    model = write_model_dir(tmp_path / "model" / "toy", tiny_plan(matrix=64), kind="threshold")
    bench = load_benchmark("threshold_sweep")
    code = bench.main(["--raw", str(raw), "--work", str(tmp_path / "work"), "-m", str(model), "--thresholds", "0.5",
                       "--min-lesion-contrast", "0", "3", "--heavy-ml", "1"])
    assert code == 0
    out = capsys.readouterr().out
    rows = [line.split("|") for line in out.splitlines() if line.startswith("| 0.5 |")]
    assert len(rows) == 4  # two settings, over all cases and over the heavy one
    contrast, dice = [r[4].strip() for r in rows], [float(r[9]) for r in rows]
    assert contrast == ["0", "3", "0", "3"]
    assert dice[0] > 0.7 and dice[2] > 0.7, out  # the threshold model finds both bright lesions
    assert dice[1] == 0.0 and dice[3] == 0.0, out  # C = 3 drops them: 250 / 100 = 2.5 x their ring
    # the large lesion (radius 9 mm, 4 slices of 5 mm: ~5 ml) is the only case over 1 ml
    assert "the 1 case(s) with >= 1 ml of reference lesion:" in out
