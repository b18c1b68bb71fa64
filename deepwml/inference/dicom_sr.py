"""The measurements as a DICOM Structured Report (TID 1500 Measurement Report), for PACS, viewers and registries
that read numbers rather than pictures.

One Comprehensive 3D SR in a new series of the source study, made with highdicom from the series' own headers:
- a group for the whole case (tracking identifier "All white matter lesions"): lesion count, total volume and,
  with an anatomy map, the Fazekas estimates and the McDonald 2017 brain regions; it references the lesion segment
  of CASE_seg.dcm when that SEG was written too and holds every lesion in one segment (TID 1411), otherwise it
  stands alone (TID 1501);
- with an anatomy map, a group per location class that has a lesion (tracking identifier the SEG's segment label, e.g.
  "Periventricular lesions"): its lesion count and volume, on that class's segment of the SEG when there is one;
- a group per lesion (TID 1411), numbered as in the lesion table: its outline on each slice it lies on (closed
  SCOORD polylines on the source instances or frames, so a viewer draws it on the images), volume, and with an anatomy map its
  location class, finding site and long axis, with probabilities its mean probability and confidence. A mask of
  thousands of specks (a model far outside its training data) would take minutes and tens of MB of outlines, so at
  most SR_MAX_LESIONS lesions, largest first, with SR_MAX_OUTLINES outlines in all, get a group of their own; the case
  group says how many did ("Lesions itemised in this report"), and its totals count every lesion.

Finding type DCM 110702 "White Matter T2 Hyperintensity", volumes in cm3 (= ml). Grades and classes DICOM has no
code for are coded in a local scheme (99DEEPWML, declared in the object's Coding Scheme Identification Sequence).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

import numpy as np
from skimage import measure

import deepwml
from deepwml.anatomy.location import FAR_FROM_VENTRICLES_COLUMN, LOCATIONS, NEAR_VENTRICLES_COLUMN
from deepwml.anatomy.volumes import (BRAIN_VOLUME_COLUMN, COVERAGE_COLUMN, LESION_PERCENT_COLUMN,
                                     VENTRICLE_VOLUME_COLUMN)
from deepwml.inference.dicom_seg import (LOCATION_SEGMENT_LABELS, SEGMENT_LABEL, location_sites, slice_of_frames,
                                         source_headers)
from deepwml.inference.lesion_ids import lesion_ids_of
from deepwml.inference.lesion_report import CaseSummary
from deepwml.utils.atomic import atomic_path
from deepwml.utils.errors import ImageError

if TYPE_CHECKING:
    import pandas as pd

#: series number of the SR's series (the SEG is 9901, the findings picture 9902)
SR_SERIES_NUMBER = 9903
SR_SERIES_DESCRIPTION = "DeepWML lesion measurements (research use)"
CASE_TRACKING = "All white matter lesions"
BRAIN_TRACKING, VENTRICLE_TRACKING = "Brain parenchyma, scanned slices", "Lateral ventricles, scanned slices"
#: the local coding scheme of the concepts DICOM has no code for
LOCAL_SCHEME = "99DEEPWML"
#: lesions with a group of their own in one SR at most, and their outlines at most (a real mask of up to a few hundred
#: lesions fits whole: MSLUB stacks have 70-85 lesions and ~110 outlines; each outline costs ~5 ms and ~0.5 kB)
SR_MAX_LESIONS = 300
SR_MAX_OUTLINES = 3000


def local_code(value: str, meaning: str):
    """A concept of the local coding scheme."""
    from highdicom.sr import CodedConcept

    return CodedConcept(value=value, scheme_designator=LOCAL_SCHEME, meaning=meaning)


def sr_codes() -> Dict[str, object]:
    """The coded concepts the report uses (pydicom's dictionary where DICOM has one, the local scheme otherwise)."""
    from pydicom.sr.codedict import codes

    return {
        "finding": codes.DCM.WhiteMatterT2Hyperintensity,
        "category": codes.SCT.MorphologicallyAbnormalStructure,
        "procedure": codes.LN.MRIHeadReport,
        "volume": codes.SCT.Volume,
        "count": codes.SCT.NumberOfLesions,
        "long_axis": codes.SCT.LongAxis,
        "probability": codes.DCM.Probability,
        "mean": codes.SCT.Mean,
        "cm3": codes.UCUM.CubicCentimeter,
        "mm": codes.UCUM.Millimeter,
        "unitless": codes.UCUM.NoUnits,
        "location_class": local_code("LOC", "DeepWML lesion location class"),
        "confidence": local_code("CONF", "DeepWML lesion confidence"),
        "fazekas_pv": local_code("FZPV", "Fazekas periventricular grade (estimate)"),
        "fazekas_deep": local_code("FZDWM", "Fazekas deep white matter grade (estimate)"),
        "dis_regions": local_code("DIS", "McDonald 2017 brain regions with a lesion of 3 mm or more"),
        "near_ventricles": local_code("PV10", "Supratentorial lesion volume within 10 mm of the ventricles"),
        "far_from_ventricles": local_code("DWM10", "Supratentorial lesion volume beyond 10 mm of the ventricles"),
        "itemised": local_code("ITEM", "Lesions itemised in this report"),
        "percent": codes.UCUM.Percent,
        "lesion_percent": local_code("PCTBR", "Lesion volume as a percentage of the brain parenchyma volume"),
        "brain": codes.SCT.Brain,
        "ventricle": codes.SCT.LateralVentricle,
        "coverage": local_code("COVER", "Brain coverage of the scanned slices"),
        "sites": location_sites(),
        "classes": {name: local_code(f"LOC-{name.upper()}", name) for name in LOCATIONS},
    }


def slice_outlines(mask_slice: np.ndarray) -> List[np.ndarray]:
    """Closed outlines (n, 2) in DICOM pixel coordinates (column, row; the top-left pixel's centre at 0.5, 0.5) of
    each 4-connected region of a binary slice: the polygons whose inside holds exactly the region's pixel centres.
    Holes are not outlined (a viewer would draw them as more lesion)."""
    padded = np.pad(np.asarray(mask_slice, dtype=np.float32), 1)
    outlines = []
    for contour in measure.find_contours(padded, 0.5):
        # find_contours keeps the high values on one side, so outer edges and holes turn opposite ways
        rows, cols = contour[:, 0], contour[:, 1]
        if np.sum(cols[:-1] * rows[1:] - cols[1:] * rows[:-1]) < 0:
            continue
        outlines.append(np.stack([cols - 1 + 0.5, rows - 1 + 0.5], axis=1).astype(np.float32))
    return outlines


def build_dicom_sr(mask: np.ndarray, lesions: "pd.DataFrame", summary: CaseSummary, headers: List, model_name: str,
                   slice_axis: int = 0, seg=None, ids: Optional[np.ndarray] = None):
    """A highdicom Comprehensive 3D SR of one case's lesion measurements over the source ``headers`` (one per slice,
    or one multi-frame header); ``lesions`` is the case's lesion table (ids ordered along numpy ``slice_axis``),
    ``seg`` its DICOM SEG dataset if written."""
    c = sr_codes()
    algorithm = algorithm_identification(model_name)
    outlines = LesionOutlines(mask, headers, slice_axis, ids)
    if outlines.count != len(lesions):
        raise ValueError(f"{outlines.count} lesions in the mask, {len(lesions)} in the table")  # a bug, never a user error
    itemised = set(outlines.itemised([int(k) for k in lesions.lesion_id]))
    groups = [_case_group(summary, len(itemised), c, algorithm, seg)] + _location_groups(summary, c, algorithm, seg)
    groups += [_lesion_group(row, outlines.regions(int(row.lesion_id)), c, algorithm)
               for row in lesions.itertuples(index=False) if int(row.lesion_id) in itemised]
    groups += _tissue_groups(summary, c, algorithm)
    return measurement_report(groups, headers, model_name, SR_SERIES_DESCRIPTION, seg)


def algorithm_identification(model_name: str):
    """DeepWML, its version and the model, as the SR's groups name the algorithm."""
    import highdicom as hd

    return hd.sr.AlgorithmIdentification(name="DeepWML", version=deepwml.__version__, parameters=[model_name[:64]])


class LesionOutlines:
    """Each lesion of a (z, rows, cols) mask, numbered as the lesion table numbers them, as SR regions: its
    outlines on the slices it lies on, each on its source instance (or multi-frame frame)."""

    def __init__(self, mask: np.ndarray, headers: List, slice_axis: int = 0, ids: Optional[np.ndarray] = None) -> None:
        from scipy import ndimage

        where = getattr(headers[0], "filename", "DICOM series")
        if not getattr(headers[0], "FrameOfReferenceUID", None):
            raise ImageError("the series has no Frame of Reference UID (0020,0052), which the SR's outlines need", where)
        slice_of_frame = slice_of_frames(headers)
        mask = np.asarray(mask) > 0
        if mask.shape[0] != len(slice_of_frame):
            raise ImageError(f"mask of {mask.shape[0]} slices for a series of {len(slice_of_frame)}", where)
        self.headers = headers
        self.multiframe = len(headers) == 1 and len(slice_of_frame) > 1
        self.frame_of_slice = np.argsort(slice_of_frame)  # stored frame index of each mask slice
        self.labels = lesion_ids_of(mask, slice_axis, ids)
        self.count = int(self.labels.max(initial=0))
        self.boxes = ndimage.find_objects(self.labels)
        self._outlines: Dict[int, List[Tuple[int, np.ndarray]]] = {}

    def outlines(self, lesion_id: int) -> List[Tuple[int, np.ndarray]]:
        """(mask slice, closed outline in that slice's DICOM pixel coordinates) of lesion ``lesion_id``, computed once."""
        if lesion_id not in self._outlines:
            box = self.boxes[lesion_id - 1]
            lesion = self.labels[box] == lesion_id
            # outlined within the lesion's box (cost follows the lesion, not the slice), then placed on the slice
            corner = np.array([box[2].start, box[1].start], dtype=np.float32)
            self._outlines[lesion_id] = [(box[0].start + int(dz), outline + corner)
                                         for dz in np.flatnonzero(lesion.any(axis=(1, 2)))
                                         for outline in slice_outlines(lesion[dz])]
        return self._outlines[lesion_id]

    def itemised(self, lesion_ids: Sequence[int], max_lesions: Optional[int] = None,
                 max_outlines: Optional[int] = None) -> List[int]:
        """The lesions of ``lesion_ids`` (largest first) that get a group of their own: in that order, each whose
        outlines still fit within ``max_outlines`` (default SR_MAX_OUTLINES) in all, up to ``max_lesions`` (default
        SR_MAX_LESIONS); a lesion of more outlines than are left is passed over, so one sprawling false positive
        does not crowd out every real lesion."""
        max_lesions = SR_MAX_LESIONS if max_lesions is None else max_lesions
        chosen: List[int] = []
        left = SR_MAX_OUTLINES if max_outlines is None else max_outlines
        for lesion_id in lesion_ids:
            if len(chosen) == max_lesions or left == 0:
                break
            if len(self.outlines(lesion_id)) <= left:
                chosen.append(lesion_id)
                left -= len(self.outlines(lesion_id))
            else:
                self._outlines.pop(lesion_id)  # not drawn: keep memory to the itemised lesions
        return chosen

    def _source(self, z: int):
        """The instance (and frame) mask slice ``z`` lies on."""
        import highdicom as hd

        header = self.headers[0] if self.multiframe else self.headers[z]
        return hd.sr.SourceImageForRegion(header.SOPClassUID, header.SOPInstanceUID,
                                          [int(self.frame_of_slice[z]) + 1] if self.multiframe else None)

    def regions(self, lesion_id: int) -> List:
        """The closed SCOORD polylines of lesion ``lesion_id`` on every slice it lies on."""
        import highdicom as hd

        origin = hd.sr.PixelOriginInterpretationValues.FRAME if self.multiframe else None
        return [hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues.POLYLINE, graphic_data=outline,
                                  source_image=self._source(z), pixel_origin_interpretation=origin)
                for z, outline in self.outlines(lesion_id)]


