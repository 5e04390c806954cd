"""The prediction library: any trained model, deep or classical, behind one interface.

``load_predictor(model_dir)`` gives one interface over a deep checkpoint (best.pt) and a classical
pipeline (model.skops): ``.name``, ``.classes`` and ``.predict_proba(images)`` on RGB uint8 arrays.
``classify_files`` and ``classify_photos`` run it on crop files and on the annotated particles of
photos; predict.external scores labelled sets of photos, predict.tta averages over flips and
quarter turns. The command line of prediction.py is predict.prediction; model folders are read by
core.layout and predict.model_folder.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Protocol, Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from microplastics.core.images import ImageReadError, read_rgb
from microplastics.core.layout import trained_model_file

if TYPE_CHECKING:  # the heavy modules load only when a model of their kind does
    from microplastics.classical.baselines import ClassicalModel
    from microplastics.deep.checkpoint import LoadedClassifier

CROPS_CSV = "classified.csv"
BOX_COLUMNS = ["photo", "box_id", "minr", "minc", "maxr", "maxc", "crop_name"]


# ----------------------------------------------------------------------------- predictors

class Predictor(Protocol):
    """A trained classifier of RGB crops; probability columns follow ``classes``."""

    name: str
    classes: list[str]
    weights: str

    def predict_proba(self, images: Sequence[np.ndarray]) -> np.ndarray: ...


@dataclass
class DeepPredictor:
    """A best.pt checkpoint: the eval preset (resize, normalise), then the network's softmax."""

    name: str
    loaded: LoadedClassifier
    classes: list[str] = field(init=False)
    weights: str = field(init=False)

    def __post_init__(self) -> None:
        self.classes = list(self.loaded.classes)
        self.weights = str(self.loaded.weights)
        self.crop_um_per_px = self.loaded.config.get("crop_um_per_px")  # the training crops' scale, if resampled

    def predict_proba(self, images: Sequence[np.ndarray]) -> np.ndarray:
        # one forward pass for the batch the caller chose (--batch-size)
        return np.asarray(self.loaded.predict_proba(list(images), batch_size=max(1, len(images))), dtype=np.float64)


@dataclass
class ClassicalPredictor:
    """A model.skops pipeline: handcrafted features as in training, then the classifier."""

    name: str
    model: ClassicalModel
    classes: list[str] = field(init=False)
    weights: str = "none (trained from scratch on handcrafted features)"

    def __post_init__(self) -> None:
        self.classes = list(self.model.classes)
        self.crop_um_per_px = self.model.info.get("crop_um_per_px")  # the training crops' scale, if resampled

    def predict_proba(self, images: Sequence[np.ndarray]) -> np.ndarray:
        return np.asarray(self.model.predict_proba_images(list(images)), dtype=np.float64)


def load_predictor(model_dir: str | Path, device: str = "cpu", precision: str | None = None) -> Predictor:
    """The model of a results folder whose run finished (best.pt or model.skops), or of one of those files.

    ``precision`` (auto, fp32, bf16; default: as in training) applies to a deep model's backbone.
    """
    path = trained_model_file(model_dir)
    if path.name.endswith(".pt"):
        from microplastics.deep.checkpoint import load_classifier

        return DeepPredictor(name=path.parent.name, loaded=load_classifier(path, device=device, precision=precision))
    from microplastics.classical.baselines import load_model

    return ClassicalPredictor(name=path.parent.name, model=load_model(path))


def predict_in_batches(predictor: Predictor, images: Sequence[np.ndarray], batch_size: int = 32,
                       desc: str | None = None) -> np.ndarray:
    """``predictor.predict_proba`` over ``images`` in batches, rows renormalised to sum to 1."""
    parts = []
    starts = range(0, len(images), batch_size)
    for start in tqdm(starts, desc=desc, unit="batch", disable=desc is None or len(starts) < 2):
        parts.append(np.asarray(predictor.predict_proba(images[start:start + batch_size]), dtype=np.float64))
    if not parts:
        return np.zeros((0, len(predictor.classes)))
    probs = np.concatenate(parts)
    return probs / np.maximum(probs.sum(axis=1, keepdims=True), 1e-12)


