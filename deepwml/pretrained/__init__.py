"""The models shipped inside the package (the lesion model and the anatomy model): where they live, whether they are there.

The shipped model is an ordinary PLAN folder (plans.json, dataset.json, fingerprint.json, manifest.json,
fold_all/checkpoint_*.pth, MODEL_CARD.md) below this package, made by ``deepwml_train_pretrained`` (see
deepwml/pretrained/recipe.py) and loaded like any other model: weights only, checksums verified.
"""
from __future__ import annotations

from pathlib import Path

from deepwml.utils.errors import DeepWMLError

#: name of the shipped model's folder below this package
BUILTIN_NAME = "wmh_flair2d"
#: what ``--pretrained`` / ``-m`` accept to mean the shipped model
BUILTIN_ALIAS = "builtin"
#: the shipped model's PLAN folder (a module attribute so that tests can point it elsewhere)
BUILTIN_DIR = Path(__file__).resolve().parent / BUILTIN_NAME
#: the shipped anatomy model (issue #14; made by ``deepwml_train_pretrained --anatomy``): its folder name and PLAN folder
ANATOMY_NAME = "anatomy_flair2d"
ANATOMY_DIR = Path(__file__).resolve().parent / ANATOMY_NAME


def builtin_model_dir() -> Path:
    """The shipped model's PLAN folder; a DeepWMLError when this install carries none."""
    folder = BUILTIN_DIR
    if not (folder / "plans.json").is_file():
        raise DeepWMLError(
            "this DeepWML install ships no pretrained model; train one with deepwml_train_pretrained "
            "or name a model with -m MODEL_DIR / -d DATASET -p PLAN",
            folder,
        )
    return folder