def measurement_report(groups: List, headers: List, model_name: str, description: str, seg=None,
                       series_number: int = SR_SERIES_NUMBER):
    """The Comprehensive 3D SR holding a TID 1500 report of ``groups`` in the study of ``headers`` (its evidence,
    with ``seg`` when a group references it), observed by the device DeepWML; the local scheme declared."""
    import highdicom as hd
    from pydicom.dataset import Dataset
    from pydicom.sr.codedict import codes

    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device,
            observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                uid=hd.UID(), name="DeepWML", manufacturer_name="DeepWML", model_name=model_name[:64]))),
        procedure_reported=sr_codes()["procedure"],
        imaging_measurements=groups,
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=list(headers) + ([seg] if seg is not None else []), content=report, series_instance_uid=hd.UID(),
        series_number=series_number, sop_instance_uid=hd.UID(), instance_number=1, manufacturer="DeepWML",
        series_description=description, is_complete=True, is_final=False, is_verified=False,
    )
    scheme = Dataset()
    scheme.CodingSchemeDesignator = LOCAL_SCHEME
    scheme.CodingSchemeName = "DeepWML local codes"
    scheme.CodingSchemeResponsibleOrganization = "DeepWML"
    sr.CodingSchemeIdentificationSequence = [scheme]
    return sr


