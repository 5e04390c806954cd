"""Figures shared by several stages (headless: the Agg backend)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from . import fileio  # noqa: E402

# Figures are shown at about half their size in report.html: text a size up stays readable there.
plt.rcParams.update({"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 10,
                     "figure.titlesize": 13})


def save_figure(fig: "plt.Figure", path: str | Path, dpi: int = 120) -> None:
    """Save atomically and close, so long runs do not pile up open figures."""
    with fileio.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    plt.close(fig)


def save_confusion_matrix(cm: np.ndarray, classes: Sequence[str], path: str | Path, title: str = "") -> None:
    """Counts in each cell, colour by row-normalised recall so rare classes stay visible."""
    cm = np.asarray(cm)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    size = max(3.6, 0.55 * len(classes) + 1.8)  # small enough that its text stays readable at half size
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", color="white" if norm[i, j] > 0.5 else "black")
    if title:
        ax.set_title(title)
    save_figure(fig, path)
