"""One prediction run as the CLI describes it: find the model and the cases, skip finished ones, predict, summarise."""
from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from deepwml.calibration.temperature import uncalibrated
from deepwml.constants import MIN_CORTEX_CONTRAST
from deepwml.imageio import read_label
from deepwml.imageio.archives import in_archive_terms, is_archive, member_name, named_by_archive, unpacked
from deepwml.inference.acquisition import learned_stripped_scans, trained_acquisition
from deepwml.inference.anatomy import anatomy_model_dir, anatomy_spec, load_anatomy_model
from deepwml.inference.batches import mirror_floor
from deepwml.inference.case_workers import CaseWorkers, case_worker_plan
from deepwml.inference.clinical import ClinicalOptions
from deepwml.inference.cortex_contrast import check_cortex_contrast
from deepwml.inference.dicom_seg import require_highdicom
from deepwml.inference.fit_agreement import RunSegmentation, fit_notes
from deepwml.inference.flair_check import with_map_warnings
from deepwml.inference.inputs import InputCase, discover_cases
from deepwml.inference.int8_mode import check_mode as check_int8_mode
from deepwml.inference.lesion_report import (ANATOMY_SUMMARY_COLUMNS, CaseSummary, check_lesion_filters,
                                             failed_case, summary_frame, with_notes)
from deepwml.inference.model_loading import ModelSpec, check_model, load_fold_states, resolve_model_dir, weights_digest
from deepwml.inference.onnx_backend import (BackendChoice, FoldGraph, GraphPredictor, GraphUnavailable, RuntimeSetup,
                                           choose_backend, fold_graphs, runtime_setup)
from deepwml.inference.output_folder import (check_output_folder, check_resume_matches, prepare_output_folder, producer_record,
                                             resume_differences)
from deepwml.inference.outputs import ExtraOutputs, case_outputs, check_inputs_safe, check_output_collisions, summary_path, write_csv
from deepwml.inference.patient_report import ModelInfo, find_pdf_converter
from deepwml.inference.pdf_printer import PdfPrinter
from deepwml.inference.parts import check_part, select_part
from deepwml.inference.postprocessing import MaskSettings, mask_settings
from deepwml.inference.pipeline import CasePipeline, RunOptions, describe_error, summary_from_outputs
from deepwml.inference.reviewed_masks import MASK_FLAGS, find_reviewed_masks, read_reviewed_mask, reviewed_note
from deepwml.inference.signal_level import kept_level_note
from deepwml.inference.skull_strip import run_skull_strip
from deepwml.inference.thin_slices import check_slab_setting, run_slab_mm
from deepwml.paths import results_root
from deepwml.utils.atomic import read_json, write_json
from deepwml.utils.cpu import blas_threads, threads_restored
from deepwml.utils.errors import DeepWMLError
from deepwml.utils.locks import held


@dataclass
class PredictRequest:
    """Everything deepwml_predict is asked to do."""

    input: Path
    output: Path
    model_dir: Optional[Path] = None
    dataset: Optional[str] = None
    plan: Optional[str] = None
    folds: Optional[Sequence[str]] = None
    results_root: Optional[str] = None
    checkpoint: str = "best"
    device: str = "auto"
    #: left-right flip TTA: True / False, or None for the model's own choice (its stored postprocessing, else its plan)
    tta: Optional[bool] = None
    save_probabilities: bool = False
    num_parts: int = 1
    part_id: int = 0
    series_uid: Optional[str] = None
    #: CPU: cases predicted side by side, each by one worker (None: one per core); GPU: reader and writer threads
    workers: Optional[int] = None
    allow_bf16: bool = True
    force_bf16: bool = False
    #: what computes the networks: 'auto', 'torch' or 'onnx' (ONNX Runtime, deepwml.inference.onnx_backend)
    backend: str = "auto"
    #: int8 inference on the CPU (deepwml.inference.int8): 'auto' where it agrees and pays, 'on' where it agrees, 'off'
    int8: str = "auto"
    overwrite: bool = False
    #: a folder whose finished cases were predicted with other settings is predicted anew instead of refused
    overwrite_if_changed: bool = False
    write_qc: bool = True
    progress: bool = False
    crop: bool = True
    save_uncertainty: bool = False
    report: Optional[str] = None  # None, 'html' or 'pdf' (the HTML page and its PDF)
    dicom_seg: bool = False
    dicom_findings: bool = False
    dicom_sr: bool = False
    bids_names: bool = False
    #: predict the anatomy map too (issue #14): with ``anatomy_model``, or the shipped one when installed
    anatomy: bool = True
    anatomy_model: Optional[Path] = None
    save_anatomy: bool = False
    #: CASE_lesionids<ending> + .txt: each lesion labelled with its lesion_id, and the labels' names
    save_lesion_ids: bool = False
    #: keep only the lesions the anatomy map places in white matter (deepwml.inference.white_matter)
    white_matter_only: bool = False
    #: the lesion model sees only the anatomy model's brain: scans with and without skull alike (deepwml.inference.skull_strip).
    #: None (the default): when there is an anatomy model and the lesion model learned skull-stripped scans
    #: (deepwml.inference.skull_strip.run_skull_strip); True: asked for (refused without an anatomy model; a scan in
    #: which it finds no brain fails); False: never
    skull_strip: Optional[bool] = None
    #: keep the lesions with no voxel in the anatomy model's brain, which are dropped by default when there is an
    #: anatomy model (deepwml.inference.outside_brain)
    keep_outside_brain: bool = False
    #: lesions the anatomy map places in or against the cortex under this many times the cortex's median intensity are dropped
    #: (deepwml.inference.cortex_contrast; 0: keep them); needs an anatomy model
    min_cortex_contrast: float = MIN_CORTEX_CONTRAST
    #: lesion probability at or above which a voxel is lesion (None: the model's stored postprocessing, else its
    #: plan's inference.threshold)
    threshold: Optional[float] = None
    #: lesions (26-connected) smaller than this many ml are dropped from the mask (0: keep all; None: the model's)
    min_lesion_ml: Optional[float] = None
    #: lesions whose most probable voxel stays under this are dropped from the mask (0: keep all; None: the model's)
    min_lesion_peak: Optional[float] = None
    #: lesions less than this many times as bright as the tissue around them are dropped from the mask
    #: (deepwml.inference.lesion_contrast; 0: keep all; None: the model's)
    min_lesion_contrast: Optional[float] = None
    #: with the contrast filter: a faint lesion is dropped only when also under this many ring spreads above its ring
    #: (deepwml.inference.lesion_contrast.lesion_spreads; 0: by the ratio alone; None: the model's)
    min_lesion_spread: Optional[float] = None
    #: apply the postprocessing stored in the model (deepwml_find_postprocessing) where the run gives no setting
    postprocessing: bool = True
    #: scans thinner than the model's slices reach the networks as slabs this wide (mm) around each slice
    #: (deepwml.inference.thin_slices; None: auto, 0: as given)
    thin_slab_mm: Optional[float] = None
    #: name every case by its keyed pseudonym and keep the source out of the outputs (deepwml.inference.pseudonyms)
    pseudonym_key: Optional[Path] = None
    #: a reader's reviewed lesion masks (a folder of CASE<ending> / CASE.dcm, or one file for one case): the outputs
    #: describe them instead of the model's masks (deepwml.inference.reviewed_masks)
    lesion_masks: Optional[Path] = None


