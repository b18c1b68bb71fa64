"""Which series of a DICOM folder to read: a study exported from a PACS holds the FLAIR beside T1, DWI, localisers
and perhaps an earlier DICOM SEG, so the folder's series are described from their headers and the T2-FLAIR is
chosen by its name and sequence timing; when that is not unambiguous the error lists the series to choose from."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from deepwml.utils.errors import ImageError

#: MR image storage SOP classes an acquired stack comes in: classic single-frame, enhanced and legacy-converted
#: multi-frame. Anything else in a study folder (SEG, SR, presentation states, secondary captures) is not a scan.
MR_IMAGE_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.4": "MR",
    "1.2.840.10008.5.1.4.1.1.4.1": "Enhanced MR",
    "1.2.840.10008.5.1.4.1.1.4.4": "Legacy Converted Enhanced MR",
}
#: Secondary Capture image storage classes: some exports store MR slices as these, so an only series of them is read
SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"
#: words vendors put in a T2-FLAIR series' name (GE/Philips 'FLAIR', Siemens 't2_tirm_tra_dark-fluid')
FLAIR_WORDS = re.compile(r"flair|dark[\s_-]?fluid|tirm|fluid[\s_-]?att")
#: T2-FLAIR nulls CSF with an inversion time of about 1.8-2.8 s and is T2-weighted (long echo time); T1-FLAIR and
#: STIR invert at under a second
T2_FLAIR_MIN_TI_MS = 1500.0
T2_FLAIR_MIN_TE_MS = 60.0
NOT_T2_FLAIR_MAX_TI_MS = 1200.0
#: a DICOM UID: digits in dot-separated components (a --series-uid value of another form is a series-name pattern)
UID_FORM = re.compile(r"[0-9]+(\.[0-9]+)+")
#: how series names say a contrast agent was given ('+C', 'post', 'Gd', 'gado', 'contrast', 'CE', German 'KM') ...
CONTRAST_WORDS = re.compile(r"\+\s*(c|gd|km)(?![a-z])|(?<![a-z])(post(gd|c|contrast|gado\w*)?|gd|gado\w*|contrast|ce|km)(?![a-z])")
#: ... and that it was not ('pre-contrast', 'non-contrast', 'no Gd', 'w/o contrast')
NO_CONTRAST_WORDS = re.compile(r"(?<![a-z])(pre|non|no|w/o|without|ohne)[\s_-]*(contrast|gd|gado\w*|c|ce|km)(?![a-z])")


@dataclass(frozen=True)
class SeriesInfo:
    """One series of a DICOM folder as its first header describes it."""

    uid: str
    files: Tuple[str, ...]
    number: Optional[int] = None
    description: str = ""
    protocol: str = ""
    sequence: str = ""
    sop_class: str = ""
    frames: int = 1  # frames of the first file (> 1: an enhanced / multi-frame object)
    derived: bool = False
    plane: str = ""
    thickness_mm: Optional[float] = None
    echo_time_ms: Optional[float] = None
    inversion_time_ms: Optional[float] = None
    study_date: str = ""  # YYYY-MM-DD
    #: Contrast/Bolus Agent (0018,0010) as the header gives it ('' when none is recorded)
    contrast_agent: str = ""

    @property
    def is_mr_image(self) -> bool:
        """An MR image series (a missing SOP Class, as in some old exports, counts as one)."""
        return not self.sop_class or self.sop_class in MR_IMAGE_SOP_CLASSES

    @property
    def n_slices(self) -> int:
        """Slices in the series: its files, or the frames of its one multi-frame file."""
        return self.frames if len(self.files) == 1 else len(self.files)

    @property
    def is_t2_flair(self) -> bool:
        """Named FLAIR (and not T1) with no timing against it, or timed as a T2-FLAIR."""
        text = f"{self.description} {self.protocol} {self.sequence}".lower()
        t1 = re.search(r"(?<![a-z0-9])t1", text) is not None and re.search(r"(?<![a-z0-9])t2", text) is None
        ti, te = self.inversion_time_ms, self.echo_time_ms
        timed_flair = ti is not None and te is not None and ti >= T2_FLAIR_MIN_TI_MS and te >= T2_FLAIR_MIN_TE_MS
        timed_other = ti is not None and ti < NOT_T2_FLAIR_MAX_TI_MS
        if t1 or timed_other:
            return False
        return timed_flair or FLAIR_WORDS.search(text) is not None

    @property
    def with_contrast(self) -> bool:
        """Acquired after a contrast agent: the header records one, or the series' name says so."""
        name = f"{self.description} {self.protocol}".lower()
        return bool(self.contrast_agent) or (CONTRAST_WORDS.search(name) is not None and NO_CONTRAST_WORDS.search(name) is None)

    def label(self) -> str:
        """One line for a message: number, name, slices, thickness, plane, UID."""
        parts = [f"{self.n_slices} slice{'s' if self.n_slices != 1 else ''}"]
        if self.thickness_mm:
            parts.append(f"{self.thickness_mm:g} mm")
        if self.plane:
            parts.append(self.plane)
        if self.derived:
            parts.append("derived")
        if self.with_contrast:
            parts.append("contrast")
        if not self.is_mr_image:
            parts.append(MR_IMAGE_SOP_CLASSES.get(self.sop_class, "not an MR image"))
        name = self.description or self.protocol or "(no description)"
        number = f"series {self.number} " if self.number is not None else "series "
        return f"{number}{name!r} ({', '.join(parts)}): {self.uid}"