def save_sr(sr, path: Path) -> Path:
    """Write an SR atomically."""
    with atomic_path(path, ".dcm") as tmp:
        sr.save_as(tmp)
    return path


def _case_group(summary: CaseSummary, itemised: int, c: Dict, algorithm, seg):
    """The whole-case measurement group (TID 1411 on the SEG's one segment of every lesion when it has it, else TID 1501);
    ``itemised``: how many lesions have a group of their own."""
    import highdicom as hd

    measurements = [
        hd.sr.Measurement(name=c["count"], value=int(summary.lesion_count), unit=c["unitless"]),
        hd.sr.Measurement(name=c["volume"], value=float(summary.total_lesion_volume_ml), unit=c["cm3"]),
        hd.sr.Measurement(name=c["itemised"], value=int(itemised), unit=c["unitless"]),
    ]
    a = summary.anatomy
    if a:
        measurements += [
            hd.sr.Measurement(name=c[key], value=int(a[field]), unit=c["unitless"])
            for key, field in (("fazekas_pv", "fazekas_periventricular"), ("fazekas_deep", "fazekas_deep"),
                               ("dis_regions", "mcdonald_dis_regions"))
        ]
        measurements += [
            hd.sr.Measurement(name=c[key], value=float(a[field]), unit=c["cm3"])
            for key, field in (("near_ventricles", NEAR_VENTRICLES_COLUMN), ("far_from_ventricles", FAR_FROM_VENTRICLES_COLUMN))
            if field in a  # figures of an older run have none
        ]
        if a.get(BRAIN_VOLUME_COLUMN, 0) > 0:  # figures of an older run have none; no brain, no share
            measurements.append(hd.sr.Measurement(name=c["lesion_percent"], value=float(a[LESION_PERCENT_COLUMN]),
                                                  unit=c["percent"]))
    return _group_on_segment(seg, SEGMENT_LABEL, dict(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=CASE_TRACKING),
        finding_type=c["finding"], finding_category=c["category"], algorithm_id=algorithm, measurements=measurements))


