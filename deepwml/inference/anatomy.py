"""The anatomy model beside the lesion model (issue #14): which one a prediction run uses, loading it weights-only,
and its label map (deepwml.anatomy.labels classes) on the input's own grid.

The anatomy model is an ordinary multi-class PLAN folder (``deepwml_train_pretrained --anatomy`` makes the shipped
one). It has its own plan, so the input is preprocessed a second time with that plan (coarse in-plane grid: cheap),
predicted, and its class probabilities are resampled back to the input's grid before the argmax.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, List, Optional, Union

import numpy as np

from deepwml.anatomy.cleanup import enclosed_cortex_to_white_matter, lesions_to_tissue
from deepwml.anatomy.labels import DATASET_LABELS, LESION_AWARE_LABELS
from deepwml.datasets import DatasetJson
from deepwml.imageio import Image
from deepwml.inference.batches import StackPredictor
from deepwml.inference.model_loading import ModelSpec, check_model, resolve_model_dir
from deepwml.inference.onnx_backend import FoldGraph, GraphPredictor, RuntimeSetup, fold_graphs
from deepwml.planning.plan import Plan
from deepwml.preprocessing.transforms import Preprocessed, preprocess_arrays, revert_label_probabilities
from deepwml.utils.errors import DeepWMLError

if TYPE_CHECKING:
    from deepwml.training.device import DeviceSetup


def anatomy_model_dir(model: Optional[Path], enabled: bool = True, required: bool = False) -> Optional[Path]:
    """The anatomy model's PLAN folder: ``model`` when given, else the shipped one when this install carries it, else
    None (no anatomy). ``required`` (an output needs the map) turns a missing shipped model into an error."""
    from deepwml.pretrained import ANATOMY_DIR

    if not enabled:
        if model is not None or required:
            raise DeepWMLError("--no-anatomy contradicts --anatomy-model, --save-anatomy, --white-matter-only and --skull-strip")
        return None
    if model is not None:
        return resolve_model_dir(model_dir=model)
    if (ANATOMY_DIR / "plans.json").is_file():
        return ANATOMY_DIR
    if required:
        raise DeepWMLError("this DeepWML install ships no anatomy model; name one with --anatomy-model PLAN_FOLDER "
                           "(deepwml_train_pretrained --anatomy makes it)", ANATOMY_DIR)
    return None


@dataclass
class AnatomyModel:
    """A loaded anatomy model: its plan and the predictor of its folds."""

    folder: Path
    plan: Plan
    predictor: StackPredictor

    def prepare(self, image: Image) -> Preprocessed:
        """The input preprocessed with the anatomy model's own plan."""
        return preprocess_arrays(image, self.plan)

    def predict(self, prepared: Preprocessed) -> np.ndarray:
        """Class probabilities [S, C, H, W] on the anatomy plan's grid."""
        return self.predictor.predict(prepared.image, prepared.head)


def anatomy_map(probs_pp: np.ndarray, props: dict) -> np.ndarray:
    """The label map (uint8, deepwml.anatomy.labels classes) on the input's own grid: a lesion-aware model's lesions
    given the tissue around them, and without the patches of cortex the model finds inside the white matter (lesions
    and their rims: deepwml.anatomy.cleanup)."""
    return enclosed_cortex_to_white_matter(lesions_to_tissue(revert_label_probabilities(probs_pp, props)))


def anatomy_spec(folder: Path) -> ModelSpec:
    """An anatomy PLAN folder checked (every fold, checkpoint 'best'): its classes must be the anatomy map's, or
    those and the lesion class of a lesion-aware model."""
    spec = check_model(folder)
    json_path = folder / "dataset.json"
    labels = DatasetJson.load(json_path).labels if json_path.is_file() else None
    accepted = [expected for expected in (DATASET_LABELS, LESION_AWARE_LABELS)
                if spec.plan.network.num_classes == len(expected) and labels in (None, expected)]
    if not accepted:
        raise DeepWMLError(f"not an anatomy model: its classes are {labels or spec.plan.network.num_classes}, the anatomy "
                           f"map's are {DATASET_LABELS} (a lesion-aware model's also 'parenchymal_lesion': 5)", folder)
    return spec


def load_anatomy_model(folder: Path, setup: Union["DeviceSetup", RuntimeSetup, Any],
                       graphs: Optional[List[FoldGraph]] = None) -> AnatomyModel:
    """Check and load an anatomy PLAN folder (weights only) for torch (a DeviceSetup) or ONNX Runtime (a RuntimeSetup;
    its ``graphs`` when already read)."""
    spec = anatomy_spec(folder)
    if isinstance(setup, RuntimeSetup):
        predictor = GraphPredictor(graphs or fold_graphs(spec), spec.plan, setup.threads, tta=spec.plan.inference.tta)
        return AnatomyModel(folder, spec.plan, predictor)
    from deepwml.inference.model_loading import build_fold_networks, load_fold_states
    from deepwml.inference.predictor import SlicePredictor

    networks = build_fold_networks(spec, load_fold_states(spec))
    return AnatomyModel(folder, spec.plan, SlicePredictor(networks, spec.plan, setup, tta=spec.plan.inference.tta))
