"""What a comparison table needs beside it so that it cannot mislead.

A reader of a table of scores assumes real photos, models that learnt something, and
intervals that mean what they say. These checks name where that fails: generated data, a
model that answers one class for almost every crop, a class too small to rank models on,
and the score a model gets for answering the majority class every time.
Plain functions over predictions tables and summary.json; reports.py turns them into rows and notes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from microplastics.data import origin

COLLAPSE_SHARE = 0.8       # one class for this share of the test crops or more: the model has collapsed
MIN_TEST_CROPS = 5         # a class with fewer test crops is marked and never called best
BASELINE_NAME = "majority class"


def data_banner(data_summary: dict[str, Any], n_test: int | None) -> str | None:
    """The sentence the report opens with when the photos were generated, else None."""
    record = data_summary.get("origin")
    if not origin.is_synthetic(record):
        return None
    counts = [f"{record['photos']} photos" if isinstance(record.get("photos"), int) else None,
              f"{n_test} test crops" if n_test is not None else None]
    detail = ", ".join(c for c in counts if c)
    return (f"synthetic photos from {record.get('generator', origin.GENERATOR)}"
            f"{f' ({detail})' if detail else ''}: these numbers test the pipeline, not the models")


@dataclass(frozen=True)
class Collapse:
    """A model that answers one class for most test crops."""
    label: str
    share: float        # of the test crops predicted ``label``
    true_share: float   # of the test crops that are ``label``

    def describe(self) -> str:
        return (f"predicts {self.label} for {self.share:.0%} of test crops "
                f"({self.label} is {self.true_share:.0%} of them)")


def collapse(predictions: pd.DataFrame, threshold: float = COLLAPSE_SHARE) -> Collapse | None:
    """The class a model predicts for at least ``threshold`` of the crops, if there is one."""
    if predictions.empty:
        return None
    shares = predictions["pred"].value_counts(normalize=True)
    label, share = str(shares.index[0]), float(shares.iloc[0])
    if share < threshold:
        return None
    return Collapse(label, share, float((predictions["true"] == label).mean()))


def majority_label(test_true: pd.Series, train_counts: dict[str, int] | None) -> tuple[str, str]:
    """The class a majority-class baseline answers, and which split it is the majority of.

    The training split's majority when its counts are known (a baseline must not peek at the
    test labels); the test split's otherwise. Ties go to the first class name.
    """
    counts = {str(k): int(v) for k, v in (train_counts or {}).items() if int(v) > 0}
    split = "train" if counts else "test"
    if not counts:
        counts = {str(k): int(v) for k, v in test_true.value_counts().items()}
    return min(counts, key=lambda c: (-counts[c], c)), split


def majority_predictions(test: pd.DataFrame, label: str) -> pd.DataFrame:
    """A predictions table (path, true, pred) that answers ``label`` for every test crop."""
    return pd.DataFrame({"path": test["path"].to_numpy(), "true": test["true"].to_numpy(), "pred": label})


def small_classes(test_true: pd.Series, classes: list[str], minimum: int = MIN_TEST_CROPS) -> dict[str, int]:
    """Classes with fewer than ``minimum`` test crops, and how many they have."""
    counts = test_true.value_counts()
    return {c: int(counts.get(c, 0)) for c in classes if int(counts.get(c, 0)) < minimum}
