"""Fit a lesion model's temperatures on labelled scans and store them in its checkpoints (``deepwml_calibrate``).

The scans are read, preprocessed (skull-stripped when deepwml_predict would strip them:
deepwml.calibration.fit_input), predicted (the folds averaged, with the plan's test-time augmentation) and brought
back to the input's grid exactly as deepwml_predict does; the voxels (the label's ignore value left out) are streamed
case by case into a bounded sample (deepwml.calibration.temperature.sample_voxels). The fitted temperatures are
written into each fold's checkpoint as ``temperature`` ([below, above], plain numbers, read weights-only) with a
``calibration`` record of what they were fitted on; deepwml_predict, deepwml_export_model and deepwml_install_model
carry them like the weights. An installed model's manifest is updated with the new checksums.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from tqdm import tqdm

from deepwml.calibration.case_cache import CaseCache, checkpoint_stamps, run_key
from deepwml.calibration.case_reduction import PredictedCase, reduced_in_order
from deepwml.calibration.fit_input import FitInput
from deepwml.calibration.temperature import UNCALIBRATED, Temperatures, fit_temperatures, probabilities, sample_voxels
from deepwml.evaluation.calibration import CANDIDATE_PROBABILITY, expected_calibration_error, reliability_counts
from deepwml.evaluation.cases import list_masks
from deepwml.evaluation.masks import binarise
from deepwml.imageio import Geometry, read_label
from deepwml.inference.anatomy import AnatomyModel, load_anatomy_model
from deepwml.inference.inputs import InputCase, discover_cases
from deepwml.inference.model_loading import ModelSpec, build_fold_networks, check_model, load_fold_states
from deepwml.inference.model_zip import MANIFEST, file_record
from deepwml.inference.pipeline import anatomy_labels, network_outputs, prepare_case
from deepwml.inference.postprocessing import POSTPROCESSING
from deepwml.inference.predictor import SlicePredictor
from deepwml.inference.thin_slices import model_thin_slab
from deepwml.preprocessing import revert_to_original
from deepwml.training.checkpoint import read_checkpoint
from deepwml.training.device import DeviceSetup
from deepwml.utils.atomic import atomic_path
from deepwml.utils.errors import DeepWMLError, ImageError

#: the keys a calibrated checkpoint carries (kept by deepwml_export_model)
TEMPERATURE, CALIBRATION = "temperature", "calibration"


@dataclass
class Calibration:
    """Fitted temperatures (below, above the threshold) and what they were fitted on."""

    temperatures: Temperatures
    record: Dict[str, Any]
    #: a stored postprocessing was removed with the old temperatures (its thresholds meant other probabilities)
    removed_postprocessing: bool = False


def labelled_cases(images: Path, labels: Path, n_channels: int = 1) -> List[Tuple[InputCase, Path]]:
    """(case, label file) for every image in ``images`` with a label of the same case id in ``labels``."""
    cases = discover_cases(images, n_channels)
    masks = list_masks(labels, "label")
    pairs = []
    for case in cases:
        # a one-channel scan may be named CASE<ending> or, as in a raw dataset's imagesTr, CASE_0000<ending>
        stem = case.case_id[:-5] if case.case_id not in masks and case.case_id.endswith("_0000") else case.case_id
        if stem in masks:
            pairs.append((dataclasses.replace(case, case_id=stem), masks[stem]))
    if not pairs:
        raise DeepWMLError(f"no image in {images} has a label of the same case id here (labels are named CASE<ending>, "
                           f"images CASE_0000<ending>)", labels)
    return pairs


@dataclass
class AnatomyRun:
    """The anatomy model a fit runs beside the lesion model, and what for (deepwml.calibration.fit_input)."""

    model: AnatomyModel
    #: the lesion model sees only its brain
    strip: bool = False
    #: stripping was asked for: a scan in which it finds no brain fails
    required: bool = False


def case_outputs(predictor: SlicePredictor, case: InputCase, thin_slab_mm: float = 0.0,
                 anatomy: Optional[AnatomyRun] = None) -> Tuple[np.ndarray, Any, Optional[np.ndarray]]:
    """A case as deepwml_predict computes it: its uncalibrated lesion probabilities on the input's grid, the input image
    as the lesion contrast filter reads it (array and geometry), and the anatomy map on that grid (None without
    ``anatomy``). ``thin_slab_mm``: the slab a thinner scan is shown to the networks as
    (deepwml.inference.thin_slices.model_thin_slab); with ``anatomy.strip`` the lesion model sees only the anatomy
    model's brain, as deepwml_predict's skull stripping shows it."""
    model = anatomy.model if anatomy is not None else None
    strip = anatomy is not None and anatomy.strip
    prepared = prepare_case(case, predictor.plan, anatomy=model, skull_strip=strip, thin_slab_mm=thin_slab_mm)
    prepared, probs_pp, anatomy_probs = network_outputs(prepared, predictor, predictor.plan, model,
                                                        anatomy is not None and anatomy.required)
    probs = revert_to_original(probs_pp, prepared.props, order=1)
    return probs, dataclasses.replace(prepared.image, array=prepared.judged_array), anatomy_labels(prepared, anatomy_probs)


def case_label(case_id: str, label_path: Path, geometry: Geometry,
               ignore_label: Optional[int]) -> Tuple[np.ndarray, np.ndarray]:
    """(lesion, ignored) voxels of a case's label, which must lie on its image's grid."""
    label = read_label(label_path)
    problems = geometry.mismatches(label.geometry)
    if problems:
        raise ImageError(f"case {case_id!r}: label is not on the image's grid ({'; '.join(problems)})", label_path)
    return binarise(label.array, ignore_label, "label", case_id, label_path)


def _predicted_case(predictor: SlicePredictor, case: InputCase, label_path: Path, ignore_label: Optional[int],
                    thin_slab_mm: float = 0.0, anatomy: Optional[AnatomyRun] = None) -> PredictedCase:
    """One case predicted on the input's grid (a thinner scan shown as ``thin_slab_mm`` slabs; with ``anatomy``, its
    map too, and skull-stripped when it says: case_outputs), with its label's lesion and ignored voxels."""
    probs, image, labels = case_outputs(predictor, case, thin_slab_mm, anatomy)
    geometry = image.geometry
    lesion, ignore = case_label(case.case_id, label_path, geometry, ignore_label)
    return PredictedCase(case.case_id, probs, lesion, ignore, geometry.voxel_volume_ml, image.array, geometry, labels)


