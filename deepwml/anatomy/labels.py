"""The anatomy label map: one integer class per voxel, on the input's own grid.

Classes are mutually exclusive so that one softmax head (or argmax of several) gives the map; where the
synthetic generator's truth masks overlap, the more specific structure wins (ventricle > infratentorial >
cortex > other brain). 'Brain' (parenchyma) is every class except background and ventricle.
"""
from __future__ import annotations

from typing import Dict, Mapping

import numpy as np

BACKGROUND, WHITE_MATTER, VENTRICLE, CORTEX, INFRATENTORIAL = 0, 1, 2, 3, 4
#: class value -> name, as written to dataset.json "labels" of an anatomy dataset and to CASE_anatomy files
ANATOMY_LABELS: Dict[int, str] = {
    BACKGROUND: "background",
    WHITE_MATTER: "white_matter",  # supratentorial parenchyma that is not cortex: white matter and deep grey nuclei
    VENTRICLE: "ventricle",
    CORTEX: "cortex",
    INFRATENTORIAL: "infratentorial",  # cerebellum and brainstem parenchyma
}
BRAIN_CLASSES = (WHITE_MATTER, CORTEX, INFRATENTORIAL)
#: dataset.json "labels" of an anatomy dataset (name -> value), and of the anatomy model's folder
DATASET_LABELS: Dict[str, int] = {name: value for value, name in ANATOMY_LABELS.items()}
#: a lesion-aware anatomy model's sixth class: lesion in the parenchyma. It exists only in its training labels and
#: its output; the map it gives is filled back with the tissue around each lesion (deepwml.anatomy.cleanup), so a
#: lesion is never read as the cortex its brightness resembles
LESION = 5
LESION_AWARE_LABELS: Dict[str, int] = {**DATASET_LABELS, "parenchymal_lesion": LESION}


def anatomy_from_truth(truth: Mapping[str, np.ndarray]) -> np.ndarray:
    """The label map (uint8) from the generator's boolean truth masks 'brain', 'ventricle', 'cortex', 'infratentorial'."""
    brain = np.asarray(truth["brain"], bool)
    out = np.zeros(brain.shape, np.uint8)
    out[brain] = WHITE_MATTER
    out[brain & np.asarray(truth["cortex"], bool)] = CORTEX
    out[brain & np.asarray(truth["infratentorial"], bool)] = INFRATENTORIAL
    out[np.asarray(truth["ventricle"], bool)] = VENTRICLE
    return out


def with_lesion_class(anatomy: np.ndarray, lesion: np.ndarray) -> np.ndarray:
    """A lesion-aware model's training labels: the label map with its lesion voxels in the parenchyma set to LESION."""
    out = np.asarray(anatomy, np.uint8).copy()
    out[np.asarray(lesion, bool) & brain_mask(out)] = LESION
    return out


_BRAIN_LOOKUP = np.isin(np.arange(256), BRAIN_CLASSES)


def brain_mask(anatomy: np.ndarray) -> np.ndarray:
    """Parenchyma (every class but background and ventricle) of a label map."""
    anatomy = np.asarray(anatomy)
    if anatomy.dtype == np.uint8:  # a map as DeepWML makes it: a table lookup, ~10x faster than np.isin's search
        return _BRAIN_LOOKUP[anatomy]
    return np.isin(anatomy, BRAIN_CLASSES)
