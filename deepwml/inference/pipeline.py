"""Predict many cases with reading and writing overlapped with the network: a reader thread pool prepares the
next cases (read + the plan's own preprocessing) and a writer pool reverts and writes the previous ones while
the model runs. A case that fails anywhere is recorded and skipped; the others go on.
"""
from __future__ import annotations

import os
import sys
import traceback
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple

import numpy as np

from deepwml.calibration.temperature import calibrate_probabilities
from deepwml.imageio import Image, read_image, write_image
from deepwml.inference.acquisition import TrainedAcquisition
from deepwml.inference.anatomy import AnatomyModel, anatomy_map
from deepwml.inference.clinical import ClinicalOptions, write_clinical_outputs
from deepwml.inference.cortex_contrast import drop_faint_cortical
from deepwml.inference.flair_check import contrast_fields, with_map_warnings
from deepwml.inference.inputs import InputCase, read_channels
from deepwml.inference.lesion_contrast import background_floor
from deepwml.inference.lesion_ids import lesion_id_map
from deepwml.inference.lesion_numbers import NUMBERED_LESIONS
from deepwml.inference.lesion_report import (FAINT_CORTEX_COLUMN, OUTSIDE_BRAIN_COLUMN, SKULL_STRIP_COLUMN, CaseSummary,
                                             failed_case, filter_lesions, lesion_table, slice_areas_mm2, summarize_case,
                                             with_notes)
from deepwml.inference.outside_brain import drop_outside_brain
from deepwml.inference.outputs import CaseOutputs, case_outputs, write_csv
from deepwml.inference.batches import StackPredictor, probabilities_to_mask
from deepwml.inference.qc import table_locations, write_qc_montage
from deepwml.inference.reviewed_masks import missing_mask_error, read_reviewed_mask, reviewed_note
from deepwml.inference.signal_level import NoSignal, level_note, no_signal, shifted
from deepwml.inference.skull_strip import brain_region, lesion_model_channels
from deepwml.inference.thin_slices import scan_warning, thin_slab_inputs
from deepwml.inference.white_matter import white_matter_lesions
from deepwml.planning.plan import Plan
from deepwml.preprocessing import revert_to_original
from deepwml.preprocessing.transforms import Preprocessed, preprocess_arrays, revert_label_probabilities
from deepwml.utils.errors import DeepWMLError

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class PreparedCase:
    """A case read and preprocessed, waiting for the network."""

    case: InputCase
    image: Image  # channel 0: the outputs take its grid
    image_pp: Optional[np.ndarray]  # [C, S, H, W]; None until the skull is stripped (--skull-strip)
    head: Optional[np.ndarray]
    props: Optional[Dict[str, Any]]
    #: the input preprocessed with the anatomy model's plan (None: no anatomy model in this run)
    anatomy_input: Optional[Preprocessed] = None
    #: every channel as read, kept only while the lesion model's input waits for the anatomy model's brain
    channels: Optional[List[Image]] = None
    #: the anatomy label map on the input's grid, once made (--skull-strip makes it before the lesion network)
    anatomy_labels: Optional[np.ndarray] = None
    #: channel 0 as the networks saw it when that differs from ``image`` (a thin scan's slabs), else None
    network_image: Optional[Image] = None
    #: what the skull stripping did (deepwml.inference.skull_strip: STRIPPED ...); '' when the run does not strip
    skull_strip_state: str = ""
    #: where channel 0's intensities start as stored, subtracted from ``image`` (deepwml.inference.signal_level; a level
    #: of 0 without a fill: as stored)
    signal_level: NoSignal = NoSignal(0.0)
    #: the reader's lesions on the scan's grid (deepwml_predict --lesion-masks): the outputs describe them instead of
    #: the lesion model's mask (deepwml.inference.reviewed_masks); None: the model's mask
    reviewed_mask: Optional[np.ndarray] = None
    reviewed_path: Optional[Path] = None

    @property
    def judged_array(self) -> np.ndarray:
        """The intensities the lesion contrast filter and the lesion table's contrast read: the networks' view."""
        return (self.network_image or self.image).array


