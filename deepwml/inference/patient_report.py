"""The per-patient report: one self-contained HTML page per case (OUT/report/CASE.html, pictures inlined as base64
PNG, no script, no external resource), and a PDF of it when a headless Chromium is on PATH (deepwml.inference.pdf_printer).

The page is a list of sections; the lesion table shows the lesion table's known columns with units and formats
and any further column it is given after them, so later additions (lesion location classes, a Fazekas section)
go in without changing this module's structure.
"""
from __future__ import annotations

import base64
import html
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

import deepwml
from deepwml.evaluation.report import STYLE as EVALUATION_STYLE
from deepwml.evaluation.report import cards_html
from deepwml.evaluation.tables import Table
from deepwml.imageio import Geometry
from deepwml.anatomy.fazekas import DEEP_CONFLUENCE_MM, DEEP_LARGE_MM, PV_HALO_MM
from deepwml.anatomy.location import (DISTANCE_MM, DIS_MIN_LONG_AXIS_MM, FAR_FROM_VENTRICLES_COLUMN, LOCATIONS,
                                     NEAR_VENTRICLES_COLUMN, REACH_MM)
from deepwml.anatomy.volumes import BRAIN_VOLUME_COLUMN
from deepwml.inference.findings import brain_sentence
from deepwml.inference.lesion_contrast import RING_MM
from deepwml.inference.lesion_numbers import NUMBERED_LESIONS
from deepwml.inference.lesion_report import SKULL_STRIP_COLUMN, CaseSummary
from deepwml.inference.pdf_printer import PdfPrinter, headless_command
from deepwml.inference.skull_strip import ALREADY_STRIPPED, NO_BRAIN, STRIPPED
from deepwml.utils.atomic import write_text
from deepwml.utils.errors import DeepWMLError

if TYPE_CHECKING:
    import pandas as pd
    from deepwml.inference.report_images import Panel

RESEARCH_NOTICE = (
    "Research use only. DeepWML is not a medical device: it is not cleared or approved for diagnosis, and its "
    "masks, volumes and confidences must not be used for clinical decisions without review by a qualified reader."
)

#: (column, header, format) of the lesion table, in this order; other columns follow with their own names
LESION_FORMATS: Sequence[Tuple[str, str, str]] = (
    ("lesion_id", "Lesion", "{:d}"),
    ("volume_ml", "Volume (ml)", "{:.3f}"),
    ("voxels", "Voxels", "{:d}"),
    ("slices", "Slices", "{}"),
    ("centroid_mm", "Centroid x, y, z (mm, LPS)", "{}"),
    ("mean_probability", "Mean probability", "{:.2f}"),
    ("confidence", "Confidence", "{:.2f}"),
    ("contrast", "Contrast", "{:.2f}"),
)
#: lesion-table columns shown combined (slices, centroid) or not at all
_FOLDED = {"first_slice", "last_slice", "centroid_x_mm", "centroid_y_mm", "centroid_z_mm"}
#: more lesions than this are summed up in one line below the table
MAX_TABLE_ROWS = NUMBERED_LESIONS  # the pictures number the lesions the table lists
PLANE_NAMES = {0: "sagittal", 1: "coronal", 2: "axial"}

#: the evaluation report's style, narrowed for one patient, plus the notice, picture grid and print rules
STYLE = EVALUATION_STYLE + """
main { max-width: 1000px; padding: 20px 28px 36px; }
.notice { border: 2px solid #bf3989; background: #fff0f7; color: #6e1140; padding: 8px 12px; border-radius: 6px; font-weight: 600; }
.panels { display: grid; grid-template-columns: repeat(auto-fill, minmax(180px, 1fr)); gap: 6px; background: #000; padding: 6px; }
.panels figure { margin: 0; position: relative; break-inside: avoid; }
.panels img { width: 100%; display: block; border: 0; }
.panels figcaption { position: absolute; top: 2px; left: 4px; color: #fff; font-size: 0.75em; text-shadow: 0 0 2px #000; }
.legend { font-size: 0.85em; color: #57606a; margin: 6px 0; }
.swatch { display: inline-block; width: 14px; height: 10px; vertical-align: middle; margin: 0 4px 0 10px; border: 1px solid #999; }
dl.kv { display: grid; grid-template-columns: max-content auto; gap: 2px 14px; font-size: 0.9em; }
dl.kv dt { font-weight: 600; } dl.kv dd { margin: 0; }
pre.card-text { white-space: pre-wrap; font-size: 0.8em; background: #f6f8fa; border: 1px solid #d0d7de; padding: 8px; max-height: 420px; overflow: auto; }
.findings { border: 1px solid #d0d7de; background: #f6f8fa; padding: 6px 12px; border-radius: 6px; }
.findings p { margin: 4px 0; }
.panels, .notice, .swatch { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
@media print { body { background: #fff; } main { max-width: none; padding: 0; } pre.card-text { max-height: none; } }
"""


