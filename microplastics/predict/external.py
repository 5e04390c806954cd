"""Score a model on annotated photos it was not trained on: other labs, microscopes, filters.

Two callers share this module. prediction.py --photos classifies one annotated folder into
particles.csv and, when labelled, scores it like a test split (``write_external``).
robustness.py --external scores named sets (``ExternalSet``), each a MICRO-style folder
(raw_img/ + annotation/) or a YOLO export, with its own class map: every set's per-crop
predictions go to ``MODEL/external/<set>[.tta]/`` (predictions.csv, metrics.json, the
classification report and confusion matrix), one row per set to ``MODEL/external.csv``
(results/external_sets.py), drawn in ``MODEL/external.png``. Every set is read and checked
against every model's classes before anything is classified or written.

Class maps rename the sets' labels to the model's: ``OLD=NEW``; ``OLD=-`` leaves that class out.
"""
from __future__ import annotations

import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from microplastics.core import fileio
from microplastics.core.errors import InputError
from microplastics.data.dataset import lines_digest
from microplastics.results import external_sets
from microplastics.core.layout import PREDICTIONS_NAME
from microplastics.results.metrics import compute_metrics, write_evaluation

if TYPE_CHECKING:
    from microplastics.predict.predictor import Predictor

PARTICLES_CSV = "particles.csv"
EXTERNAL_DIR = "external"
EXTERNAL_FILES = (PARTICLES_CSV, "metrics.json", PREDICTIONS_NAME, "classification_report.txt",
                  "confusion_matrix.png")
DROP = "-"  # OLD=- in a class map: the set's class OLD has no counterpart in the model and is left out
SET_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


# ----------------------------------------------------------------------------- class maps and scoring

def parse_class_map(items: Sequence[str] | None, flag: str = "--class-map") -> dict[str, str]:
    """``["fiber=line", "foam=-"]`` -> {"fiber": "line", "foam": "-"} (``-``: leave the class out)."""
    mapping = {}
    for item in items or []:
        old, sep, new = item.partition("=")
        if not sep or not old.strip() or not new.strip():
            raise InputError(f"{flag} {item!r}: expected OLD=NEW (OLD=- leaves a class out), e.g. "
                            f"{flag} pallet=pellet fiber=line")
        mapping[old.strip()] = new.strip()
    return mapping


def mapped_labels(labels: pd.Series, class_map: Mapping[str, str]) -> pd.Series:
    """Labels renamed through ``class_map``; unlabelled and left-out (``OLD=-``) particles become ""."""
    renamed = labels.fillna("").astype(str).map(lambda v: class_map.get(v, v))
    return renamed.where(renamed != DROP, "")


@dataclass
class ParticleScore:
    """How a labelled external set scores: which rows count, and what was left out."""

    scored: np.ndarray                  # boolean mask over the frame's rows
    y_true: list[str]                   # mapped labels of the scored rows
    unknown_classes: dict[str, int]     # label -> particles, labels the model does not know
    n_unlabelled: int                   # no label, or one left out by the class map
    metrics: dict[str, Any] | None      # compute_metrics of the scored rows; None when none


def score_particles(frame: pd.DataFrame, classes: Sequence[str],
                    class_map: Mapping[str, str] | None = None) -> ParticleScore:
    """Score ``classify_photos`` rows against their annotated labels.

    Labels are first renamed through ``class_map``; rows without a label, or with one the
    model does not know, are left out (the latter counted in ``unknown_classes``).
    """
    labels = mapped_labels(frame["true"], dict(class_map or {}))
    labelled = (labels != "").to_numpy()
    known = labels.isin(list(classes)).to_numpy()
    unknown = labels[labelled & ~known].value_counts()
    scored = labelled & known
    y_true = labels[scored].tolist()
    metrics = compute_metrics(y_true, frame.loc[scored, "pred"].tolist(), classes) if scored.any() else None
    return ParticleScore(scored=scored, y_true=y_true, unknown_classes={str(k): int(v) for k, v in unknown.items()},
                         n_unlabelled=int((~labelled).sum()), metrics=metrics)


def set_fingerprint(frame: pd.DataFrame) -> str:
    """A short hash of an external set's boxes and labels, like the test split's fingerprint."""
    return lines_digest(f"{p}\t{b}\t{t}" for p, b, t in zip(frame["photo"], frame["box_id"], frame["true"]))


def crop_paths(frame: pd.DataFrame) -> list[str]:
    """The predictions.csv ``path`` of each particle: ``<photo>#<box ID>``."""
    return [f"{p}#{b}" for p, b in zip(frame["photo"], frame["box_id"])]


