"""deepwml_compare's work: segment both scans (or take the given masks), align the baseline to the follow-up,
classify the lesion change and write tables, maps, the picture and change.json into one folder."""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import SimpleITK as sitk

from deepwml.anatomy.location import SPLIT_COLUMNS
from deepwml.anatomy.volumes import BRAIN_VOLUME_COLUMN
from deepwml.imageio import Image, read_image, write_image
from deepwml.imageio.archives import is_archive, named_by_archive, unpacked
from deepwml.inference.reviewed_masks import read_reviewed_mask
from deepwml.inference.signal_level import from_no_signal
from deepwml.longitudinal.change import (
    CHANGE_CODES, ENLARGING, NEW, SHRINKING, STABLE, AlignedImages, ChangeRules, LesionChange, compare_lesions,
    findings_text,
)
from deepwml.longitudinal.registration import Registration, register_rigid, resample_to, to_sitk
from deepwml.utils.atomic import write_json, write_text
from deepwml.utils.errors import DeepWMLError

#: slice thicknesses that differ by more than this share make lesion counts compare poorly (benchmarks/longitudinal.py)
THICKNESS_TOLERANCE = 0.1
#: the brain's volume on the scanned slices may differ this much between the visits (the anatomy map measures one
#: brain within a few per cent at any slice thickness) before the stacks are taken to cover different parts of it
COVERAGE_TOLERANCE = 0.1
OUTPUT_NAMES = {
    "followup_lesions": "followup_lesions_change.csv",
    "baseline_lesions": "baseline_lesions_change.csv",
    "change_map": "change.nii.gz",
    "aligned_baseline": "baseline_on_followup.nii.gz",
    "aligned_baseline_mask": "baseline_mask_on_followup.nii.gz",
    "summary": "change.json",
    "picture": "change.png",
    "report": "change.html",
    "dicom_seg": "change_seg.dcm",
    "dicom_findings": "change_findings.dcm",
    "dicom_sr": "change_sr.dcm",
}


@dataclass
class CompareRequest:
    """Everything deepwml_compare is asked to do."""

    baseline: Path
    followup: Path
    output: Path
    baseline_mask: Optional[Path] = None
    followup_mask: Optional[Path] = None
    #: the model that segments both scans when no masks are given (None: the shipped one)
    model_dir: Optional[Path] = None
    device: str = "auto"
    rules: ChangeRules = field(default_factory=ChangeRules)
    write_picture: bool = True
    #: the registration's sample of voxels (not 0: deepwml.longitudinal.registration.register_rigid)
    seed: int = 1
    #: segment both scans anew and replace a folder that holds the comparison of other scans
    overwrite: bool = False
    #: also write the change map as a DICOM SEG of the follow-up series (a DICOM folder), one segment per status
    dicom_seg: bool = False
    #: also write the findings above the change picture as a DICOM Secondary Capture in the follow-up's study
    dicom_findings: bool = False
    #: also write the change's figures and each follow-up lesion (outlines, status) as a DICOM SR in its study
    dicom_sr: bool = False
    #: deepwml_predict's lesion table of ``followup_mask`` (same numbering): the new lesions' locations
    followup_lesions: Optional[Path] = None
    #: what made the given masks (e.g. "DeepWML builtin"), named in the outputs instead of "masks given"
    masks_from: Optional[str] = None
    #: deepwml_predict's summary figures of a given mask by visit ('baseline', 'followup'; its summary.csv row, as a
    #: published mask's sidecar keeps it), so that the 10 mm split of a visit segmented earlier reaches change.json
    mask_figures: Optional[Dict[str, Dict[str, Any]]] = None
    #: segment both scans on the brain the anatomy model finds (deepwml_predict's default; --skull-strip): a baseline
    #: with its skull and a follow-up stripped (or the other way round) are then segmented alike. None: as
    #: deepwml_predict does by default; False: --no-skull-strip
    skull_strip: Optional[bool] = None