def candidate_ece(logits: np.ndarray, labels: np.ndarray, weights: np.ndarray, temperatures: Temperatures) -> Optional[float]:
    """ECE over the voxels the model gives >= CANDIDATE_PROBABILITY at ``temperatures`` (deepwml_evaluate's figure)."""
    p = probabilities(logits, temperatures)
    keep = p >= CANDIDATE_PROBABILITY
    return expected_calibration_error(reliability_counts(p[keep], labels[keep], weights=weights[keep]))


@dataclass
class CaseGroup:
    """Labelled cases and the folds that predict them (averaged, as deepwml_predict averages folds)."""

    folds: List[str]
    pairs: List[Tuple[InputCase, Path]]


def kept_or_predicted(spec: ModelSpec, groups: Sequence[CaseGroup], setup: DeviceSetup, ignore_label: Optional[int],
                      progress: bool, desc: str, cache: CaseCache,
                      reduction: Callable[[ModelSpec], Callable[[PredictedCase], Dict[str, np.ndarray]]],
                      prefix_only: bool = False, tta: bool = False, shown: FitInput = FitInput(),
                      masks: bool = False, workers: int = 1) -> Iterator[Tuple[str, Dict[str, np.ndarray]]]:
    """(case id, tables) for every group's case: the tables ``cache`` kept from an earlier run, else the case predicted
    by the group's folds (with ``tta``, each slice averaged with its left-right flip; ``shown``: skull-stripped or as
    given, as deepwml_predict shows it; with ``masks``, a search scoring masks, with the anatomy map its rules need),
    reduced by ``reduction(spec)`` (made once the folds are loaded: they carry the temperatures) and kept as soon as
    it is done (an interrupt or error keeps those already predicted whose reduction ends well).
    ``prefix_only``: kept tables are used only up to the first case without any (for results that chain from case
    to case, as a random sample's state does). ``workers`` > 1: the reduction (picklable) runs in that many worker
    processes while the next case is predicted (deepwml.calibration.case_reduction)."""
    networks = dict(zip(spec.folds, build_fold_networks(spec, load_fold_states(spec))))
    compute = reduction(spec)
    thin_slab = model_thin_slab(spec.folder)

    def work() -> Iterator[Tuple[InputCase, Path, Optional[Dict[str, np.ndarray]], Optional[PredictedCase]]]:
        """Each case with its kept tables, or predicted (when the consumer advances to it)."""
        anatomy = None  # loaded with the first case that is predicted, when the fit runs it
        reading = True
        for group in groups:
            predictor = None
            for case, label_path in group.pairs:
                tables = cache.load(case, label_path) if reading else None
                reading = reading and (tables is not None or not prefix_only)
                if tables is not None:
                    yield case, label_path, tables, None
                    continue
                if predictor is None:
                    predictor = SlicePredictor([networks[f] for f in group.folds], spec.plan, setup, tta=tta)
                if anatomy is None and shown.runs_anatomy(masks):
                    anatomy = AnatomyRun(load_anatomy_model(shown.anatomy_dir, setup), shown.strip, shown.required)
                yield case, label_path, None, _predicted_case(predictor, case, label_path, ignore_label, thin_slab, anatomy)

    with tqdm(total=sum(len(g.pairs) for g in groups), desc=desc, unit="case", disable=not progress) as bar:
        yield from reduced_in_order(work(), compute, workers, cache, bar)


