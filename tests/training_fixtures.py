"""A tiny preprocessed dataset written directly in the cache format of docs/CONTRACTS.md, for the training tests.

Slices hold a z-scored 'head' ellipse with darker ventricles and bright lesion blobs of mixed sizes (some only a
few pixels), a band of ignored pixels in some slices, and lesion-free slices.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from deepwml.constants import IGNORE_LABEL
from deepwml.planning.plan import AugmentationPlan, NetworkPlan, Plan, PreprocessingPlan, TrainingPlan
from deepwml.utils.atomic import savez_compressed, write_json

DATASET = "Dataset950_TrainTiny"


def tiny_plan(size: int = 32, features=(8, 16, 32), batch_size: int = 4, epochs: int = 2, iterations: int = 4,
              lr: float = 3e-3, name: str = "tiny", **training) -> Plan:
    """A plan small enough to train in seconds on one core."""
    training.setdefault("num_workers", 0)
    return Plan(
        name=name,
        dataset=DATASET,
        fingerprint_hash="fixture",
        preprocessing=PreprocessingPlan(matrix=[size, size], cache_dtype="float32"),
        network=NetworkPlan(features=list(features), convs_per_block=2, norm="instance"),
        training=TrainingPlan(
            patch_size=[size, size], batch_size=batch_size, learning_rate=lr, epochs=epochs,
            iterations_per_epoch=iterations, foreground_oversampling=0.5,
            augmentation=AugmentationPlan(rotation_deg=10.0, p_per_sample=0.3), **training,
        ),
    )


def synthetic_case(seed: int, slices: int = 6, size: int = 32) -> Tuple[np.ndarray, np.ndarray]:
    """(image float32 [S,H,W] z-scored, label uint8 [S,H,W] with 0/1/255)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    head = (yy / 0.9) ** 2 + (xx / 0.75) ** 2 < 1
    ventricles = (yy / 0.3) ** 2 + (xx / 0.12) ** 2 < 1
    image = np.empty((slices, size, size), np.float32)
    label = np.zeros((slices, size, size), np.uint8)
    for z in range(slices):
        lesion = np.zeros((size, size), bool)
        if z % 3:  # every third slice is lesion-free
            for _ in range(rng.integers(1, 4)):
                cy, cx = rng.uniform(-0.55, 0.55, 2)
                r = rng.choice([0.07, 0.12, 0.2])
                lesion |= ((yy - cy) ** 2 + (xx - cx) ** 2 < r**2) & head & ~ventricles
        base = np.where(head, 0.0, -2.0) - 1.5 * ventricles + 1.5 * lesion
        image[z] = base + rng.normal(0, 0.4, (size, size))
        label[z] = lesion
        if z == 1:
            label[z, :, :3] = IGNORE_LABEL
    return image, label


def write_preprocessed_dataset(root: Path, plan: Optional[Plan] = None, n_cases: int = 6, slices: int = 6,
                               size: int = 32, seed_offset: int = 0) -> Path:
    """Write DATASET below ``root`` (a $DEEPWML_PREPROCESSED) with ``plan``'s cache; returns the dataset folder.

    ``seed_offset`` draws other cases of the same kind (a second site's data, for fine-tuning tests).
    """
    plan = plan or tiny_plan(size=size)
    folder = Path(root) / DATASET
    ids = [f"case{i:03d}" for i in range(n_cases)]
    test, rest = ids[:1], ids[1:]
    folds = [{"train": [c for c in rest if c != v], "val": [v]} for v in rest[:5]]
    write_json(folder / "splits.json", {"seed": 0, "test_fraction": 0.2, "test": test, "folds": folds})
    write_json(folder / "dataset.json", {"name": DATASET, "file_ending": ".nii.gz", "channel_names": {"0": "FLAIR"},
                                         "labels": {"background": 0, "lesion": 1}, "numTraining": n_cases, "numTest": 0})
    write_json(folder / "fingerprint.json", {"dataset": DATASET})
    plan.save(folder / plan.name / "plans.json")
    cache = folder / plan.name / "cache"
    for i, cid in enumerate(ids):
        image, label = synthetic_case(seed_offset + i, slices, size)
        savez_compressed(cache / f"{cid}.npz", image=image, label=label, head=(image > -1).astype(np.uint8))
        write_json(cache / f"{cid}.json", {"case_id": cid, "preprocessing_hash": plan.preprocessing_hash()})
    return folder
