"""Scoring a model on a split, and the files every model folder carries.

One function, ``write_evaluation``, writes metrics.json, predictions.csv,
classification_report.txt and confusion_matrix.png, so classical and deep models,
the IoU table and the report all read numbers computed the same way.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import classification_report, confusion_matrix, precision_recall_fscore_support

from microplastics.core import fileio
from microplastics.core.layout import CONFUSION_NAME, METRICS_NAME, PREDICTIONS_NAME, REPORT_NAME
from microplastics.core.errors import InputError
from microplastics.results.stats import SCORES



def per_class_iou(cm: np.ndarray) -> np.ndarray:
    """Label IoU (Jaccard) per class from a confusion matrix: TP / (TP + FP + FN); NaN when 0/0."""
    cm = np.asarray(cm, dtype=float)
    tp = np.diag(cm)
    union = cm.sum(axis=0) + cm.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)


def compute_metrics(y_true: Sequence[str], y_pred: Sequence[str], classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro/weighted scores, label IoU and per-class figures.

    Classes with neither true nor predicted crops are listed with support 0 and left out
    of the macro means and the mean IoU (their scores are undefined, not zero).
    """
    classes = list(classes)
    y_true, y_pred = np.asarray(y_true, dtype=object), np.asarray(y_pred, dtype=object)
    unknown = sorted((set(y_true) | set(y_pred)) - set(classes))
    if unknown:
        raise ValueError(f"labels {unknown} are not among the classes {classes}")
    cm = confusion_matrix(y_true, y_pred, labels=classes)
    present = [i for i, _ in enumerate(classes) if cm[i, :].sum() + cm[:, i].sum() > 0]
    present_labels = [classes[i] for i in present]
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=classes, zero_division=0)
    iou = per_class_iou(cm)
    n = int(len(y_true))
    macro = precision_recall_fscore_support(y_true, y_pred, labels=present_labels, average="macro", zero_division=0)
    weighted = precision_recall_fscore_support(y_true, y_pred, labels=present_labels, average="weighted",
                                               zero_division=0)
    return {
        "n": n,
        "accuracy": float(np.mean(y_true == y_pred)) if n else float("nan"),
        "macro_precision": float(macro[0]),
        "macro_recall": float(macro[1]),
        "macro_f1": float(macro[2]),
        "weighted_f1": float(weighted[2]),
        "mean_iou": float(np.nanmean(iou[present])) if present else float("nan"),
        "per_class": {
            c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                "iou": None if np.isnan(iou[i]) else float(iou[i]), "support": int(s[i])}
            for i, c in enumerate(classes)
        },
        "confusion_matrix": cm.tolist(),
        "classes": classes,
    }


def predictions_frame(paths: Sequence[str], y_true: Sequence[str], y_pred: Sequence[str],
                      probs: np.ndarray | None, classes: Sequence[str]) -> pd.DataFrame:
    """The predictions.csv table: path,true,pred,prob_<class>... (probabilities optional)."""
    frame = pd.DataFrame({"path": list(paths), "true": list(y_true), "pred": list(y_pred)})
    if probs is not None:
        probs = np.asarray(probs, dtype=float)
        if probs.shape != (len(frame), len(classes)):
            raise ValueError(f"probabilities have shape {probs.shape}, expected {(len(frame), len(classes))}")
        for j, c in enumerate(classes):
            frame[f"prob_{c}"] = probs[:, j]
    return frame


def write_evaluation(out_dir: str | Path, *, model: str, classes: Sequence[str], paths: Sequence[str],
                     y_true: Sequence[str], y_pred: Sequence[str], probs: np.ndarray | None,
                     split_fingerprint: str, weights: str, train_seconds: float | None,
                     split: str = "test", extra: dict[str, Any] | None = None,
                     report_footer: str = "") -> dict[str, Any]:
    """Write the four evaluation files of a model folder and return the metrics dict;
    ``report_footer`` is appended to classification_report.txt (how the model was trained)."""
    from microplastics.core.plots import save_confusion_matrix  # matplotlib only when writing

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    classes = list(classes)
    frame = predictions_frame(paths, y_true, y_pred, probs, classes)
    with fileio.atomic_path(out_dir / PREDICTIONS_NAME) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6f")
    scores = compute_metrics(y_true, y_pred, classes)
    metrics = {"model": model, "split": split, **scores, "split_fingerprint": split_fingerprint,
               "weights": weights, "train_seconds": train_seconds, **(extra or {})}
    fileio.write_json(out_dir / METRICS_NAME, metrics)
    report = classification_report(y_true, y_pred, labels=classes, digits=4, zero_division=0)
    fileio.write_text(out_dir / REPORT_NAME,
                      f"{model} on the {split} split (n={scores['n']})\n\n{report}{report_footer}")
    save_confusion_matrix(np.array(scores["confusion_matrix"]), classes, out_dir / CONFUSION_NAME,
                          title=f"{model}: {split} split, accuracy {scores['accuracy']:.3f}")
    return metrics


