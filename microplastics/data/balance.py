"""The one SMOTE policy of both model families: handcrafted features (ml-baselines.py) and cached
embeddings (the deep-model stage in head mode) are oversampled alike.

SMOTE interpolates between a training sample and one of its k nearest same-class neighbours, so a
class of m samples allows at most k = m - 1. Every class is grown to the size of the largest; a
class of one sample cannot be interpolated and is left as it is. That class stays small, but the
others are still balanced: one rare class does not switch balancing off for the whole run, and
nothing crashes. Only training data is ever resampled.
"""
from __future__ import annotations

from collections import Counter

import numpy as np
from imblearn.over_sampling import SMOTE

SMOTE_NEIGHBOURS = 5


def too_small_for_smote(y: np.ndarray) -> list:
    """The classes of ``y`` with a single sample, which SMOTE leaves as they are."""
    return sorted(c for c, n in Counter(np.asarray(y).tolist()).items() if n < 2)


def smote_resample(X: np.ndarray, y: np.ndarray, k_neighbors: int = SMOTE_NEIGHBOURS,
                   random_state: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """SMOTE every class up to the largest one, with k shrunk to fit the smallest class grown.

    Classes of one sample are left as they are (see the module's note); with nothing to grow,
    ``X`` and ``y`` come back unchanged.
    """
    counts = Counter(np.asarray(y).tolist())
    target = max(counts.values())
    grow = {c: target for c, n in counts.items() if 2 <= n < target}
    if not grow:
        return X, y
    k = min(k_neighbors, min(counts[c] for c in grow) - 1)
    return SMOTE(sampling_strategy=grow, k_neighbors=k, random_state=random_state).fit_resample(X, y)