def fit_model(spec: ModelSpec, groups: Sequence[CaseGroup], setup: DeviceSetup, ignore_label: Optional[int] = None,
              progress: bool = True, seed: int = 0, source: str = "labelled scans", tta: Optional[bool] = None,
              shown: FitInput = FitInput()) -> Calibration:
    """Fit one pair of temperatures for ``spec``'s folds on every group's cases, each predicted by its group's folds
    (with left-right flip TTA when ``tta``; None: as the plan says; skull-stripped or as given as ``shown``)."""
    if spec.plan.network.out_channels != 1:
        raise DeepWMLError("deepwml_calibrate calibrates lesion models (one output channel); this plan predicts "
                           f"{spec.plan.network.out_channels} classes", spec.folder)
    tta = spec.plan.inference.tta if tta is None else bool(tta)
    rng = np.random.default_rng(seed)
    folder = _samples_folder(spec, ignore_label, setup, seed, tta, shown)

    def sampled(case: PredictedCase) -> Dict[str, np.ndarray]:
        """The case's voxel sample, and the random state after it (the next case draws from there)."""
        z, y, w = sample_voxels(case.probs[~case.ignore], case.lesion[~case.ignore], rng)
        return {"z": z, "y": y, "w": w, "rng": np.array(json.dumps(rng.bit_generator.state))}

    logits, labels, weights = [], [], []
    # the network outputs never carry a stored calibration: it is fitted afresh on them. Each case's sample is kept
    # as it is drawn, so an interrupted fit resumes with the same samples (and the same random state) it would have drawn
    for _case_id, kept in kept_or_predicted(spec, groups, setup, ignore_label, progress, "deepwml_calibrate",
                                            CaseCache(folder), lambda _: sampled, prefix_only=True, tta=tta, shown=shown):
        rng.bit_generator.state = json.loads(str(kept["rng"]))
        logits.append(kept["z"])
        labels.append(kept["y"])
        weights.append(kept["w"])
    z, y, w = np.concatenate(logits), np.concatenate(labels), np.concatenate(weights)
    if folder is not None:  # up to 250,000 voxels a case: not kept once every case is in
        shutil.rmtree(folder, ignore_errors=True)
    t = fit_temperatures(z, y, w)
    record = {
        "method": "temperature scaling, one temperature below and one above the 0.5 threshold (minimum negative "
                  "log-likelihood)",
        "temperature_below": round(t[0], 4),
        "temperature_above": round(t[1], 4),
        "source": source,
        "ignore_label": ignore_label,
        "cases": [case.case_id for g in groups for case, _ in g.pairs],
        "voxels": int(round(float(w.sum()))),
        "lesion_voxels": int(y.sum()),
        "candidate_ece_before": _rounded(candidate_ece(z, y, w, UNCALIBRATED)),
        "candidate_ece_after": _rounded(candidate_ece(z, y, w, t)),
        "folds": list(spec.folds),
        "checkpoint": spec.checkpoint,
        "tta": tta,
        **shown.record(masks=False),
        "fitted": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return Calibration(t, record)


def _samples_folder(spec: ModelSpec, ignore_label: Optional[int], setup: DeviceSetup, seed: int,
                    tta: bool = False, shown: FitInput = FitInput()) -> Optional[Path]:
    """Where a fit keeps each case's voxel sample until it is done (the user cache; None when it is off)."""
    from deepwml.calibration import temperature
    from deepwml.utils.user_cache import cache_dir

    root = cache_dir()
    if root is None:
        return None
    key = run_key({"checkpoints": checkpoint_stamps(spec.checkpoints), "ignore_label": ignore_label, "seed": seed, "tta": tta,
                   "device": str(setup.device), "amp": str(setup.amp_dtype), "thin_slab_mm": model_thin_slab(spec.folder),
                   "sampling": [temperature.SURE_PROBABILITY, temperature.BACKGROUND_STRIDE, temperature.MAX_VOXELS_PER_CASE],
                   **({"shown": shown.key(masks=False)} if shown.runs_anatomy(False) else {})})
    return root / "calibration_samples" / key


def validation_groups(spec: ModelSpec, raw_root: Path, preprocessed_root: Path) -> List[CaseGroup]:
    """Each fold's validation cases (the scans it never trained on, read from the dataset's raw folder), to be
    predicted by that fold alone: out-of-fold, as cross-validation scores a model."""
    groups, listed = [], {}
    for fold, path in zip(spec.folds, spec.checkpoints):
        ckpt = read_checkpoint(path)
        dataset = ckpt.get("dataset")
        if not isinstance(dataset, str) or not dataset:
            raise DeepWMLError("the checkpoint does not name the dataset it was trained on (an exported or installed "
                               "model keeps only its weights): give labelled scans with -i IMAGES -l LABELS", path)
        if "validation_cases" in ckpt:
            val = ckpt["validation_cases"]
        else:  # trained before checkpoints recorded them: the dataset's splits
            val = _splits_validation(preprocessed_root / dataset / "splits.json", fold)
        if not val:
            raise DeepWMLError(f"fold {fold} holds out no case (fold 'all' trains on every case): calibrate it on labelled "
                               "scans it never saw with -i IMAGES -l LABELS", path)
        raw = raw_root / dataset
        if raw not in listed:
            listed[raw] = {case.case_id: (case, label) for case, label in
                           labelled_cases(raw / "imagesTr", raw / "labelsTr", spec.plan.n_channels)}
        pairs = listed[raw]
        missing = sorted(set(val) - set(pairs))
        if missing:
            raise DeepWMLError(f"fold {fold}'s validation cases {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''} "
                               "have no image with a label in the raw dataset", raw)
        groups.append(CaseGroup([fold], [pairs[c] for c in val]))
    return groups


def _splits_validation(path: Path, fold: str) -> List[str]:
    """A numbered fold's validation ids from a dataset's splits.json."""
    if not fold.isdigit():
        return []
    if not path.is_file():
        raise DeepWMLError("the checkpoint does not list its validation cases and the dataset's splits.json is missing: "
                           "give labelled scans with -i IMAGES -l LABELS", path)
    from deepwml.planning.splits import fold_split
    from deepwml.utils.atomic import read_json

    return list(fold_split(read_json(path), int(fold), path)["val"])


def declared_ignore_label(path: Path) -> Optional[int]:
    """The ignore value a trained model's copy of dataset.json declares (None: none, or no copy)."""
    if not path.is_file():
        return None
    from deepwml.datasets.dataset_json import DatasetJson

    return DatasetJson.load(path).ignore_label


def _rounded(value: Optional[float]) -> Optional[float]:
    """Four decimals, None kept."""
    return None if value is None else round(value, 4)


def write_calibration(spec: ModelSpec, calibration: Optional[Calibration]) -> List[str]:
    """Store (or, with None, remove) the temperatures in every fold checkpoint of ``spec``, and remove a stored
    postprocessing: its thresholds were chosen on the old probabilities. Returns the removed keys."""
    values = {TEMPERATURE: None, CALIBRATION: None, POSTPROCESSING: None}
    if calibration is not None:
        values.update({TEMPERATURE: [float(t) for t in calibration.temperatures], CALIBRATION: calibration.record})
    return store_in_checkpoints(spec, values)


def store_in_checkpoints(spec: ModelSpec, values: Dict[str, Any]) -> List[str]:
    """Set (None: remove) ``values`` in every fold checkpoint of ``spec`` and update an installed model's manifest;
    returns the keys that were removed from at least one. Each file is written beside itself and renamed into place."""
    written, removed = list(spec.checkpoints), set()
    # every fold is written to its temporary file before any is renamed: a failure leaves all folds as they were
    with contextlib.ExitStack() as stack:
        for path in written:
            ckpt = read_checkpoint(path)
            for key, value in values.items():
                if value is None:
                    removed.update([key] if ckpt.pop(key, None) is not None else [])
                else:
                    ckpt[key] = value
            torch.save(ckpt, stack.enter_context(atomic_path(path, ".pth")))
    manifest_path = spec.folder / MANIFEST
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        files = manifest.get("files")
        if isinstance(files, dict):
            for path in written:
                relative = path.relative_to(spec.folder).as_posix()
                if relative in files:
                    files[relative] = file_record(path.read_bytes())
            with atomic_path(manifest_path, ".json") as tmp:
                Path(tmp).write_text(json.dumps(manifest, indent=2) + "\n")
    return sorted(removed)


def case_groups(spec: ModelSpec, images: Optional[Path], labels: Optional[Path], ignore_label: Optional[int],
                raw_root: Optional[Path], preprocessed_root: Optional[Path]) -> Tuple[List[CaseGroup], str, Optional[int]]:
    """(case groups, what they are, the ignore value): the labelled scans in ``images``/``labels`` predicted by all
    folds, or without them each fold's validation cases predicted by that fold alone (out of fold), whose dataset's
    declared ignore value is used unless one is given."""
    if images is not None and labels is not None:
        return [CaseGroup(list(spec.folds), labelled_cases(images, labels, spec.plan.n_channels))], "labelled scans", ignore_label
    if images is not None or labels is not None:
        raise DeepWMLError("give both -i IMAGES and -l LABELS, or neither (then each fold's validation cases are used)")
    if raw_root is None or preprocessed_root is None:
        raise DeepWMLError("using the folds' validation cases needs the raw and preprocessed data folders")
    if ignore_label is None:  # the dataset's own labels: its declared ignore value (e.g. WMH 2017's 2) is left out
        ignore_label = declared_ignore_label(spec.folder / "dataset.json")
    return validation_groups(spec, raw_root, preprocessed_root), "validation cases of each fold (out of fold)", ignore_label


def calibrate(model_dir: Path, images: Optional[Path], labels: Optional[Path], setup: DeviceSetup,
              folds: Optional[Sequence[Union[int, str]]] = None, checkpoint: str = "best", ignore_label: Optional[int] = None,
              progress: bool = True, write: bool = True, raw_root: Optional[Path] = None,
              preprocessed_root: Optional[Path] = None, tta: Optional[bool] = None,
              shown: FitInput = FitInput()) -> Calibration:
    """Fit the temperatures of the model in ``model_dir`` on the labelled scans in ``images``/``labels`` (all folds
    averaged; with ``tta`` on flip-averaged probabilities; skull-stripped or as given as ``shown``) or, without them,
    on each fold's validation cases in ``raw_root`` (out of fold), and store them (``write`` False: a dry run)."""
    spec = check_model(model_dir, folds, checkpoint)
    groups, source, ignore_label = case_groups(spec, images, labels, ignore_label, raw_root, preprocessed_root)
    calibration = fit_model(spec, groups, setup, ignore_label, progress, source=source, tta=tta, shown=shown)
    if not all(math.isfinite(t) for t in calibration.temperatures):
        raise DeepWMLError("a fitted temperature is not a finite number", model_dir)
    if write:
        calibration.removed_postprocessing = POSTPROCESSING in write_calibration(spec, calibration)
    return calibration
