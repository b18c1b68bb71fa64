"""benchmarks/phantom_sweep.py: a lesion put in turn at every point of a grid through the phantom head's white matter,
and how often a model finds it."""
from __future__ import annotations

import numpy as np
import torch

from deepwml.inference.model_loading import check_model
from deepwml.pretrained import builtin_model_dir
from deepwml_testing.benchmarks import load_benchmark

SHAPE = (90, 110, 100)  # the phantom's z, y, x


def _ellipsoid(points: np.ndarray, cx, cy, cz, ax, ay, az) -> np.ndarray:
    x, y, z = points.T
    return ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 + ((z - cz) / az) ** 2


def test_the_grid_lies_inside_the_brain_away_from_the_ventricles_and_the_nucleus():
    bench = load_benchmark("phantom_sweep")
    points = bench.white_matter_points(SHAPE, 18.0, 5.0)
    assert len(points) > 30
    assert (_ellipsoid(points, 0, 0, -5, 62 - 11, 74 - 11, 56 - 11) < 1).all()
    for ventricle_or_nucleus in ((-9, -8, 8, 6, 25, 14), (10, -4, 5, 5, 20, 12), (-25, 20, -20, 8, 10, 9)):
        assert (_ellipsoid(points, *ventricle_or_nucleus[:3], *(a + 11 for a in ventricle_or_nucleus[3:])) > 1).all()


def test_every_grid_point_gets_one_lesion_on_one_scan_and_lesions_of_a_scan_lie_apart():
    bench = load_benchmark("phantom_sweep")
    scans = list(bench.sweep_scans(0, 24.0, 10.0))
    assert 1 < len(scans) <= 8
    counts = [len(np.unique(label)) - 1 for _, label, _, _ in scans]
    assert sum(counts) == len(bench.white_matter_points(SHAPE, 24.0, 5.0))
    z, y, x = np.meshgrid(*[(np.arange(n) - n / 2) * 1.5 for n in SHAPE], indexing="ij")
    for image, label, _, listed in scans:
        centres = np.array([[c[label == k].mean() for c in (x, y, z)] for k in np.unique(label)[1:]])
        assert np.abs(centres - listed).max() < 1.0  # the centres the sweep reports are its lesions'
        gaps = np.linalg.norm(centres[:, None] - centres[None], axis=-1)[np.triu_indices(len(centres), 1)]
        assert gaps.size == 0 or gaps.min() > 2 * 24.0 - 2
        # the phantom's own lesions are gone: only the sweep's are brighter than the brain there
        assert np.median(image[label > 0]) > np.median(image[(label == 0) & (image > 60) & (image < 140)]) + 35


class _Constant(torch.nn.Module):
    def __init__(self, logit: float) -> None:
        super().__init__()
        self.logit = logit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x, self.logit)


class _Brighter(torch.nn.Module):
    """Calls every pixel above ``level`` of the normalised image."""

    def __init__(self, level: float) -> None:
        super().__init__()
        self.level = level

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 50.0 * (x - self.level)


def test_a_model_calling_the_bright_pixels_finds_every_lesion_and_one_calling_nothing_finds_none():
    bench = load_benchmark("phantom_sweep")
    plan = check_model(builtin_model_dir(), checkpoint="latest").plan
    image, label, geometry, _ = next(bench.sweep_scans(0, 24.0, 10.0))
    ids = sorted(np.unique(label)[1:].tolist())
    stack, truth = bench.cut_scan(image, label, geometry, 5.0)
    maxima, false = bench.score_scan(_Brighter(0.8), plan, stack, truth)
    assert sorted(maxima) == ids and min(maxima.values()) > 0.5 and false >= 1  # the rim is brighter still
    maxima, false = bench.score_scan(_Constant(-20.0), plan, stack, truth)
    assert sorted(maxima) == ids and max(maxima.values()) < 0.01 and false == 0


def test_a_run_prints_the_share_found_per_model_and_lists_every_lesion(tmp_path, capsys):
    import pandas as pd

    bench = load_benchmark("phantom_sweep")
    assert bench.main(["-m", "builtin", "--seeds", "0", "--spacing", "36", "--csv", str(tmp_path / "l.csv")]) == 0
    out = capsys.readouterr().out
    assert "phantom sweep: " in out and "lesions of 10 mm" in out
    found, total = out.split("builtin: found ")[1].split()[0].split("/")
    assert 0 <= int(found) <= int(total) > 0
    table = pd.read_csv(tmp_path / "l.csv")
    assert len(table) == int(total) and (table["max_probability"] >= 0.5).sum() == int(found)
    assert list(table.columns) == ["model", "seed", "x_mm", "y_mm", "z_mm", "max_probability"]


def test_a_model_folder_that_is_not_a_model_is_one_line_naming_it(tmp_path, capsys):
    bench = load_benchmark("phantom_sweep")
    assert bench.main(["-m", str(tmp_path / "nowhere"), "--seeds", "0"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "nowhere") in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
