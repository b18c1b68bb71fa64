"""Segment scans from Python: a model loaded once, scans given as files or as images in memory, results as arrays.

``deepwml_predict`` is for folders of files; a script, a notebook or another program (a viewer's plug-in, a pipeline
that holds its images in memory) wants to keep the networks loaded and get arrays back. :class:`Segmenter` runs the
same steps on one scan as ``deepwml_predict`` does with the same settings (the same preprocessing, networks,
calibration, threshold, lesion filters, anatomy rules, lesion table and summary row), so its mask equals the mask
that command writes, and writes nothing unless asked (:meth:`Segmentation.save`).
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from deepwml.imageio import Image, write_image
from deepwml.imageio.archives import named_by_archive, unpacked
from deepwml.imageio.geometry import THREE_D_MAX_SPACING_MM, Geometry
from deepwml.imageio.headers import check_geometry
from deepwml.inference.acquisition import trained_acquisition
from deepwml.inference.anatomy import anatomy_model_dir
from deepwml.inference.case_workers import case_worker_plan
from deepwml.inference.clinical import ClinicalOptions
from deepwml.inference.inputs import CHANNEL_STEM, InputCase, discover_cases, read_channels
from deepwml.inference.model_loading import check_model
from deepwml.inference.patient_report import ModelInfo
from deepwml.inference.pipeline import describe_case, network_outputs, prepare_images
from deepwml.inference.run import (PredictRequest, anatomy_rules, check_settings, make_predictors, model_dir_of,
                                   model_with_settings, read_weights, run_mask_settings, run_options, runtime_setup,
                                   torch_setup, uses_stored_postprocessing)
from deepwml.inference.thin_slices import run_slab_mm
from deepwml.utils.cpu import blas_threads, threads_restored
from deepwml.utils.errors import DeepWMLError, ImageError

if TYPE_CHECKING:
    import pandas as pd
    import SimpleITK as sitk

#: what :meth:`Segmenter.segment` takes as a scan (or a list of them, one per channel, for a multi-channel model)
Scan = Union[str, Path, np.ndarray, "sitk.Image", Any]

#: the request fields a Segmenter takes as keywords (the rest concern files and folders: deepwml_predict's business)
SETTINGS = ("folds", "checkpoint", "device", "backend", "int8", "allow_bf16", "force_bf16", "tta", "crop", "anatomy",
            "anatomy_model", "white_matter_only", "skull_strip", "keep_outside_brain", "min_cortex_contrast", "threshold",
            "min_lesion_ml", "min_lesion_peak", "min_lesion_contrast", "min_lesion_spread", "postprocessing",
            "thin_slab_mm", "series_uid")


@dataclass
class Segmentation:
    """One scan's result on the scan's own grid (numpy arrays in (z, y, x) order, as SimpleITK gives them)."""

    case_id: str
    mask: np.ndarray  # uint8 0/1: the lesion mask deepwml_predict writes
    probabilities: np.ndarray  # float32: the calibrated lesion probability of every voxel
    anatomy: Optional[np.ndarray]  # uint8 anatomy labels (deepwml.anatomy.labels), None without the anatomy model
    lesions: "pd.DataFrame"  # the lesion table (CASE_lesions.csv), a row per lesion
    summary: Dict[str, Any]  # the case's summary.csv row
    geometry: Geometry  # the scan's grid: spacing, origin and direction in ITK (x, y, z) order
    #: what write() writes from: the case, the scan as read, the described result and the Segmenter's run options
    _source: Optional[Tuple[InputCase, Image, Any, Any]] = field(default=None, repr=False, compare=False)

    @property
    def volume_ml(self) -> float:
        """The total lesion volume in millilitres."""
        return float(self.summary["total_lesion_volume_ml"])

    def image(self, which: str = "mask") -> "sitk.Image":
        """``mask``, ``probabilities`` or ``anatomy`` as a SimpleITK image on the scan's grid."""
        import SimpleITK as sitk

        image = sitk.GetImageFromArray(self._array(which))
        self.geometry.apply_to(image)
        return image

    def save(self, path: Union[str, Path], which: str = "mask") -> Path:
        """Write ``mask``, ``probabilities`` or ``anatomy`` on the scan's grid to ``path`` (its ending picks the
        format: .nii.gz, .nrrd, .mha, .mgz ...), atomically."""
        return write_image(self._array(which), self.geometry, Path(path).expanduser())

    def write(self, folder: Union[str, Path], qc: bool = True, probabilities: bool = False, anatomy: bool = False,
              lesion_ids: bool = False, uncertainty: bool = False, report: Union[bool, str] = False,
              dicom_seg: bool = False, dicom_sr: bool = False, dicom_findings: bool = False) -> Dict[str, Path]:
        """Write the files deepwml_predict writes for this scan into ``folder`` (made if missing), by its names: the
        mask CASE<ending>, the lesion table CASE_lesions.csv, the QC picture qc/CASE.png (``qc``), and as asked the
        probabilities (CASE_prob), the anatomy map, the lesion-id map, the uncertainty map, the patient report page
        (report/CASE.html; ``report="pdf"``: and its PDF, printed by a headless Chromium) and, for a scan read from a
        DICOM series, the DICOM SEG, SR and findings picture; each atomically. Returns the paths written by kind. A
        folder where a file would replace the scan it came from is refused."""
        from deepwml.inference.output_folder import check_output_folder
        from deepwml.inference.outputs import case_outputs, check_inputs_safe
        from deepwml.inference.patient_report import find_pdf_converter
        from deepwml.inference.pdf_printer import PdfPrinter
        from deepwml.inference.pipeline import write_result

        if report not in (False, True, "html", "pdf"):
            raise DeepWMLError(f"report is True (or 'html') or 'pdf', not {report!r}")
        browser = find_pdf_converter() if report == "pdf" else None
        if report == "pdf" and browser is None:
            raise DeepWMLError("report='pdf' prints the page with a headless Chromium, and none is on PATH (apt-get "
                               "install chromium); report=True writes the HTML page")

        if self._source is None:
            raise DeepWMLError("this Segmentation was not made by Segmenter.segment: there is nothing to write from")
        case, image, result, options = self._source
        if anatomy and result.anatomy is None:
            raise DeepWMLError("this Segmenter runs without the anatomy model (anatomy=False): there is no anatomy map")
        _check_dicom_outputs(case, dicom_seg, dicom_sr, dicom_findings)
        folder = Path(folder).expanduser()
        if case.kind == "memory":  # no file holds the scan: nothing to protect
            check_output_folder(folder, None)
        else:
            check_output_folder(folder, case.source)
            check_inputs_safe([case], folder, case.source)
        extras = dataclasses.replace(options.clinical.extras, anatomy=anatomy, lesion_ids=lesion_ids,
                                     uncertainty=uncertainty, report=bool(report), pdf=browser is not None,
                                     dicom_seg=dicom_seg, dicom_sr=dicom_sr, dicom_capture=dicom_findings)
        folder.mkdir(parents=True, exist_ok=True)
        with PdfPrinter(browser) if browser else contextlib.nullcontext() as printer:
            clinical = dataclasses.replace(options.clinical, extras=extras, pdf_printer=printer)
            write_result(case, image, result, dataclasses.replace(options, out_dir=folder, write_qc=qc,
                                                                  save_probabilities=probabilities, clinical=clinical))
        outputs = case_outputs(folder, case)
        written = {"mask": outputs.mask, "lesions": outputs.lesions, "qc": outputs.qc if qc else None,
                   "probabilities": outputs.probabilities if probabilities else None,
                   "anatomy": outputs.anatomy if anatomy else None,
                   "lesion_ids": outputs.lesion_ids if lesion_ids else None,
                   "uncertainty": outputs.uncertainty if uncertainty else None,
                   "report": outputs.report_html if report else None,
                   "report_pdf": outputs.report_pdf if browser else None,
                   "dicom_seg": outputs.dicom_seg if dicom_seg else None,
                   "dicom_sr": outputs.dicom_sr if dicom_sr else None,
                   "dicom_findings": outputs.dicom_capture if dicom_findings else None}
        return {kind: path for kind, path in written.items() if path is not None}

    def _array(self, which: str) -> np.ndarray:
        """The named output array; a clear error for an unknown name or a map the run did not make."""
        arrays = {"mask": self.mask, "probabilities": self.probabilities, "anatomy": self.anatomy}
        if which not in arrays:
            raise DeepWMLError(f"no output {which!r}; choose one of {', '.join(arrays)}")
        if arrays[which] is None:
            raise DeepWMLError("this Segmenter runs without the anatomy model (anatomy=False): there is no anatomy map")
        return arrays[which]