def write_external(out_dir: str | Path, frame: pd.DataFrame, predictor: Predictor, *, source: str | Path,
                   csv_path: str | Path | None = None, class_map: Mapping[str, str] | None = None
                   ) -> ParticleScore:
    """particles.csv, and for labelled particles the evaluation files with split "external"."""
    from microplastics.predict.tta import tta_of

    out_dir = Path(out_dir)
    for name in EXTERNAL_FILES:  # no file of an earlier run may pass for this one's
        (out_dir / name).unlink(missing_ok=True)
    with fileio.atomic_path(Path(csv_path) if csv_path else out_dir / PARTICLES_CSV) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6f")
    score = score_particles(frame, predictor.classes, class_map)
    if score.unknown_classes:
        print(f"warning: label(s) the model does not know, left out of scoring: "
              f"{', '.join(f'{k} ({v})' for k, v in score.unknown_classes.items())}; "
              f"model classes: {', '.join(predictor.classes)} (see --class-map)", file=sys.stderr)
    if not (score.scored.any() or score.unknown_classes):
        return score  # unlabelled photos: nothing to score
    extra = {"source": str(source), "format": frame.attrs.get("format"), "margin": frame.attrs.get("margin"),
             "tta": tta_of(predictor), "n_particles": len(frame), "n_scored": int(score.scored.sum()),
             "n_unlabelled": score.n_unlabelled, "unknown_classes": sorted(score.unknown_classes),
             "unknown_counts": score.unknown_classes, "class_map": dict(class_map or {}),
             "skipped": [{"item": i, "reason": r} for i, r in frame.attrs.get("skipped", [])]}
    fingerprint = set_fingerprint(frame)
    if score.metrics is None:
        print("warning: no particle has a label the model knows; metrics.json records only what was left out",
              file=sys.stderr)
        fileio.write_json(out_dir / "metrics.json", {"model": predictor.name, "split": "external", "n": 0,
                                                     "split_fingerprint": fingerprint, "weights": predictor.weights,
                                                     "train_seconds": None, **extra})
        return score
    rows = frame[score.scored]
    probs = rows[[f"prob_{c}" for c in predictor.classes]].to_numpy(dtype=float)
    write_evaluation(out_dir, model=predictor.name, classes=predictor.classes, paths=crop_paths(rows),
                     y_true=score.y_true, y_pred=rows["pred"].tolist(), probs=probs, split_fingerprint=fingerprint,
                     weights=predictor.weights, train_seconds=None, split="external", extra=extra)
    return score


# ----------------------------------------------------------------------------- named sets (robustness.py)

@dataclass(frozen=True)
class ExternalSet:
    """An annotated photo set to score a model on: ``--external NAME=DIR`` with its ``--class-map NAME ...``."""

    name: str
    folder: Path
    class_map: dict[str, str] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)   # annotated class -> particles, as read
    format: str = "auto"

    def mapped_counts(self) -> dict[str, int]:
        """Particles per class after the class map ("" holds the unlabelled and the left-out ones)."""
        counts: dict[str, int] = {}
        for label, n in self.labels.items():
            new = "" if not label else self.class_map.get(label, label)
            new = "" if new == DROP else new
            counts[new] = counts.get(new, 0) + n
        return counts


def parse_external(items: Sequence[str] | None, class_maps: Sequence[Sequence[str]] | None) -> list[ExternalSet]:
    """``--external NAME=DIR`` (repeatable) and ``--class-map NAME OLD=NEW...`` into checked, read sets.

    Each folder is read here (boxes and labels, not yet the pixels) so that a missing folder, a set
    without annotated particles or a class map naming no set stops the run before any work.
    """
    from microplastics.data.annotations import read_annotations

    sets: dict[str, Path] = {}
    for item in items or []:
        name, sep, folder = item.partition("=")
        name = name.strip()
        if not sep or not folder:
            raise InputError(f"--external {item!r}: expected NAME=DIR, e.g. --external otherlab=../otherlab/MICRO")
        if not SET_NAME.match(name):
            raise InputError(f"--external {item!r}: the set name may hold only letters, digits, '_' and '-'")
        if name in sets:
            raise InputError(f"--external {name} is given twice; give each set its own name")
        if not Path(folder).is_dir():
            raise InputError(f"--external {name}: no such folder {folder}; pass a MICRO folder (raw_img/ + "
                            "annotation/) or a YOLO export (images/ + labels/)")
        sets[name] = Path(folder)
    maps: dict[str, dict[str, str]] = {}
    for entry in class_maps or []:
        if not entry or entry[0] not in sets:
            raise InputError(f"--class-map {' '.join(entry)}: the first word must be the name of an --external set "
                            f"({', '.join(sets) or 'none given'}), e.g. --class-map NAME line=fiber foam=-")
        maps.setdefault(entry[0], {}).update(parse_class_map(entry[1:], f"--class-map {entry[0]}"))
    out = []
    for name, folder in sets.items():
        found = read_annotations(folder, "auto", require_label=False)
        labels = pd.Series([r.label or "" for r in found.records], dtype=object).value_counts()
        ext = ExternalSet(name, folder, maps.get(name, {}), {str(k): int(v) for k, v in labels.items()}, found.format)
        if not found.records:
            raise InputError(f"--external {name}: {folder} holds no annotated particle "
                            f"({len(found.skipped)} item(s) skipped); check its annotation files")
        if not any(ext.mapped_counts().get(c) for c in ext.mapped_counts() if c):
            raise InputError(f"--external {name}: none of the {len(found.records)} particles in {folder} has a "
                            "class to score (unlabelled, or every class left out by --class-map)")
        out.append(ext)
    return out