@dataclass
class RunOptions:
    """What to write and where."""

    out_dir: Path
    threshold: float
    save_probabilities: bool = False
    write_qc: bool = True
    series_uid: Optional[str] = None
    clinical: ClinicalOptions = field(default_factory=ClinicalOptions)
    #: drop the lesions the anatomy map places in the cortex or outside the brain (deepwml.inference.white_matter)
    white_matter_only: bool = False
    #: the lesion model sees only the anatomy model's brain (deepwml.inference.skull_strip)
    skull_strip: bool = False
    #: and the user asked for it: a scan in which the anatomy model finds no brain fails instead of being predicted as given
    skull_strip_required: bool = False
    #: drop the lesions with no voxel in the anatomy map's brain (deepwml.inference.outside_brain); needs the map
    drop_outside_brain: bool = False
    #: lesions the anatomy map places in or against the cortex under this many times its median intensity are dropped
    #: (deepwml.inference.cortex_contrast; 0: keep all); needs the map
    min_cortex_contrast: float = 0.0
    #: lesions smaller than this many ml are dropped from the mask (0: keep all)
    min_lesion_ml: float = 0.0
    #: lesions whose most probable voxel stays under this are dropped from the mask (0: keep all)
    min_lesion_peak: float = 0.0
    #: lesions less than this many times as bright as the tissue around them are dropped (0: keep all)
    min_lesion_contrast: float = 0.0
    #: with it: a faint lesion is dropped only when also under this many ring spreads above its ring (0: ratio alone)
    min_lesion_spread: float = 0.0
    #: the model's probability temperatures below / above the threshold (deepwml.calibration.temperature)
    temperatures: Tuple[float, float] = (1.0, 1.0)
    #: the slice thickness and pixel size ranges of the model's training scans (None: not recorded, nothing flagged)
    trained_acquisition: Optional[TrainedAcquisition] = None
    #: thin scans reach the networks as slabs this wide (mm) around each slice (deepwml.inference.thin_slices; 0: as given)
    thin_slab_mm: float = 0.0
    #: --lesion-masks: each case's reviewed mask by case id, and where they were looked for (None: the model's masks)
    reviewed_masks: Optional[Dict[str, Path]] = None
    reviewed_source: Optional[Path] = None

    def reviewed_mask_path(self, case: InputCase) -> Optional[Path]:
        """The case's reviewed mask under --lesion-masks (an error when it has none); None for the model's mask."""
        if self.reviewed_masks is None:
            return None
        path = self.reviewed_masks.get(case.case_id)
        if path is None:
            raise missing_mask_error(self.reviewed_source or Path("."), case.case_id)
        return path


def describe_error(e: BaseException) -> str:
    """One line for summary.csv: user errors as they are, anything else with its type (a bug to report)."""
    if isinstance(e, DeepWMLError):
        return str(e)
    return f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''} (unexpected; please report)"


def prepare_case(case: InputCase, plan: Plan, series_uid: Optional[str] = None, anatomy: Optional[AnatomyModel] = None,
                 skull_strip: bool = False, thin_slab_mm: float = 0.0, reviewed: Optional[Path] = None) -> PreparedCase:
    """Read one case (every channel) and prepare it for the networks (:func:`prepare_images`). ``reviewed``: the
    reader's mask of the case (--lesion-masks), read onto its grid here so that a mask that does not fit fails the case
    before the networks run."""
    return prepare_images(case, read_channels(case, series_uid), plan, anatomy, skull_strip, thin_slab_mm, reviewed,
                          series_uid)


def prepare_images(case: InputCase, images: List[Image], plan: Plan, anatomy: Optional[AnatomyModel] = None,
                   skull_strip: bool = False, thin_slab_mm: float = 0.0, reviewed: Optional[Path] = None,
                   series_uid: Optional[str] = None) -> PreparedCase:
    """Run exactly the plan's preprocessing on a case's channels as read (the function the cache was built with),
    and the anatomy model's preprocessing of its FLAIR when there is one. ``skull_strip``: the plan's preprocessing
    waits for the anatomy model's brain (:func:`network_outputs`). ``thin_slab_mm``: a scan with thinner slices
    reaches both networks as slabs this wide (deepwml.inference.thin_slices); the case keeps the scan as given for its
    outputs."""
    # intensities measured from no signal: stripping fills with 0, the lesion filters read ratios (inference.signal_level)
    levels = [no_signal(image.array) for image in images]
    images = [shifted(image, level) for image, level in zip(images, levels)]
    reviewed_mask = None if reviewed is None else read_reviewed_mask(
        reviewed, images[0].geometry, case.source if case.kind == "dicom" else None, series_uid)
    slabs = thin_slab_inputs(images, thin_slab_mm)
    seen = slabs or images
    network_image = slabs[0] if slabs else None
    anatomy_input = anatomy.prepare(seen[0]) if anatomy else None
    if skull_strip:
        return PreparedCase(case, images[0], None, None, None, anatomy_input, channels=seen, network_image=network_image,
                            signal_level=levels[0], reviewed_mask=reviewed_mask, reviewed_path=reviewed)
    result = preprocess_arrays(seen if len(seen) > 1 else seen[0], plan)
    return PreparedCase(case, images[0], result.image, result.head, result.props, anatomy_input, network_image=network_image,
                        signal_level=levels[0], reviewed_mask=reviewed_mask, reviewed_path=reviewed)