@dataclass
class CompareReport:
    """What a comparison found and where it wrote it."""

    summary: Dict[str, object]
    outputs: Dict[str, Path]
    warnings: List[str]
    seconds: float

    def describe(self) -> str:
        """A few lines for the terminal."""
        s = self.summary
        change = s["volume_change_percent"]
        lines = [
            s["findings"],
            f"deepwml_compare: {s['new_lesions']} new lesion(s) (+{s['new_lesions_not_counted']} too small or faint to "
            f"count), {s['enlarging_lesions']} enlarging, {s['stable_lesions']} stable, "
            f"{s['shrinking_lesions']} shrinking; {s['resolved_baseline_lesions']} of {s['baseline_lesion_count']} baseline "
            f"lesion(s) resolved",
            f"lesion volume {s['baseline_volume_ml']:.2f} -> {s['followup_volume_ml']:.2f} ml"
            + (f" ({change:+.1f} %)" if change is not None else "")
            + f"; registration r = {s['registration']['correlation']:.2f}; {self.seconds:.1f} s; "
            f"written to {self.outputs['summary'].parent}",
        ]
        return "\n".join(lines + [f"warning: {w}" for w in self.warnings])


def _check_request(request: CompareRequest) -> None:
    """Every refusal before anything is read or written."""
    request.rules.check()
    if request.model_dir is not None and request.baseline_mask is not None and request.followup_mask is not None:
        raise DeepWMLError("-m picks the model that segments the scans; with --baseline-mask and --followup-mask nothing is segmented")
    for path in (request.baseline, request.followup, request.baseline_mask, request.followup_mask):
        if path is not None and not Path(path).exists():
            raise DeepWMLError("not found", path)
    if Path(request.baseline).resolve() == Path(request.followup).resolve():
        raise DeepWMLError("baseline and follow-up are the same file", request.baseline)
    out = Path(request.output).resolve()
    for path in (request.baseline, request.followup):
        if out == Path(path).resolve():
            raise DeepWMLError("the output folder is an input; give another -o", request.output)
    if out.exists() and not out.is_dir():
        raise DeepWMLError("output exists and is not a folder", request.output)
    # an archive's follow-up is checked once it is unpacked (compare)
    _check_dicom_outputs(request, series=not is_archive(Path(request.followup)))


def _check_dicom_outputs(request: CompareRequest, series: bool = True) -> None:
    """The DICOM outputs asked for can be made: highdicom is there and (``series``) the follow-up is a DICOM series
    folder, with whose series they are filed."""
    for flag, asked in (("--dicom-seg", request.dicom_seg), ("--dicom-findings", request.dicom_findings),
                        ("--dicom-sr", request.dicom_sr)):
        if not asked:
            continue
        from deepwml.imageio import is_dicom_folder
        from deepwml.inference.dicom_seg import require_highdicom

        require_highdicom(flag)
        if series and not (Path(request.followup).is_dir() and is_dicom_folder(Path(request.followup))):
            raise DeepWMLError(f"{flag} needs the follow-up as a DICOM series folder (it files with the follow-up's "
                               "series)", request.followup)


MARKER = ".deepwml_compare.json"


def input_identity(request: CompareRequest) -> Dict[str, object]:
    """What the output folder's segmentations were made from: each input's resolved path, size and time stamp."""
    identity: Dict[str, object] = {}
    for key in ("baseline", "followup", "baseline_mask", "followup_mask"):
        path = getattr(request, key)
        if path is None:
            identity[key] = None
            continue
        path = Path(path).resolve()
        stat = path.stat()
        identity[key] = [str(path), stat.st_size if path.is_file() else None, stat.st_mtime_ns if path.is_file() else None]
    identity["model"] = str(request.model_dir) if request.model_dir is not None else None
    return identity


def claim_output(request: CompareRequest) -> None:
    """Refuse to segment into a folder whose baseline/ or followup/ holds the segmentation of another scan or another
    model (they would be reused for the wrong scans, file names can match), unless ``overwrite``; then record this
    comparison's inputs, before anything else is written. Given masks reuse nothing, so they take any folder."""
    out = Path(request.output)
    marker = out / MARKER
    identity = input_identity(request)
    segmented = [name for name in ("baseline", "followup") if getattr(request, f"{name}_mask") is None]
    holds = any((out / name).exists() for name in segmented)
    if holds and not request.overwrite:
        try:
            earlier = json.loads(marker.read_text())
        except (OSError, ValueError):
            raise DeepWMLError("holds baseline/ or followup/ folders that deepwml_compare did not record; give another "
                               "-o or --overwrite", out) from None
        now = json.loads(json.dumps(identity))
        if any(earlier.get(key) != now[key] for key in (*segmented, "model")):
            raise DeepWMLError("holds the segmentations of other scans or another model (they would be reused); give "
                               "another -o or --overwrite", out)
    write_json(marker, identity)


