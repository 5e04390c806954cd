"""Scoring found particles against annotated boxes: matching at an IoU, counts, class-aware F1.

Boxes are ``(minr, minc, maxr, maxc)`` with max exclusive. A found box and an annotated box
match one-to-one, greedily by IoU (the pair with the largest IoU first), when their IoU
reaches the threshold. Hand-drawn boxes are loose, so 0.3 is the main threshold and 0.5 the
strict one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

Box = tuple[int, int, int, int]
IOU_THRESHOLDS = (0.3, 0.5)


def box_iou(a: Sequence[Box], b: Sequence[Box]) -> np.ndarray:
    """IoU of every box of ``a`` (rows) with every box of ``b`` (columns)."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    a_, b_ = np.asarray(a, dtype=float)[:, None, :], np.asarray(b, dtype=float)[None, :, :]
    rows = np.clip(np.minimum(a_[..., 2], b_[..., 2]) - np.maximum(a_[..., 0], b_[..., 0]), 0, None)
    cols = np.clip(np.minimum(a_[..., 3], b_[..., 3]) - np.maximum(a_[..., 1], b_[..., 1]), 0, None)
    inter = rows * cols
    area_a = (a_[..., 2] - a_[..., 0]) * (a_[..., 3] - a_[..., 1])
    area_b = (b_[..., 2] - b_[..., 0]) * (b_[..., 3] - b_[..., 1])
    return inter / np.maximum(area_a + area_b - inter, 1e-9)


def match_boxes(found: Sequence[Box], truth: Sequence[Box], threshold: float) -> list[tuple[int, int]]:
    """One-to-one (found index, truth index) pairs with IoU >= ``threshold``, best pairs first."""
    iou = box_iou(found, truth)
    pairs = np.argwhere(iou >= threshold)
    order = np.argsort(-iou[pairs[:, 0], pairs[:, 1]], kind="stable") if len(pairs) else []
    used_f, used_t, out = set(), set(), []
    for i, j in (pairs[k] for k in order):
        if i not in used_f and j not in used_t:
            used_f.add(int(i))
            used_t.add(int(j))
            out.append((int(i), int(j)))
    return out


@dataclass
class PhotoBoxes:
    """The found and the annotated particles of one photo, with their classes."""

    found: list[Box]
    found_class: list[str]
    truth: list[Box]
    truth_class: list[str]


def _prf(tp: int, n_found: int, n_truth: int) -> dict[str, float]:
    precision = tp / n_found if n_found else 0.0
    recall = tp / n_truth if n_truth else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "n_found": n_found, "n_truth": n_truth}


def score_finder(photos: Mapping[str, PhotoBoxes], thresholds: Sequence[float] = IOU_THRESHOLDS,
                 classes: Sequence[str] | None = None) -> dict:
    """Precision/recall/F1 per IoU threshold, recall per annotated class, the per-photo count
    error, and end to end (found and rightly classified) per-class and macro F1 at each threshold.

    ``classes``: the classes the end-to-end score runs over (default: the annotated ones); the
    macro F1 averages those with at least one annotated particle.
    """
    truth_classes = sorted({c for p in photos.values() for c in p.truth_class})
    classes = list(classes) if classes is not None else truth_classes
    out: dict = {"n_photos": len(photos), "n_found": sum(len(p.found) for p in photos.values()),
                 "n_truth": sum(len(p.truth) for p in photos.values()), "iou": {}}
    for t in thresholds:
        tp = 0
        hit_by_class = {c: 0 for c in truth_classes}
        right = {c: 0 for c in classes}
        for p in photos.values():
            pairs = match_boxes(p.found, p.truth, t)
            tp += len(pairs)
            for i, j in pairs:
                hit_by_class[p.truth_class[j]] += 1
                if p.found_class[i] == p.truth_class[j] and p.truth_class[j] in right:
                    right[p.truth_class[j]] += 1
        entry = _prf(tp, out["n_found"], out["n_truth"])
        entry["recall_per_class"] = {c: hit_by_class[c] / max(1, _count(photos, c, "truth")) for c in truth_classes}
        per_class = {c: _prf(right[c], _count(photos, c, "found"), _count(photos, c, "truth")) for c in classes}
        # the macro mean runs over the classes the photos hold: a class nobody annotated has no
        # recall to lose, and its wrong finds already cost the true classes their recall
        held = [v["f1"] for v in per_class.values() if v["n_truth"] > 0]
        entry["end_to_end"] = {"per_class": per_class, "macro_f1": float(np.mean(held)) if held else 0.0}
        out["iou"][f"{t:g}"] = entry
    out["count_error"] = count_errors(photos)
    return out


def _count(photos: Mapping[str, PhotoBoxes], cls: str, side: str) -> int:
    return sum((p.found_class if side == "found" else p.truth_class).count(cls) for p in photos.values())


def count_errors(photos: Mapping[str, PhotoBoxes]) -> dict:
    """Per photo |found - annotated| / annotated (photos without annotated particles left out)."""
    per_photo = {name: abs(len(p.found) - len(p.truth)) / len(p.truth) for name, p in photos.items() if p.truth}
    values = list(per_photo.values())
    return {"median": float(np.median(values)) if values else None,
            "mean": float(np.mean(values)) if values else None, "per_photo": per_photo}
