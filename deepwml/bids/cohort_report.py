"""deepwml_bids group level: one self-contained page on the cohort (OUTPUT/wmh_report.html).

What a reader of a cohort wants first: how much lesion there is (by a participants.tsv column with --group-by, and
against age when participants.tsv has one), the Fazekas grades, how lesions changed over time (after
--longitudinal), and which scans to look at before trusting their figures, each linked to its QC picture.
Figures are drawn with matplotlib's Agg canvas and embedded as PNG; links are relative, so the page works where it
lies, beside the sub-* folders.
"""
from __future__ import annotations

import html
import io
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from deepwml.anatomy.location import FAR_FROM_VENTRICLES_COLUMN, NEAR_VENTRICLES_COLUMN
from deepwml.anatomy.volumes import COMPLETE, COVERAGE_COLUMN, LESION_PERCENT_COLUMN
from deepwml.bids.derivatives import derivative_paths
from deepwml.bids.layout import scan_of
from deepwml.evaluation.report import build_report
from deepwml.utils.errors import DeepWMLError

REPORT_NAME = "wmh_report.html"
#: a scan's total lesion volume this many interquartile ranges above the upper quartile is flagged
OUTLIER_IQR = 3.0
#: a fall in lesion volume between two sessions by more than this share is flagged: WMH rarely shrink that much
SHRINK_FLAG = 0.3


def _png(fig: Figure) -> str:
    """The figure as an embedded PNG <img>."""
    import base64

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<figure><img alt="figure" src="data:image/png;base64,{data}"></figure>'


def _figure(width: float = 6.0, height: float = 3.6) -> Tuple[Figure, object]:
    """A figure with one axis on its own Agg canvas (no pyplot state)."""
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def _numbers(values: pd.Series) -> np.ndarray:
    """The values that read as finite numbers."""
    arr = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    return arr[np.isfinite(arr)]


def volume_figure(table: pd.DataFrame, group_by: Optional[str]) -> str:
    """Lesion volume per scan, one strip per group."""
    fig, ax = _figure()
    groups = [("all scans", table)] if not group_by else \
        [(str(g), t) for g, t in table.groupby(table[group_by].fillna("n/a").astype(str), sort=True)]
    rng = np.random.default_rng(0)  # the strips' jitter, the same on every run
    for k, (_, part) in enumerate(groups):
        values = _numbers(part["total_lesion_volume_ml"])
        ax.scatter(k + rng.uniform(-0.15, 0.15, len(values)), values, s=14, alpha=0.7)
        if len(values):
            ax.hlines(np.median(values), k - 0.3, k + 0.3, color="black", linewidth=1.5)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([f"{name}\nn={len(part)}" for name, part in groups], fontsize=8)
    ax.set_ylabel("lesion volume (ml)")
    ax.grid(axis="y", alpha=0.3)
    if group_by:
        ax.set_xlabel(group_by)
    fig.tight_layout()
    return _png(fig)


