"""benchmarks/train.py: every kind of plan's training step can be timed (multi-class, 2.5D, binary)."""
from __future__ import annotations

import pytest

from deepwml_testing.benchmarks import load_benchmark


@pytest.mark.parametrize("preset", ["anatomy_fast", "cpu_fast_25d", "cpu_fast_robust_deep_in"])
def test_a_step_of_each_kind_of_plan_is_timed_with_its_own_inputs_and_loss(preset):
    """The anatomy plan (five classes, cross-entropy + Dice) and the 2.5D plan (three slices in) get a batch of their
    own shape, so their figures exist beside the binary plans' instead of an error row."""
    bench = load_benchmark("train")
    out = bench.measure_step(preset, batch=2, precision="fp32", warmup=0, steps=1, threads=1)
    assert out["seconds_per_step"] > 0 and out["images_per_second"] > 0
