"""Train/val/test assignment of crops: stratified by class, optionally grouped by photo.

Crops of one photo share background, lighting and often the same particle, so a split
that puts them on both sides of train/test overstates accuracy. ``group_split`` keeps
each group (photo, or photo series) whole while steering every class towards the
requested fractions; ``crop_split`` is the original study's crop-level split.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from microplastics.core.errors import InputError
from microplastics.data.dataset import SPLITS

GROUP_BY = ("photo", "series", "none")
MIN_GROUPS = len(SPLITS)  # a class must reach every split
_TRIES = 32  # seeded orderings tried by the greedy group split; the best one is kept


def group_key(photo_name: str, group_by: str) -> str:
    """The group of a photo: its file name, or its series (the name before the first '_')."""
    if group_by == "series":
        return photo_name.split("_", 1)[0]
    return photo_name


def check_fractions(val_fraction: float, test_fraction: float) -> tuple[float, float, float]:
    """(train, val, test) fractions; both held-out parts must be > 0 and leave room for train."""
    for name, value in (("--val-fraction", val_fraction), ("--test-fraction", test_fraction)):
        if not 0 < value < 1:
            raise InputError(f"{name} must be between 0 and 1 (exclusive), got {value}")
    train = 1.0 - val_fraction - test_fraction
    if train <= 0:
        raise InputError(f"--val-fraction + --test-fraction must be below 1, got {val_fraction + test_fraction:g}")
    return train, val_fraction, test_fraction


def small_classes(labels: Sequence[str], groups: Sequence[str] | None, min_crops: int) -> dict[str, str]:
    """Classes too small to split, each with the reason: too few crops, or too few groups."""
    frame = pd.DataFrame({"label": list(labels), "group": list(groups) if groups is not None else None})
    crops = frame.groupby("label").size()
    reasons = {}
    for label, n in crops.items():
        if n < min_crops:
            reasons[str(label)] = f"only {n} crop(s), fewer than the minimum of {min_crops}"
    if groups is not None:
        n_groups = frame.groupby("label")["group"].nunique()
        for label, n in n_groups.items():
            if n < MIN_GROUPS and str(label) not in reasons:
                reasons[str(label)] = f"found in only {n} group(s); a grouped split needs {MIN_GROUPS}"
    return dict(sorted(reasons.items()))


def crop_split_minimum(fractions: tuple[float, float, float]) -> int:
    """Fewest crops a class needs in ``crop_split``: the second stratified split wants 2 held out."""
    return max(2, math.ceil(2.0 / (fractions[1] + fractions[2]) - 1e-9))


def crop_split(labels: Sequence[str], fractions: tuple[float, float, float], seed: int) -> np.ndarray:
    """The original study's split: stratified train_test_split twice, crop by crop."""
    index = np.arange(len(labels))
    y = np.asarray(labels)
    _, val, test = fractions
    try:
        train_idx, rest = train_test_split(index, test_size=val + test, stratify=y, random_state=seed)
        val_idx, test_idx = train_test_split(rest, test_size=test / (val + test), stratify=y[rest],
                                             random_state=seed)
    except ValueError as err:
        raise InputError(f"cannot split the crops by class: {err}; raise --min-class-crops "
                        "or use fewer classes") from err
    out = np.empty(len(labels), dtype=object)
    out[train_idx], out[val_idx], out[test_idx] = SPLITS
    return out


def group_split(labels: Sequence[str], groups: Sequence[str], fractions: tuple[float, float, float],
                seed: int) -> np.ndarray:
    """Assign whole groups to splits so each class's fractions come close to ``fractions``.

    Greedy: groups go one by one (largest first) to the split where they most reduce the
    squared gap between achieved and wanted per-class fractions. Several seeded orders are
    tried and the closest result kept, so the outcome depends only on the data and ``seed``.
    """
    table = pd.crosstab(pd.Series(list(groups), name="group"), pd.Series(list(labels), name="label"))
    counts = table.to_numpy(dtype=float)
    targets = np.outer(np.asarray(fractions), counts.sum(axis=0))
    weights = 1.0 / np.maximum(counts.sum(axis=0), 1.0) ** 2
    rng = np.random.default_rng(seed)
    best, best_cost = None, np.inf
    for attempt in range(_TRIES):
        order = rng.permutation(len(counts))
        if attempt == 0:  # one pass in the classic largest-first order, ties broken at random
            order = order[np.argsort(-counts[order].sum(axis=1), kind="stable")]
        assign, cost = _greedy(counts, targets, weights, order)
        if cost < best_cost - 1e-12:
            best, best_cost = assign, cost
    split_of_group = dict(zip(table.index, np.asarray(SPLITS, dtype=object)[best]))
    return np.array([split_of_group[g] for g in groups], dtype=object)


def _greedy(counts: np.ndarray, targets: np.ndarray, weights: np.ndarray,
            order: np.ndarray) -> tuple[np.ndarray, float]:
    current = np.zeros_like(targets)
    assign = np.zeros(len(counts), dtype=int)
    for g in order:
        v = counts[g]
        # Change of sum_c w_c (current - target)^2 if v joins each split; take the smallest.
        delta = ((v * (2.0 * (current - targets) + v)) * weights).sum(axis=1)
        s = int(np.argmin(delta))
        current[s] += v
        assign[g] = s
    return assign, float((((current - targets) ** 2) * weights).sum())


def achieved_fractions(labels: Sequence[str], splits: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per class, the fraction of its crops in each split, rounded to 4 places."""
    frame = pd.DataFrame({"label": list(labels), "split": list(splits)})
    table = pd.crosstab(frame["label"], frame["split"]).reindex(columns=list(SPLITS), fill_value=0)
    share = table.div(table.sum(axis=1).clip(lower=1), axis=0)
    return {str(k): {s: round(float(v), 4) for s, v in row.items()} for k, row in share.iterrows()}