def _group_on_segment(seg, label: str, content: Dict):
    """A measurement group of ``content`` on the SEG's segment named ``label`` (TID 1411), or a group of its own
    (TID 1501) when there is no SEG or no such segment (a SEG split by location has no whole-mask segment)."""
    import highdicom as hd

    numbers = {str(s.SegmentLabel): int(s.SegmentNumber) for s in (seg.get("SegmentSequence", []) if seg is not None else [])}
    if label not in numbers:
        return hd.sr.MeasurementsAndQualitativeEvaluations(**content)
    segment = hd.sr.ReferencedSegment(
        sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID, segment_number=numbers[label],
        source_series=hd.sr.SourceSeriesForSegmentation(seg.ReferencedSeriesSequence[0].SeriesInstanceUID))
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(referenced_segment=segment, **content)


def _tissue_groups(summary: CaseSummary, c: Dict, algorithm) -> List:
    """With an anatomy map, the brain parenchyma's and the lateral ventricles' volumes on the scanned slices (TID
    1501 groups of their own), the brain's with its coverage of the scan (deepwml.anatomy.volumes)."""
    import highdicom as hd

    a = summary.anatomy
    if BRAIN_VOLUME_COLUMN not in a:  # no map, or figures of an older run
        return []
    coverage = str(a[COVERAGE_COLUMN])
    groups = []
    for key, field, label in (("brain", BRAIN_VOLUME_COLUMN, BRAIN_TRACKING), ("ventricle", VENTRICLE_VOLUME_COLUMN,
                                                                                VENTRICLE_TRACKING)):
        # a Code Meaning is a DICOM LO (64 characters): a brain cut at many sides is named in full in summary.csv
        meaning = coverage if len(coverage) <= 64 else coverage[:61] + "..."
        evaluations = ([hd.sr.QualitativeEvaluation(c["coverage"], local_code(f"COVER-{coverage.upper().replace(' ', '-')}",
                                                                               meaning))]
                       if key == "brain" else None)
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=label), finding_type=c[key],
            algorithm_id=algorithm, measurements=[hd.sr.Measurement(name=c["volume"], value=float(a[field]), unit=c["cm3"])],
            qualitative_evaluations=evaluations))
    return groups


