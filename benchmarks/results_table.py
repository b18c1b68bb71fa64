"""What the training comparisons in benchmarks/ print: deepwml_evaluate's headline figures as a Markdown table."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Mapping, Sequence, Tuple

from deepwml.utils.atomic import read_json

#: (key, column title) of the headline figures of a deepwml_evaluate report
HEADLINE: Tuple[Tuple[str, str], ...] = (("slice_dice", "per-slice median Dice"), ("case_dice", "case mean Dice"),
                                         ("lesion_f1", "lesion F1"))
#: the per-slice median sensitivity and precision beside the headline
SLICE_DETAIL: Tuple[Tuple[str, str], ...] = (("slice_sensitivity", "per-slice median sensitivity"),
                                             ("slice_precision", "per-slice median precision"))


def headline(report: Path) -> Dict[str, float]:
    """Per-slice median Dice, case mean Dice and lesion F1 (and the number of scored slices) of REPORT/summary.json."""
    s = read_json(report / "summary.json")
    return {"slice_dice": s["slices"]["overall"]["dice"]["median"], "case_dice": s["cases"]["overall"]["dice"]["mean"],
            "lesion_f1": s["cases"]["overall"]["lesion_f1"]["mean"], "slices": s["slices"]["overall"]["dice"]["n"],
            "slice_sensitivity": s["slices"]["overall"]["sensitivity"]["median"],
            "slice_precision": s["slices"]["overall"]["precision"]["median"]}


def print_table(first: str, rows: Mapping[str, Mapping[str, float]], seconds: Mapping[str, float],
                columns: Sequence[Tuple[str, str]] = HEADLINE) -> None:
    """One row per run: its name, ``columns`` to three decimals and its training seconds ('-' when not trained now)."""
    print("| " + " | ".join([first, *(title for _, title in columns), "training s"]) + " |")
    print("|" + "---|" * (len(columns) + 2))
    for name, r in rows.items():
        t = f"{seconds[name]:.0f}" if name in seconds else "-"
        print("| " + " | ".join([name, *(f"{r[key]:.3f}" for key, _ in columns), t]) + " |")