def describe_series(series: Dict[str, List[str]]) -> List[SeriesInfo]:
    """Describe each series (UID -> its files) from its first file's header, sorted by series number."""
    infos = [_describe(uid, files) for uid, files in series.items()]
    return sorted(infos, key=lambda s: (s.number is None, s.number or 0, s.uid))


def choose_series(series: Dict[str, List[str]], folder: Path,
                  series_uid: Optional[str] = None) -> Tuple[SeriesInfo, Optional[str]]:
    """The series to read from ``folder`` (the one named, the only one, the only MR image series, else the one
    T2-FLAIR) and, when it was chosen among several, why; otherwise an error listing the candidates."""
    if not series:
        raise ImageError("folder holds no DICOM series", folder)
    if series_uid is not None:
        if series_uid in series:
            return _describe(series_uid, series[series_uid]), None
        if UID_FORM.fullmatch(series_uid):
            raise ImageError(f"no DICOM series {series_uid!r}; found {', '.join(sorted(series))}", folder)
        return _named(series, series_uid, folder)
    if len(series) == 1:
        uid, files = next(iter(series.items()))
        only = _describe(uid, files)
        if not only.is_mr_image and not only.sop_class.startswith(SECONDARY_CAPTURE_PREFIX):
            # a CT, PET or X-ray series (e.g. routed to a DeepWML node by mistake) read as FLAIR gives nonsense
            import pydicom

            kind = pydicom.uid.UID(only.sop_class).name
            raise ImageError(f"folder holds one DICOM series and it is not an MR image ({kind}): {only.label()}; "
                             "DeepWML reads FLAIR MRI", folder)
        return only, None
    infos = describe_series(series)
    images = [s for s in infos if s.is_mr_image]
    if len(images) == 1:
        return images[0], f"the only MR image series of {len(infos)}"
    candidates = [s for s in images if s.is_t2_flair]
    flair, narrowed_by = _best(candidates)
    if len(flair) == 1:
        if len(candidates) == 1:
            return flair[0], f"the only T2-FLAIR of {len(images)} MR image series"
        return flair[0], f"of {len(candidates)} T2-FLAIRs among {len(images)} MR image series, the only {' and '.join(narrowed_by)} one"
    listing = "; ".join(s.label() for s in (flair or images or infos))
    if flair:
        why = f"{len(flair)} of its {len(images)} MR image series look like a T2-FLAIR"
    elif images:
        why = f"none of its {len(images)} MR image series is named or timed as a T2-FLAIR"
    else:
        why = f"none of its {len(infos)} series is an MR image"
    raise ImageError(f"folder holds {len(infos)} DICOM series and {why}; choose one with --series-uid: {listing}", folder)


def _named(series: Dict[str, List[str]], pattern: str, folder: Path) -> Tuple[SeriesInfo, str]:
    """The one MR image series whose description, protocol or sequence name matches ``pattern`` (a regular
    expression, any letter case): how a batch names the series its protocol calls e.g. 'FLAIR_pre'."""
    try:
        named = re.compile(pattern, re.IGNORECASE)
    except re.error as e:
        raise ImageError(f"--series-uid {pattern!r} is neither a UID nor a valid series-name pattern ({e})", folder) from None
    infos = describe_series(series)
    matches = [s for s in infos if s.is_mr_image and named.search(f"{s.description} {s.protocol} {s.sequence}")]
    if len(matches) == 1:
        return matches[0], f"the only MR image series named like {pattern!r}"
    listing = "; ".join(s.label() for s in (matches or infos))
    how = f"{len(matches)} MR image series are named like {pattern!r}" if matches else f"no MR image series is named like {pattern!r}"
    raise ImageError(f"folder holds {len(infos)} DICOM series and {how}: {listing}", folder)