def segment(scan: Path, out_dir: Path, request: CompareRequest) -> Tuple[Path, Path, Dict[str, Any]]:
    """Predict one scan with deepwml_predict's pipeline into ``out_dir`` (resumes); its mask's and lesion table's paths
    and its summary's anatomy figures (empty without the anatomy map)."""
    from deepwml.inference.inputs import discover_cases
    from deepwml.inference.outputs import case_outputs
    from deepwml.inference.run import PredictRequest, predict

    cases = discover_cases(scan)
    if len(cases) != 1:
        raise DeepWMLError(f"holds {len(cases)} scans; give one file or one DICOM series folder per time point", scan)
    report = predict(PredictRequest(input=Path(scan), output=out_dir, model_dir=request.model_dir, device=request.device,
                                    overwrite=request.overwrite, skull_strip=request.skull_strip))
    if report.failed:
        raise DeepWMLError(f"could not be segmented: {report.failed[0].error}", scan)
    outputs = case_outputs(out_dir, cases[0])
    return outputs.mask, outputs.lesions, dict(report.summaries[0].anatomy) if report.summaries else {}


def add_locations(change: LesionChange, lesions_csv: Optional[Path]) -> None:
    """Copy each follow-up lesion's location class from deepwml_predict's lesion table (same numbering) into the
    change table, and count the new lesions by location: a radiologist reports where new lesions are."""
    import pandas as pd

    if lesions_csv is None or not lesions_csv.is_file():
        return
    table = pd.read_csv(lesions_csv)
    if "location" not in table.columns or len(table) != len(change.followup):
        return  # predicted without the anatomy map, or not the mask compared: no locations rather than wrong ones
    change.followup.insert(change.followup.columns.get_loc("long_axis_mm") + 1, "location", table["location"].to_numpy())
    new = change.followup[(change.followup["status"] == NEW) & change.followup["counted"]]
    change.summary["new_lesion_locations"] = {str(k): int(v) for k, v in new["location"].value_counts().sort_index().items()}


def add_volume_split(change: LesionChange, figures: Dict[str, Dict[str, Any]]) -> None:
    """The supratentorial lesion volume within / beyond 10 mm of the ventricles at both visits (the periventricular /
    deep split of small-vessel studies), when both masks come with deepwml_predict's figures made with the anatomy
    map (deepwml_compare segmented the scan, or the caller gave them: CompareRequest.mask_figures): each visit's own
    figure, as summary.csv gives it."""
    visits = [figures.get(name) or {} for name in ("baseline", "followup")]
    if not all(_finite(visit.get(column)) for visit in visits for column in SPLIT_COLUMNS):
        return  # a reader's mask, or no anatomy map: no split rather than half of one
    for name, visit in zip(("baseline", "followup"), visits):
        for column in SPLIT_COLUMNS:
            change.summary[f"{name}_{column}"] = round(float(visit[column]), 4)


def _brain_volumes(figures: Dict[str, Dict[str, Any]]) -> List[Any]:
    """The baseline's and the follow-up's brain parenchyma volume on their scanned slices (None when not given)."""
    return [(figures.get(name) or {}).get(BRAIN_VOLUME_COLUMN) for name in ("baseline", "followup")]


def add_brain_volumes(change: LesionChange, figures: Dict[str, Dict[str, Any]]) -> None:
    """Each visit's brain parenchyma volume on its scanned slices (deepwml.anatomy.volumes), when both have one."""
    volumes = _brain_volumes(figures)
    if all(_finite(v) for v in volumes):
        for name, volume in zip(("baseline", "followup"), volumes):
            change.summary[f"{name}_{BRAIN_VOLUME_COLUMN}"] = round(float(volume), 1)