def labels_of(probs: np.ndarray, classes: Sequence[str]) -> list[str]:
    """The most probable class of each row."""
    return [classes[i] for i in np.argmax(probs, axis=1)] if len(probs) else []


def with_probabilities(frame: pd.DataFrame, probs: np.ndarray, classes: Sequence[str]) -> pd.DataFrame:
    """``frame`` plus ``pred`` and one ``prob_<class>`` column per class."""
    frame = frame.copy()
    frame["pred"] = labels_of(probs, classes)
    for j, c in enumerate(classes):
        frame[f"prob_{c}"] = probs[:, j] if len(probs) else []
    return frame


# ----------------------------------------------------------------------------- crops mode

def classify_files(predictor: Predictor, paths: Sequence[Path], batch_size: int = 32
                   ) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Rows ``path,pred,prob_<class>...`` for the readable files; the unreadable ones with why."""
    rows, probs, unreadable = [], [], []
    for start in tqdm(range(0, len(paths), batch_size), desc="classifying", unit="batch",
                      disable=len(paths) <= batch_size):
        batch, names = [], []
        for path in paths[start:start + batch_size]:
            try:
                batch.append(read_rgb(path))
                names.append(str(path))
            except ImageReadError as err:
                unreadable.append((str(path), str(err.__cause__ or err)))
        if batch:
            probs.append(predict_in_batches(predictor, batch, batch_size))
            rows.extend(names)
    matrix = np.concatenate(probs) if probs else np.zeros((0, len(predictor.classes)))
    return with_probabilities(pd.DataFrame({"path": rows}), matrix, predictor.classes), unreadable


# ----------------------------------------------------------------------------- photos mode

def classify_photos(predictor: Predictor, photos_dir: str | Path, margin: float = 0.0, *, fmt: str = "auto",
                    batch_size: int = 32, um_per_px: float | Mapping[str, float] | None = None) -> pd.DataFrame:
    """Cut out and classify every annotated particle of a MICRO-style folder or a YOLO export.

    One row per particle: ``photo`` (relative to ``photos_dir``), ``box_id``, the box
    (``minr,minc,maxr,maxc``, max exclusive), ``crop_name``, ``true`` (the annotated class,
    "" when the annotations carry none), ``pred`` and ``prob_<class>`` per model class.
    ``frame.attrs["skipped"]`` lists (item, reason) for what could not be used. With the photos'
    ``um_per_px`` (``--um-per-px``), a model trained on resampled crops gets its crops at its own scale.
    """
    from microplastics.data.annotations import crop_box, photo_root, read_annotations, records_by_photo, relative_name
    from microplastics.data.scale import model_scale, predictor_scale
    from microplastics.find.measure import scale_for

    root = Path(photos_dir)
    found = read_annotations(root, fmt, require_label=False)
    skipped = list(found.skipped)
    by_photo = records_by_photo(found.records)
    meta, parts = [], []
    for photo, records in tqdm(by_photo.items(), desc=f"{predictor.name}: photos", unit="photo",
                               disable=len(by_photo) < 10):
        try:
            image = read_rgb(photo)
        except ImageReadError as err:
            skipped.append((relative_name(photo, root), f"unreadable image: {err.reason}"))
            continue
        photo_scale = scale_for(relative_name(photo, photo_root(root, found.format)), um_per_px)
        crops = model_scale([crop_box(image, r, margin) for r in records], photo_scale, predictor_scale(predictor))
        parts.append(predict_in_batches(predictor, crops, batch_size))
        meta.extend({"photo": relative_name(r.photo, root), "box_id": r.box_id, "minr": r.minr, "minc": r.minc,
                     "maxr": r.maxr, "maxc": r.maxc, "crop_name": r.crop_name, "true": r.label or ""}
                    for r in records)
    probs = np.concatenate(parts) if parts else np.zeros((0, len(predictor.classes)))
    frame = with_probabilities(pd.DataFrame(meta, columns=[*BOX_COLUMNS, "true"]), probs, predictor.classes)
    frame.attrs.update(skipped=skipped, format=found.format, margin=float(margin))
    return frame


