"""A small table type rendered both as Markdown (table2.md) and as HTML (report.html)."""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import List


@dataclass
class Table:
    """A titled grid of already formatted cells; the first column holds row labels."""

    title: str
    header: List[str]
    rows: List[List[str]]
    note: str = ""
    key: str = field(default="")

    def to_markdown(self) -> str:
        """GitHub-flavoured Markdown with a level-2 title and the note below."""
        lines = [f"## {self.title}", "", _md_row(self.header), "|" + "|".join(["---"] + [":---:"] * (len(self.header) - 1)) + "|"]
        lines += [_md_row(r) for r in self.rows]
        if self.note:
            lines += ["", self.note]
        return "\n".join(lines) + "\n"

    def to_html(self) -> str:
        """An HTML <table> with caption; cells escaped."""
        head = "".join(f"<th>{_html_cell(h)}</th>" for h in self.header)
        body = "".join(
            "<tr>" + "".join(f"<t{'h' if i == 0 else 'd'}>{_html_cell(c)}</t{'h' if i == 0 else 'd'}>" for i, c in enumerate(r)) + "</tr>"
            for r in self.rows
        )
        note = f'<p class="note">{html.escape(self.note)}</p>' if self.note else ""
        anchor = f' id="{html.escape(self.key)}"' if self.key else ""
        return (
            f'<div class="table-wrap"{anchor}><table><caption>{html.escape(self.title)}</caption>'
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{note}</div>"
        )


def _md_row(cells: List[str]) -> str:
    """One Markdown table row; pipes escaped, line breaks inside a cell become spaces."""
    return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"


def _html_cell(text: str) -> str:
    """Escaped cell text; a line break inside a cell becomes <br>."""
    return "<br>".join(html.escape(part) for part in text.split("\n"))