def _best(candidates: Sequence[SeriesInfo]) -> Tuple[List[SeriesInfo], List[str]]:
    """Among T2-FLAIR candidates, the acquired (not derived) ones, then those without contrast agent (what lesion
    models and readers grade WMH on), then the axial ones, each when that leaves any; and the words for the filters
    that narrowed the choice."""
    chosen, narrowed_by = list(candidates), []
    for keep, word in ((lambda s: not s.derived, "acquired (not derived)"), (lambda s: not s.with_contrast, "pre-contrast"),
                       (lambda s: s.plane == "axial", "axial")):
        narrowed = [s for s in chosen if keep(s)]
        if narrowed and len(narrowed) < len(chosen):
            chosen = narrowed
            narrowed_by.append(word)
    return chosen, narrowed_by


def _describe(uid: str, files: Sequence[str]) -> SeriesInfo:
    """A SeriesInfo from the first readable file's header (only the header is read)."""
    import pydicom

    ds = None
    for name in files:
        try:
            ds = pydicom.dcmread(name, stop_before_pixels=True)
            break
        except Exception:  # noqa: BLE001 - an unreadable file is reported when the series is read
            continue
    if ds is None:
        return SeriesInfo(uid, tuple(files))
    image_type = [str(v).upper() for v in _values(_find(ds, "ImageType") or _find(ds, "FrameType"))]
    return SeriesInfo(
        uid=uid,
        files=tuple(files),
        number=_int(ds.get("SeriesNumber")),
        description=str(ds.get("SeriesDescription", "") or "").strip(),
        protocol=str(ds.get("ProtocolName", "") or "").strip(),
        sequence=str(ds.get("SequenceName", "") or ds.get("PulseSequenceName", "") or "").strip(),
        sop_class=str(ds.get("SOPClassUID", "") or ""),
        frames=_int(ds.get("NumberOfFrames")) or 1,
        derived=bool(image_type) and image_type[0] == "DERIVED",
        plane=_plane(_find(ds, "ImageOrientationPatient")),
        thickness_mm=_float(_find(ds, "SliceThickness")),
        echo_time_ms=_float(_find(ds, "EchoTime") or _find(ds, "EffectiveEchoTime")),
        inversion_time_ms=_float(_find(ds, "InversionTime") or _first(_find(ds, "InversionTimes"))),
        study_date=_date(ds.get("StudyDate")),
        contrast_agent=str(ds.get("ContrastBolusAgent", "") or "").strip(),
    )


def _date(value) -> str:
    """A DICOM DA (YYYYMMDD) as YYYY-MM-DD; '' when absent or malformed."""
    text = str(value or "").strip()
    return f"{text[:4]}-{text[4:6]}-{text[6:8]}" if re.fullmatch(r"\d{8}", text) else ""


def _find(ds, keyword: str):
    """A header value by keyword: at the top level, else in the first item of a (functional group) sequence."""
    if keyword in ds:
        return ds.get(keyword)
    for group in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        items = ds.get(group)
        if not items:
            continue
        for element in items[0]:
            if element.VR == "SQ" and element.value and keyword in element.value[0]:
                return element.value[0].get(keyword)
    return None


def _values(value) -> List:
    if value is None:
        return []
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        return [value]
    return list(value)


def _first(value):
    values = _values(value)
    return values[0] if values else None


def _float(value) -> Optional[float]:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if np.isfinite(out) else None


def _int(value) -> Optional[int]:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _plane(orientation) -> str:
    """'axial', 'coronal' or 'sagittal' from Image Orientation (Patient) when the slice normal is within 30 degrees
    of a patient axis, else 'oblique'; '' without one."""
    try:
        cosines = np.asarray([float(v) for v in orientation], dtype=float)
    except (TypeError, ValueError):
        return ""
    if cosines.shape != (6,) or not np.all(np.isfinite(cosines)):
        return ""
    normal = np.cross(cosines[:3], cosines[3:])
    length = float(np.linalg.norm(normal))
    if length == 0:
        return ""
    normal = np.abs(normal) / length
    axis = int(np.argmax(normal))
    if normal[axis] < np.cos(np.deg2rad(30)):
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]
