"""The findings as a DICOM Secondary Capture, for the PACS viewers that show no SEG overlay (most of them).

One RGB image in a new series of the source study: the findings written out (lesion count and volume, locations,
Fazekas and McDonald estimates, the model, research use) above the QC montage of the slices with the most lesion,
outlined. Patient, study and frame of reference come from the source series' own header (highdicom's
``SCImage.from_ref_dataset``), so the picture files with the scan it describes. The text is burned in.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw

from deepwml.imageio import Geometry
from deepwml.inference.findings import findings_lines
from deepwml.inference.lesion_numbers import NUMBERED_LESIONS
from deepwml.inference.lesion_report import CaseSummary
from deepwml.inference.qc import draw_text, font, qc_montage
from deepwml.preprocessing.orientation import canonical_orientation
from deepwml.utils.atomic import atomic_path

#: series number of the findings picture's series (the SEG is 9901; viewers sort series by number)
SC_SERIES_NUMBER = 9902
SC_SERIES_DESCRIPTION = "DeepWML lesion findings (research use)"
#: narrower montages (one or two slices) get this width, so that the findings are not wrapped into a column
MIN_WIDTH = 960
TEXT_SIZE = 16
LINE_PIXELS = 22
MARGIN = 12


def findings_picture(image: np.ndarray, mask: np.ndarray, geometry: Geometry, lines: List[str],
                     ids: Optional[np.ndarray] = None, locations: Optional[Sequence[str]] = None) -> np.ndarray:
    """(rows, cols, 3) uint8: the findings in white on black above the QC montage (outlines as in qc/CASE.png: red, or
    coloured by the ``locations`` of the lesion table), its lesions numbered as the SR's lesion groups (``lesion K`` =
    lesion_id) and the report's table (``ids``: the mask's lesion-id map when the caller has it)."""
    montage = qc_montage(image, mask, geometry, numbered=NUMBERED_LESIONS, ids=ids, locations=locations)
    return with_text_above(np.asarray(montage.convert("RGB")), lines)


def with_text_above(montage: np.ndarray, lines: List[str]) -> np.ndarray:
    """(rows, cols, 3) uint8: ``lines`` in white on black, wrapped to the width, above the RGB ``montage``."""
    width = max(montage.shape[1], MIN_WIDTH)
    text_font = font(TEXT_SIZE)
    measure = ImageDraw.Draw(PILImage.new("L", (1, 1)))
    wrapped = [piece for line in lines for piece in _wrap(line, width - 2 * MARGIN, lambda t: measure.textlength(t, font=text_font))]
    band = 2 * MARGIN + LINE_PIXELS * len(wrapped)
    canvas = PILImage.new("RGB", (width, band + montage.shape[0]), (0, 0, 0))
    canvas.paste(PILImage.fromarray(montage), ((width - montage.shape[1]) // 2, band))
    draw = ImageDraw.Draw(canvas)
    for k, line in enumerate(wrapped):
        draw_text(draw, (MARGIN, MARGIN + LINE_PIXELS * k + LINE_PIXELS // 2), line, (255, 255, 255), text_font, 0.0)
    return np.asarray(canvas)


def _wrap(line: str, pixels: int, length) -> List[str]:
    """Break ``line`` at spaces into pieces no wider than ``pixels`` as the font draws them (a longer word stays whole)."""
    pieces, current = [], ""
    for word in line.split():
        candidate = f"{current} {word}" if current else word
        if current and length(candidate) > pixels:
            pieces.append(current)
            candidate = word
        current = candidate
    return pieces + ([current] if current else [])


def picture_orientation(geometry: Geometry) -> Tuple[str, str]:
    """DICOM Patient Orientation of the montage's panels: toward where columns, then rows, increase (e.g. L, P)."""
    world_s, world_h, world_w = canonical_orientation(geometry).world_axes
    del world_s
    along = {0: "L", 1: "P", 2: "H"}
    return along[world_w], "F" if world_h == 2 else along[world_h]


def build_findings_capture(picture: np.ndarray, header, geometry: Geometry, description: str = SC_SERIES_DESCRIPTION):
    """A highdicom Secondary Capture of ``picture`` in a new series (``description``) of ``header``'s study."""
    import highdicom as hd

    capture = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=header,
        pixel_array=np.ascontiguousarray(picture, dtype=np.uint8),
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        patient_orientation=picture_orientation(geometry),
        series_instance_uid=hd.UID(),
        series_number=SC_SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="DeepWML",
        series_description=description,
    )
    capture.BurnedInAnnotation = "YES"  # the findings are text in the pixels
    capture.ImageComments = "DeepWML, research use only, not a medical device"
    return capture


def write_findings_capture(image: np.ndarray, mask: np.ndarray, geometry: Geometry, summary: CaseSummary, header,
                           path: Path, model_name: str, ids: Optional[np.ndarray] = None,
                           locations: Optional[Sequence[str]] = None) -> Path:
    """Write the findings picture of one case as a DICOM Secondary Capture, atomically (``locations``: the lesion
    table's location classes, which colour the outlines)."""
    picture = findings_picture(image, mask, geometry, findings_lines(summary, model_name), ids, locations)
    return write_capture(picture, header, geometry, path)


def write_capture(picture: np.ndarray, header, geometry: Geometry, path: Path,
                  description: str = SC_SERIES_DESCRIPTION) -> Path:
    """Write an RGB ``picture`` of slices on ``geometry`` as a Secondary Capture in ``header``'s study, atomically."""
    capture = build_findings_capture(picture, header, geometry, description)
    with atomic_path(path, ".dcm") as tmp:
        capture.save_as(tmp)
    return path


def first_header(folder: Path, series_uid: Optional[str] = None):
    """The source series' first header (pydicom, no pixels): patient and study for the capture."""
    import pydicom

    from deepwml.imageio.dicom import chosen_series

    return pydicom.dcmread(chosen_series(folder, series_uid).files[0], stop_before_pixels=True)