@dataclass
class PredictReport:
    """What a run did."""

    summaries: List[CaseSummary]
    predicted: int = 0
    resumed: int = 0
    seconds: float = 0.0
    summary_csv: Optional[Path] = None
    device: str = "cpu"
    #: the engine that computed the networks, and why (deepwml.inference.onnx_backend.choose_backend)
    backend: Optional[BackendChoice] = None
    folds: List[str] = field(default_factory=list)
    removed_temporaries: int = 0
    #: the anatomy model's PLAN folder, None when the run predicts no anatomy
    anatomy_model: Optional[Path] = None
    #: the model's probability temperatures below / above the threshold (deepwml_calibrate); (1, 1): uncalibrated
    temperatures: Tuple[float, float] = (1.0, 1.0)
    #: the lesion model saw only the anatomy model's brain (skull stripping)
    skull_strip: bool = False
    #: why the default did not strip although the anatomy model ran ('' otherwise)
    skull_strip_note: str = ""
    #: lesions with no voxel in the anatomy model's brain were dropped (the default with an anatomy model)
    outside_brain_dropped: bool = False
    #: lesions in or against the cortex under this many times its median intensity were dropped (0: not)
    cortex_contrast: float = 0.0
    #: the threshold and lesion filters of the masks, and whether they come from the model's stored postprocessing
    mask: Optional[MaskSettings] = None
    stored_postprocessing: bool = False
    #: where the run segments otherwise than the model's stored temperatures and postprocessing were fitted
    #: (deepwml.inference.fit_agreement; also printed as notes)
    fit_notes: List[str] = field(default_factory=list)
    #: the reviewed masks the outputs describe (--lesion-masks), None for the model's masks
    lesion_masks: Optional[Path] = None

    @property
    def failed(self) -> List[CaseSummary]:
        """Cases that could not be predicted."""
        return [s for s in self.summaries if s.status != "ok"]

    @property
    def unlike_training(self) -> List[CaseSummary]:
        """Cases predicted although they differ from the model's training scans (their acquisition_warning)."""
        return [s for s in self.summaries if s.status == "ok" and s.acquisition_warning]

    def describe(self) -> str:
        """One line for the terminal."""
        return (
            f"deepwml_predict: {self.predicted} case(s) predicted, {self.resumed} already done, {len(self.failed)} failed "
            f"in {self.seconds:.1f} s on {self.device}{self._engine_reason()}, folds {' '.join(self.folds) or '-'}; "
            f"summary: {self.summary_csv}; anatomy model: {self.anatomy_model or 'none'}"
            + ("; skull stripped: the lesion model saw only the anatomy model's brain" if self.skull_strip else "")
            + (f"; {self.skull_strip_note}" if self.skull_strip_note else "")
            + ("; lesions outside the anatomy model's brain dropped" if self.outside_brain_dropped and not self.lesion_masks else "")
            + (f"; lesions in or against its cortex under {self.cortex_contrast:g} x the cortex's median dropped"
               if self.cortex_contrast and not self.lesion_masks else "")
            + (f"; removed {self.removed_temporaries} temporary file(s) of killed runs" if self.removed_temporaries else "")
            + ("; probabilities calibrated (temperatures {:.3g} below, {:.3g} above the threshold)".format(*self.temperatures)
               if self.temperatures != (1.0, 1.0) else "")
            + (f"; the model's postprocessing: {self.mask.describe()}" if self.stored_postprocessing and self.mask
               and not self.lesion_masks else "")
            + (f"; lesions: the reviewed masks in {self.lesion_masks} as drawn (the model's probabilities give their "
               "mean probability and confidence)" if self.lesion_masks else "")
        )

    def _engine_reason(self) -> str:
        """Why a CPU run computed with torch although ONNX Runtime is the default there ('' otherwise)."""
        engine = self.backend
        if engine is None or engine.name != "torch" or engine.reason == "asked for" or not self.device.startswith("cpu"):
            return ""
        return f" (torch: {engine.reason})"


