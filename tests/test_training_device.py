"""Device, precision and allocator choices."""
from __future__ import annotations

import pytest
import torch

from deepwml.training import device
from deepwml.utils import allocator
from deepwml.training.device import setup_device


def test_cpu_uses_bf16_only_with_native_support(monkeypatch):
    threads = torch.get_num_threads()
    try:
        monkeypatch.setattr(device, "cpu_flags", lambda: {"avx2", "fma"})
        assert setup_device("cpu").amp_dtype is None
        monkeypatch.setattr(device, "cpu_flags", lambda: {"avx2", "amx_bf16", "avx512_bf16"})
        monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)
        assert setup_device("cpu").amp_dtype == torch.bfloat16
        assert setup_device("cpu", allow_bf16=False).amp_dtype is None
    finally:
        torch.set_num_threads(threads)


def test_cpu_threads_are_shared_between_local_ranks(monkeypatch):
    threads = torch.get_num_threads()
    try:
        monkeypatch.setattr(device, "physical_cores", lambda: 8)
        assert setup_device("cpu", local_world_size=2).threads == 4
        assert torch.get_num_threads() == 4
        assert setup_device("cpu", threads=3).threads == 3
    finally:
        torch.set_num_threads(threads)


def test_bad_device_names_are_user_errors():
    import pytest

    from deepwml.utils.errors import DeepWMLError

    with pytest.raises(DeepWMLError, match="--device must be"):
        setup_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeepWMLError, match="no CUDA device"):
            setup_device("cuda")


def test_allocator_tuning_prefers_jemalloc_and_runs_once(monkeypatch):
    monkeypatch.setattr(allocator.sys, "platform", "linux")
    monkeypatch.setattr(allocator, "find_jemalloc", lambda: "/lib/libjemalloc.so.2")
    env = allocator.tuned_environment({"PATH": "/bin"})
    assert env["LD_PRELOAD"] == "/lib/libjemalloc.so.2" and "dirty_decay_ms:-1" in env["MALLOC_CONF"]
    assert allocator.tuned_environment(env) is None  # already re-executed: no loop
    monkeypatch.setattr(allocator, "find_jemalloc", lambda: None)
    env = allocator.tuned_environment({"MALLOC_TRIM_THRESHOLD_": "5"})
    assert env["MALLOC_TRIM_THRESHOLD_"] == "5" and int(env["MALLOC_MMAP_THRESHOLD_"]) > 2**25
    assert allocator.tuned_environment({allocator.ENV_FLAG: "default"}) is None


def test_the_batch_prediction_commands_run_with_the_tuned_allocator(monkeypatch):
    """deepwml_predict, deepwml_bids and deepwml_compare re-execute themselves once with big freed arrays kept mapped
    (about a fifth of a one-scan prediction went to page faults)."""
    from deepwml.cli import bids_app, common, compare, predict

    class Reexecuted(Exception):
        pass

    def execve(path, args, env):
        raise Reexecuted(env)

    monkeypatch.setattr(allocator.sys, "platform", "linux")
    monkeypatch.setattr(allocator.os, "execve", execve)
    monkeypatch.delenv(allocator.ENV_FLAG, raising=False)
    with pytest.raises(Reexecuted) as done:
        common.run_installed(lambda: 0, tuned_allocator=True)
    assert done.value.args[0][allocator.ENV_FLAG] in ("jemalloc", "glibc-tuned")
    asked = {}
    for module in (predict, bids_app, compare):
        monkeypatch.setattr(module, "run_installed", lambda main, tuned_allocator=False, m=module: asked.update({m: tuned_allocator}))
        module.entry()
    assert asked == {predict: True, bids_app: True, compare: True}
