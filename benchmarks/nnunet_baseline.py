"""An nnU-Net v2 2d model with random weights, planned by nnU-Net itself on DeepWML's synthetic MS#1 scans, for the
``--nnunet-cmd`` comparison of ``benchmarks/predict.py --cpu-fast-only`` (issue #15). Speed does not depend on the
weights, so nothing is trained.

nnU-Net lives in its own virtualenv (it pins its own torch); a CPU one, from the repository root:

    python3 -m venv /tmp/nnunet-venv
    /tmp/nnunet-venv/bin/pip install torch==2.13.0                                # the CPU build
    /tmp/nnunet-venv/bin/pip install -c PINS nnunetv2==2.8.1   # PINS: torch==2.13.0, torchvision==0.28.0 (else pip
                                                               # swaps in a CUDA torch for torchvision's sake)
    PYTHONPATH=$PWD python benchmarks/nnunet_baseline.py --work /tmp/nnunet-work --nnunet-bin /tmp/nnunet-venv/bin

It writes Dataset990_DeepWMLBench (raw, with labels) under WORK/raw, runs ``nnUNetv2_plan_and_preprocess -d 990 -c 2d
--verify_dataset_integrity`` (nnU-Net's default planner), saves fold 0 of nnUNetTrainer's 2d network with random
weights as ``checkpoint_final.pth``, and prints the 2d plan and the ``--nnunet-cmd`` to use.
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Dict

from deepwml.imageio import write_image
from deepwml.utils.atomic import read_json, write_json
from predict_cpu_fast import scan_set  # benchmarks/predict_cpu_fast.py, next to this script

DATASET_ID, DATASET = 990, "Dataset990_DeepWMLBench"

# run with the nnU-Net venv's python: nnU-Net's own trainer builds the network from its plans and saves the checkpoint
# nnUNetv2_predict loads (network_weights, init_args, trainer_name, inference_allowed_mirroring_axes)
RANDOM_CHECKPOINT = """
import torch
from nnunetv2.run.run_training import get_trainer_from_args
torch.manual_seed(0)
trainer = get_trainer_from_args("{id}", "2d", 0, device=torch.device("cpu"))
trainer.initialize()
trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()  # sets inference_allowed_mirroring_axes
trainer.print_to_log_file("random weights, not trained: a speed baseline only")
from batchgenerators.utilities.file_and_folder_operations import save_json
save_json(trainer.plans_manager.plans, trainer.output_folder_base + "/plans.json", sort_keys=False)
save_json(trainer.dataset_json, trainer.output_folder_base + "/dataset.json", sort_keys=False)
trainer.save_checkpoint(trainer.output_folder + "/checkpoint_final.pth")
print(type(trainer.network).__name__, sum(p.numel() for p in trainer.network.parameters()), "parameters")
"""


def nnunet_env(work: Path) -> Dict[str, str]:
    """nnU-Net's three folders, inside the work folder."""
    return {"nnUNet_raw": str(work / "raw"), "nnUNet_preprocessed": str(work / "preprocessed"),
            "nnUNet_results": str(work / "results")}


def write_raw_dataset(raw: Path, n: int, seed: int) -> None:
    """``n`` labelled synthetic MS#1 scans (as benchmarks/predict_cpu_fast.py's test set, another seed) in nnU-Net v2's
    raw layout."""
    images, labels = raw / "imagesTr", raw / "labelsTr"
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(exist_ok=True)
    for index, image, label, geometry in scan_set(n, seed):
        write_image(image, geometry, images / f"MS1_{index:03d}_0000.nii.gz")
        write_image(label, geometry, labels / f"MS1_{index:03d}.nii.gz")
    write_json(raw / "dataset.json", {
        "channel_names": {"0": "FLAIR"}, "labels": {"background": 0, "lesion": 1},
        "numTraining": n, "file_ending": ".nii.gz", "name": DATASET,
        "description": "DeepWML synthetic MS#1 FLAIR (deepwml.synthetic), a speed baseline only"})


def plan_line(work: Path) -> str:
    """The 2d configuration nnU-Net planned: patch size, batch size, spacing, network stages and features."""
    plans = read_json(work / "preprocessed" / DATASET / "nnUNetPlans.json")
    c = plans["configurations"]["2d"]
    arch = c["architecture"]
    kwargs = arch["arch_kwargs"]
    return (f"nnU-Net 2d plan: patch {c['patch_size']}, batch {c['batch_size']}, spacing {c['spacing']}, "
            f"{arch['network_class_name'].rsplit('.', 1)[-1]} with {kwargs['n_stages']} stages, "
            f"features {kwargs['features_per_stage']}, norm {kwargs['norm_op'].rsplit('.', 1)[-1]}")


def main() -> None:
    """Dataset, nnU-Net's plan, a random-weight fold-0 checkpoint, and the --nnunet-cmd line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", required=True, type=Path, help="folder for nnU-Net's raw/preprocessed/results")
    parser.add_argument("--nnunet-bin", required=True, type=Path, help="bin folder of the venv nnunetv2 is installed in")
    parser.add_argument("--cases", type=int, default=16, help="labelled cases to plan from (default 16)")
    args = parser.parse_args()
    work, bin_dir = args.work.resolve(), args.nnunet_bin.resolve()
    if not (bin_dir / "nnUNetv2_predict").is_file():
        sys.exit(f"{bin_dir}: no nnUNetv2_predict there; install nnunetv2 into that venv first (see this script's help)")
    env = nnunet_env(work)
    write_raw_dataset(work / "raw" / DATASET, args.cases, seed=1)
    run_env = {**os.environ, **env}
    subprocess.run([str(bin_dir / "nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c", "2d",
                    "--verify_dataset_integrity"], env=run_env, check=True)
    subprocess.run([str(bin_dir / "python"), "-c", RANDOM_CHECKPOINT.format(id=DATASET_ID)], env=run_env, check=True,
                   cwd=work)
    print(plan_line(work))
    command = ["env", *(f"{k}={v}" for k, v in env.items()), str(bin_dir / "nnUNetv2_predict"),
               "-d", str(DATASET_ID), "-c", "2d", "-f", "0", "--disable_tta", "-device", "cpu",
               "-chk", "checkpoint_final.pth"]
    print("--nnunet-cmd " + shlex.quote(shlex.join(command)))


if __name__ == "__main__":
    main()
