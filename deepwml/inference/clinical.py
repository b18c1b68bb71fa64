"""The per-case outputs of issue #14 in one call from the prediction pipeline's write step, on request: the
uncertainty map, the per-patient report (HTML, PDF) and the DICOM SEG (lesion confidence is a lesion-table column).

Everything here is written before the mask, which marks a case as done, so a case interrupted half-way is redone.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np

from deepwml.imageio import Image, write_image
from deepwml.inference.confidence import quantised, uncertainty_map
from deepwml.inference.inputs import InputCase
from deepwml.inference.lesion_report import CaseSummary
from deepwml.inference.outputs import CaseOutputs, ExtraOutputs

if TYPE_CHECKING:
    import pandas as pd
    from deepwml.inference.patient_report import ModelInfo
    from deepwml.inference.pdf_printer import PdfPrinter


@dataclass(frozen=True)
class ClinicalOptions:
    """What the run writes besides the standard outputs, and what the report says about the model."""

    extras: ExtraOutputs = field(default_factory=ExtraOutputs)
    model: Optional["ModelInfo"] = None  # needed for the report and the SEG's model name
    pdf_printer: Optional["PdfPrinter"] = None  # the run's one browser, when the PDF is asked for and Chromium was found
    series_uid: Optional[str] = None


def write_clinical_outputs(
    case: InputCase,
    image: Image,
    probs: np.ndarray,
    mask: np.ndarray,
    lesions: pd.DataFrame,
    summary: CaseSummary,
    outputs: CaseOutputs,
    options: ClinicalOptions,
    ids: Optional[np.ndarray] = None,
) -> None:
    """Write the requested extra outputs of one case (``lesions``: its lesion table, confidence columns included;
    ``ids``: the mask's lesion-id map, labelled once by the caller for every output that numbers the lesions)."""
    geometry = image.geometry
    extras = options.extras
    uncertainty = uncertainty_map(probs) if (extras.uncertainty or extras.report) else None
    if extras.uncertainty:
        write_image(quantised(uncertainty), geometry, outputs.uncertainty)
    model_name = getattr(options.model, "plan", "") or "DeepWML"  # as the DICOM objects name the model
    located = None  # the lesion table's location classes, which the SEG, the findings picture and the report colour by
    if extras.dicom_seg or extras.dicom_capture or extras.report:
        from deepwml.inference.qc import table_locations

        located = table_locations(lesions)
    if extras.dicom_seg and outputs.dicom_seg is not None:
        from deepwml.inference.dicom_seg import location_label_map, write_dicom_seg
        from deepwml.inference.lesion_ids import lesion_ids_of

        seg_mask, classes = mask, []
        if located:  # with an anatomy map, a segment per location class
            seg_mask, classes = location_label_map(lesion_ids_of(mask, geometry.slice_axis_numpy, ids), located)
        reviewed = bool(summary.lesions_from)  # a reader's mask (--lesion-masks): its segments are not automatic
        write_dicom_seg(seg_mask, case.source, outputs.dicom_seg, f"DeepWML {model_name}", options.series_uid,
                        locations=classes, reviewed=reviewed,
                        series_description=f"DeepWML white matter lesions{', reviewed' if reviewed else ''} (research use)")
    if extras.dicom_sr and outputs.dicom_sr is not None:
        from deepwml.inference.dicom_sr import write_dicom_sr

        seg = outputs.dicom_seg if extras.dicom_seg else None  # written just above: the SR references its segment
        write_dicom_sr(mask, lesions, summary, case.source, outputs.dicom_sr, f"DeepWML {model_name}", options.series_uid,
                       geometry.slice_axis_numpy, seg, ids)
    if extras.dicom_capture and outputs.dicom_capture is not None:
        from deepwml.inference.dicom_capture import first_header, write_findings_capture

        write_findings_capture(image.array, mask, geometry, summary, first_header(case.source, options.series_uid),
                               outputs.dicom_capture, f"model {model_name}", ids, located)
    if extras.report:
        from deepwml.inference.findings import findings_lines
        from deepwml.inference.patient_report import MAX_TABLE_ROWS, build_patient_report, write_patient_report
        from deepwml.inference.report_images import report_panels

        # the lesions the page's table lists are numbered on its pictures
        panels = report_panels(image.array, mask, geometry, uncertainty, numbered=MAX_TABLE_ROWS, ids=ids,
                               locations=located)
        # a pseudonymised case's page names neither its file nor its series (whose label holds the study date)
        source, series = (Path("pseudonymised input"), None) if case.pseudonymised else (Path(case.shown_source), _series_label(case, options.series_uid))
        page = build_patient_report(summary, lesions, panels, geometry, source, options.model, uncertainty is not None,
                                    series=series, findings=findings_lines(summary, f"model {model_name}"))
        write_patient_report(outputs.report_html, page)
        if extras.pdf and options.pdf_printer is not None:
            options.pdf_printer.print_pdf(outputs.report_html, outputs.report_pdf)


def _series_label(case: InputCase, series_uid: Optional[str]) -> Optional[str]:
    """For a DICOM input, the series read (number, name, slices, thickness, plane, UID) and its study date."""
    if case.kind != "dicom":
        return None
    from deepwml.imageio.dicom import chosen_series

    info = chosen_series(case.source, series_uid)
    return info.label() + (f"; study date {info.study_date}" if info.study_date else "")
