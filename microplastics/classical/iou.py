"""ml-IOU.py: per-class IoU of every model's test predictions, in one table and one chart.

This is label IoU, the Jaccard index of the predicted and true labels of each class,
TP / (TP + FP + FN) over the test crops; not the overlap of bounding boxes. It is computed
from each ``results/<model>/predictions.csv`` with ``metrics.per_class_iou``, so it agrees
with the ``iou`` figures in every metrics.json. Models scored on different test splits
(different ``split_fingerprint``) are refused: their numbers do not belong in one table.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from microplastics.core import fileio, layout
from microplastics.results import metrics
from microplastics.core.cli import ArgumentParser, UserError

CSV_NAME, MD_NAME, PLOT_NAME = layout.IOU_CSV, layout.IOU_MD, layout.IOU_PLOT
MEAN_ROW = "mean"


def stored_metrics(folder: Path) -> dict:
    """A model's metrics.json, which must name the test split it was scored on."""
    path = folder / layout.METRICS_NAME
    if not path.is_file():
        raise UserError(f"{folder.name}: no metrics.json beside predictions.csv, so its test split is unknown; "
                        "rerun its stage or leave it out with --models")
    stored = metrics.load_metrics(folder)
    if not stored.get("split_fingerprint"):
        raise UserError(f"{folder.name}: {path} has no split_fingerprint; rerun its stage to score it again")
    return stored


def model_iou(folder: Path, stored: dict) -> pd.Series:
    """Label IoU per class of one model's predictions.csv (``metrics.compute_metrics``, the figures of
    every metrics.json); NaN where a class never occurs."""
    predictions = metrics.read_predictions(folder / layout.PREDICTIONS_NAME)
    classes = metrics.model_classes(stored, predictions)
    try:
        scores = metrics.compute_metrics(predictions["true"], predictions["pred"], classes)
    except ValueError as err:
        raise UserError(f"{folder / layout.PREDICTIONS_NAME}: {err}") from None
    metrics.check_agreement(folder.name, scores, stored)  # a cut-short file scores under the full split's name
    per_class = scores["per_class"]
    return pd.Series([np.nan if per_class[c]["iou"] is None else per_class[c]["iou"] for c in classes],
                     index=classes, name=folder.name, dtype=float)


def iou_table(results: str | Path, models: Sequence[str] | None = None) -> pd.DataFrame:
    """Classes as rows (then the mean over classes that occur), models as columns; ``attrs``
    holds the fingerprint of the test split they were all scored on."""
    folders = layout.find_model_dirs(results, models, require=layout.TEST_PREDICTIONS)
    stored = {f.name: stored_metrics(f) for f in folders}
    metrics.refuse_mixed_splits({name: metrics.split_key(m) for name, m in stored.items()}, "share one IoU table")
    table = pd.concat([model_iou(f, stored[f.name]) for f in folders], axis=1).sort_index()
    table.index.name = "class"
    table.loc[MEAN_ROW] = table.mean(axis=0, skipna=True)  # the mean IoU over classes that occur
    table.attrs["split_fingerprint"] = str(stored[folders[0].name]["split_fingerprint"])
    return table


def to_markdown(table: pd.DataFrame, fingerprint: str = "") -> str:
    """The study's layout: one row a class, one column a model, three decimals."""
    def cell(v: float) -> str:
        return "–" if pd.isna(v) else f"{v:.3f}"

    header = ["class", *table.columns]
    lines = ["# Per-class IoU on the test split", "",
             "Label IoU: for each class, the Jaccard index of true and predicted labels over the test crops, "
             "TP / (TP + FP + FN). It is not bounding-box IoU."
             + (f" Test split {fingerprint}." if fingerprint else ""),
             "", "| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * len(table.columns)) + "|"]
    for name, row in table.iterrows():
        label = f"**{name}**" if name == MEAN_ROW else str(name)
        lines.append("| " + " | ".join([label, *(cell(v) for v in row)]) + " |")
    return "\n".join(lines) + "\n"


def save_chart(table: pd.DataFrame, path: Path) -> None:
    """Grouped bars: one group a class (and the mean), one bar a model."""
    from microplastics.core.plots import plt, save_figure

    n_models = len(table.columns)
    x = np.arange(len(table.index))
    width = 0.8 / n_models
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(x) + 0.4 * n_models * len(x) / 2), 4))
    for j, model in enumerate(table.columns):
        ax.bar(x + (j - (n_models - 1) / 2) * width, table[model].fillna(0).to_numpy(), width, label=model)
    ax.set_xticks(x, list(table.index))
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("label IoU  TP / (TP + FP + FN)")
    ax.set_title("Per-class IoU on the test split (label Jaccard, not box IoU)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: bars reach 1.0
    ax.grid(axis="y", alpha=0.3)
    save_figure(fig, path)


def write_outputs(table: pd.DataFrame, results: Path, fingerprint: str = "") -> list[Path]:
    paths = [results / CSV_NAME, results / MD_NAME, results / PLOT_NAME]
    with fileio.atomic_path(paths[0]) as tmp:
        table.to_csv(tmp, float_format="%.4f")
    fileio.write_text(paths[1], to_markdown(table, fingerprint))
    save_chart(table, paths[2])
    return paths


def get_args_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="ml-IOU.py",
        description="Per-class label IoU (Jaccard index of the labels, TP / (TP + FP + FN); not box IoU) and its "
                    "mean for every results/<model>/predictions.csv, classical and deep. Writes iou.csv, iou.md "
                    "(classes as rows, models as columns) and iou.png into the results folder. Models scored on "
                    "different test splits are refused.",
        examples=["python ml-IOU.py --results results",
                  "python ml-IOU.py --results results --models rf svm vgg16"],
    )
    parser.add_argument("--results", default=layout.RESULTS_DIR, help="folder with one sub-folder per model")
    parser.add_argument("--models", nargs="+", default=argparse.SUPPRESS,
                        help="model folder names to include (default: every folder with a predictions.csv)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    results = Path(args.results)
    table = iou_table(results, getattr(args, "models", None))
    fingerprint = table.attrs["split_fingerprint"]
    for path in write_outputs(table, results, fingerprint):
        print(f"wrote {path}")
    print(to_markdown(table, fingerprint))
    return 0