def network_outputs(prepared: PreparedCase, predictor: StackPredictor, plan: Plan, anatomy: Optional[AnatomyModel],
                    strip_required: bool = True) -> Tuple[PreparedCase, np.ndarray, Optional[np.ndarray]]:
    """(the case as the lesion model saw it, its lesion probabilities, the anatomy model's class probabilities or None).

    The anatomy model runs first: when skull stripping (``prepared.channels`` set) its brain is what the lesion model
    sees. ``strip_required`` (--skull-strip asked for): a scan in which it finds no brain fails rather than being
    predicted as given (deepwml.inference.skull_strip.lesion_model_channels).
    """
    anatomy_probs = None if prepared.anatomy_input is None else anatomy.predict(prepared.anatomy_input)
    if prepared.channels is not None:
        if anatomy_probs is None:
            raise DeepWMLError("--skull-strip needs the anatomy model, and this run has none")  # run.py checks first
        labels = anatomy_map(anatomy_probs, prepared.anatomy_input.props)
        region = brain_region(labels, prepared.image.geometry)
        channels, state = lesion_model_channels(prepared.image, prepared.channels, region, strip_required)
        result = preprocess_arrays(channels if len(channels) > 1 else channels[0], plan)
        prepared = replace(prepared, image_pp=result.image, head=result.head, props=result.props, channels=None,
                           anatomy_labels=labels, skull_strip_state=state)
    return prepared, predictor.predict(prepared.image_pp, prepared.head), anatomy_probs


def anatomy_labels(prepared: PreparedCase, anatomy_probs: Optional[np.ndarray]) -> Optional[np.ndarray]:
    """The anatomy label map on the input's grid (deepwml.anatomy.labels classes): the one skull stripping made, else
    made from ``anatomy_probs``; None without an anatomy model."""
    if prepared.anatomy_labels is not None or anatomy_probs is None:
        return prepared.anatomy_labels
    return anatomy_map(anatomy_probs, prepared.anatomy_input.props)


@dataclass
class CaseResult:
    """What one case's prediction says, on the input's grid, before anything is written."""

    probabilities: np.ndarray  # calibrated lesion probabilities, float32
    mask: np.ndarray  # the lesion mask (uint8 0/1): the model's after its filters, or the reader's reviewed one
    anatomy: Optional[np.ndarray]  # the anatomy label map (deepwml.anatomy.labels classes), None without an anatomy model
    lesions: "pd.DataFrame"  # the lesion table, a row per lesion
    summary: CaseSummary  # summary.csv's row
    dropped_outside_brain: Optional[int] = None
    dropped_faint_cortical: Optional[int] = None


