"""Training record: log.jsonl (one JSON object per epoch) and progress.png, both rewritten atomically each epoch.

The checkpoint holds the history, so a resumed run rewrites exactly the epochs its weights have seen.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Union

from deepwml.utils.atomic import atomic_path, write_text


def write_log(path: Union[str, Path], history: List[Dict[str, Any]]) -> None:
    """log.jsonl: one line per completed epoch."""
    write_text(path, "".join(json.dumps(entry) + "\n" for entry in history))


def plot_progress(path: Union[str, Path], history: List[Dict[str, Any]]) -> None:
    """progress.png: training loss and validation Dice (median and its moving average) per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, ax_loss = plt.subplots(figsize=(8, 4.5), dpi=100)
    ax_loss.plot(epochs, [h["train_loss"] for h in history], color="tab:blue", label="training loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss (BCE + Dice)", color="tab:blue")
    ax_dice = ax_loss.twinx()
    ax_dice.plot(epochs, [h.get("val_median_dice") for h in history], color="tab:green", alpha=0.5, label="val median Dice")
    ax_dice.plot(epochs, [h.get("val_ema_dice") for h in history], color="tab:green", label="val median Dice (EMA)")
    ax_dice.set_ylabel("per-slice Dice", color="tab:green")
    ax_dice.set_ylim(0, 1)
    lines = ax_loss.get_lines() + ax_dice.get_lines()
    ax_loss.legend(lines, [line.get_label() for line in lines], loc="center right", fontsize=8)
    ax_loss.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
