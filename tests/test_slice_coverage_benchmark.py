"""benchmarks/slice_coverage.py: the same scan whole and with slices dropped at both ends, masks compared on the
slices both hold."""
from __future__ import annotations

import re

import numpy as np
import SimpleITK as sitk

from conftest import oblique_direction, tiny_case
from deepwml.imageio import Geometry, write_image
from deepwml_testing.benchmarks import load_benchmark
from deepwml_testing.toy_models import tiny_plan, write_model_dir


def test_the_slice_coverage_benchmark_compares_the_same_slices_and_refuses_what_it_cannot_measure(tmp_path, capsys):
    """Lesions sit on different slices, so masks compared on the wrong slices would not agree: a toy threshold model
    finds the same lesions in the whole and the cropped stack (ratio and Dice about 1), on a tilted stack too."""
    bench = load_benchmark("slice_coverage")
    model = write_model_dir(tmp_path / "lesion" / "Dataset999_Toy" / "tiny", tiny_plan())
    image, label, geometry = tiny_case(shape_zyx=(9, 56, 48), spacing_xyz=(0.8, 0.9, 5.0), direction=oblique_direction(),
                                       n_lesions=12, seed=1)
    assert len(np.unique(np.nonzero(label[2:-2])[0])) >= 3  # lesions on several of the shared slices
    write_image(image, geometry, tmp_path / "in" / "scan.nii.gz")
    assert bench.main(["-i", str(tmp_path / "in"), "-m", str(model), "--drop", "2"]) == 0
    row = re.search(r"\| \S+tiny \| ([\d.]+) \| [\d.]+–[\d.]+ \| ([\d.]+) \| ([\d.]+) \| ([\d.]+), ([\d.]+) \|",
                    capsys.readouterr().out)
    assert row, "one row per model"
    ratio, median_dice, lowest, pooled_ratio, pooled_dice = map(float, row.groups())
    assert 0.9 <= ratio <= 1.1 and median_dice >= 0.9 and lowest >= 0.9
    assert 0.9 <= pooled_ratio <= 1.1 and pooled_dice >= 0.9
    whole, cropped = bench.stacks(tmp_path / "in" / "scan.nii.gz", 2)  # as SimpleITK's own slicing places the slabs
    by_itk = sitk.ReadImage(str(tmp_path / "in" / "scan.nii.gz"))[:, :, 2:7]
    assert not cropped.geometry.mismatches(Geometry.from_sitk(by_itk)) and np.array_equal(cropped.array, whole.array[2:7])
    assert bench.main(["-i", str(tmp_path / "in"), "-m", str(model), "--drop", "4"]) == 2
    assert "has 9 slices: too few to drop 4 at each end" in capsys.readouterr().err
    assert bench.main(["-i", str(tmp_path / "in"), "-m", str(model), "--drop", "0"]) == 2
    assert "--drop must be at least 1" in capsys.readouterr().err
    assert bench.main(["-i", str(tmp_path / "nothing"), "-m", str(model)]) == 2
    assert "holds no image files" in capsys.readouterr().err