def describe_case(prepared: PreparedCase, probs_pp: np.ndarray, options: RunOptions,
                  anatomy_probs: Optional[np.ndarray] = None) -> CaseResult:
    """Bring a binary lesion model's probabilities back to the input's grid, calibrate them, make the mask with the
    run's threshold and lesion filters, and describe its lesions (table and summary); nothing is written."""
    case, geometry = prepared.case, prepared.image.geometry
    # calibrated on the input's grid, voxel by voxel: the map keeps 0.5, so the mask at 0.5 is the uncalibrated one
    # (revert_to_original's map is a new array: calibrated where it is)
    probs = calibrate_probabilities(revert_to_original(probs_pp, prepared.props, order=1), options.temperatures,
                                    in_place=True)
    # the anatomy label map on the input's grid (deepwml.anatomy.labels classes), None without an anatomy model
    anatomy = anatomy_labels(prepared, anatomy_probs)
    # the contrast is judged on what the networks saw (a thin scan's slabs), as the filter's level was chosen on it;
    # its background floor (a whole scan's median) once for the filter and the table
    floor = background_floor(np.asarray(prepared.judged_array))
    if prepared.reviewed_mask is not None:  # the reader's lesions as drawn: no threshold, no filter
        mask, dropped, faint_cortical = prepared.reviewed_mask, None, None
    else:
        mask, dropped, faint_cortical = model_mask(prepared, probs, anatomy, options, floor)
    # with anatomy the table gains location classes and the summary Fazekas and McDonald counts (deepwml.anatomy)
    lesions = lesion_table(mask, geometry, anatomy=anatomy, probs=probs, image=prepared.judged_array, floor=floor)
    summary = summarize_case(case.case_id, mask, geometry, lesions, anatomy=anatomy)
    if dropped is not None:
        summary.anatomy[OUTSIDE_BRAIN_COLUMN] = dropped
    if faint_cortical is not None:
        summary.anatomy[FAINT_CORTEX_COLUMN] = faint_cortical
    if anatomy is not None:  # does it look like a T2-FLAIR at all (deepwml.inference.flair_check)
        summary.anatomy.update(contrast_fields(prepared.image.array, anatomy, geometry, mask))
    if prepared.skull_strip_state:
        summary.anatomy[SKULL_STRIP_COLUMN] = prepared.skull_strip_state
    if prepared.reviewed_path is not None:
        summary.lesions_from = reviewed_note(prepared.reviewed_path)
    summary.acquisition_warning = with_notes(with_map_warnings(
        scan_warning(geometry, options.trained_acquisition, options.thin_slab_mm), summary.anatomy),
        level_note(prepared.signal_level))
    summary.source_series = source_series(case, options.clinical.series_uid)
    return CaseResult(probs, mask, anatomy, lesions, summary, dropped, faint_cortical)


def write_case(prepared: PreparedCase, probs_pp: np.ndarray, options: RunOptions, anatomy_probs: Optional[np.ndarray] = None) -> CaseSummary:
    """Describe the case (:func:`describe_case`) and write mask, probabilities, lesion table and QC picture (a
    multi-class model: its label map and QC picture)."""
    if probs_pp.ndim == 4:
        return write_label_map_case(prepared, probs_pp, options)
    result = describe_case(prepared, probs_pp, options, anatomy_probs)
    return write_result(prepared.case, prepared.image, result, options, reviewed=prepared.reviewed_mask is not None)


def write_result(case: InputCase, image: Image, result: CaseResult, options: RunOptions, reviewed: bool = False) -> CaseSummary:
    """Write a described case's outputs below ``options.out_dir`` as the run's options ask (deepwml_predict's per-case
    files; deepwml.Segmentation.write); ``reviewed``: its mask is a reader's (the QC picture's title says so)."""
    geometry = image.geometry
    outputs = case_outputs(options.out_dir, case)
    probs, mask, anatomy, lesions, summary = result.probabilities, result.mask, result.anatomy, result.lesions, result.summary
    dropped, faint_cortical = result.dropped_outside_brain, result.dropped_faint_cortical
    # labelled once here for every output that numbers the lesions (pictures, SR, lesion-id map)
    ids = lesion_id_map(mask, geometry.slice_axis_numpy) if needs_lesion_ids(options) else None
    write_clinical_outputs(case, image, probs, mask, lesions, summary, outputs, options.clinical, ids)
    if options.clinical.extras.anatomy and anatomy is not None:
        write_image(anatomy, geometry, outputs.anatomy)
    if options.clinical.extras.lesion_ids:
        write_lesion_ids(ids, lesions, geometry, outputs)
    # the mask is written last among the image outputs: its presence marks the case as done for resuming
    if options.save_probabilities:
        write_image(probs.astype(np.float32, copy=False), geometry, outputs.probabilities)
    write_csv(lesions, outputs.lesions)
    if options.write_qc:
        title = f"{case.case_id}: {summary.lesion_count} lesions, {summary.total_lesion_volume_ml:.2f} ml"
        title += " (reviewed mask)" if reviewed else ""
        # said, so that a reader who sees a lesion missing at the brain's edge knows where to look
        title += f"; {dropped} outside the brain dropped" if dropped else ""
        title += f"; {faint_cortical} no brighter than normal cortex dropped" if faint_cortical else ""
        write_qc_montage(image.array, mask, geometry, outputs.qc, title, numbered=NUMBERED_LESIONS, ids=ids,
                         locations=table_locations(lesions))
    write_image(mask, geometry, outputs.mask)
    return summary


