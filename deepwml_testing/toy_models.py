"""Throwaway model folders for tests, benchmarks and demos: a real PLAN folder whose networks are either random
or hand-set to a smoothed intensity threshold (deterministic, non-trivial masks without any training).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import torch
from torch import nn

import deepwml
from deepwml.planning.plan import Plan
from deepwml.utils.atomic import atomic_path, write_json


def set_threshold_weights(net: nn.Module, threshold: float = 1.5, gain: float = 4.0) -> nn.Module:
    """Turn a plan's U-Net (norm 'none') into logits = gain * (relu(3×3 mean of x) - threshold).

    Only channel 0 of the finest encoder and decoder blocks carries signal; every other weight is zero, so the
    output is a known function of the z-scored input: lesions brighter than ``threshold`` standard deviations.
    """
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        first, last = net.encoder[0], net.decoder[-1]
        convs = [m for m in first if isinstance(m, nn.Conv2d)] + [m for m in last if isinstance(m, nn.Conv2d)]
        convs[0].weight[0, 0] = 1.0 / 9.0
        for conv in convs[1:]:
            conv.weight[0, 0, 1, 1] = 1.0
        net.head.weight[0, 0, 0, 0] = gain
        net.head.bias[0] = -gain * threshold
    return net


def tiny_plan(matrix: int = 64, features: Sequence[int] = (8, 16, 32), norm: str = "none", name: str = "tiny") -> Plan:
    """A small valid plan for tests: fixed matrix, a 3-level U-Net."""
    plan = Plan(name=name)
    plan.preprocessing.matrix = [matrix, matrix]
    plan.network.features = list(features)
    plan.network.norm = norm
    plan.training.patch_size = [matrix, matrix]
    plan.inference.batch_size = 4
    return plan


def write_model_dir(
    folder: Union[str, Path],
    plan: Plan,
    folds: Sequence[Union[int, str]] = (0,),
    kind: str = "threshold",
    seed: int = 0,
    checkpoint: str = "checkpoint_best.pth",
    dataset_json: Optional[Dict] = None,
    gain: float = 4.0,
) -> Path:
    """Write a PLAN folder (plans.json, dataset.json, fingerprint.json, fold_K/checkpoint) as training would;
    ``gain``: of a threshold model's logits (lower: probabilities graded by how bright a lesion is)."""
    from deepwml.models import build_network

    folder = Path(folder)
    plan.save(folder / "plans.json")
    write_json(folder / "dataset.json", dataset_json or {
        "name": folder.parent.name or "Dataset999_Toy", "file_ending": ".nii.gz", "channel_names": {"0": "FLAIR"},
        "labels": {"background": 0, "lesion": 1}, "numTraining": 0, "numTest": 0, "cases": {},
    })
    write_json(folder / "fingerprint.json", {"note": "toy model: no fingerprint"})
    for k, fold in enumerate(folds):
        torch.manual_seed(seed + k)
        net = build_network(plan.network)
        if kind == "threshold":
            set_threshold_weights(net, gain=gain)
        elif kind != "random":
            raise ValueError(f"kind must be 'threshold' or 'random', got {kind!r}")
        ckpt = {"model": net.state_dict(), "plan": plan.to_dict(), "plan_hash": plan.hash(), "epoch": 0,
                "deepwml_version": deepwml.__version__}
        with atomic_path(folder / f"fold_{fold}" / checkpoint, ".pth") as tmp:
            torch.save(ckpt, tmp)
    return folder