def write_summary(results: Sequence[Segmentation], path: Union[str, Path]) -> Path:
    """summary.csv of several scans' results, as deepwml_predict writes a folder's (a row per scan, sorted by case id,
    its columns and number format), atomically; case ids must differ."""
    from collections import Counter

    from deepwml.inference.lesion_report import summary_frame
    from deepwml.inference.outputs import write_csv

    if not results:
        raise DeepWMLError("no results to summarise")
    if any(r._source is None for r in results):
        raise DeepWMLError("only results of Segmenter.segment can be summarised")
    doubled = sorted(case_id for case_id, n in Counter(r.case_id for r in results).items() if n > 1)
    if doubled:
        raise DeepWMLError(f"several results share the case id(s) {', '.join(doubled)}; segment them with case_id=... "
                           "to tell them apart")
    path = Path(path).expanduser()
    write_csv(summary_frame([r._source[2].summary for r in results]), path)
    return path


def _check_dicom_outputs(case: InputCase, seg: bool, sr: bool, findings: bool) -> None:
    """Refuse a DICOM output for a scan that was not read from a DICOM series still on disk, or without highdicom."""
    from deepwml.inference.dicom_seg import require_highdicom

    for name, asked in (("dicom_seg", seg), ("dicom_sr", sr), ("dicom_findings", findings)):
        if not asked:
            continue
        require_highdicom(name)
        if case.kind != "dicom":
            raise DeepWMLError(f"{name} answers a DICOM series, and this scan was not read from one")
        if not Path(case.source).is_dir():
            raise DeepWMLError(f"{name}: the DICOM series this scan was read from is gone (an archive's files are removed "
                               "once segment() returns); give the series folder to segment()", case.source)


