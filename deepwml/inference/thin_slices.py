"""Thin slices (a 1 mm 3D FLAIR, a thin 2D stack) shown to a thick-slice model as the thick slabs it learned.

A model trained on 4-8 mm slices has learned what such a slice looks like: tissue averaged through its thickness,
lesion edges blurred across it, less noise. A 1 mm slice of a 3D FLAIR looks otherwise. Each slice of a thin scan
is therefore replaced, for the networks only, by the mean of the tissue within a slab of ``slab_mm`` centred on it
(a sliding slab, as a 2D acquisition of that thickness centred there would record it), and the masks come out on the
scan's own thin slices. Where the slab runs past the first or last slice only the measured slices count. The mask
grid, the QC pictures and the report's images keep the scan as given; the lesion contrast filter judges the slabs,
the view its level was chosen on.

See docs/prediction.md ("Thin slices") for what it gains, measured.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import List, Optional

import numpy as np
from scipy import ndimage

from deepwml.imageio import Geometry, Image
from deepwml.inference.acquisition import TrainedAcquisition, acquisition_warning, trained_acquisition
from deepwml.utils.errors import DeepWMLError

#: the slab width ``--thin-slab-mm auto`` uses, as a multiple of the thinnest slices the model learned (the shipped
#: model: 4 mm slices -> 2 mm slabs); chosen on synthetic 1 mm volumes (docs/prediction.md, "Thin slices")
AUTO_SLAB_FACTOR = 0.5
#: the widest slab asked for by hand (a slab wider than the thickest clinical 2D slices is not what any model learned)
MAX_SLAB_MM = 12.0


def check_slab_setting(value: Optional[float]) -> None:
    """Refuse a ``--thin-slab-mm`` outside 0 (off) .. MAX_SLAB_MM; None is 'auto'."""
    if value is not None and not (np.isfinite(value) and 0.0 <= value <= MAX_SLAB_MM):
        raise DeepWMLError(f"--thin-slab-mm must be 0 (off), 'auto' or a slab width in mm up to {MAX_SLAB_MM:g}, not {value:g}")


def run_slab_mm(setting: Optional[float], trained: Optional[TrainedAcquisition]) -> float:
    """The slab width (mm) this run gives thin scans: the setting when given, else (auto) AUTO_SLAB_FACTOR x the
    thinnest slices the model learned; 0 (off) when auto and the model records no training ranges."""
    if setting is not None:
        return float(setting)
    if trained is None:
        return 0.0  # nothing recorded: the model's slices are unknown, so no slab is guessed for it
    return round(AUTO_SLAB_FACTOR * trained.slice_thickness_mm[0], 2)


def model_thin_slab(model_dir: Path) -> float:
    """The slab (mm) deepwml_predict's default (auto) shows thin scans to the model in ``model_dir`` as: what the tuning
    commands (calibration, postprocessing search) predict with, so they see what prediction sees."""
    return run_slab_mm(None, trained_acquisition(model_dir))


def is_thin(thickness_mm: float, slab_mm: float) -> bool:
    """True when slices this thick get the slab: thinner than it, so that it reaches their neighbours. (Auto's slab,
    half the model's thinnest slices, is thinner than anything the model learned, so no routine scan gets one.)"""
    return 0 < thickness_mm < slab_mm


def slab_weights(spacing_mm: float, slab_mm: float) -> np.ndarray:
    """Weights of the slices at offsets -k..k for a slab ``slab_mm`` wide centred on slice 0: each slice counts by the
    share of its own extent (``spacing_mm``) that lies inside the slab, so a slab need not be a whole number of slices."""
    half = 0.5 * slab_mm / spacing_mm  # in slices
    k = int(np.ceil(half - 0.5))
    offsets = np.arange(-k, k + 1, dtype=float)
    return np.clip(np.minimum(offsets + 0.5, half) - np.maximum(offsets - 0.5, -half), 0.0, 1.0)


def slab_average(image: Image, slab_mm: float) -> Image:
    """``image`` with every slice replaced by the mean over the slab of ``slab_mm`` centred on it (float32; near the
    first and last slice only the slices that exist are averaged)."""
    geometry = image.geometry
    axis = geometry.slice_axis_numpy
    weights = slab_weights(float(geometry.slice_thickness), slab_mm).astype(np.float32)
    array = np.asarray(image.array, dtype=np.float32)
    total = ndimage.correlate1d(array, weights, axis=axis, mode="constant", cval=0.0)
    # the weight each slice's slab really had (less at the ends), as a 1D profile broadcast along the slice axis
    present = ndimage.correlate1d(np.ones(array.shape[axis], np.float32), weights, mode="constant", cval=0.0)
    shape = [1] * array.ndim
    shape[axis] = -1
    total /= present.reshape(shape)
    return replace(image, array=total)


def thin_slab_inputs(images: List[Image], slab_mm: float) -> Optional[List[Image]]:
    """What the networks see for a thin scan: every channel slab-averaged; None when the scan is not thin (the
    networks then see it as given)."""
    if not images or not is_thin(float(images[0].geometry.slice_thickness), slab_mm):
        return None
    return [slab_average(image, slab_mm) for image in images]


def scan_warning(geometry: Geometry, trained: Optional[TrainedAcquisition], slab_mm: float) -> str:
    """summary.csv's acquisition_warning: how the scan differs from the training scans (``trained``), and for a thin
    scan that the networks saw it as slabs (deepwml.inference.acquisition)."""
    warning = acquisition_warning(geometry, trained)
    thickness = float(geometry.slice_thickness)
    if not is_thin(thickness, slab_mm):
        return warning
    note = f"predicted on {slab_mm:g} mm slabs averaged around each {thickness:.2g} mm slice (--thin-slab-mm)"
    return f"{warning}; {note}" if warning else note
