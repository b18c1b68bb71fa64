"""DistributedDataParallel on CPU (gloo, two processes): identical weights on both ranks, only rank 0 writes."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from deepwml.training import distributed as D
from deepwml.training.checkpoint import load_checkpoint, model_state
from deepwml.training.trainer import Trainer, TrainOptions
from training_fixtures import DATASET, tiny_plan, write_preprocessed_dataset


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, world: int, port: int, root: str) -> None:
    """One torchrun-like process: the environment torchrun would set, then the trainer."""
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    root = Path(root)
    # each rank gets its own results root: anything rank 1 writes would show up in res_1
    opts = TrainOptions(dataset="950", fold=0, plan_name="tiny", preprocessed_root=root / "pp",
                        results_root=root / f"res_{rank}", threads=1, device="cpu")
    trainer = Trainer(opts, log=lambda message: None)
    try:
        trainer.run()
        torch.save(model_state(trainer.net), root / f"weights_{rank}.pt")
        torch.save({"local_batch": trainer.local_batch}, root / f"info_{rank}.pt")
    finally:
        D.shutdown(trainer.ctx)


@pytest.mark.slow
def test_two_cpu_processes_train_one_model_and_only_rank_0_writes(tmp_path):
    write_preprocessed_dataset(tmp_path / "pp", tiny_plan(batch_size=4, epochs=2, iterations=3))
    mp.spawn(_rank, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    w0, w1 = torch.load(tmp_path / "weights_0.pt"), torch.load(tmp_path / "weights_1.pt")
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    assert not (tmp_path / "res_1").exists()
    fold = tmp_path / "res_0" / DATASET / "tiny" / "fold_0"
    ckpt = load_checkpoint(fold / "checkpoint_latest.pth")
    assert ckpt["epoch"] == 2 and ckpt["loader"]["world_size"] == 2
    assert all(torch.equal(ckpt["model"][k], w0[k]) for k in w0)
    # each rank trains on half of the plan's batch of 4
    assert [torch.load(tmp_path / f"info_{r}.pt")["local_batch"] for r in (0, 1)] == [2, 2]
    # the weights moved: both ranks did not just keep the broadcast initialisation
    torch.manual_seed(0)
    from deepwml.training.network import build_network

    init = build_network(tiny_plan().network).state_dict()
    assert any(not torch.equal(init[k], w0[k]) for k in init if init[k].is_floating_point())