class Segmenter:
    """A lesion model (the shipped one unless ``model`` names a PLAN folder) and the anatomy model, loaded once.

    Keyword settings are deepwml_predict's, by the names of its PredictRequest (``threshold``, ``tta``, ``anatomy``,
    ``skull_strip``, ``min_lesion_ml``, ``device``, ``backend`` ...); each one left out is what deepwml_predict does
    without it, the model's stored postprocessing included. ``threads``: CPU threads (default every physical core).
    """

    def __init__(self, model: Optional[Union[str, Path]] = None, threads: Optional[int] = None, **settings: Any) -> None:
        unknown = sorted(set(settings) - set(SETTINGS))
        if unknown:
            raise DeepWMLError(f"Segmenter takes no setting {', '.join(unknown)}; it takes {', '.join(SETTINGS)}")
        if threads is not None and int(threads) < 1:
            raise DeepWMLError(f"threads must be at least 1, not {threads}")
        model_dir = None if model is None else Path(model).expanduser()  # "builtin" names the shipped model, as -m does
        # a request as deepwml_predict makes it: the same checks and choices, with nothing to read or write
        request = PredictRequest(input=Path("."), output=Path("."), model_dir=model_dir, **settings)
        with threads_restored():  # choosing torch's device sets its thread count: the caller's is given back
            self._load(request, threads)

    def _load(self, request: PredictRequest, threads: Optional[int]) -> None:
        """Check the request as deepwml_predict does, read the weights and make the predictors."""
        check_settings(request)
        spec = check_model(model_dir_of(request), request.folds, request.checkpoint)
        if spec.plan.network.num_classes > 2:
            raise DeepWMLError(f"is a {spec.plan.network.num_classes}-class model; Segmenter segments lesions with a "
                               "binary lesion model (deepwml_predict writes a multi-class model's label maps)", spec.folder)
        anatomy_dir = anatomy_model_dir(request.anatomy_model, request.anatomy,
                                        request.white_matter_only or request.skull_strip is True)
        rules = anatomy_rules(request, spec, anatomy_dir)
        weights = read_weights(request, spec, anatomy_dir, rules.masks_use_anatomy, True)
        mask = run_mask_settings(request, spec)
        setup = runtime_setup(threads) if weights.graphs is not None else torch_setup(request)
        if threads is not None and weights.graphs is None:
            setup = dataclasses.replace(setup, threads=int(threads))
        _, self.threads = case_worker_plan(1, setup, 1)
        self._torch = weights.graphs is None
        temperatures = spec.calibration()
        trained = trained_acquisition(spec.folder)
        # the whole probability map is returned, so every slice is mirrored under TTA (as with --save-probabilities)
        self._predictor, self._anatomy = make_predictors(request, spec, weights, setup, self.threads, anatomy_dir, mask.tta, 1)
        # how a report written from a result (Segmentation.write) names the model and the settings of its masks
        model = model_with_settings(ModelInfo.describe(spec.folder, spec.plan.name, spec.folds, spec.checkpoint, mask.tta,
                                                       mask.threshold),
                                    mask, uses_stored_postprocessing(request, spec), rules)
        clinical = ClinicalOptions(series_uid=request.series_uid, model=dataclasses.replace(model, temperatures=temperatures))
        self._options = run_options(request, Path("."), mask, rules, temperatures, trained,
                                    run_slab_mm(request.thin_slab_mm, trained), clinical)
        self._plan = spec.plan
        self._request = request
        self.model_dir: Path = spec.folder
        self.folds: List[str] = list(spec.folds)
        self.anatomy_model: Optional[Path] = anatomy_dir
        #: the threshold, TTA and lesion filters the masks are made with (deepwml.inference.postprocessing)
        self.mask_settings = mask

    def segment(self, scan: Union[Scan, Sequence[Scan]], spacing: Optional[Sequence[float]] = None,
                case_id: Optional[str] = None) -> Segmentation:
        """Segment one scan: an image file, DICOM series folder or archive (ZIP, tar) of one; a SimpleITK image; a nibabel image; or a numpy
        array of slices (z, y, x: axial slices first) with ``spacing`` in mm in the same (z, y, x) order. A
        multi-channel model takes a list, channel 0 (the FLAIR) first. Bad input raises DeepWMLError naming it."""
        channels = list(scan) if isinstance(scan, (list, tuple)) else [scan]
        if not channels:
            raise DeepWMLError("no scan given: an empty list")
        archive = Path(channels[0]).expanduser() if len(channels) == 1 and isinstance(channels[0], (str, Path)) else None
        # an archive is read as the folder it holds, which stays while its DICOM series may be read again
        with unpacked(archive) if archive is not None else contextlib.nullcontext() as folder:
            try:
                return self._segment([folder] if archive is not None else channels, spacing, case_id)
            except DeepWMLError as e:
                if archive is None or folder == archive:
                    raise
                raise named_by_archive(e, folder, archive) from None

    def _segment(self, channels: List[Scan], spacing: Optional[Sequence[float]], case_id: Optional[str]) -> Segmentation:
        """segment() once any archive is unpacked."""
        case, images = self._case(channels, spacing, case_id)
        with threads_restored(), blas_threads(self.threads):
            if self._torch:
                import torch

                torch.set_num_threads(self.threads)
            prepared = prepare_images(case, images, self._plan, self._anatomy, self._options.skull_strip,
                                      self._options.thin_slab_mm, series_uid=self._request.series_uid)
            prepared, probs, anatomy_probs = network_outputs(prepared, self._predictor, self._plan, self._anatomy,
                                                             self._options.skull_strip_required)
            result = describe_case(prepared, probs, self._options, anatomy_probs)
        return Segmentation(case.case_id, result.mask.astype(np.uint8, copy=False), result.probabilities, result.anatomy,
                            result.lesions, result.summary.to_row(), prepared.image.geometry,
                            _source=(case, prepared.image, result, self._options))

    def _case(self, channels: List[Scan], spacing: Optional[Sequence[float]], case_id: Optional[str]) -> Tuple[InputCase, List[Image]]:
        """The case and its channels as read and checked, as deepwml_predict reads a case."""
        wanted = self._plan.n_channels
        if spacing is not None and not isinstance(channels[0], np.ndarray):
            raise DeepWMLError("spacing is for numpy arrays; a file or an image object carries its own")
        if isinstance(channels[0], (str, Path)) and len(channels) == 1:
            return self._file_case(channels, case_id)  # a multi-channel case's CASE_0000 file: its channels beside it
        if len(channels) != wanted:
            raise DeepWMLError(f"the model takes {wanted} channel(s) per scan; {len(channels)} given")
        if isinstance(channels[0], (str, Path)):
            if not all(isinstance(c, (str, Path)) for c in channels):
                raise DeepWMLError("give every channel as a file, or every channel as an image in memory")
            return self._file_case(channels, case_id)
        name = case_id or "scan"
        images = [memory_image(c, spacing, f"{name} channel {k}" if wanted > 1 else name) for k, c in enumerate(channels)]
        for k, image in enumerate(images[1:], start=1):
            problems = images[0].geometry.mismatches(image.geometry)
            if problems:
                raise DeepWMLError(f"{name}: channel {k} is not on channel 0's grid ({'; '.join(problems)})")
        return InputCase(name, Path(name), "memory", ".nii.gz"), images

    def _file_case(self, paths: List[Union[str, Path]], case_id: Optional[str]) -> Tuple[InputCase, List[Image]]:
        """A scan on disk: found and read exactly as deepwml_predict -i PATH finds and reads it."""
        first = Path(paths[0]).expanduser()
        cases = discover_cases(first, self._plan.n_channels if len(paths) == 1 else 1)
        if len(cases) != 1:
            raise DeepWMLError(f"holds {len(cases)} scans; Segmenter.segment takes one (deepwml_predict takes folders)", first)
        case = cases[0]
        if len(paths) > 1:  # every channel named: the case is the first file's, as deepwml_predict names CASE_0000's
            stem = CHANNEL_STEM.match(case.case_id)
            case = dataclasses.replace(case, case_id=stem.group(1) if stem else case.case_id,
                                       channels=tuple(Path(p).expanduser() for p in paths))
        if case_id:
            case = dataclasses.replace(case, case_id=case_id)
        return case, read_channels(case, self._request.series_uid)


