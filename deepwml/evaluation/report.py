"""One self-contained report.html: tables inline, figures embedded as base64 PNG, no external resources."""
from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from deepwml.evaluation.labels import FACTOR_LABELS, METRIC_LABELS
from deepwml.evaluation.tables import Table
from deepwml.utils.atomic import write_text

STYLE = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 0; color: #1f2328; background: #f6f8fa; }
main { max-width: 1200px; margin: 0 auto; padding: 24px 32px 48px; background: #fff; }
h1 { font-size: 1.6em; margin: 0 0 4px; }
h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #d0d7de; padding-bottom: 4px; }
.meta { color: #57606a; font-size: 0.9em; margin: 0 0 16px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 16px 0; }
.card { border: 1px solid #d0d7de; border-radius: 6px; padding: 10px 14px; min-width: 130px; }
.card b { display: block; font-size: 1.4em; }
.card span { color: #57606a; font-size: 0.85em; }
.table-wrap { overflow-x: auto; margin: 12px 0 20px; }
table { border-collapse: collapse; font-size: 0.85em; }
caption { text-align: left; font-weight: 600; padding: 4px 0 6px; }
th, td { border: 1px solid #d0d7de; padding: 3px 6px; text-align: center; white-space: nowrap; }
thead th { background: #f0f3f6; white-space: normal; min-width: 3em; }
tbody th { text-align: left; background: #fafbfc; font-weight: 600; }
tbody tr:nth-child(even) td { background: #fbfcfd; }
p.note { color: #57606a; font-size: 0.82em; margin: 4px 0 0; }
figure { margin: 12px 0 24px; }
figure img { max-width: 100%; border: 1px solid #eaeef2; }
figcaption { color: #57606a; font-size: 0.85em; }
ul.notes li { margin: 2px 0; }
dl.defs dt { font-weight: 600; margin-top: 6px; }
dl.defs dd { margin-left: 16px; color: #333; }
"""


def embed_png(path: Path) -> str:
    """A data: URI holding the PNG at ``path``."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def figure_html(path: Path, caption: str) -> str:
    """An embedded figure with caption."""
    alt = html.escape(caption)
    return f'<figure><img alt="{alt}" src="{embed_png(path)}"><figcaption>{alt}</figcaption></figure>'


def statistics_table(statistics: Dict[str, Dict[str, Any]], title: str) -> Table:
    """Kruskal–Wallis per factor and metric, with the Bonferroni-significant pairs."""
    rows = []
    for factor, by_metric in statistics.items():
        for metric, result in by_metric.items():
            kw = result["kruskal_wallis"]
            normal = [g for g, sw in result["shapiro_wilk"].items() if sw.get("testable") and not sw["normal"]]
            if kw["testable"]:
                h, p = f"{kw['statistic']:.2f}", p_text(kw["p"])
            else:
                h, p = "not testable", kw["reason"]
            pairs = result["mann_whitney_bonferroni"]
            if isinstance(pairs, list):
                sig = [f"{r['group_a']} vs {r['group_b']} ({p_text(r['p_bonferroni'])})" for r in pairs if r["significant"]]
                pair_text = "; ".join(sig) or "none"
            else:
                pair_text = "–"
            rows.append(
                [
                    FACTOR_LABELS.get(factor, factor),
                    METRIC_LABELS.get(metric, metric),
                    h,
                    p,
                    ", ".join(normal) or "none",
                    pair_text,
                ]
            )
    header = ["Factor", "Metric", "Kruskal–Wallis H", "p", "Non-normal groups (Shapiro–Wilk p<0.05)", "Significant pairs (Mann–Whitney U, Bonferroni)"]
    return Table(title, header, rows, key="statistics")


def p_text(p: Optional[float]) -> str:
    """A p-value the way papers print it ('p undefined' for None or NaN, e.g. a regression on identical values)."""
    if p is None or p != p:
        return "p undefined"
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def cards_html(cards: Sequence[Tuple[str, str]]) -> str:
    """Headline numbers as small boxes."""
    return '<div class="cards">' + "".join(f"<div class=\"card\"><b>{html.escape(v)}</b><span>{html.escape(k)}</span></div>" for k, v in cards) + "</div>"


def build_report(
    path: Path,
    title: str,
    meta_lines: Sequence[str],
    cards: Sequence[Tuple[str, str]],
    sections: Sequence[Tuple[str, List[str]]],
    notes: Sequence[str],
    definitions: Dict[str, str],
) -> Path:
    """Assemble and atomically write report.html from pre-rendered section bodies."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{STYLE}</style></head><body><main>",
        f"<h1>{html.escape(title)}</h1>",
        '<p class="meta">' + "<br>".join(html.escape(m) for m in meta_lines) + "</p>",
        cards_html(cards),
    ]
    for heading, bodies in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        parts.extend(bodies)
    if notes:
        parts.append("<h2>Notes</h2><ul class=\"notes\">" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    parts.append(
        "<h2>Definitions</h2><dl class=\"defs\">"
        + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in definitions.items())
        + "</dl>"
    )
    parts.append("</main></body></html>")
    write_text(path, "\n".join(parts) + "\n")
    return path
