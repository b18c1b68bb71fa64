"""change.html: the comparison as one self-contained page for the reader (the findings sentence, the counts, the
change picture inlined as base64 PNG, the new and enlarging lesions, the alignment); no script, no external resource."""
from __future__ import annotations

import base64
import html
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence

import deepwml
from deepwml.evaluation.report import cards_html
from deepwml.evaluation.tables import Table
from deepwml.inference.patient_report import RESEARCH_NOTICE, STYLE
from deepwml.longitudinal.change import ENLARGING, NEW

if TYPE_CHECKING:
    import pandas as pd

#: (column, header, format) of the table of new and enlarging lesions
COLUMNS = (("lesion_id", "Lesion", "{:d}"), ("status", "Status", "{}"), ("counted", "Counted", "{}"),
           ("volume_ml", "Volume (ml)", "{:.3f}"), ("group_baseline_volume_ml", "Baseline volume (ml)", "{:.3f}"),
           ("long_axis_mm", "Long axis (mm)", "{:.1f}"), ("location", "Location", "{}"),
           ("signal_change", "Signal change", "{:+.2f}"))


def _e(text: object) -> str:
    return html.escape(str(text))


def _cell(value: object, fmt: str) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    if isinstance(value, bool) or str(value) in ("True", "False"):
        return "yes" if str(value) == "True" else "no"
    try:
        return fmt.format(int(value)) if "d}" in fmt else fmt.format(value)
    except (TypeError, ValueError):
        return str(value)


def active_lesions_html(followup: "pd.DataFrame") -> str:
    """The follow-up's new and enlarging lesions, counted ones first."""
    active = followup[followup["status"].isin([NEW, ENLARGING])]
    if active.empty:
        return '<p class="note">No new or enlarging lesion.</p>'
    active = active.sort_values(["counted", "volume_ml"], ascending=[False, False], kind="stable")
    columns = [(c, h, f) for c, h, f in COLUMNS if c in active.columns]
    rows = [[_cell(row[c], f) for c, _, f in columns] for _, row in active.iterrows()]
    note = ("Lesion numbers are those of the follow-up's lesion table. A new lesion counts from its long axis (MAGNIMS) "
            "and when the follow-up is brighter there than the aligned baseline was (signal change, in units of each "
            "scan's median over the head); followup_lesions_change.csv lists every lesion.")
    return Table("New and enlarging lesions", [h for _, h, _ in columns], rows, note=note, key="active").to_html()


def build_change_report(summary: Dict[str, object], followup: "pd.DataFrame", picture: Optional[Path],
                        warnings: Sequence[str]) -> str:
    """The whole page as a string; ``summary`` is change.json's content."""
    change = summary["volume_change_percent"]
    cards = [
        ("new lesions", str(summary["new_lesions"])),
        ("enlarging lesions", str(summary["enlarging_lesions"])),
        ("baseline lesions no longer seen", str(summary["resolved_baseline_lesions"])),
        ("lesion volume (ml), baseline → follow-up", f"{summary['baseline_volume_ml']:.2f} → {summary['followup_volume_ml']:.2f}"),
    ]
    if change is not None:
        cards.append(("volume change", f"{change:+.1f} %"))
    inputs, registration = summary["inputs"], summary["registration"]
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    sections: List[str] = [f'<p class="findings"><b>{_e(summary["findings"])}</b></p>', cards_html(cards)]
    sections += [f'<p class="notice">Warning: {_e(w)}.</p>' for w in warnings]
    if picture is not None and picture.is_file():
        data = base64.b64encode(picture.read_bytes()).decode("ascii")
        sections.append("<h2>Slices with the most change</h2>"
                        f'<img src="data:image/png;base64,{data}" alt="aligned baseline beside the follow-up" style="max-width:100%">')
    sections.append("<h2>New and enlarging lesions</h2>" + active_lesions_html(followup))
    sections.append(
        "<h2>Scans and alignment</h2><ul>"
        f"<li>Baseline: {_e(inputs['baseline'])} ({inputs['baseline_slice_thickness_mm']:g} mm slices)</li>"
        f"<li>Follow-up: {_e(inputs['followup'])} ({inputs['followup_slice_thickness_mm']:g} mm slices)</li>"
        f"<li>Rigid alignment of the baseline to the follow-up: rotation {registration['rotation_deg']:.1f}°, "
        f"correlation of the aligned images {registration['correlation']:.2f}"
        + (" (doubtful)" if registration["doubtful"] else "") + "</li></ul>")
    page = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>DeepWML lesion change: {_e(Path(str(inputs['followup'])).name)}</title>",
        f"<style>{STYLE}</style></head><body><main>",
        "<h1>White-matter lesion change</h1>",
        f'<p class="meta">DeepWML {_e(deepwml.__version__)}, {_e(created)}</p>',
        f'<p class="notice">{_e(RESEARCH_NOTICE)}</p>',
        *sections,
        f'<p class="notice">{_e(RESEARCH_NOTICE)}</p></main></body></html>',
    ]
    return "\n".join(page) + "\n"