def model_dir_of(request: PredictRequest) -> Path:
    """The PLAN folder from -m, from -d/-p below the results root, or the shipped model when neither is given."""
    from deepwml.pretrained import BUILTIN_ALIAS, builtin_model_dir

    uses_builtin = request.model_dir is None and request.dataset is None and request.plan is None
    if uses_builtin or str(request.model_dir) == BUILTIN_ALIAS:
        if request.dataset is not None or request.plan is not None:
            raise DeepWMLError("give either -m builtin or -d DATASET -p PLAN, not both")
        return builtin_model_dir()
    if request.model_dir is not None:
        return resolve_model_dir(model_dir=request.model_dir, dataset=request.dataset, plan=request.plan)
    root = results_root(request.results_root) if request.dataset else None
    return resolve_model_dir(dataset=request.dataset, plan=request.plan, results_root=root)


def predict(request: PredictRequest) -> PredictReport:
    """Run a whole prediction request; failed cases are reported, not raised. torch's thread count is restored. An
    archive as input is read as the folder it holds, unpacked for the run (deepwml.imageio.archives)."""
    given = request.input.expanduser()
    if is_archive(given):  # a wrong option is said before minutes of unpacking, not after
        check_request(request, given)
    with threads_restored(), unpacked(given, request.progress or None) as folder:
        if folder == given:
            return _predict(request)
        try:
            return _predict(dataclasses.replace(request, input=folder), archive=given)
        except DeepWMLError as e:
            raise named_by_archive(e, folder, given) from None


#: every finished case's anatomy figures, kept across runs: summary.csv lists only one run's cases, so a case finished
#: before a run over other inputs would otherwise come back without them (when its anatomy map was not saved)
ANATOMY_ROWS_NAME = ".deepwml_anatomy_rows.json"
ANATOMY_ROWS_LOCK = ".deepwml_anatomy_rows.lock"


def earlier_summary_rows(path: Path) -> Any:
    """The finished ("ok") rows of an earlier run's summary.csv ``path``, indexed by case_id (a pandas DataFrame);
    None when there is none or it cannot be read."""
    if not path.is_file():
        return None
    import pandas as pd

    try:
        frame = pd.read_csv(path, dtype={"case_id": str})
    except (OSError, ValueError):
        return None
    return frame[frame["status"] == "ok"].set_index("case_id") if {"case_id", "status"} <= set(frame.columns) else None


def earlier_level_notes(rows: Any) -> Dict[str, str]:
    """The no-signal level notes (deepwml.inference.signal_level) of the cases an earlier run finished, from its
    summary.csv ``rows`` (earlier_summary_rows): the mask on disk cannot tell that its scan was measured from another
    level than 0."""
    if rows is None or "acquisition_warning" not in rows.columns:
        return {}
    notes = {cid: kept_level_note(warning) for cid, warning in rows["acquisition_warning"].items()}
    return {cid: note for cid, note in notes.items() if note}