def check_classes(sets: Sequence[ExternalSet], model: str, classes: Sequence[str]) -> None:
    """Every mapped class of every set must be one the model knows; else one line naming the fix."""
    for ext in sets:
        unknown = sorted(c for c in ext.mapped_counts() if c and c not in classes)
        if unknown:
            raise InputError(f"--external {ext.name}: class(es) {', '.join(unknown)} unknown to model {model} "
                            f"(classes {', '.join(classes)}); map them with --class-map {ext.name} "
                            f"{unknown[0]}=<model class>, or leave them out with {unknown[0]}=-")


def classify_set(predictor: Predictor, ext: ExternalSet, margin: float, batch_size: int) -> pd.DataFrame:
    """The set's labelled particles, classified: photo, box_id, box, crop_name, label (as annotated), true
    (mapped), pred, prob_<class>...; ``attrs["skipped"]`` as classify_photos gives it."""
    from microplastics.predict.predictor import classify_photos

    frame = classify_photos(predictor, ext.folder, margin, fmt=ext.format, batch_size=batch_size)
    labels = frame["true"].fillna("").astype(str)
    frame.insert(frame.columns.get_loc("true"), "label", labels)
    frame["true"] = mapped_labels(labels, ext.class_map)
    scored = frame[frame["true"] != ""].reset_index(drop=True)
    scored.attrs.update(frame.attrs, n_particles=len(frame), n_left_out=int(len(frame) - len(scored)))
    return scored


def set_dir(model_dir: str | Path, set_name: str, tta: str) -> Path:
    """Where a set's per-crop predictions of a model are kept: MODEL/external/<set>[.tta]."""
    from microplastics.predict.tta import NONE

    return Path(model_dir) / EXTERNAL_DIR / (set_name if tta == NONE else f"{set_name}.tta")


def write_set(model_dir: Path, predictor: Predictor, ext: ExternalSet, frame: pd.DataFrame, tta: str,
              reference: dict[str, Any], n_boot: int, seed: int) -> dict[str, Any]:
    """The set's evaluation files (predictions.csv and the rest) and its external.csv row, from those predictions."""
    out_dir = set_dir(model_dir, ext.name, tta)
    probs = frame[[f"prob_{c}" for c in predictor.classes]].to_numpy(dtype=float)
    extra = {"set": ext.name, "source": str(ext.folder), "format": frame.attrs.get("format"),
             "margin": frame.attrs.get("margin"), "tta": tta, "class_map": ext.class_map,
             "n_particles": frame.attrs.get("n_particles"), "n_left_out": frame.attrs.get("n_left_out"),
             "skipped": [{"item": i, "reason": r} for i, r in frame.attrs.get("skipped", [])]}
    write_evaluation(out_dir, model=predictor.name, classes=predictor.classes, paths=crop_paths(frame),
                     y_true=frame["true"].tolist(), y_pred=frame["pred"].tolist(), probs=probs,
                     split_fingerprint=set_fingerprint(frame), weights=predictor.weights, train_seconds=None,
                     split="external", extra=extra)
    saved = pd.read_csv(out_dir / PREDICTIONS_NAME, dtype={"true": str, "pred": str}, keep_default_na=False)
    rel = (out_dir / PREDICTIONS_NAME).relative_to(model_dir).as_posix()
    return external_sets.external_row(ext.name, tta, saved, predictor.classes, reference, n_boot, seed,
                                      {"source": str(ext.folder), "predictions": rel})


def score_sets(model_dir: Path, predictor: Predictor, sets: Sequence[ExternalSet], reference: dict[str, Any], *,
               margin: float, batch_size: int = 32, n_boot: int = 1000, seed: int = 42) -> pd.DataFrame:
    """Classify and score every set with one model; write each set's files and the model's external.csv."""
    from microplastics.predict.tta import tta_of

    tta = tta_of(predictor)
    rows = []
    for ext in sets:
        frame = classify_set(predictor, ext, margin, batch_size)
        for item, why in frame.attrs.get("skipped", [])[:5]:
            print(f"warning: {ext.name}: skipped {item}: {why}", file=sys.stderr)
        if frame.empty:
            raise InputError(f"--external {ext.name}: no particle of {ext.folder} could be classified; check "
                            "its photos")
        rows.append(write_set(model_dir, predictor, ext, frame, tta, reference, n_boot, seed))
    table = external_sets.write_table(model_dir, rows)
    external_sets.plot_table(table, model_dir / external_sets.PLOT_NAME, f"{predictor.name}: other photo sets")
    return table