def coverage_warning(figures: Dict[str, Dict[str, Any]]) -> Optional[str]:
    """Why lesions may enter or leave the field between the visits: the brain on their scanned slices differs by
    more than COVERAGE_TOLERANCE (stacks placed or sized differently, or an anatomy map gone wrong)."""
    volumes = _brain_volumes(figures)
    if not all(_finite(v) and v > 0 for v in volumes):
        return None
    before, after = volumes
    if abs(after - before) <= COVERAGE_TOLERANCE * max(before, after):
        return None
    return (f"the brain on the scanned slices differs between the visits ({before:.0f} ml baseline, {after:.0f} ml "
            f"follow-up): the stacks cover different parts of the head, so lesions can enter or leave the field and "
            f"the counts and volume change partly reflect that; check both scans' coverage")


def _finite(value: Any) -> bool:
    """True for a finite number (a figure a JSON sidecar or CSV row holds), False for None, NaN or text."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and bool(np.isfinite(value))


def read_pair(image_path: Path, mask_path: Path) -> Tuple[Image, np.ndarray]:
    """A scan and its lesion mask (> 0: lesion), which must lie on its grid (or a window of it); for a DICOM series
    the mask may be a DICOM SEG of it (a reader's outlines from the PACS)."""
    from deepwml.imageio.dicom_seg_masks import is_dicom_seg, read_seg_mask

    # measured from no signal, as deepwml_predict measures: the signal change divides each visit by its brain median
    if Path(image_path).is_dir() and is_dicom_seg(Path(mask_path)):
        image = from_no_signal(read_image(image_path))
        return image, read_seg_mask(Path(mask_path), Path(image_path)) > 0
    # on the scan's grid, or on a window of it (3D Slicer's cropped segmentations): as deepwml_predict --lesion-masks
    image = from_no_signal(read_image(image_path))
    return image, read_reviewed_mask(Path(mask_path), image.geometry)


def thickness_warning(baseline: Image, followup: Image) -> Optional[str]:
    """Why the lesion counts may mislead when the two stacks were acquired with different slice thicknesses."""
    tb, tf = baseline.geometry.slice_thickness, followup.geometry.slice_thickness
    if abs(tb - tf) <= THICKNESS_TOLERANCE * max(tb, tf):
        return None
    return (f"slice thickness differs ({tb:g} mm baseline, {tf:g} mm follow-up): small lesions show on one stack and "
            f"not the other, so new / resolved lesion counts and the volume change partly reflect the protocol; "
            f"compare scans acquired alike")


def compare(request: CompareRequest) -> CompareReport:
    """Run one comparison; outputs are written atomically, so an interrupted run leaves whole files only. A visit
    given as an archive (deepwml.imageio.archives) is read as the one scan it holds, unpacked for the run; its
    segmentation is kept in the output folder under the scan's name, so a run again resumes as with the folder."""
    start = time.perf_counter()
    _check_request(request)
    out = Path(request.output)
    out.mkdir(parents=True, exist_ok=True)
    claim_output(request)  # the archives themselves identify what the segmentations were made from
    given = {"baseline": Path(request.baseline), "followup": Path(request.followup)}
    with unpacked(given["baseline"]) as baseline, unpacked(given["followup"]) as followup:
        folders = {"baseline": baseline, "followup": followup}
        try:
            scans = {visit: _one_scan(folder) if folder != given[visit] else folder for visit, folder in folders.items()}
            run = dataclasses.replace(request, baseline=scans["baseline"], followup=scans["followup"])
            if is_archive(given["followup"]):
                _check_dicom_outputs(run)
            # what the summary and the report name: the archives, not the temporary folders
            return _compare(run, start, {visit: str(path) for visit, path in given.items()})
        except DeepWMLError as e:
            for visit, folder in folders.items():
                e = named_by_archive(e, folder, given[visit]) if folder != given[visit] else e
            raise e from None


def _one_scan(folder: Path) -> Path:
    """An unpacked archive's one scan (its DICOM series folder or image file), so that it is named as itself; the
    path as given otherwise (segment() refuses a folder of several scans by name)."""
    if not folder.is_dir():
        return folder
    from deepwml.inference.inputs import discover_cases

    try:
        cases = discover_cases(folder)
    except DeepWMLError:
        return folder
    return Path(cases[0].source) if len(cases) == 1 else folder


def _compare(request: CompareRequest, start: float, shown: Dict[str, str]) -> CompareReport:
    """compare() once every visit is a scan on disk; ``shown``: how each visit's scan is named to the user."""
    out = Path(request.output)
    # a scan without a mask is segmented; a reader's corrected mask of one visit can stand beside the other's segmentation
    followup_table = None
    figures: Dict[str, Dict[str, Any]] = dict(request.mask_figures or {})  # a segmented visit's own replace them
    if request.baseline_mask is None:
        baseline_mask, _, figures["baseline"] = segment(request.baseline, out / "baseline", request)
    else:
        baseline_mask = Path(request.baseline_mask)
    if request.followup_mask is None:
        followup_mask, followup_table, figures["followup"] = segment(request.followup, out / "followup", request)
    else:
        followup_mask, followup_table = Path(request.followup_mask), request.followup_lesions
    baseline, base_lesions = read_pair(Path(request.baseline), baseline_mask)
    followup, follow_lesions = read_pair(Path(request.followup), followup_mask)
    registration = register_rigid(followup.array, followup.geometry, baseline.array, baseline.geometry, seed=request.seed)
    images = align_baseline(baseline, base_lesions, followup, registration)
    change = compare_lesions(base_lesions, baseline.geometry, follow_lesions, followup.geometry, registration.transform,
                             request.rules, images)
    add_locations(change, followup_table)
    add_volume_split(change, figures)
    add_brain_volumes(change, figures)
    warnings = [w for w in (thickness_warning(baseline, followup), coverage_warning(figures),
                            _registration_warning(registration)) if w]
    outputs = {key: out / name for key, name in OUTPUT_NAMES.items()}
    _write(request, baseline, followup, registration, images, change, outputs, warnings, baseline_mask, followup_mask, shown)
    return CompareReport(change.summary, outputs, warnings, time.perf_counter() - start)


def align_baseline(baseline: Image, baseline_lesions: np.ndarray, followup: Image, registration: Registration) -> AlignedImages:
    """The baseline image (linear) and lesion mask (linear, >= 0.5) on the follow-up's grid, and the follow-up
    voxels inside the baseline's slabs."""
    transform, geometry = registration.transform, followup.geometry

    def moved(array: np.ndarray, interpolator: int) -> np.ndarray:
        return sitk.GetArrayFromImage(resample_to(to_sitk(array, baseline.geometry), transform, geometry, interpolator))

    # register_rigid already moved the baseline image (linearly, onto this grid) to measure its correlation
    aligned = registration.aligned if registration.aligned is not None else moved(baseline.array, sitk.sitkLinear)
    return AlignedImages(np.asarray(followup.array, np.float32), aligned,
                         moved(np.ones(baseline.array.shape, np.float32), sitk.sitkNearestNeighbor) > 0,
                         moved(np.asarray(baseline_lesions, np.float32), sitk.sitkLinear) >= 0.5)


def _registration_warning(registration: Registration) -> Optional[str]:
    if not registration.doubtful:
        return None
    return (f"the aligned scans agree poorly (correlation {registration.correlation:.2f}): check "
            f"baseline_on_followup.nii.gz against the follow-up before trusting the lesion change")


def _write(request: CompareRequest, baseline: Image, followup: Image, registration: Registration, images: AlignedImages, change: LesionChange, outputs: Dict[str, Path],
           warnings: List[str], baseline_mask: Path, followup_mask: Path, shown: Dict[str, str]) -> None:
    """Every output file, each atomically; change.json last, so that its presence means the set is whole. ``shown``:
    how each visit's scan is named in the summary and the report."""
    geometry = followup.geometry
    aligned, aligned_mask = images.baseline, images.baseline_mask
    write_text(outputs["followup_lesions"], change.followup.to_csv(index=False))
    write_text(outputs["baseline_lesions"], change.baseline.to_csv(index=False))
    write_image(change.change_map, geometry, outputs["change_map"])
    write_image(aligned.astype(np.float32), geometry, outputs["aligned_baseline"])
    write_image(aligned_mask.astype(np.uint8), geometry, outputs["aligned_baseline_mask"])
    if request.write_picture:
        from deepwml.longitudinal.picture import write_change_picture

        s = change.summary
        title = (f"{s['new_lesions']} new, {s['enlarging_lesions']} enlarging, {s['resolved_baseline_lesions']} resolved;"
                 f" {s['baseline_volume_ml']:.2f} -> {s['followup_volume_ml']:.2f} ml")
        write_change_picture(followup.array, aligned, aligned_mask, change.change_map, geometry, outputs["picture"], title)
    else:
        outputs.pop("picture")
    if request.dicom_seg:
        from deepwml.inference.dicom_seg import write_dicom_seg

        labels = [f"{status} lesion" if status in (STABLE, ENLARGING, NEW, SHRINKING) else f"lesion: {status}"
                  for status, _ in sorted(CHANGE_CODES.items(), key=lambda kv: kv[1])]
        write_dicom_seg(change.change_map, Path(request.followup), outputs["dicom_seg"],
                        (request.masks_from or "masks given") if request.followup_mask is not None
                        else Path(str(request.model_dir or "builtin")).name,
                        segment_labels=labels, series_description="DeepWML lesion change (research use)")
    else:
        outputs.pop("dicom_seg")
    if request.dicom_sr:
        from deepwml.longitudinal.change_sr import write_change_sr

        write_change_sr(change, Path(request.followup), outputs["dicom_sr"], _model_label(request), geometry.slice_axis_numpy)
    else:
        outputs.pop("dicom_sr")
    if request.dicom_findings:
        _write_findings_capture(request, followup, images, change, outputs["dicom_findings"], warnings)
    else:
        outputs.pop("dicom_findings")
    summary = dict(change.summary)
    summary["findings"] = findings_text(change.summary)
    summary["registration"] = registration.to_dict()
    summary["warnings"] = warnings
    summary["inputs"] = {"baseline": shown["baseline"], "followup": shown["followup"],
                         "baseline_mask": str(baseline_mask), "followup_mask": str(followup_mask),
                         "baseline_slice_thickness_mm": baseline.geometry.slice_thickness,
                         "followup_slice_thickness_mm": geometry.slice_thickness}
    summary["change_map_codes"] = {"0": "no lesion", **{str(code): status for status, code in CHANGE_CODES.items()}}
    change.summary = summary
    from deepwml.longitudinal.report import build_change_report

    write_text(outputs["report"], build_change_report(summary, change.followup, outputs.get("picture"), warnings))
    write_json(outputs["summary"], summary)


def _model_label(request: CompareRequest) -> str:
    """What segmented the visits, for a DICOM object's model name: 'masks given' when both masks were."""
    if request.followup_mask is not None and request.baseline_mask is not None:
        return request.masks_from or "masks given"
    return f"DeepWML {Path(str(request.model_dir)).name if request.model_dir else 'builtin'}"


def _write_findings_capture(request: CompareRequest, followup: Image, images: AlignedImages, change: LesionChange,
                            path: Path, warnings: List[str]) -> None:
    """The findings sentence and cautions above the change picture, as a Secondary Capture of the follow-up's study."""
    import deepwml
    from deepwml.inference.dicom_capture import first_header, with_text_above, write_capture
    from deepwml.longitudinal.picture import change_picture

    model = (request.masks_from or "masks given") if request.followup_mask is not None and request.baseline_mask is not None else (
        f"model {Path(str(request.model_dir)).name}" if request.model_dir else "the shipped model")
    lines = [findings_text(change.summary), *(f"Caution: {w}" for w in warnings),
             f"Lesion change by DeepWML {deepwml.__version__} ({model}). Research use only, not a medical device: a "
             "qualified reader must review these findings."]
    s = change.summary
    title = f"{s['new_lesions']} new, {s['enlarging_lesions']} enlarging, {s['resolved_baseline_lesions']} resolved"
    picture = change_picture(followup.array, images.baseline, images.baseline_mask, change.change_map, followup.geometry, title)
    write_capture(with_text_above(np.asarray(picture), lines), first_header(Path(request.followup)), followup.geometry,
                  path, "DeepWML lesion change findings (research use)")