def earlier_anatomy_rows(path: Path, ok: Any = None) -> Dict[str, Dict[str, Any]]:
    """Anatomy columns (locations, McDonald, Fazekas) of the cases earlier runs finished: from the folder's record of
    them, and from the summary.csv ``path`` (folders from before that record; ``ok``: its rows when read already)."""
    rows: Dict[str, Dict[str, Any]] = {}
    ok = earlier_summary_rows(path) if ok is None else ok
    columns = [c for c in ANATOMY_SUMMARY_COLUMNS if ok is not None and c in ok.columns]
    if columns:
        rows = {cid: {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
                for cid, row in ok[columns].iterrows()}
    try:
        kept = read_json(path.parent / ANATOMY_ROWS_NAME)
    except DeepWMLError:  # none yet, or a crash or a hand left it unreadable: summary.csv is all there is
        kept = {}
    return {**rows, **(kept if isinstance(kept, dict) else {})}


def keep_anatomy_rows(out_dir: Path, summaries: Sequence[CaseSummary], predicted: Sequence[str]) -> None:
    """Record the anatomy figures of this run's finished cases in the folder (written atomically); a case
    ``predicted`` anew without them (--no-anatomy) loses its old ones, which described another mask."""
    # runs side by side into one folder (array jobs, --num-parts, deepwml_bids participants) add to one record
    with held(out_dir / ANATOMY_ROWS_LOCK):
        try:
            kept = read_json(out_dir / ANATOMY_ROWS_NAME)
        except DeepWMLError:
            kept = {}
        kept = dict(kept) if isinstance(kept, dict) else {}
        rows = {**{k: v for k, v in kept.items() if k not in set(predicted)},
                **{s.case_id: s.anatomy for s in summaries if s.status == "ok" and s.anatomy}}
        if rows != kept:
            write_json(out_dir / ANATOMY_ROWS_NAME, rows)


def check_request(request: PredictRequest, input_path: Path) -> ModelSpec:
    """The refusals of a request that read no scan (parts, workers, settings, the output folder against
    ``input_path``, pseudonymising, the model); the model's spec."""
    check_part(request.num_parts, request.part_id)
    if request.workers is not None and request.workers < 1:
        raise DeepWMLError(f"--num-workers must be at least 1, not {request.workers}")
    check_settings(request)
    out_dir = request.output.expanduser()
    check_output_folder(out_dir, input_path)
    if request.pseudonym_key is not None:
        check_pseudonymise(request, out_dir)
    return check_model(model_dir_of(request), request.folds, request.checkpoint)


def _predict(request: PredictRequest, archive: Optional[Path] = None) -> PredictReport:
    """predict() without the thread restoration; ``archive``: the archive unpacked into ``request.input``."""
    start = time.perf_counter()
    # every refusal comes before the model is read or anything is created
    spec = check_request(request, request.input)
    out_dir = request.output.expanduser()
    label_map = spec.plan.network.num_classes > 2
    if label_map:
        check_label_map_request(request, spec)
    anatomy_dir = None if label_map else anatomy_model_dir(request.anatomy_model, request.anatomy,
                                                           request.save_anatomy or request.white_matter_only or request.skull_strip is True)
    all_cases = discover_cases(request.input, spec.plan.n_channels)
    if archive is not None:
        all_cases = [dataclasses.replace(c, shown_as=member_name(c.source, request.input, archive)) for c in all_cases]
    clinical = clinical_options(request, spec, all_cases, label_map)
    if request.bids_names:
        all_cases = [dataclasses.replace(c, bids_names=True) for c in all_cases]
    if request.pseudonym_key is not None:
        all_cases = pseudonymised_cases(request, all_cases, out_dir)
    check_inputs_safe(all_cases, out_dir, request.input)
    # over all parts: array jobs share the folder, so a clash with another part's case counts too
    check_output_collisions(all_cases, out_dir, request.save_probabilities, request.write_qc, request.num_parts, request.part_id,
                            clinical.extras)
    cases = select_part(all_cases, request.num_parts, request.part_id, key=lambda c: c.case_id)
    reviewed = None if request.lesion_masks is None else reviewed_masks_of(request, all_cases, cases, out_dir, label_map)
    done, todo = _split_done(cases, out_dir, request, label_map)
    rules = anatomy_rules(request, spec, anatomy_dir)
    drop_outside, strip, strip_note, cortex_contrast = rules.drop_outside, rules.strip, rules.strip_note, rules.cortex_contrast
    masks_use_anatomy = rules.masks_use_anatomy
    weights = read_weights(request, spec, anatomy_dir, masks_use_anatomy, bool(todo))
    # the weights carry the model's stored postprocessing: only now is it known what makes the masks
    mask, from_model = run_mask_settings(request, spec), uses_stored_postprocessing(request, spec)
    tta = mask.tta
    if 0 < mask.min_lesion_peak <= mask.threshold:
        source = "--min-lesion-peak" if request.min_lesion_peak is not None else "the model's --min-lesion-peak"
        print(f"[deepwml_predict] note: {source} {mask.min_lesion_peak:g} drops nothing: every lesion "
              f"already has voxels at the mask threshold {mask.threshold:g} or above", file=sys.stderr)
    if clinical.model is not None:  # the report names the settings that made the masks
        clinical = dataclasses.replace(clinical, model=model_with_settings(clinical.model, mask, from_model, rules))
    trained = trained_acquisition(spec.folder)
    thin_slab = run_slab_mm(request.thin_slab_mm, trained)
    producer = producer_record(spec.folder, spec.folds, spec.checkpoint, weights.digests,
                               mask.threshold, tta, request.white_matter_only, mask.min_lesion_ml,
                               mask.min_lesion_peak, strip, weights.anatomy_digests, drop_outside,
                               mask.min_lesion_contrast, thin_slab, mask.min_lesion_spread, cortex_contrast,
                               lesion_masks=None if reviewed is None else str(request.lesion_masks.expanduser().resolve()))
    changed = resume_differences(out_dir, producer, len(done))
    if changed and request.overwrite_if_changed:
        print(f"[deepwml_predict] note: {out_dir}'s {len(done)} finished case(s) were predicted with other settings "
              f"({'; '.join(changed)}): predicting every case anew (--overwrite-if-changed)", file=sys.stderr)
        if not todo:  # the weights were read for a run that predicts nothing
            weights = read_weights(request, spec, anatomy_dir, masks_use_anatomy, True)
        done, todo = [], list(cases)
    check_resume_matches(out_dir, producer, len(done))
    if reviewed is not None:  # a finished case whose reviewed mask has changed since is described anew
        predicting = bool(todo)
        done, todo = reviewed_unchanged(done, todo, out_dir, reviewed, request.series_uid)
        if todo and not predicting:  # the weights were read for a run that predicts nothing
            weights = read_weights(request, spec, anatomy_dir, masks_use_anatomy, True)
    report = PredictReport(summaries=[], folds=list(spec.folds), resumed=len(done), anatomy_model=anatomy_dir,
                           skull_strip=strip, skull_strip_note=strip_note, mask=mask, outside_brain_dropped=drop_outside,
                           cortex_contrast=cortex_contrast,
                           stored_postprocessing=from_model, lesion_masks=request.lesion_masks if reviewed is not None else None)
    summaries = {}
    earlier_path = summary_path(out_dir, request.num_parts, request.part_id)
    earlier_rows = earlier_summary_rows(earlier_path) if done else None
    earlier = earlier_anatomy_rows(earlier_path, earlier_rows) if anatomy_dir and done else {}
    level_notes = earlier_level_notes(earlier_rows)
    for case in done:
        try:
            summaries[case.case_id] = summary_from_outputs(case, case_outputs(out_dir, case), label_map, trained,
                                                           request.series_uid, thin_slab)
            if case.case_id in earlier:
                # what its mask on disk cannot tell (every anatomy figure when the map was not saved; the lesions
                # dropped outside the brain and the contrast check in any case) comes from the run that made it
                summary = summaries[case.case_id]
                summary.anatomy = {**earlier[case.case_id], **summary.anatomy}
                summary.acquisition_warning = with_map_warnings(summary.acquisition_warning, summary.anatomy)
            if case.case_id in level_notes:  # read from the scan by the run that made the mask (signal_level)
                summary = summaries[case.case_id]
                summary.acquisition_warning = with_notes(summary.acquisition_warning, level_notes[case.case_id])
            if reviewed is not None:  # resumed only when its mask is the reviewed one (reviewed_unchanged)
                summaries[case.case_id].lesions_from = reviewed_note(reviewed[case.case_id])
        except Exception as e:  # noqa: BLE001 - a damaged earlier output is reported like any failed case
            summaries[case.case_id] = failed_case(case.case_id, f"existing output unreadable ({describe_error(e)}); rerun with --overwrite")
    setup = runtime_setup() if weights.graphs is not None else torch_setup(request)
    report.device = setup.describe()
    report.backend = weights.backend
    if todo:
        report.temperatures = spec.calibration()
        report.fit_notes = fit_notes(spec.fits, RunSegmentation(strip, drop_outside, cortex_contrast),
                                     report.temperatures != (1.0, 1.0), from_model)
        for note in report.fit_notes:
            print(f"[deepwml_predict] note: {note}", file=sys.stderr)
        if clinical.model is not None:  # the report names the calibration it read from the checkpoints
            clinical = dataclasses.replace(clinical, model=dataclasses.replace(clinical.model, temperatures=report.temperatures))
    report.removed_temporaries = len(prepare_output_folder(out_dir, producer))
    if todo:
        workers, threads = case_worker_plan(request.workers, setup, len(todo))
        if workers > 1:
            report.device = dataclasses.replace(setup, threads=threads).describe() + f" per case, {workers} cases at a time"
        # threads: each worker's share of the cores (all of them for one worker)
        floor = run_mirror_floor(tta, mask.threshold, report.temperatures, request.save_probabilities or
                                 clinical.extras.uncertainty or clinical.extras.report)
        predictor, anatomy = make_predictors(request, spec, weights, setup, threads, anatomy_dir, tta, len(todo), floor)
        options = run_options(request, out_dir, mask, rules, report.temperatures, trained, thin_slab, clinical, reviewed)
        if workers > 1:
            runner = CaseWorkers(predictor, spec.plan, options, workers, anatomy)
        else:
            runner = CasePipeline(predictor, spec.plan, options, request.workers or 1, anatomy)
        # the run's one PDF browser (started by its first print) is closed however the run ends
        with tqdm(total=len(todo), desc="deepwml_predict", unit="case", disable=not request.progress) as bar, \
                clinical.pdf_printer or contextlib.nullcontext(), blas_threads(threads):
            results = runner.run(todo, on_done=lambda s: bar.update(1))
        for s in results:
            summaries[s.case_id] = s
        report.predicted = sum(s.status == "ok" for s in results)
        if any(d.use_int8 for d in predictor.int8_decisions):
            report.device += f", int8 for {sum(d.use_int8 for d in predictor.int8_decisions)}/{len(spec.folds)} fold network(s)"
    report.summaries = [summaries[c.case_id] for c in cases]
    if request.pseudonym_key is not None:
        report.summaries = [without_path(s, c) for s, c in zip(report.summaries, cases)]
    elif archive is not None:  # an error names the archive, not the temporary folder it was unpacked into
        report.summaries = [dataclasses.replace(s, error=in_archive_terms(s.error, request.input, archive)) if s.error else s
                            for s in report.summaries]
    report.summary_csv = summary_path(out_dir, request.num_parts, request.part_id)
    write_csv(summary_frame(report.summaries), report.summary_csv)
    keep_anatomy_rows(out_dir, report.summaries, [c.case_id for c in todo])
    report.seconds = time.perf_counter() - start
    return report


def check_settings(request: PredictRequest) -> None:
    """Refuse the segmentation settings no run can take (int8 mode, threshold, lesion filters, thin-slab width), before
    a model is read; deepwml_predict and deepwml.Segmenter alike."""
    check_int8_mode(request.int8)
    if request.threshold is not None and not 0.0 < request.threshold < 1.0:
        raise DeepWMLError(f"--threshold must lie between 0 and 1 (a lesion probability), not {request.threshold}")
    check_lesion_filters(request.min_lesion_ml or 0.0, request.min_lesion_peak or 0.0, request.min_lesion_contrast or 0.0,
                         request.min_lesion_spread or 0.0)
    check_slab_setting(request.thin_slab_mm)


@dataclass(frozen=True)
class AnatomyRules:
    """What the anatomy model's map does to a run's masks (all off without an anatomy model)."""

    #: lesions with no voxel in the map's brain are dropped (deepwml.inference.outside_brain)
    drop_outside: bool = False
    #: the lesion model sees only the map's brain (deepwml.inference.skull_strip), and why not when the map is there
    strip: bool = False
    strip_note: str = ""
    #: lesions in or against the cortex under this many times its median intensity are dropped (0: not)
    cortex_contrast: float = 0.0
    #: the map changes the masks, so the anatomy model's weights are part of what made them
    masks_use_anatomy: bool = False


def anatomy_rules(request: PredictRequest, spec: ModelSpec, anatomy_dir: Optional[Path]) -> AnatomyRules:
    """The request's anatomy rules for the lesion model ``spec`` with the anatomy model in ``anatomy_dir`` (or none)."""
    drop_outside = anatomy_dir is not None and not request.keep_outside_brain
    strip, strip_note = run_skull_strip(request.skull_strip, anatomy_dir is not None, learned_stripped_scans(spec.folder))
    cortex_contrast = check_cortex_contrast(request.min_cortex_contrast) if anatomy_dir is not None else 0.0
    uses = anatomy_dir is not None and (request.white_matter_only or strip or drop_outside or cortex_contrast > 0)
    return AnatomyRules(drop_outside, strip, strip_note, cortex_contrast, uses)


def model_with_settings(model: ModelInfo, mask: MaskSettings, from_model: bool, rules: AnatomyRules) -> ModelInfo:
    """The report's account of the model with the settings that make its masks (``from_model``: some come from its
    stored postprocessing)."""
    return dataclasses.replace(
        model, threshold=mask.threshold, min_lesion_ml=mask.min_lesion_ml, min_lesion_peak=mask.min_lesion_peak,
        min_lesion_contrast=mask.min_lesion_contrast, min_lesion_spread=mask.min_lesion_spread, tta=mask.tta,
        postprocessing=from_model, outside_brain_dropped=rules.drop_outside, cortex_contrast=rules.cortex_contrast,
        skull_strip=rules.strip)


def run_options(request: PredictRequest, out_dir: Path, mask: MaskSettings, rules: AnatomyRules,
                temperatures: Tuple[float, float], trained: Any, thin_slab: float, clinical: ClinicalOptions,
                reviewed: Optional[Dict[str, Path]] = None) -> RunOptions:
    """How each case's outputs are made from its networks' outputs, and where they go."""
    return RunOptions(
        out_dir=out_dir,
        threshold=mask.threshold,
        save_probabilities=request.save_probabilities,
        write_qc=request.write_qc,
        series_uid=request.series_uid,
        clinical=clinical,
        white_matter_only=request.white_matter_only,
        skull_strip=rules.strip,
        skull_strip_required=request.skull_strip is True,
        drop_outside_brain=rules.drop_outside,
        min_cortex_contrast=rules.cortex_contrast,
        min_lesion_ml=mask.min_lesion_ml,
        min_lesion_peak=mask.min_lesion_peak,
        min_lesion_contrast=mask.min_lesion_contrast,
        min_lesion_spread=mask.min_lesion_spread,
        temperatures=temperatures,
        trained_acquisition=trained,
        thin_slab_mm=thin_slab,
        reviewed_masks=reviewed,
        reviewed_source=request.lesion_masks,
    )


@dataclass
class RunWeights:
    """The engine a run computes with and what it read of the weights: digests for the producer record, and the torch
    state dicts or the ONNX graphs of the lesion model (and of the anatomy model when cases are to be predicted)."""

    backend: BackendChoice
    digests: List[str]
    anatomy_digests: List[str]
    states: Optional[List[Any]] = None
    graphs: Optional[List[FoldGraph]] = None
    anatomy_graphs: Optional[List[FoldGraph]] = None


def read_weights(request: PredictRequest, spec: ModelSpec, anatomy_dir: Optional[Path], masks_use_anatomy: bool,
                 predicting: bool) -> RunWeights:
    """Choose the engine (--backend) and read the weights for it; in 'auto', a model that cannot be made into a
    checked ONNX graph is predicted with torch, with a note saying why."""
    # an anatomy model that is not one is refused before anything is written
    anatomy = None if anatomy_dir is None else anatomy_spec(anatomy_dir) if predicting else check_model(anatomy_dir)
    plans = [spec.plan] + ([anatomy.plan] if anatomy is not None else [])
    choice = choose_backend(request.backend, request.device, plans, request.int8, request.force_bf16)
    if choice.name == "onnx":
        try:
            graphs = fold_graphs(spec)
            anatomy_graphs = fold_graphs(anatomy) if anatomy is not None and (predicting or masks_use_anatomy) else None
            return RunWeights(choice, [g.digest for g in graphs], [g.digest for g in anatomy_graphs] if masks_use_anatomy else [],
                              graphs=graphs, anatomy_graphs=anatomy_graphs)
        except GraphUnavailable as e:
            if request.backend == "onnx":
                raise
            print(f"[deepwml_predict] note: predicting with torch: {e}", file=sys.stderr)
            choice = BackendChoice("torch", e.problem)
    states = load_fold_states(spec)
    anatomy_digests = [weights_digest(w) for w in load_fold_states(anatomy)] if masks_use_anatomy else []
    return RunWeights(choice, [weights_digest(w) for w in states], anatomy_digests, states=states)


def torch_setup(request: PredictRequest) -> Any:
    """torch's device, precision and threads for the run (--device, --no-bf16, --force-bf16)."""
    import torch

    from deepwml.training.device import setup_device

    setup = setup_device(request.device, allow_bf16=request.allow_bf16)
    if request.force_bf16 and setup.device.type == "cpu":
        setup = dataclasses.replace(setup, amp_dtype=torch.bfloat16)
    return setup


def run_mirror_floor(tta: bool, threshold: float, temperatures: Any, full_maps: bool) -> Optional[float]:
    """Flip TTA's mirror floor for a run's masks at calibrated ``threshold`` (deepwml.inference.batches.mirror_floor),
    None (mirror every slice) without TTA or when an output shows the probabilities under the threshold too
    (``full_maps``: --save-probabilities, --save-uncertainty, --report)."""
    if not tta or full_maps:
        return None
    return mirror_floor(uncalibrated(threshold, tuple(temperatures)))


def make_predictors(request: PredictRequest, spec: ModelSpec, weights: RunWeights, setup: Any, threads: int,
                    anatomy_dir: Optional[Path], tta: bool, n_cases: int,
                    floor: Optional[float] = None) -> Tuple[Any, Any]:
    """The lesion model's predictor and the anatomy model (or None), computing with ``threads`` threads each;
    ``floor``: flip TTA's mirror floor (run_mirror_floor)."""
    if weights.graphs is not None:
        runtime = RuntimeSetup(threads=threads)
        predictor = GraphPredictor(weights.graphs, spec.plan, threads, tta=tta, crop=request.crop, mirror_floor=floor)
        anatomy = load_anatomy_model(anatomy_dir, runtime, weights.anatomy_graphs) if anatomy_dir is not None else None
        return predictor, anatomy
    import torch

    from deepwml.inference.model_loading import build_fold_networks
    from deepwml.inference.predictor import SlicePredictor

    # the thread count is given back by predict() (threads_restored)
    torch.set_num_threads(threads)
    predictor = SlicePredictor(build_fold_networks(spec, weights.states), spec.plan, setup, tta=tta, crop=request.crop,
                               int8=request.int8, run_cases=n_cases, mirror_floor=floor)
    anatomy = load_anatomy_model(anatomy_dir, dataclasses.replace(setup, threads=threads)) if anatomy_dir is not None else None
    return predictor, anatomy


def check_pseudonymise(request: PredictRequest, out_dir: Path) -> None:
    """Before anything runs: refuse with --pseudonymise the outputs that carry identity by design (DICOM objects, BIDS
    names) and a key inside the output folder or in a folder that does not exist."""
    from deepwml.inference.pseudonyms import check_key_outside

    identified = [flag for flag, asked in (("--dicom-seg", request.dicom_seg), ("--dicom-findings", request.dicom_findings),
                                           ("--dicom-sr", request.dicom_sr), ("--bids-names", request.bids_names)) if asked]
    if identified:
        raise DeepWMLError(f"--pseudonymise keeps the scans' identity out of the outputs: {', '.join(identified)} "
                           "name or carry it (DICOM objects go back to the PACS under the patient's identity)")
    check_key_outside(request.pseudonym_key, out_dir, [request.input])
    if not request.pseudonym_key.expanduser().parent.is_dir():
        raise DeepWMLError("--pseudonymise: the key's folder does not exist", request.pseudonym_key.expanduser().parent)


def pseudonymised_cases(request: PredictRequest, cases: Sequence[InputCase], out_dir: Path) -> List[InputCase]:
    """The cases renamed by their pseudonyms (--pseudonymise; the key made on first use), recorded beside the key."""
    from deepwml.inference.pseudonyms import check_key_outside, key_lock, load_or_create_key, pseudonym, record_pseudonyms

    check_key_outside(request.pseudonym_key, out_dir, [c.source for c in cases])
    with key_lock(request.pseudonym_key):
        key, created = load_or_create_key(request.pseudonym_key)
        renamed = [dataclasses.replace(c, case_id=pseudonym(key, c.case_id), pseudonymised=True) for c in cases]
        record_pseudonyms(request.pseudonym_key, [(r.case_id, c.case_id, c.shown_source) for r, c in zip(renamed, cases)])
    if created:
        print(f"[deepwml_predict] note: made a new pseudonym key {request.pseudonym_key}: keep it (the same key gives "
              "the same pseudonyms) and keep it and pseudonyms.csv beside it out of what you share", file=sys.stderr)
    return renamed


def without_path(summary: CaseSummary, case: InputCase) -> CaseSummary:
    """A pseudonymised case's summary row with ``<input>`` for its path in an error message (its series label is
    already left out: pipeline.source_series)."""
    if not summary.error:
        return summary
    return dataclasses.replace(summary, error=summary.error.replace(str(case.source), "<input>"))


def extra_outputs(request: PredictRequest, label_map: bool = False) -> ExtraOutputs:
    """The optional outputs a request asks for (``label_map``: a multi-class model, no lesion table)."""
    return ExtraOutputs(uncertainty=request.save_uncertainty, report=request.report is not None,
                        pdf=request.report == "pdf", dicom_seg=request.dicom_seg, dicom_capture=request.dicom_findings,
                        dicom_sr=request.dicom_sr,
                        anatomy=request.save_anatomy,
                        lesion_ids=request.save_lesion_ids,
                        lesion_table=not label_map)


def run_mask_settings(request: PredictRequest, spec: ModelSpec) -> MaskSettings:
    """The TTA, threshold and lesion filters of the run's masks: each one the request gives, else the model's stored
    postprocessing (read with the weights; not with --no-postprocessing), else the plan's TTA and threshold and no
    filter."""
    stored = spec.stored_postprocessing() if request.postprocessing else None
    return mask_settings(spec.plan.inference.threshold, stored, request.threshold, request.min_lesion_ml,
                         request.min_lesion_peak, tta=request.tta, plan_tta=spec.plan.inference.tta,
                         min_lesion_contrast=request.min_lesion_contrast, min_lesion_spread=request.min_lesion_spread)


def uses_stored_postprocessing(request: PredictRequest, spec: ModelSpec) -> bool:
    """True when at least one of the run's mask settings comes from the model's stored postprocessing."""
    return (request.postprocessing and spec.stored_postprocessing() is not None
            and None in (request.threshold, request.min_lesion_ml, request.min_lesion_peak, request.min_lesion_contrast,
                         request.min_lesion_spread, request.tta))


def check_label_map_request(request: PredictRequest, spec: ModelSpec) -> None:
    """A multi-class model writes label maps only: refuse the options that need a lesion probability."""
    lesion_only = [name for name, asked in (("--save-probabilities", request.save_probabilities),
                                            ("--save-uncertainty", request.save_uncertainty), ("--report", request.report),
                                            ("--dicom-seg", request.dicom_seg), ("--dicom-findings", request.dicom_findings),
                                            ("--dicom-sr", request.dicom_sr), ("--save-anatomy", request.save_anatomy),
                                            ("--save-lesion-ids", request.save_lesion_ids),
                                            ("--anatomy-model", request.anatomy_model),
                                            ("--white-matter-only", request.white_matter_only),
                                            ("--skull-strip", request.skull_strip is True),
                                            ("--threshold", request.threshold is not None),
                                            ("--min-lesion-ml", (request.min_lesion_ml or 0) > 0),
                                            ("--min-lesion-peak", (request.min_lesion_peak or 0) > 0),
                                            ("--min-lesion-contrast", (request.min_lesion_contrast or 0) > 0),
                                            ("--min-lesion-spread", (request.min_lesion_spread or 0) > 0)) if asked]
    if lesion_only:
        raise DeepWMLError(f"is a {spec.plan.network.num_classes}-class model, whose prediction is a label map: "
                           f"{', '.join(lesion_only)} need(s) a lesion model", spec.folder)


def clinical_options(request: PredictRequest, spec: ModelSpec, cases: Sequence[InputCase], label_map: bool = False) -> ClinicalOptions:
    """Report, uncertainty and DICOM SEG settings; refuses --dicom-seg without highdicom before anything runs."""
    extras = extra_outputs(request, label_map)
    for flag, asked in (("--dicom-seg", request.dicom_seg), ("--dicom-findings", request.dicom_findings),
                        ("--dicom-sr", request.dicom_sr)):
        if asked:
            require_highdicom(flag)
            if not any(c.kind == "dicom" for c in cases):
                print(f"[deepwml_predict] note: {flag} applies to DICOM series inputs; there are none", file=sys.stderr)
    printer = None
    if extras.pdf:
        converter = find_pdf_converter()
        # one browser for every report PDF of the run, started by the first print (none starts for a run of no cases)
        printer = PdfPrinter(converter) if converter else None
        if converter is None:
            print("[deepwml_predict] note: no Chromium on PATH to print the report to PDF; writing the HTML pages only", file=sys.stderr)
    # the mask settings are filled in once the weights (which carry the model's postprocessing) are read
    model = ModelInfo.describe(spec.folder, spec.plan.name, spec.folds, spec.checkpoint,
                               bool(request.tta) or spec.plan.inference.tta, spec.plan.inference.threshold)
    return ClinicalOptions(extras=extras, model=model, pdf_printer=printer, series_uid=request.series_uid)


def reviewed_masks_of(request: PredictRequest, all_cases: Sequence[InputCase], cases: Sequence[InputCase], out_dir: Path,
                      label_map: bool) -> Dict[str, Path]:
    """--lesion-masks: each case's reviewed mask, after refusing the options it leaves without effect (before anything
    runs); the masks of every part's cases are looked for, so that a doubled one stops every part alike."""
    if label_map:
        raise DeepWMLError("--lesion-masks describes lesion masks, and this model predicts a label map")
    given = [flag for flag, value in zip(MASK_FLAGS, (request.threshold, request.min_lesion_ml, request.min_lesion_peak,
                                                      request.min_lesion_contrast, request.min_lesion_spread,
                                                      request.white_matter_only or None)) if value is not None]
    if given:
        raise DeepWMLError(f"--lesion-masks takes the reviewed masks as drawn: {', '.join(given)} would change nothing; "
                           "leave them out")
    found = find_reviewed_masks(request.lesion_masks, all_cases, out_dir)
    selected = {c.case_id for c in cases}
    return {cid: path for cid, path in found.items() if cid in selected}


def reviewed_unchanged(done: Sequence[InputCase], todo: Sequence[InputCase], out_dir: Path, reviewed: Dict[str, Path],
                       series_uid: Optional[str]) -> Tuple[List[InputCase], List[InputCase]]:
    """(finished cases whose mask is their reviewed mask, the rest to describe anew): a reader may correct a case again
    after a run, and its outputs must then follow."""
    kept: List[InputCase] = []
    again: List[InputCase] = []
    for case in done:
        path = reviewed.get(case.case_id)
        try:
            written = read_label(case_outputs(out_dir, case).mask)
            same = path is not None and np.array_equal(written.array > 0, read_reviewed_mask(
                path, written.geometry, case.source if case.kind == "dicom" else None, series_uid))
        except DeepWMLError:  # unreadable either way: the case is described anew and fails there, by name
            same = False
        (kept if same else again).append(case)
    return kept, sorted([*again, *todo], key=lambda c: c.case_id)


def _split_done(cases: Sequence[InputCase], out_dir: Path, request: PredictRequest, label_map: bool = False) -> tuple:
    """(cases finished by an earlier run, cases to predict); --overwrite predicts everything again."""
    if request.overwrite:
        return [], list(cases)
    extras = extra_outputs(request, label_map)
    done = [c for c in cases if case_outputs(out_dir, c).complete(request.save_probabilities, request.write_qc, extras)]
    finished = {c.case_id for c in done}
    return done, [c for c in cases if c.case_id not in finished]