def read_predictions(path: str | Path) -> pd.DataFrame:
    """Load a predictions.csv written by ``write_evaluation``; one InputError line when it is not one."""
    path = Path(path)
    try:
        # only an empty field is missing: a class may well be called "None" or "NA"
        frame = pd.read_csv(path, dtype={"path": str, "true": str, "pred": str}, keep_default_na=False,
                            na_values=[""])
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise InputError(f"{path} is not a readable predictions.csv ({type(err).__name__}); "
                        "rerun the model's stage") from None
    missing = {"path", "true", "pred"} - set(frame.columns)
    if missing:
        raise InputError(f"{path} lacks column(s) {', '.join(sorted(missing))}; rerun the model's stage")
    blank = frame[["path", "true", "pred"]].isna().any(axis=1).to_numpy()
    if blank.any():
        raise InputError(f"{path}: line {int(blank.argmax()) + 2} has an empty path, true or pred; "
                        "rerun the model's stage")
    if frame["path"].duplicated().any():
        raise InputError(f"{path} lists crop {frame['path'][frame['path'].duplicated()].iloc[0]} twice; "
                        "rerun the model's stage")
    return frame


SCORE_KEYS = ("n", *SCORES)
AGREEMENT_TOLERANCE = 1e-6


def load_metrics(model_dir: str | Path) -> dict[str, Any]:
    """A model folder's metrics.json, checked: a JSON object whose scores are numbers (or null)."""
    path = Path(model_dir) / METRICS_NAME
    try:
        stored = fileio.read_json(path)
    except FileNotFoundError:
        raise InputError(f"{path} not found; the model's stage writes it after testing") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise InputError(f"{path} is not valid JSON ({type(err).__name__}); rerun that model's stage") from None
    if not isinstance(stored, dict):
        raise InputError(f"{path} holds a JSON {type(stored).__name__}, not an object; rerun that model's stage")
    for key in SCORE_KEYS:
        value = stored.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise InputError(f"{path}: {key} is {value!r}, not a number; rerun that model's stage")
    for key, kind in (("classes", list), ("per_class", dict), ("split_fingerprint", str)):
        if stored.get(key) is not None and not isinstance(stored[key], kind):
            raise InputError(f"{path}: {key} is a {type(stored[key]).__name__}, not a {kind.__name__}; "
                            "rerun that model's stage")
    return stored


def check_agreement(name: str, recomputed: dict[str, Any], stored: dict[str, Any]) -> None:
    """The scores recomputed from predictions.csv must be those metrics.json holds: a predictions.csv
    cut short, or from another run, would otherwise pass for the split metrics.json names."""
    for key in SCORE_KEYS:
        if stored.get(key) is None:
            continue
        a, b = float(recomputed[key]), float(stored[key])
        if not (math.isnan(a) and math.isnan(b)) and abs(a - b) > AGREEMENT_TOLERANCE:
            raise InputError(f"{name}: metrics.json says {key} = {b:.6f} but its predictions.csv gives {a:.6f}; "
                            f"the folder mixes two runs or a file was cut short, rerun that model")


def split_key(metrics_json: dict[str, Any]) -> str:
    """The split a model was scored on: '<split>:<fingerprint>'; equal keys, comparable scores."""
    return f"{metrics_json.get('split', 'test')}:{metrics_json.get('split_fingerprint', 'unknown')}"


def refuse_mixed_splits(keys: dict[str, str], purpose: str) -> None:
    """Stop when models (name -> split key) were scored on different test splits, naming each group."""
    groups: dict[str, list[str]] = {}
    for name, key in keys.items():
        groups.setdefault(key, []).append(name)
    if len(groups) > 1:
        listed = "; ".join(f"{', '.join(names)} (split {key})" for key, names in groups.items())
        raise InputError(f"models were scored on different test splits and cannot {purpose}: {listed}. "
                        "Rerun them on one processed data folder, or pick one group with --models")


def model_classes(metrics_json: dict[str, Any], predictions: pd.DataFrame | None) -> list[str]:
    """Class names in index order: metrics.json's list, else its per_class keys, else the prob_ columns."""
    if metrics_json.get("classes"):
        return list(metrics_json["classes"])
    if metrics_json.get("per_class"):
        return sorted(metrics_json["per_class"])
    if predictions is not None:
        probs = [c[len("prob_"):] for c in predictions.columns if c.startswith("prob_")]
        return probs or sorted(set(predictions["true"]) | set(predictions["pred"]))
    return []