def memory_image(scan: Any, spacing: Optional[Sequence[float]], name: str) -> Image:
    """An image in memory as DeepWML reads a file: a 3D stack of finite, not constant voxels on a valid grid."""
    if isinstance(scan, np.ndarray):
        array, geometry = _numpy_scan(scan, spacing, name)
    elif type(scan).__module__.startswith("SimpleITK"):
        from deepwml.imageio.files import _sitk_to_3d

        import SimpleITK as sitk

        image = _sitk_to_3d(scan, name)
        array, geometry = sitk.GetArrayFromImage(image), Geometry.from_sitk(image)
    elif hasattr(scan, "affine") and hasattr(scan, "dataobj"):
        array, geometry = _nibabel_scan(scan, name)
    else:
        raise DeepWMLError(f"{name}: a {type(scan).__name__} is not a scan; give a file path, a numpy array with its "
                           "spacing, a SimpleITK image or a nibabel image")
    check_geometry(geometry, Path(name))
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise ImageError(f"voxels of type {array.dtype}; expected real numbers", name)
    array = np.ascontiguousarray(array, dtype=np.float32)
    bad = ~np.isfinite(array)
    if bad.any():
        raise ImageError(f"contains {int(bad.sum())} NaN/Inf voxels", name)
    if array.size == 0:
        raise ImageError("image has no voxels", name)
    lo, hi = float(array.min()), float(array.max())
    if hi <= lo:
        raise ImageError(f"image is empty: every voxel is {lo:g}", name)
    return Image(array, geometry, None)