def age_figure(table: pd.DataFrame) -> Optional[str]:
    """Lesion volume against age, when participants.tsv gives ages."""
    if "age" not in table:
        return None
    age = pd.to_numeric(table["age"], errors="coerce")
    volume = pd.to_numeric(table["total_lesion_volume_ml"], errors="coerce")
    keep = np.isfinite(age) & np.isfinite(volume)
    if keep.sum() < 2:
        return None
    fig, ax = _figure()
    ax.scatter(age[keep], volume[keep], s=14, alpha=0.7)
    ax.set_xlabel("age (years)")
    ax.set_ylabel("lesion volume (ml)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def _in_session_order(part: pd.DataFrame) -> pd.DataFrame:
    """One participant's consecutive comparisons, first session first (following each follow-up to the comparison
    it is the baseline of); as given when they do not form one chain (several acquisitions compared)."""
    by_baseline = {row["baseline_session"]: i for i, row in part.iterrows()}
    starts = set(part["baseline_session"]) - set(part["followup_session"])
    if len(starts) != 1 or len(by_baseline) != len(part):
        return part
    order, session = [], starts.pop()
    while session in by_baseline and len(order) < len(part):
        order.append(by_baseline[session])
        session = part.loc[by_baseline[session], "followup_session"]
    return part.loc[order] if len(order) == len(part) else part


def trajectories_figure(changes: pd.DataFrame) -> Optional[str]:
    """Each participant's lesion volume over the sessions compared (consecutive comparisons)."""
    # comparisons from before compared_with was recorded were all with the previous session
    kinds = changes["compared_with"].fillna("previous").astype(str) if "compared_with" in changes else None
    previous = changes if kinds is None else changes[kinds.str.contains("previous")]
    if previous.empty:
        return None
    days = pd.to_numeric(previous.get("interval_days"), errors="coerce") if "interval_days" in previous else None
    in_years = days is not None and bool(np.isfinite(days).all())  # every session has its acquisition time
    fig, ax = _figure()
    for participant, part in previous.groupby("participant_id", sort=True):
        part = _in_session_order(part)
        volumes = [float(part["baseline_volume_ml"].iloc[0])] + [float(v) for v in part["followup_volume_ml"]]
        x = np.concatenate([[0.0], np.cumsum(days[part.index]) / 365.25]) if in_years else np.arange(len(volumes))
        ax.plot(x, volumes, marker="o", markersize=3, linewidth=1, alpha=0.8, label=participant)
    if in_years:
        ax.set_xlabel("years since the first session")
    else:
        ax.set_xlabel("session, in order")
        ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("lesion volume (ml)")
    ax.grid(alpha=0.3)
    if previous["participant_id"].nunique() <= 12:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def review_flags(table: pd.DataFrame, changes: Optional[pd.DataFrame]) -> List[Tuple[str, str, str]]:
    """(participant, scan or comparison, reason) for what a reader should look at before trusting the figures."""
    flags = []
    volume = pd.to_numeric(table["total_lesion_volume_ml"], errors="coerce")
    q1, q3 = (np.nanpercentile(volume, 25), np.nanpercentile(volume, 75)) if volume.notna().any() else (np.nan, np.nan)
    limit = q3 + OUTLIER_IQR * (q3 - q1)
    for i, row in table.iterrows():
        warning = row.get("acquisition_warning")
        if isinstance(warning, str) and warning:
            flags.append((row["participant_id"], row["source"], f"unlike the model's training scans: {warning}"))
        outside = pd.to_numeric(pd.Series([row.get("unclassified_count")]), errors="coerce").iloc[0]
        if np.isfinite(outside) and outside > 0:
            flags.append((row["participant_id"], row["source"], f"{int(outside)} lesion(s) outside the brain parenchyma "
                                                                "(a false positive or an anatomy-map error)"))
        dropped = pd.to_numeric(pd.Series([row.get("lesions_dropped_outside_brain")]), errors="coerce").iloc[0]
        if np.isfinite(dropped) and dropped > 0:
            flags.append((row["participant_id"], row["source"], f"{int(dropped)} lesion(s) outside the brain left out of "
                                                                "the mask (a false positive, or brain the anatomy map missed)"))
        if len(volume) >= 4 and np.isfinite(volume[i]) and volume[i] > limit and q3 > q1:
            flags.append((row["participant_id"], row["source"], f"lesion volume {volume[i]:.1f} ml, far above the cohort's "
                                                                f"(upper quartile {q3:.1f} ml)"))
    for _, row in (changes.iterrows() if changes is not None else []):
        what = f"{row['baseline_session']} -> {row['followup_session']}"
        warnings = row.get("warnings")
        if isinstance(warnings, str) and warnings:
            flags.append((row["participant_id"], what, warnings))
        base, follow = float(row["baseline_volume_ml"]), float(row["followup_volume_ml"])
        if base > 0 and follow < (1 - SHRINK_FLAG) * base:
            flags.append((row["participant_id"], what, f"lesion volume fell from {base:.2f} to {follow:.2f} ml: WMH rarely "
                                                       "shrink that much; check both segmentations"))
    return flags


def _qc_link(out: Path, bids_root: Path, source: str) -> str:
    """A link to the scan's QC picture, relative to the report, or the source's name when it has none."""
    scan = scan_of(bids_root, bids_root / source)
    name = html.escape(Path(source).name)
    if scan is None:
        return name
    qc = derivative_paths(out, scan).qc
    return f'<a href="{html.escape(qc.relative_to(out).as_posix())}">{name}</a>' if qc.is_file() else name


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], caption: str = "") -> str:
    """An HTML table of already escaped cells."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f'<div class="table-wrap"><table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _cell(value: object, digits: int = 2) -> str:
    """A table cell: numbers rounded, missing as n/a."""
    number = pd.to_numeric(pd.Series([value]), errors="coerce").iloc[0]
    if np.isfinite(number):
        return f"{number:.{digits}f}" if float(number) != int(number) else str(int(number))
    return "n/a" if value is None or (isinstance(value, float) and not np.isfinite(value)) else html.escape(str(value))


def _share_cell(row: pd.Series) -> str:
    """The lesion volume as a percentage of the brain on the scanned slices, naming the end where the brain runs past
    the scan (then the share is too large by what was not scanned)."""
    coverage = row.get(COVERAGE_COLUMN)
    cell = _cell(row.get(LESION_PERCENT_COLUMN))
    return cell + (f" ({html.escape(coverage)})" if isinstance(coverage, str) and coverage != COMPLETE else "")


def check_group_by(table: pd.DataFrame, group_by: Optional[str]) -> None:
    """Refuse a --group-by that is not a column of the group table, naming the columns there are."""
    if group_by and group_by not in table:
        raise DeepWMLError(f"--group-by {group_by!r} is not a column of participants.tsv or sessions.tsv "
                           f"(columns: {', '.join(map(str, table.columns[:12]))})")


def write_cohort_report(out: Path, bids_root: Path, table: pd.DataFrame, changes: Optional[pd.DataFrame], model: str,
                        group_by: Optional[str] = None) -> Path:
    """OUTPUT/wmh_report.html from the group tables."""
    check_group_by(table, group_by)
    volume = _numbers(table["total_lesion_volume_ml"])
    flags = review_flags(table, changes)
    cards = [("scans", str(len(table))), ("participants", str(table["participant_id"].nunique())),
             ("median lesion volume", f"{np.median(volume):.2f} ml" if len(volume) else "n/a"),
             ("scans to review", str(len({f[1] for f in flags if f[1] in set(table['source'])})))]
    if changes is not None:
        cards.append(("comparisons", str(len(changes))))
        cards.append(("new lesions", str(int(pd.to_numeric(changes["new_lesions"], errors="coerce").fillna(0).sum()))))
    sections: List[Tuple[str, List[str]]] = [("Lesion volume", [volume_figure(table, group_by)] +
                                              [f for f in [age_figure(table)] if f])]
    if {"fazekas_periventricular", "fazekas_deep"} <= set(table.columns):
        grades = [_cell(g, 0) for g in (0, 1, 2, 3)]
        counts = [[html.escape(name)] + [str(int((pd.to_numeric(table[col], errors="coerce") == g).sum())) for g in range(4)]
                  for name, col in (("periventricular", "fazekas_periventricular"), ("deep white matter", "fazekas_deep"))]
        sections.append(("Fazekas grades (estimated)", [_table(["", *grades], counts, "scans per grade")]))
    if changes is not None:
        rows = [[html.escape(str(r["participant_id"])), html.escape(f"{r['baseline_session']} -> {r['followup_session']}"),
                 html.escape(str(r.get("compared_with", "previous"))), _cell(r.get("interval_days"), 0),
                 _cell(r["new_lesions"], 0), _cell(r["enlarging_lesions"], 0), _cell(r["baseline_volume_ml"]),
                 _cell(r["followup_volume_ml"]), html.escape(str(r["findings"]))] for _, r in changes.iterrows()]
        body = [f for f in [trajectories_figure(changes)] if f]
        body.append(_table(["participant", "sessions", "compared with", "days", "new", "enlarging", "ml before", "ml after",
                            "findings"], rows))
        sections.append(("Over time", body))
    review = [[html.escape(str(p)), _qc_link(out, bids_root, w) if w in set(table["source"]) else html.escape(w), html.escape(reason)]
              for p, w, reason in flags]
    sections.append(("To review", [_table(["participant", "scan or comparison", "why"], review)] if review else
                     ["<p>Nothing: no scan unlike the training scans, no lesion outside the brain, no volume far above the "
                      "cohort's, no doubtful comparison or large fall in volume.</p>"]))
    id_columns = [c for c in ("participant_id", "session_id") if c in table]
    scan_rows = [[html.escape(str(r[c])) for c in id_columns] + [_qc_link(out, bids_root, r["source"]), _cell(r["total_lesion_volume_ml"]),
                  _cell(r.get(NEAR_VENTRICLES_COLUMN)), _cell(r.get(FAR_FROM_VENTRICLES_COLUMN)), _share_cell(r),
                  _cell(r["lesion_count"], 0), _cell(r.get("fazekas_periventricular"), 0), _cell(r.get("fazekas_deep"), 0)]
                 for _, r in table.iterrows()]
    sections.append(("Scans", [_table([*id_columns, "scan (QC picture)", "volume (ml)", "within 10 mm of the ventricles (ml)",
                                       "beyond 10 mm (ml)", "% of the brain", "lesions", "Fazekas PV", "Fazekas deep"],
                                      scan_rows)]))
    return build_report(
        out / REPORT_NAME, "DeepWML: white-matter hyperintensities of the cohort", [f"lesion model: {model}",
                                                                                    f"derivatives dataset: {out}"],
        cards, sections,
        notes=["Figures come from DeepWML's masks, not a reader's; Fazekas grades are estimates by fixed rules "
               "(docs/prediction.md). Check the scans listed under 'To review' before relying on them."],
        definitions={"lesion volume": "total volume of the lesion mask on the scan's own grid",
                     "within / beyond 10 mm": "the supratentorial lesion volume within and beyond 10 mm (3D) of the "
                     "ventricles (docs/prediction.md, Lesion location)",
                     "new, enlarging": "deepwml_compare's rules (docs/prediction.md, Comparing two visits)"},
    )
