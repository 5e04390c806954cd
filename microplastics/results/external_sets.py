"""The figures of a model on other photo sets: one row of ``external.csv`` per (set, TTA), from its predictions.

robustness.py --external classifies the annotated particles of photo sets the model was not trained on
(predict/external.py) and keeps their per-crop predictions; everything in this module is computed
from those predictions alone, like the test split's figures from predictions.csv: accuracy and
macro-F1 with the report's bootstrap intervals, per-class recall, and the drop from the model's
own test split. It imports no deep-model code, so report.py reads the table without torch.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from microplastics.core import fileio
from microplastics.core.errors import InputError
from microplastics.results.metrics import compute_metrics

TABLE_NAME = "external.csv"
PLOT_NAME = "external.png"
KEY = ("set", "tta")
SCORE_COLUMNS = ("n", "accuracy", "accuracy_low", "accuracy_high", "accuracy_interval", "macro_f1", "macro_f1_low",
                 "macro_f1_high", "test_accuracy", "test_macro_f1", "test_reference", "drop_accuracy",
                 "drop_macro_f1")
RECALL_PREFIX = "recall_"


def own_test_figures(metrics_json: dict[str, Any]) -> dict[str, Any]:
    """The model's own test-split figures as metrics.json records them."""
    return {"test_accuracy": metrics_json.get("accuracy"), "test_macro_f1": metrics_json.get("macro_f1"),
            "test_reference": "metrics.json"}


def external_row(set_name: str, tta: str, predictions: pd.DataFrame, classes: Sequence[str],
                 reference: dict[str, Any], n_boot: int, seed: int, extra: dict[str, Any] | None = None
                 ) -> dict[str, Any]:
    """One row of external.csv from a set's predictions (columns true, pred) and the test-split reference."""
    from microplastics.results.comparison import score_intervals  # the report's intervals, exact where they must be

    scores = compute_metrics(predictions["true"].tolist(), predictions["pred"].tolist(), classes)
    intervals = score_intervals(predictions, classes, n_boot, seed)
    row: dict[str, Any] = {"set": set_name, "tta": tta, "n": scores["n"], "accuracy": scores["accuracy"],
                           "accuracy_low": intervals["accuracy"].low, "accuracy_high": intervals["accuracy"].high,
                           "accuracy_interval": intervals["accuracy"].method, "macro_f1": scores["macro_f1"],
                           "macro_f1_low": intervals["macro_f1"].low, "macro_f1_high": intervals["macro_f1"].high}
    for c in classes:  # a class the set does not hold has no recall (empty), not a recall of 0
        support = scores["per_class"][c]["support"]
        row[f"{RECALL_PREFIX}{c}"] = scores["per_class"][c]["recall"] if support else math.nan
    row.update(reference)
    row["drop_accuracy"] = _difference(reference.get("test_accuracy"), scores["accuracy"])
    row["drop_macro_f1"] = _difference(reference.get("test_macro_f1"), scores["macro_f1"])
    row.update(extra or {})
    return row


def _difference(test: Any, external: float) -> float:
    return math.nan if test is None or external is None else float(test) - float(external)


def write_table(model_dir: str | Path, rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """external.csv with ``rows``, written atomically; rows of other (set, tta) pairs from earlier runs are kept."""
    path = Path(model_dir) / TABLE_NAME
    new = pd.DataFrame(list(rows))
    old = read_table(model_dir)
    if old is not None and not old.empty:
        replaced = old.set_index(list(KEY)).index.isin(new.set_index(list(KEY)).index)
        new = pd.concat([old[~replaced], new], ignore_index=True)
    new = new.sort_values(list(KEY), kind="stable").reset_index(drop=True)
    with fileio.atomic_path(path) as tmp:
        new.to_csv(tmp, index=False, float_format="%.6f")
    return new


def plot_table(table: pd.DataFrame, path: str | Path, title: str) -> None:
    """Macro-F1 of each (set, TTA) with its interval, beside the test split's: the gap a person looks for."""
    from microplastics.core.plots import plt, save_figure  # matplotlib only when drawing

    labels = [f"{s}\n(tta {t})" if t != "none" else s for s, t in zip(table["set"], table["tta"])]
    x = range(len(table))
    fig, ax = plt.subplots(figsize=(max(4.0, 1.4 * len(table) + 2), 4))
    low = (table["macro_f1"] - table["macro_f1_low"]).clip(lower=0)
    high = (table["macro_f1_high"] - table["macro_f1"]).clip(lower=0)
    ax.bar(x, table["macro_f1"], yerr=[low, high], capsize=4, color="#4c72b0", label="macro-F1 on the set")
    ax.scatter(x, table["test_macro_f1"], marker="_", s=900, color="#c92a2a", zorder=3,
               label="macro-F1 on its own test split")
    ax.set_xticks(list(x), labels)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("macro-F1 (95% interval)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title(title)
    save_figure(fig, path)


def read_table(model_dir: str | Path) -> pd.DataFrame | None:
    """A model folder's external.csv, or None when robustness.py --external has not been run on it."""
    path = Path(model_dir) / TABLE_NAME
    if not path.is_file():
        return None
    try:
        frame = pd.read_csv(path, dtype={"set": str, "tta": str}, keep_default_na=False, na_values=[""])
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise InputError(f"{path} is not a readable {TABLE_NAME} ({type(err).__name__}); rerun robustness.py "
                        "--external") from None
    missing = {"set", "tta", "n", "accuracy", "macro_f1"} - set(frame.columns)
    if missing:
        raise InputError(f"{path} lacks column(s) {', '.join(sorted(missing))}; rerun robustness.py --external")
    return frame


def recall_columns(frame: pd.DataFrame) -> list[str]:
    """The per-class recall columns of an external.csv, in file order."""
    return [c for c in frame.columns if c.startswith(RECALL_PREFIX)]