def _numpy_scan(array: np.ndarray, spacing: Optional[Sequence[float]], name: str) -> Tuple[np.ndarray, Geometry]:
    """(voxels, grid) of a (z, y, x) array of axial slices: ``spacing`` in mm in the same order, origin 0, axes LPS."""
    if array.ndim != 3:
        raise ImageError(f"is a {array.ndim}D array of shape {array.shape}; expected a 3D stack (slices, rows, columns)", name)
    if spacing is None:
        raise DeepWMLError(f"{name}: a numpy array needs its spacing in mm, (slice, row, column) as the array's axes, "
                           "e.g. spacing=(6.5, 0.9, 0.9)")
    values = np.asarray(spacing, dtype=float).ravel()
    if values.shape != (3,):
        raise DeepWMLError(f"{name}: spacing takes 3 values in mm (slice, row, column), not {list(np.ravel(spacing))}")
    coarsest = np.flatnonzero(np.isclose(values, values.max(), rtol=1e-3)) if np.all(np.isfinite(values)) else [0]
    if len(coarsest) == 1 and coarsest[0] != 0 and values.max() > THREE_D_MAX_SPACING_MM:
        # nibabel's get_fdata() is (x, y, z): taken as given, its axial slices would be read as sagittal planes
        axis = int(coarsest[0])
        raise DeepWMLError(f"{name}: the slices are along axis {axis} (spacing {values[axis]:g} mm of {values.tolist()}); "
                           f"a numpy scan takes its slices first: np.moveaxis(array, {axis}, 0) with the spacing in that "
                           "order, or give the nibabel or SimpleITK image itself, which keeps its orientation")
    return array, Geometry(tuple(reversed(array.shape)), tuple(values[::-1]), (0.0, 0.0, 0.0))


def _nibabel_scan(image: Any, name: str) -> Tuple[np.ndarray, Geometry]:
    """(voxels in numpy (z, y, x) order, grid in ITK's LPS) of a nibabel image (NIfTI, MGH ...)."""
    from deepwml.imageio.mgh import nibabel_geometry

    shape = tuple(image.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise ImageError(f"is {len(shape)}D with shape {tuple(image.shape)}; expected one 3D stack of slices", name)
    voxels = np.asanyarray(image.dataobj).reshape(shape)
    return voxels.transpose(2, 1, 0), nibabel_geometry(image)
