"""Box plots like the paper's Fig. 3 (per centre, per disease) and Fig. 4 (per lesion-volume group), as PNG."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from deepwml.evaluation.labels import FACTOR_LABELS, METRIC_LABELS
from deepwml.evaluation.stratify import group_order
from deepwml.utils.atomic import atomic_path

#: Box colours per metric, readable in greyscale print too.
METRIC_COLOURS = {"dice": "#4C72B0", "sensitivity": "#55A868", "precision": "#C44E52"}


def boxplot_figure(frame: pd.DataFrame, factor: str, metrics: Sequence[str], title: str, path: Path) -> Path:
    """One panel per metric, one box per group of ``factor`` (n under each label); written atomically."""
    groups = group_order(frame, factor)
    keys = frame[factor].astype(str)
    # the Agg canvas is created explicitly: no pyplot global state, safe in worker processes and without a display
    width = max(4.0, 1.0 + 0.75 * len(groups)) * len(metrics)
    fig = Figure(figsize=(min(width, 16.0), 4.2), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        data = [_finite(frame.loc[keys == g, metric]) for g in groups]
        box = ax.boxplot(
            data,
            patch_artist=True,
            widths=0.6,
            medianprops={"color": "black", "linewidth": 1.5},
            flierprops={"marker": ".", "markersize": 3, "alpha": 0.5},
        )
        for patch in box["boxes"]:
            patch.set_facecolor(METRIC_COLOURS.get(metric, "#8172B2"))
            patch.set_alpha(0.75)
        ax.set_xticks(np.arange(1, len(groups) + 1))
        ax.set_xticklabels([f"{g}\nn={len(d)}" for g, d in zip(groups, data)], fontsize=8)
        ax.set_title(METRIC_LABELS.get(metric, metric))
        ax.set_ylim(-0.03, 1.03)
        ax.grid(axis="y", alpha=0.3)
        ax.set_xlabel(FACTOR_LABELS.get(factor, factor))
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, format="png")
    return path


def _finite(values: pd.Series) -> np.ndarray:
    """Finite values only: undefined precision (empty prediction) is left out, as in the tables."""
    arr = values.to_numpy(dtype=float)
    return arr[np.isfinite(arr)]


def volume_agreement_figure(cases: pd.DataFrame, agreement: dict, path: Path) -> Path:
    """Predicted against reference lesion volume, and the Bland-Altman plot (difference against mean), per case."""
    ref, pred = cases["ref_volume_ml"].to_numpy(float), cases["pred_volume_ml"].to_numpy(float)
    groups = cases["disease"].astype(str).to_numpy() if "disease" in cases else np.full(len(cases), "unknown")
    fig = Figure(figsize=(10.0, 4.4), dpi=110)
    FigureCanvasAgg(fig)
    scatter, bland = fig.subplots(1, 2)
    for index, group in enumerate(sorted(set(groups))):
        chosen = groups == group
        label = None if group == "unknown" else group
        style = {"s": 18, "alpha": 0.8, "color": f"C{index}", "label": label}
        scatter.scatter(ref[chosen], pred[chosen], **style)
        bland.scatter((ref[chosen] + pred[chosen]) / 2, pred[chosen] - ref[chosen], **style)
    top = float(max(ref.max(initial=0), pred.max(initial=0))) * 1.05 or 1.0
    scatter.plot([0, top], [0, top], color="grey", linewidth=1, linestyle="--")
    scatter.set_xlim(0, top)
    scatter.set_ylim(0, top)
    scatter.set_xlabel("Reference lesion volume (ml)")
    scatter.set_ylabel("Predicted lesion volume (ml)")
    scatter.set_title("Per case (dashed: identity)")
    if agreement.get("testable"):
        bias, (low, high) = agreement["mean_difference_ml"], agreement["limits_of_agreement_ml"]
        bland.axhline(bias, color="black", linewidth=1.2, label=f"mean {bias:+.2f} ml")
        for limit in (low, high):
            bland.axhline(limit, color="grey", linewidth=1, linestyle="--")
        bland.text(1.0, high, f" +1.96 SD {high:+.2f}", transform=bland.get_yaxis_transform(), va="bottom", ha="right", fontsize=8)
        bland.text(1.0, low, f" −1.96 SD {low:+.2f}", transform=bland.get_yaxis_transform(), va="top", ha="right", fontsize=8)
    bland.axhline(0, color="grey", linewidth=0.6)
    bland.set_xlabel("Mean of the two volumes (ml)")
    bland.set_ylabel("Predicted − reference (ml)")
    bland.set_title("Bland–Altman")
    for ax in (scatter, bland):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, format="png")
    return path
