"""A grid of crops with their true and predicted labels; wrong predictions framed in red.

Used by ml-baselines.py for the classical models and by prediction.py for every model, so it
takes plain images and label strings and knows nothing about where they came from.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from microplastics.core.plots import plt, save_figure

WRONG_COLOUR = "red"
RIGHT_COLOUR = "green"
RIGHT_MARK, WRONG_MARK = "✓", "✗"


def save_prediction_grid(images: Sequence[np.ndarray], true: Sequence[str], pred: Sequence[str],
                         path: str | Path, title: str = "", ncols: int = 8) -> None:
    """Draw ``images`` in rows of ``ncols``, each titled "true / predicted", and save atomically.

    A wrong prediction gets ✗, a red title and a thick red frame, a right one ✓ and green, so the
    errors stand out at a glance, in colour or not. ``true`` entries may be empty strings when the truth is unknown
    (new photos): those tiles show the prediction only, in black.
    """
    if not (len(images) == len(true) == len(pred)):
        raise ValueError(f"images, true and pred differ in length: {len(images)}, {len(true)}, {len(pred)}")
    if not len(images):
        raise ValueError("no images to draw")
    if ncols < 1:
        raise ValueError(f"ncols must be at least 1, got {ncols}")
    ncols = min(ncols, len(images))
    nrows = math.ceil(len(images) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.8 * ncols, 2.1 * nrows + (0.4 if title else 0)),
                             squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, t, p in zip(axes.ravel(), images, true, pred):
        _draw_tile(ax, np.asarray(image), str(t), str(p))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)


def _draw_tile(ax: "plt.Axes", image: np.ndarray, true: str, pred: str) -> None:
    ax.axis("on")
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
    ax.set_xticks([])
    ax.set_yticks([])
    if true:
        right = true == pred
        colour = RIGHT_COLOUR if right else WRONG_COLOUR
        text = f"{RIGHT_MARK if right else WRONG_MARK} T: {true}\nP: {pred}"  # a symbol, not the colour alone
    else:
        colour, text = "black", f"P: {pred}"
    ax.set_title(text, fontsize=10, color=colour)
    for spine in ax.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(3 if colour == WRONG_COLOUR else 1)