def model_mask(prepared: PreparedCase, probs: np.ndarray, anatomy: Optional[np.ndarray], options: RunOptions,
               floor: float) -> Tuple[np.ndarray, Optional[int], Optional[int]]:
    """(the lesion model's mask at the run's threshold after its lesion filters, lesions dropped outside the brain,
    lesions dropped as normal cortex); each count None when nothing was looked for."""
    geometry = prepared.image.geometry
    mask = probabilities_to_mask(probs, options.threshold)
    dropped = None
    if options.drop_outside_brain and anatomy is not None:
        mask, dropped = drop_outside_brain(mask, anatomy, geometry)
    if options.white_matter_only:
        if anatomy is None:
            raise DeepWMLError("--white-matter-only needs the anatomy map, and this run predicts none")  # run.py checks first
        mask = white_matter_lesions(mask, anatomy, geometry)
    mask = filter_lesions(mask, geometry, probs, options.min_lesion_ml, options.min_lesion_peak, prepared.judged_array,
                          options.min_lesion_contrast, options.min_lesion_spread, floor)
    faint_cortical = None
    if options.min_cortex_contrast > 0 and anatomy is not None:
        mask, faint_cortical = drop_faint_cortical(mask, anatomy, prepared.judged_array, geometry, options.min_cortex_contrast)
    return mask, dropped, faint_cortical


def needs_lesion_ids(options: RunOptions) -> bool:
    """Whether any output of the run numbers the lesions: the QC picture, the report, the DICOM SR or findings
    picture, or the lesion-id map."""
    extras = options.clinical.extras
    return options.write_qc or extras.report or extras.dicom_sr or extras.dicom_capture or extras.lesion_ids


def write_lesion_ids(ids: np.ndarray, lesions: "pd.DataFrame", geometry: Any, outputs: CaseOutputs) -> None:
    """CASE_lesionids: every lesion under its lesion-table id (``ids``, see lesion_ids.lesion_id_map), and the
    ITK-SNAP names of the labels."""
    from deepwml.inference.lesion_ids import label_description
    from deepwml.utils.atomic import write_text

    write_image(ids, geometry, outputs.lesion_ids)
    write_text(outputs.lesion_id_names, label_description(lesions))


def write_label_map_case(prepared: PreparedCase, probs_pp: np.ndarray, options: RunOptions) -> CaseSummary:
    """A multi-class model's case: the argmax label map on the input's grid (and the QC picture of its foreground)."""
    case, geometry = prepared.case, prepared.image.geometry
    outputs = case_outputs(options.out_dir, case)
    label_map = revert_label_probabilities(probs_pp, prepared.props)
    if options.write_qc:
        write_qc_montage(prepared.image.array, label_map > 0, geometry, outputs.qc, f"{case.case_id}: label map")
    write_image(label_map, geometry, outputs.mask)
    summary = label_map_summary(case.case_id, label_map, geometry)
    summary.acquisition_warning = scan_warning(geometry, options.trained_acquisition, options.thin_slab_mm)
    summary.source_series = source_series(case, options.clinical.series_uid)
    return summary


def label_map_summary(case_id: str, label_map: np.ndarray, geometry: Any) -> CaseSummary:
    """summary.csv row of a label map: status, slices and thickness (the lesion columns stay empty)."""
    return CaseSummary(case_id=case_id, status="ok", lesion_count=0, slices=len(slice_areas_mm2(label_map, geometry)),
                       slice_thickness_mm=float(geometry.slice_thickness))


def source_series(case: InputCase, series_uid: Optional[str] = None) -> str:
    """summary.csv's source_series: the DICOM series a case was read from; '' for an image file or a pseudonymised
    case."""
    if case.kind != "dicom" or case.pseudonymised:
        return ""
    from deepwml.imageio.dicom import chosen_series

    return chosen_series(case.source, series_uid).label()


def summary_from_outputs(case: InputCase, outputs: CaseOutputs, label_map: bool = False,
                         trained: Optional[TrainedAcquisition] = None, series_uid: Optional[str] = None,
                         thin_slab_mm: float = 0.0) -> CaseSummary:
    """Summary row of a case finished by an earlier run, recomputed from its mask (or label map) on disk (which is on
    the input's grid, so the acquisition check sees the input's geometry; ``thin_slab_mm``: the run's, which the
    resume check held equal to the earlier run's)."""
    mask_image = read_image(outputs.mask, dtype=None)
    summary = _summary_from_mask(case, outputs, mask_image, label_map)
    summary.acquisition_warning = scan_warning(mask_image.geometry, trained, thin_slab_mm)
    summary.source_series = source_series(case, series_uid)
    return summary


