"""The report's own figure: every deep model's validation curves in one plot (from each history.csv)."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import pandas as pd

from microplastics.core import layout


def read_history(folder: Path) -> pd.DataFrame | None:
    """A deep model's history.csv (epoch, val_loss, val_acc...), or None when absent or unreadable."""
    path = folder / layout.HISTORY_NAME
    if not path.is_file():
        return None
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError):
        return None
    return frame if {"epoch", "val_loss", "val_acc"} <= set(frame.columns) and len(frame) else None


def save_validation_curves(histories: Mapping[str, pd.DataFrame], best_epochs: Mapping[str, int | None],
                           path: Path) -> Path | None:
    """Validation loss and accuracy of each model against the epoch, each model's chosen epoch marked
    (a filled circle); None, and nothing written, with fewer than two models to compare."""
    if len(histories) < 2:
        return None
    from microplastics.core.plots import plt, save_figure  # matplotlib only when drawing

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    for (name, frame), colour in zip(histories.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"] * 4):
        best = best_epochs.get(name)
        for ax, key in zip(axes, ("val_loss", "val_acc")):
            ax.plot(frame["epoch"], frame[key], marker=".", color=colour, label=name)
            chosen = frame[frame["epoch"] == best]
            if len(chosen):
                ax.plot(chosen["epoch"], chosen[key], "o", color=colour, markersize=10, markeredgecolor="black")
    for ax, label in zip(axes, ("validation loss", "validation accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.legend(*axes[0].get_legend_handles_labels(), title="● chosen epoch", loc="outside right upper")
    save_figure(fig, path)
    return path
