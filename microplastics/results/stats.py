"""Uncertainty and significance for test-set scores: bootstrap intervals and McNemar's exact test.

The bootstrap resamples test crops with replacement and rescores each resample. Scoring goes
through confusion matrices, many at once, with the same conventions as
``metrics.compute_metrics`` (a class with neither true nor predicted crops in a resample is
left out of the macro means and the mean IoU); a test holds the two to agreement.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from scipy.stats import binomtest

SCORES = ("accuracy", "macro_precision", "macro_recall", "macro_f1", "weighted_f1", "mean_iou")


def encode(y_true: Sequence[str], y_pred: Sequence[str], classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Class names to indices into ``classes``; an unknown name is a ValueError."""
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted((set(y_true) | set(y_pred)) - set(index))
    if unknown:
        raise ValueError(f"labels {unknown} are not among the classes {list(classes)}")
    return (np.fromiter((index[y] for y in y_true), dtype=np.int64, count=len(y_true)),
            np.fromiter((index[y] for y in y_pred), dtype=np.int64, count=len(y_pred)))


def confusion_batch(t: np.ndarray, p: np.ndarray, samples: np.ndarray, k: int) -> np.ndarray:
    """Confusion matrices (B, k, k) of the rows ``samples`` (B, n) index into (t, p)."""
    cells = t[samples] * k + p[samples]
    offsets = np.arange(samples.shape[0])[:, None] * (k * k)
    counts = np.bincount((cells + offsets).ravel(), minlength=samples.shape[0] * k * k)
    return counts.reshape(samples.shape[0], k, k)


def scores_from_confusion(cm: np.ndarray) -> dict[str, np.ndarray]:
    """The SCORES of each confusion matrix in a (B, k, k) stack (rows true, columns predicted)."""
    cm = np.asarray(cm, dtype=float)
    tp = np.diagonal(cm, axis1=1, axis2=2)
    support, predicted = cm.sum(axis=2), cm.sum(axis=1)
    present = (support + predicted) > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
        iou = tp / (support + predicted - tp)
        n_present = present.sum(axis=1)
        total = support.sum(axis=1)
        return {
            "accuracy": tp.sum(axis=1) / total,
            "macro_precision": (precision * present).sum(axis=1) / n_present,
            "macro_recall": (recall * present).sum(axis=1) / n_present,
            "macro_f1": (f1 * present).sum(axis=1) / n_present,
            "weighted_f1": (f1 * support).sum(axis=1) / total,
            "mean_iou": np.where(present, iou, 0.0).sum(axis=1) / n_present,
        }


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    method: str = "bootstrap"   # or "exact": Clopper-Pearson, see exact_accuracy_interval

    def contains(self, value: float) -> bool:
        return self.low - 1e-12 <= value <= self.high + 1e-12

    @property
    def width(self) -> float:
        return self.high - self.low


def bootstrap_intervals(y_true: Sequence[str], y_pred: Sequence[str], classes: Sequence[str],
                        n_boot: int = 1000, seed: int = 42, level: float = 0.95,
                        chunk: int = 200) -> dict[str, Interval]:
    """Percentile bootstrap intervals of every score, resampling test crops with replacement.

    The same ``seed`` draws the same resamples for every model of equal size, so two models'
    intervals come from the same crop draws.
    """
    if n_boot < 1:
        raise ValueError("n_boot must be at least 1")
    t, p = encode(list(y_true), list(y_pred), classes)
    n, k = len(t), len(classes)
    if n == 0:
        return {s: Interval(float("nan"), float("nan")) for s in SCORES}
    rng = np.random.default_rng(seed)
    draws: dict[str, list[np.ndarray]] = {s: [] for s in SCORES}
    for start in range(0, n_boot, chunk):
        samples = rng.integers(0, n, size=(min(chunk, n_boot - start), n))
        for name, values in scores_from_confusion(confusion_batch(t, p, samples, k)).items():
            draws[name].append(values)
    tail = (1 - level) / 2 * 100
    out = {}
    for name in SCORES:
        low, high = np.nanpercentile(np.concatenate(draws[name]), [tail, 100 - tail])
        out[name] = Interval(float(low), float(high))
    return out


def exact_accuracy_interval(n_correct: int, n: int, level: float = 0.95) -> Interval:
    """Clopper-Pearson interval of an accuracy of ``n_correct`` out of ``n`` test crops.

    The bootstrap cannot widen an accuracy of 0 or 1: every resample scores the same, and its
    interval has zero width. The exact binomial interval says what so few crops can show.
    """
    if n < 1:
        return Interval(float("nan"), float("nan"), "exact")
    ci = binomtest(int(n_correct), int(n)).proportion_ci(confidence_level=level, method="exact")
    return Interval(float(ci.low), float(ci.high), "exact")


def with_exact_accuracy(intervals: dict[str, Interval], n_correct: int, n: int,
                        level: float = 0.95) -> dict[str, Interval]:
    """``intervals`` with the accuracy's replaced by the exact one where the bootstrap's has zero width."""
    accuracy = intervals.get("accuracy")
    if accuracy is None or not accuracy.width == 0:
        return intervals
    return {**intervals, "accuracy": exact_accuracy_interval(n_correct, n, level)}


@dataclass(frozen=True)
class McNemar:
    """McNemar's exact test on paired correct/incorrect outcomes of two models."""
    n: int            # crops both models scored
    only_a: int       # crops model A got right and model B wrong
    only_b: int       # crops model B got right and model A wrong
    p_value: float    # two-sided exact binomial p of only_a among only_a + only_b


def mcnemar_exact(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> McNemar:
    """Exact (binomial) McNemar test; with no discordant pair there is no evidence, p = 1."""
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired outcomes differ in length: {a.shape} vs {b.shape}")
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    discordant = only_a + only_b
    p = binomtest(only_a, discordant, 0.5).pvalue if discordant else 1.0
    return McNemar(n=int(a.size), only_a=only_a, only_b=only_b, p_value=float(p))


def paired_outcomes(pred_a: pd.DataFrame, pred_b: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Correct/incorrect of two predictions tables on the crops they share, matched by path.

    A crop that carries different true labels in the two tables means they were not scored on
    the same test split: a ValueError.
    """
    merged = pred_a[["path", "true", "pred"]].merge(pred_b[["path", "true", "pred"]], on="path",
                                                    suffixes=("_a", "_b"), validate="one_to_one")
    clash = merged[merged["true_a"] != merged["true_b"]]
    if len(clash):
        raise ValueError(f"{len(clash)} crop(s) have different true labels, e.g. {clash['path'].iloc[0]}")
    return ((merged["true_a"] == merged["pred_a"]).to_numpy(),
            (merged["true_b"] == merged["pred_b"]).to_numpy())


def mcnemar_matrix(predictions: dict[str, pd.DataFrame]) -> dict[tuple[str, str], McNemar]:
    """McNemar's exact test for every ordered pair of distinct models (row model is A)."""
    out = {}
    names = list(predictions)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            result = mcnemar_exact(*paired_outcomes(predictions[a], predictions[b]))
            out[(a, b)] = result
            out[(b, a)] = McNemar(result.n, result.only_b, result.only_a, result.p_value)
    return out