def _summary_from_mask(case: InputCase, outputs: CaseOutputs, mask_image: Any, label_map: bool) -> CaseSummary:
    """summary_from_outputs without the acquisition check."""
    if label_map:
        return label_map_summary(case.case_id, np.asarray(mask_image.array), mask_image.geometry)
    mask = np.asarray(mask_image.array) > 0
    # the locations and grades come back only when the earlier run saved its anatomy map (--save-anatomy)
    anatomy = None
    if outputs.anatomy is not None and outputs.anatomy.is_file():
        anatomy = np.asarray(read_image(outputs.anatomy, dtype=None).array).astype(np.uint8)
    lesions = lesion_table(mask, mask_image.geometry, anatomy=anatomy)
    return summarize_case(case.case_id, mask, mask_image.geometry, lesions, anatomy=anatomy)


class CasePipeline:
    """Runs cases through reader → network → writer with bounded look-ahead so memory stays flat."""

    def __init__(self, predictor: StackPredictor, plan: Plan, options: RunOptions, workers: int = 1,
                 anatomy: Optional[AnatomyModel] = None) -> None:
        self.predictor = predictor
        self.plan = plan
        self.options = options
        self.workers = max(1, int(workers))
        self.anatomy = anatomy

    def run(self, cases: Sequence[InputCase], on_done: Optional[Callable[[CaseSummary], None]] = None) -> List[CaseSummary]:
        """Predict ``cases`` in order; returns one summary per case (status ok or failed)."""
        results: Dict[str, CaseSummary] = {}

        def record(summary: CaseSummary) -> None:
            results[summary.case_id] = summary
            if on_done is not None:
                on_done(summary)

        with ThreadPoolExecutor(self.workers, thread_name_prefix="deepwml-read") as readers, ThreadPoolExecutor(
            self.workers, thread_name_prefix="deepwml-write"
        ) as writers:
            pending_reads: Deque[Tuple[InputCase, Future]] = deque()
            pending_writes: Deque[Tuple[InputCase, Future]] = deque()
            queue = deque(cases)
            lookahead = self.workers + 1
            try:
                while queue or pending_reads:
                    while queue and len(pending_reads) < lookahead:
                        case = queue.popleft()
                        pending_reads.append((case, readers.submit(self.prepare, case)))
                    case, future = pending_reads.popleft()
                    try:
                        prepared, probs, anatomy = network_outputs(future.result(), self.predictor, self.plan, self.anatomy,
                                                                   self.options.skull_strip_required)
                    except Exception as e:  # noqa: BLE001 - one bad case must not stop the batch
                        record(failed_case(case.case_id, describe_error(e)))
                        debug_trace(e)
                        continue
                    pending_writes.append((case, writers.submit(write_case, prepared, probs, self.options, anatomy)))
                    del prepared, probs, anatomy
                    while len(pending_writes) > self.workers:
                        self._collect(pending_writes.popleft(), record)
                while pending_writes:
                    self._collect(pending_writes.popleft(), record)
            except BaseException:
                # Ctrl-C: drop the look-ahead reads; writes already queued finish (atomically) so their work is kept
                for _, future in pending_reads:
                    future.cancel()
                raise
        return [results[c.case_id] for c in cases]

    def prepare(self, case: InputCase) -> PreparedCase:
        """Read and preprocess one case as the run's options say (prepare_case)."""
        options = self.options
        return prepare_case(case, self.plan, options.series_uid, self.anatomy, options.skull_strip, options.thin_slab_mm,
                            options.reviewed_mask_path(case))

    @staticmethod
    def _collect(item: Tuple[InputCase, Future], record: Callable[[CaseSummary], None]) -> None:
        """Wait for one write and record its summary or its failure."""
        case, future = item
        try:
            record(future.result())
        except Exception as e:  # noqa: BLE001
            record(failed_case(case.case_id, describe_error(e)))
            debug_trace(e)


def debug_trace(e: BaseException) -> None:
    """Unexpected errors keep their traceback on stderr when DEEPWML_DEBUG is set (user errors never do)."""
    if os.environ.get("DEEPWML_DEBUG") and not isinstance(e, DeepWMLError):
        traceback.print_exception(type(e), e, e.__traceback__, file=sys.stderr)