def _location_groups(summary: CaseSummary, c: Dict, algorithm, seg) -> List:
    """With an anatomy map, a group per location class that has a lesion: its lesion count and volume, on that class's
    segment of the SEG when it has one (TID 1411), else a group of its own (TID 1501)."""
    import highdicom as hd

    a = summary.anatomy
    groups = []
    for name in LOCATIONS:
        if not a.get(f"{name}_count") or f"{name}_volume_ml" not in a:  # no lesion there, or figures of an older run
            continue
        label = LOCATION_SEGMENT_LABELS[name]
        site = c["sites"].get(name)
        groups.append(_group_on_segment(seg, label, dict(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=label), finding_type=c["finding"],
            finding_category=c["category"], algorithm_id=algorithm, finding_sites=[hd.sr.FindingSite(site)] if site else None,
            measurements=[hd.sr.Measurement(name=c["count"], value=int(a[f"{name}_count"]), unit=c["unitless"]),
                          hd.sr.Measurement(name=c["volume"], value=float(a[f"{name}_volume_ml"]), unit=c["cm3"])],
            qualitative_evaluations=[hd.sr.QualitativeEvaluation(c["location_class"], c["classes"][name])],
        )))
    return groups


def _lesion_group(row, regions: List, c: Dict, algorithm):
    """One lesion's measurement group (TID 1411): its outlines, volume, and what the lesion table knows of it."""
    import highdicom as hd

    measurements = [hd.sr.Measurement(name=c["volume"], value=float(row.volume_ml), unit=c["cm3"])]
    evaluations, sites = [], None
    location = getattr(row, "location", None)
    if location is not None:
        evaluations.append(hd.sr.QualitativeEvaluation(c["location_class"], c["classes"][location]))
        site = c["sites"].get(location)
        sites = [hd.sr.FindingSite(site)] if site is not None else None
        if np.isfinite(row.long_axis_mm):
            measurements.append(hd.sr.Measurement(name=c["long_axis"], value=float(row.long_axis_mm), unit=c["mm"]))
    for column, key, derivation in (("mean_probability", "probability", c["mean"]), ("confidence", "confidence", None)):
        value = getattr(row, column, None)
        if value is not None and np.isfinite(value):
            measurements.append(hd.sr.Measurement(name=c[key], value=float(value), unit=c["unitless"],
                                                  derivation=derivation))
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"lesion {int(row.lesion_id)}"),
        referenced_regions=regions, finding_type=c["finding"], finding_category=c["category"], algorithm_id=algorithm,
        finding_sites=sites, measurements=measurements, qualitative_evaluations=evaluations or None,
    )


def write_dicom_sr(mask: np.ndarray, lesions: "pd.DataFrame", summary: CaseSummary, folder: Path, path: Path,
                   model_name: str, series_uid: Optional[str] = None, slice_axis: int = 0,
                   seg_path: Optional[Path] = None, ids: Optional[np.ndarray] = None) -> Path:
    """Write the SR of one case (see :func:`build_dicom_sr`) for the DICOM series in ``folder``, atomically; it
    references the SEG at ``seg_path`` when given."""
    import pydicom

    seg = pydicom.dcmread(seg_path, stop_before_pixels=True) if seg_path is not None else None
    return save_sr(build_dicom_sr(mask, lesions, summary, source_headers(folder, series_uid), model_name, slice_axis, seg, ids), path)