@dataclass(frozen=True)
class ModelInfo:
    """Which model made the prediction, as the report names it."""

    folder: Path
    dataset: str
    plan: str
    folds: Tuple[str, ...]
    checkpoint: str
    tta: bool
    threshold: float
    card: Optional[str] = None
    #: the probability temperatures below / above the threshold (deepwml_calibrate); (1, 1): not calibrated
    temperatures: Tuple[float, float] = (1.0, 1.0)
    #: lesions smaller than this (ml) were dropped from the mask (0: none)
    min_lesion_ml: float = 0.0
    #: lesions whose most probable voxel stayed under this were dropped from the mask (0: none)
    min_lesion_peak: float = 0.0
    #: lesions less than this many times as bright as the tissue around them were dropped from the mask (0: none)
    min_lesion_contrast: float = 0.0
    #: with it: faint lesions were dropped only when also under this many ring spreads above their ring (0: ratio alone)
    min_lesion_spread: float = 0.0
    #: the lesion model saw only the anatomy model's brain (deepwml_predict --skull-strip)
    skull_strip: bool = False
    #: lesions with no voxel in the anatomy model's brain were dropped from the mask (deepwml.inference.outside_brain)
    outside_brain_dropped: bool = False
    #: lesions in the anatomy model's cortex under this many times the cortex's median intensity were dropped (0: none;
    #: deepwml.inference.cortex_contrast)
    cortex_contrast: float = 0.0
    #: the mask settings come (at least in part) from the model's stored postprocessing (deepwml_find_postprocessing)
    postprocessing: bool = False

    @classmethod
    def describe(cls, folder: Path, plan: str, folds: Sequence[str], checkpoint: str, tta: bool, threshold: float,
                 min_lesion_ml: float = 0.0, min_lesion_peak: float = 0.0, skull_strip: bool = False) -> "ModelInfo":
        """Model facts plus its MODEL_CARD.md when the model folder holds one."""
        card_path = Path(folder) / "MODEL_CARD.md"
        card = card_path.read_text(encoding="utf-8", errors="replace") if card_path.is_file() else None
        return cls(Path(folder), Path(folder).parent.name, plan, tuple(str(f) for f in folds), checkpoint, tta, threshold, card,
                   min_lesion_ml=min_lesion_ml, min_lesion_peak=min_lesion_peak, skull_strip=skull_strip)


def _e(text: object) -> str:
    """HTML-escaped text."""
    return html.escape(str(text))


def _cell(column: str, value: object, fmt: str) -> str:
    """One formatted table cell; '–' for missing values."""
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    try:
        if "d}" in fmt:
            return fmt.format(int(value))  # type: ignore[arg-type]
        return fmt.format(value)
    except (TypeError, ValueError):
        return str(value)


