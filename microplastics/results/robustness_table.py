"""robustness.csv: one row per imaging condition, scored from robustness_predictions.csv alone.

Written by robustness.py and read by the report; torch-free and OpenCV-free, so that reading the
table loads no model code.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from microplastics.core.layout import ROBUSTNESS_CLEAN as CLEAN, ROBUSTNESS_TABLE
from microplastics.results.metrics import compute_metrics

COLUMNS = ["corruption", "severity", "accuracy", "macro_f1", "n", "applied_to"]


def table_from_predictions(predictions: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame:
    """robustness.csv: one row per condition, scored from the prediction rows alone."""
    rows = []
    for (name, severity), group in predictions.groupby(["corruption", "severity"], sort=False):
        scores = compute_metrics(group["true"].tolist(), group["pred"].tolist(), classes)
        rows.append({"corruption": name, "severity": int(severity), "accuracy": scores["accuracy"],
                     "macro_f1": scores["macro_f1"], "n": scores["n"],
                     "applied_to": ",".join(sorted(group["applied_to"].unique()))})
    return pd.DataFrame(rows, columns=COLUMNS)


def summarise(table: pd.DataFrame) -> dict[str, Any]:
    """Clean macro-F1, mean macro-F1 over all corrupted conditions and the relative drop."""
    clean = table.loc[table["corruption"] == CLEAN, "macro_f1"]
    corrupted = table.loc[table["corruption"] != CLEAN]
    clean_f1 = float(clean.iloc[0]) if len(clean) else float("nan")
    mean_f1 = float(corrupted["macro_f1"].mean()) if len(corrupted) else float("nan")
    worst = corrupted.loc[corrupted["macro_f1"].idxmin()] if len(corrupted) else None
    per_corruption = corrupted.groupby("corruption", sort=False)["macro_f1"].mean()
    return {
        "clean_macro_f1": clean_f1,
        "mean_corrupted_macro_f1": mean_f1,
        "relative_drop": (clean_f1 - mean_f1) / clean_f1 if clean_f1 > 0 else float("nan"),
        "worst_condition": None if worst is None else f"{worst['corruption']}@{int(worst['severity'])}",
        "worst_macro_f1": None if worst is None else float(worst["macro_f1"]),
        "per_corruption_mean_macro_f1": {k: float(v) for k, v in per_corruption.items()},
    }


def read_table(model_dir: str | Path) -> pd.DataFrame | None:
    """A model folder's robustness.csv, or None when robustness.py has not been run on it."""
    path = Path(model_dir) / ROBUSTNESS_TABLE
    return pd.read_csv(path) if path.is_file() else None