def lesion_table_html(lesions: pd.DataFrame) -> str:
    """The lesion table: known columns formatted (slice span and centroid folded), any other column after them."""
    frame = lesions.copy()
    if {"first_slice", "last_slice"} <= set(frame.columns):
        frame["slices"] = [f"{a}" if a == b else f"{a}–{b}" for a, b in zip(frame["first_slice"], frame["last_slice"])]
    if {"centroid_x_mm", "centroid_y_mm", "centroid_z_mm"} <= set(frame.columns):
        frame["centroid_mm"] = [f"{x:.1f}, {y:.1f}, {z:.1f}" for x, y, z in frame[["centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]].to_numpy()]
    known = [(c, h, f) for c, h, f in LESION_FORMATS if c in frame.columns]
    known_names = {c for c, _, _ in LESION_FORMATS} | _FOLDED
    extra = [(c, c.replace("_", " "), "{}") for c in lesions.columns if c not in known_names]
    columns = known + extra
    shown = frame.head(MAX_TABLE_ROWS)
    rows = [[_cell(c, row[c], f) for c, _, f in columns] for _, row in shown.iterrows()]
    note = "Lesions are 3D connected components (26-connectivity), largest first; slices are 0-based along the input's slice axis."
    if "confidence" in frame.columns:
        note += " Confidence = 1 − mean voxel uncertainty (binary entropy of the probability): 1 = certain, 0 = coin flip."
    if "contrast" in frame.columns:
        note += (f" Contrast = the lesion's mean intensity over the median of the tissue within {RING_MM:g} mm of it in-plane"
                 " on its slices (– = none around it).")
    if "location" in frame.columns:
        note += (f" Distances are between voxel centres in 3D on the scan's grid; – = farther than {DISTANCE_MM:g} mm."
                 f" Periventricular extent: how far a periventricular lesion reaches from the ventricle in-plane (capped at {REACH_MM:g} mm).")
    if len(frame) > MAX_TABLE_ROWS:
        rest = frame.iloc[MAX_TABLE_ROWS:]
        note += f" {len(rest)} smaller lesions ({rest['volume_ml'].sum():.3f} ml) are not listed; CASE_lesions.csv has all."
    if not rows:
        return '<p class="note">No lesion found.</p>'
    return Table("One row per lesion (CASE_lesions.csv)", [h for _, h, _ in columns], rows, note=note, key="lesions").to_html()


#: what each Fazekas grade stands for, as the report names it
FAZEKAS_PV_TEXT = ("absent", "caps or pencil-thin lining", "smooth halo", "irregular, extending into the deep white matter")
FAZEKAS_DEEP_TEXT = ("absent", "punctate foci", "beginning confluence", "large confluent areas")


def volume_rows(a: Dict[str, Any]) -> List[Tuple[str, str]]:
    """The report's rows of lesion volume per location and by the 10 mm rule (none for figures of an older run)."""
    if NEAR_VENTRICLES_COLUMN not in a:
        return []
    per_class = ", ".join(f"{name} {a[f'{name}_volume_ml']:.2f}" for name in LOCATIONS if a[f"{name}_count"])
    rows = [("Lesion volume per location (ml)", per_class or "no lesion"),
            ("Supratentorial lesion volume within / beyond 10 mm of the ventricles (ml)",
             f"{a[NEAR_VENTRICLES_COLUMN]:.2f} / {a[FAR_FROM_VENTRICLES_COLUMN]:.2f}")]
    if BRAIN_VOLUME_COLUMN in a:  # figures of an older run have no brain volume
        rows.append(("Brain, ventricles and lesion share (scanned slices)", brain_sentence(a)))
    return rows


def anatomy_html(summary: CaseSummary) -> str:
    """Lesions per location, the McDonald 2017 brain regions and the Fazekas estimate, from an anatomy map."""
    a = summary.anatomy
    pv, deep = int(a["fazekas_periventricular"]), int(a["fazekas_deep"])
    regions = a["mcdonald_dis_region_names"].replace(";", ", ").replace("_", "/") or "none"
    # a periventricular lesion's part beyond REACH_MM grades both scales when it is large: say so, or a grade 3 beside
    # a small "largest deep lesion" reads as a contradiction
    part = float(a.get("fazekas_pv_deep_part_mm") or 0.0)
    joined = (f"; part of a periventricular lesion beyond {REACH_MM:g} mm from the ventricles {part:.1f} mm across"
              if part >= DEEP_LARGE_MM else "")
    rows = [
        ("Lesions per location", ", ".join(f"{name} {a[f'{name}_count']}" for name in LOCATIONS if a[f"{name}_count"])
         or "no lesion"),
        *volume_rows(a),
        ("McDonald 2017 brain regions with a lesion ≥ 3 mm",
         f"{a['mcdonald_dis_regions']} of 3 ({regions}); periventricular {a['mcdonald_periventricular']}, "
         f"cortical/juxtacortical {a['mcdonald_cortical_juxtacortical']}, infratentorial {a['mcdonald_infratentorial']}; "
         "spinal cord not imaged"),
        ("Fazekas periventricular (estimate)",
         f"{pv}: {FAZEKAS_PV_TEXT[pv]} (mean lining {a['fazekas_pv_lining_mm']:.1f} mm, halo from {PV_HALO_MM:g} mm{joined})"),
        ("Fazekas deep white matter (estimate)",
         f"{deep}: {FAZEKAS_DEEP_TEXT[deep]} (largest deep lesion {a['fazekas_deep_long_axis_mm']:.1f} mm{joined}; "
         f"confluence from {DEEP_CONFLUENCE_MM:g} mm, large from {DEEP_LARGE_MM:g} mm)"),
    ]  # fmt: skip
    note = ('<p class="note">Estimated from the lesion mask and an anatomy map by fixed rules (docs/prediction.md) for '
            "research: not a diagnosis. Whether lesions are typical of MS, dissemination in time and the spinal cord "
            "are not assessed; 2D slices 3-8 mm thick hide contacts across slices.</p>")
    return _key_values(rows) + note


FINDINGS_HEADING = "Findings (draft for the reader)"


def findings_html(lines: Sequence[str]) -> str:
    """The findings as one block of plain sentences, to select and copy into a report once checked on the pictures."""
    text = "".join(f"<p>{_e(line if line.endswith('.') else line + '.')}</p>" for line in lines)
    return (f'<div class="findings">{text}</div><p class="note">Automatic figures for a reader to check against the '
            "pictures and the lesion table below, and to copy into a report only when they agree.</p>")


def _hex(rgb: Sequence[float]) -> str:
    """CSS colour of an RGB triple in 0..255."""
    return "#" + "".join(f"{int(round(v)):02x}" for v in rgb)


def panels_html(panels: Sequence["Panel"], with_uncertainty: bool, locations: Optional[Sequence[str]] = None) -> str:
    """The slice pictures as a grid with their slice numbers, and the colour legend (``locations``: the lesion table's
    classes, whose colours outline the lesions; None: one red outline)."""
    from deepwml.inference.qc import LOCATION_COLOURS
    from deepwml.inference.report_images import NUMBER_RGB, UNCERTAINTY_RGB

    figures = "".join(
        f'<figure><img alt="slice {p.slice_number}" src="data:image/png;base64,{base64.b64encode(p.png).decode("ascii")}">'
        f"<figcaption>slice {p.slice_number}</figcaption></figure>"
        for p in panels
    )
    if locations:
        shown = [name for name in LOCATION_COLOURS if name in set(map(str, locations))]
        legend = "lesion outlines by location: " + "".join(
            f'<span class="swatch" style="background:{_hex(LOCATION_COLOURS[name])}"></span>{name}' for name in shown)
    else:
        legend = '<span class="swatch" style="background:#ff2e2e"></span>lesion mask outline'
    if any(getattr(p, "numbered", False) for p in panels):
        legend += (f'<span class="swatch" style="background:{_hex(NUMBER_RGB)};border:1px solid #000"></span>lesion number: '
                   f"its row in the lesion table (the {MAX_TABLE_ROWS} largest lesions are numbered)")
    if with_uncertainty:
        legend += (f'<span class="swatch" style="background:linear-gradient(90deg,#333,{_hex(UNCERTAINTY_RGB * 255)})"></span>'
                   "uncertainty (blue, brighter = less sure; below 0.1 not shown)")
    return (f'<p class="legend">Radiological view: patient right on the left of each picture. {legend}</p>'
            f'<div class="panels">{figures}</div>')


def plane_name(geometry: Geometry) -> str:
    """'axial', 'coronal' or 'sagittal': the world axis nearest the slice normal."""
    normal = geometry.direction_matrix[:, geometry.slice_axis]
    return PLANE_NAMES[int(np.argmax(np.abs(normal)))]


def _key_values(pairs: Sequence[Tuple[str, str]]) -> str:
    """A definition list of label/value pairs."""
    return '<dl class="kv">' + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in pairs) + "</dl>"


def input_html(source: Path, geometry: Geometry, series: Optional[str] = None) -> str:
    """Where the scan came from (``series``: the DICOM series read, for a DICOM input) and its geometry."""
    spacing = geometry.spacing
    inplane = geometry.inplane_spacing
    return _key_values([
        ("Source", str(source)),
        *([("DICOM series", series)] if series else []),
        ("Slices", f"{geometry.n_slices} {plane_name(geometry)}"),
        ("Slice thickness (spacing between slices)", f"{geometry.slice_thickness:.2f} mm"),
        ("In-plane pixel size", f"{inplane[0]:.3f} × {inplane[1]:.3f} mm"),
        ("Matrix (x × y × z)", " × ".join(str(int(s)) for s in geometry.size)),
        ("Voxel spacing (x, y, z)", ", ".join(f"{s:.3f}" for s in spacing) + " mm"),
    ])  # fmt: skip


#: what the report says the lesion model saw, by summary.csv's lesion_model_input (deepwml.inference.skull_strip)
INPUT_SEGMENTED = {
    STRIPPED: "the brain the anatomy model finds, the rest blanked (skull stripping; --no-skull-strip shows the whole scan)",
    ALREADY_STRIPPED: "the scan as given: it was skull-stripped already",
    NO_BRAIN: "the whole scan as given: the anatomy model found no brain to strip it to",
}


def model_html(model: ModelInfo, lesion_model_input: Optional[str] = None, lesions_from: str = "") -> str:
    """The model that made the prediction, with its model card when it has one; ``lesion_model_input``: the case's
    summary.csv ``lesion_model_input`` (what skull stripping did), when the run stripped; ``lesions_from``: its
    ``lesions_from`` (a reader's reviewed mask, whose lesions the page shows instead of the model's)."""
    reviewed = [("Lesion outlines", f"the {lesions_from} as drawn: the mask threshold and lesion filters below were not "
                                    "applied; the model's probabilities give the lesions' mean probability (low for a lesion it did "
                                    "not find) and confidence")] if lesions_from else []
    rows = [*reviewed,
        ("Model", f"{model.dataset} / {model.plan}"),
        ("Folder", str(model.folder)),
        ("Folds (ensemble)", ", ".join(model.folds) + f" ({model.checkpoint} checkpoint)"),
        ("Left-right flip TTA", "yes" if model.tta else "no"),
        ("Mask threshold", f"probability ≥ {model.threshold:g}"),
        ("Postprocessing", "threshold and lesion filters chosen for this model on labelled scans it did not learn from "
                           "(deepwml_find_postprocessing)" if model.postprocessing else "as the plan and the run's options give it"),
        ("Input segmented", INPUT_SEGMENTED.get(lesion_model_input or "", "the brain the anatomy model finds, the rest "
                                                "blanked (a scan stripped already as given)")
         if model.skull_strip else "the whole scan as given"),
        ("Lesions outside the brain", "dropped (no voxel in the brain the anatomy model finds)"
         if model.outside_brain_dropped else "kept"),
        ("Lesions in or against the cortex", f"kept when at least {model.cortex_contrast:g} × the cortex's median intensity "
                                             "(fainter ones dropped as bright normal cortex)" if model.cortex_contrast > 0 else "kept"),
        ("Smallest lesion kept", f"{model.min_lesion_ml:g} ml (smaller ones dropped)" if model.min_lesion_ml > 0 else "any size"),
        ("Least certain lesion kept", f"peak probability ≥ {model.min_lesion_peak:g} (lesions without such a core dropped)"
         if model.min_lesion_peak > 0 else "any"),
        ("Faintest lesion kept", (f"{model.min_lesion_contrast:g} × the tissue around it (fainter ones dropped"
                                  + (f" unless {model.min_lesion_spread:g} ring spreads above it" if model.min_lesion_spread > 0
                                     else "") + ")") if model.min_lesion_contrast > 0 else "any"),
        ("Probabilities", "calibrated on labelled scans (deepwml_calibrate; temperatures {:.3g} below, {:.3g} above the "
                          "threshold)".format(*model.temperatures) if model.temperatures != (1.0, 1.0)
         else "as the network gives them (not calibrated: confidence may overstate certainty)"),
        ("DeepWML version", deepwml.__version__),
    ]
    body = _key_values(rows)
    if model.card:
        body += f"<h3>Model card (MODEL_CARD.md)</h3><pre class=\"card-text\">{_e(model.card)}</pre>"
    else:
        body += '<p class="note">The model folder holds no MODEL_CARD.md: what it was trained on is not recorded here.</p>'
    return body


def build_patient_report(
    summary: CaseSummary,
    lesions: pd.DataFrame,
    panels: Sequence["Panel"],
    geometry: Geometry,
    source: Path,
    model: ModelInfo,
    with_uncertainty: bool,
    extra_sections: Sequence[Tuple[str, str]] = (),
    series: Optional[str] = None,
    findings: Sequence[str] = (),
) -> str:
    """The whole page as a string; ``extra_sections`` are (heading, HTML body) pairs placed right after the totals;
    ``series`` describes the DICOM series read; ``findings`` (deepwml.inference.findings) open the sections."""
    cards = [
        ("total lesion volume (ml)", f"{summary.total_lesion_volume_ml:.2f}"),
        ("lesions", str(summary.lesion_count)),
    ]
    if summary.lesion_count and "long_axis_mm" in lesions.columns:
        # the size McDonald 2017 counts; at 3-8 mm slices many of a model's one-voxel lesions are noise a reader skips
        measurable = int((lesions["long_axis_mm"] >= DIS_MIN_LONG_AXIS_MM).sum())
        cards.append((f"lesions of {DIS_MIN_LONG_AXIS_MM:g} mm or more (long axis)", str(measurable)))
    cards.append(("slices with lesion", f"{summary.slices_with_lesion} of {summary.slices}"))
    if summary.lesion_count and "confidence" in lesions.columns:
        weights = lesions["volume_ml"].to_numpy()
        cards.append(("volume-weighted lesion confidence", f"{float(np.average(lesions['confidence'], weights=weights)):.2f}"))
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    heading = "Slices with lesions" if summary.lesion_count else "Slices (no lesion found)"
    from deepwml.inference.qc import table_locations

    pictures = panels_html(panels, with_uncertainty, table_locations(lesions))
    if summary.lesion_count and len(panels) < summary.slices_with_lesion:
        pictures += (f'<p class="note">{len(panels)} of the {summary.slices_with_lesion} slices with lesion are shown: '
                     "those with the largest lesion area.</p>")
    # summaries a later version adds (e.g. a Fazekas estimate) come first, then pictures, then the table
    located = [("Lesion locations and Fazekas estimate", anatomy_html(summary))] if summary.anatomy else []
    written = [(FINDINGS_HEADING, findings_html(findings))] if findings else []
    sections: List[Tuple[str, str]] = [
        *written,
        *located,
        *extra_sections,
        (heading + (" and uncertainty" if with_uncertainty else ""), pictures),
        ("Lesions", lesion_table_html(lesions)),
        ("Input scan", input_html(source, geometry, series)),
        ("Model", model_html(model, summary.anatomy.get(SKULL_STRIP_COLUMN), summary.lesions_from)),
    ]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>DeepWML report: {_e(summary.case_id)}</title>",
        f"<style>{STYLE}</style></head><body><main>",
        f"<h1>White-matter lesion report: {_e(summary.case_id)}</h1>",
        *([f'<p class="notice">Lesions as reviewed: the {_e(summary.lesions_from)}, not the model\'s own mask.</p>']
          if summary.lesions_from else []),
        f'<p class="meta">DeepWML {_e(deepwml.__version__)}, {_e(created)}</p>',
        f'<p class="notice">{_e(RESEARCH_NOTICE)}</p>',
        cards_html(cards),
    ]
    if summary.acquisition_warning:
        parts.append(f'<p class="notice">This scan is {_e(summary.acquisition_warning)}.</p>')
    parts += [f"<h2>{_e(h)}</h2>{body}" for h, body in sections]
    parts.append(f'<p class="notice">{_e(RESEARCH_NOTICE)}</p></main></body></html>')
    return "\n".join(parts) + "\n"


def find_pdf_converter() -> Optional[str]:
    """A headless-capable Chromium on PATH, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _run_headless(browser: str, arguments: List[str], target: Path, timeout: float) -> None:
    """Run headless Chromium with ``arguments``; any failure is an error naming ``target``."""
    with tempfile.TemporaryDirectory(prefix="deepwml-chromium-") as profile:
        try:
            subprocess.run(headless_command(browser, profile) + arguments, check=True, capture_output=True, timeout=timeout)
        except (OSError, subprocess.SubprocessError) as e:
            raise DeepWMLError(f"{browser} failed ({type(e).__name__})", target) from None


def write_pdf(html_path: Path, pdf_path: Path, browser: str, timeout: float = 120.0) -> Path:
    """Print ``html_path`` to ``pdf_path`` (atomically) with a headless Chromium started for this page alone;
    a run printing many pages keeps one :class:`~deepwml.inference.pdf_printer.PdfPrinter` instead."""
    with PdfPrinter(browser, timeout) as printer:
        return printer.print_pdf(html_path, pdf_path)


def screenshot(html_path: Path, png_path: Path, browser: str, width: int, height: int, timeout: float = 120.0) -> Path:
    """A PNG of ``html_path`` as headless Chromium renders it in a ``width`` x ``height`` window (tests look at pages)."""
    _run_headless(browser, [f"--screenshot={png_path}", f"--window-size={width},{height}", Path(html_path).resolve().as_uri()], png_path, timeout)
    return png_path


def write_patient_report(path: Path, page: str) -> Path:
    """Write the page atomically."""
    write_text(path, page)
    return path
