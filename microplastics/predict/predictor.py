"""prediction.py: classify crops or annotated photos with any trained model, and draw prediction grids.

``load_predictor(model_dir)`` gives one interface over a deep checkpoint (best.pt) and a classical
pipeline (model.skops): ``.name``, ``.classes`` and ``.predict_proba(images)`` on RGB uint8 arrays.
Three modes use it:

- grid (``--models vgg16 rf ...``): seeded test crops of each model folder, classified again from
  their files, drawn with true and predicted labels into ``<model>/predictions_grid.png``;
- crops (``--model DIR --input PATH...``): one CSV row per crop image, ``path,pred,prob_<class>...``;
- photos (``--model DIR --photos DIR``): every annotated particle of a MICRO-style folder or a YOLO
  export is cut out and classified (``classify_photos``); with labels, the set is scored
  (``score_particles``) and written like a test split (metrics.json, confusion matrix);
  with ``--find`` the particles are found instead of read (``sample_report``, docs/find.md).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Protocol, Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from microplastics.core import fileio
from microplastics.core.cli import ArgumentParser, UserError, finite_float
from microplastics.data.dataset import check_data_dir, lines_digest, recorded_input
from microplastics.core.images import IMAGE_EXTENSIONS, ImageReadError, is_image_file, read_rgb
from microplastics.results.metrics import (METRICS_NAME, PREDICTIONS_NAME, compute_metrics, read_predictions, run_finished,
                      write_evaluation)
from microplastics.deep.precision import PRECISIONS

if TYPE_CHECKING:  # the heavy modules load only when a model of their kind does
    from microplastics.classical.baselines import ClassicalModel
    from microplastics.deep.checkpoint import LoadedClassifier

DEEP_FILE = "best.pt"
CLASSICAL_FILE = "model.skops"
LEGACY_CLASSICAL_FILE = "model.joblib"  # found so that loading it can refuse it with the remedy
MODEL_FILES = (DEEP_FILE, CLASSICAL_FILE, LEGACY_CLASSICAL_FILE)

CONFIG_NAME = "config.json"
GRID_IMAGE = "predictions_grid.png"
GRID_TABLE = "predictions_grid.csv"
CROPS_CSV = "classified.csv"
PARTICLES_CSV = "particles.csv"
EXTERNAL_DIR = "external"
EXTERNAL_FILES = (PARTICLES_CSV, "metrics.json", PREDICTIONS_NAME, "classification_report.txt",
                  "confusion_matrix.png")
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


# ----------------------------------------------------------------------------- model folders

def trained_model_file(path: str | Path) -> Path:
    """The model file of a results folder (or the file itself) whose training run finished.

    The one rule of every stage that reads a model folder: it counts as a trained model only
    with its metrics.json, the file a run writes after testing. A folder with best.pt and
    last.pt but no metrics.json is a run that was interrupted, and its best.pt is not the model
    the run would have delivered. Anything else is a UserError that says what is missing.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} holds no trained model: there is no such folder; train a model first or check "
                        "--model/--results")
    folder, named = (path.parent, path) if path.is_file() else (path, None)
    found = named or next((folder / f for f in MODEL_FILES if (folder / f).is_file()), None)
    if found is None:
        raise UserError(f"{path} holds no trained model ({DEEP_FILE} or {CLASSICAL_FILE}); train one with "
                        "vgg16.py, resnet50.py, vits.py or ml-baselines.py, or point --model at its folder")
    if not run_finished(folder):
        raise UserError(f"{folder} holds {found.name} but no {METRICS_NAME}: its training run did not finish, so it "
                        "is not a trained model; continue it with --resume or train it again")
    return found


def model_file(folder: str | Path) -> Path | None:
    """The trained model of a results folder whose run finished (``trained_model_file``), or None."""
    try:
        return trained_model_file(folder)
    except UserError:
        return None


def model_config(model_dir: str | Path) -> dict[str, Any]:
    """The model folder's config.json (empty when there is none)."""
    return fileio.read_json_dict(Path(model_dir) / CONFIG_NAME, "retrain the model or pass --data")


def resolve_data_dir(model_dir: str | Path, data: str | Path | None = None, recorded: str | None = None) -> Path:
    """``data`` when given, else the processed folder the model was trained on (its config.json,
    else ``recorded``, e.g. the config stored in the checkpoint)."""
    if data is not None:
        return check_data_dir(data, "--data")
    recorded = model_config(model_dir).get("data") or recorded
    if not recorded:
        raise UserError(f"{model_dir}/config.json does not name the data folder; pass --data processed_MICRO")
    folder = Path(recorded)
    if not folder.is_dir():
        raise UserError(f"the data folder {folder} recorded in {model_dir}/config.json is gone; pass --data")
    return folder


def recorded_predictions(model_dir: str | Path) -> pd.DataFrame:
    """The model folder's predictions.csv on the test split."""
    path = Path(model_dir) / PREDICTIONS_NAME
    if not path.is_file():
        raise UserError(f"{path} not found; the model's training script writes it after testing")
    frame = read_predictions(path)
    if frame.empty:
        raise UserError(f"{path} has no rows")
    return frame


def pick_rows(labels: Sequence[str], n: int | None = None, per_class: int | None = None, seed: int = 42) -> list[int]:
    """Seeded row indices: ``per_class`` from every class, or ``n`` drawn from the classes in turn."""
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(str(label), []).append(i)
    queues = {c: [int(r) for r in rng.permutation(rows)] for c, rows in sorted(by_class.items())}
    if per_class is not None:
        return sorted(r for rows in queues.values() for r in rows[:per_class])
    picked: list[int] = []
    limit = len(labels) if n is None else n
    while len(picked) < limit and any(queues.values()):
        for rows in queues.values():
            if rows and len(picked) < limit:
                picked.append(rows.pop(0))
    return sorted(picked)


# ----------------------------------------------------------------------------- grid mode

@dataclass
class GridResult:
    name: str
    n: int
    right: int
    disagreements: int
    path: Path


def write_prediction_grid(model_dir: str | Path, predictor: Predictor, data_dir: Path, size: int = 32,
                          seed: int = 42, batch_size: int = 32) -> GridResult:
    """Classify seeded test crops from their files and draw them; check against predictions.csv."""
    from microplastics.results.grids import save_prediction_grid

    model_dir = Path(model_dir)
    recorded = recorded_predictions(model_dir)
    rows = recorded.iloc[pick_rows(recorded["true"].tolist(), n=size, seed=seed)].reset_index(drop=True)
    images = [read_crop(data_dir, p) for p in rows["path"]]
    probs = predict_in_batches(predictor, images, batch_size)
    table = with_probabilities(rows[["path", "true"]], probs, predictor.classes)
    table.insert(3, "recorded_pred", rows["pred"].tolist())
    with fileio.atomic_path(model_dir / GRID_TABLE) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6f")
    right = int((table["pred"] == table["true"]).sum())
    differ = int((table["pred"] != table["recorded_pred"]).sum())
    save_prediction_grid(images, table["true"].tolist(), table["pred"].tolist(), model_dir / GRID_IMAGE,
                         title=f"{predictor.name}: {len(table)} test crops, {right} right (✗ and red: wrong)")
    if differ:
        print(f"warning: {predictor.name}: {differ} of {len(table)} grid predictions differ from "
              f"{model_dir / PREDICTIONS_NAME}; was the model retrained or the data rebuilt since?", file=sys.stderr)
    return GridResult(predictor.name, len(table), right, differ, model_dir / GRID_IMAGE)


def read_crop(data_dir: Path, rel: str) -> np.ndarray:
    try:
        return read_rgb(data_dir / rel)
    except ImageReadError as err:
        raise UserError(f"{err}; pass --data with the processed folder the model was tested on") from None


# ----------------------------------------------------------------------------- crops mode

def collect_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Files as given; folders expanded to their image files (recursively, sorted)."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p))
            if not files:
                raise UserError(f"{path} holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
            found.extend(files)
        elif path.is_file():
            found.append(path)
        else:
            raise UserError(f"--input {path}: no such file or folder")
    if not found:
        raise UserError("--input named no images")
    return found


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
                    batch_size: int = 32) -> pd.DataFrame:
    """Cut out and classify every annotated particle of a MICRO-style folder or a YOLO export.

    One row per particle: ``photo`` (relative to ``photos_dir``), ``box_id``, the box
    (``minr,minc,maxr,maxc``, max exclusive), ``crop_name``, ``true`` (the annotated class,
    "" when the annotations carry none), ``pred`` and ``prob_<class>`` per model class.
    ``frame.attrs["skipped"]`` lists (item, reason) for what could not be used.
    """
    from microplastics.data.annotations import crop_box, read_annotations, records_by_photo, relative_name

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
        crops = [crop_box(image, r, margin) for r in records]
        parts.append(predict_in_batches(predictor, crops, batch_size))
        meta.extend({"photo": relative_name(r.photo, root), "box_id": r.box_id, "minr": r.minr, "minc": r.minc,
                     "maxr": r.maxr, "maxc": r.maxc, "crop_name": r.crop_name, "true": r.label or ""}
                    for r in records)
    probs = np.concatenate(parts) if parts else np.zeros((0, len(predictor.classes)))
    frame = with_probabilities(pd.DataFrame(meta, columns=[*BOX_COLUMNS, "true"]), probs, predictor.classes)
    frame.attrs.update(skipped=skipped, format=found.format, margin=float(margin))
    return frame


@dataclass
class ParticleScore:
    """How a labelled external set scores: which rows count, and what was left out."""

    scored: np.ndarray                  # boolean mask over the frame's rows
    y_true: list[str]                   # mapped labels of the scored rows
    unknown_classes: dict[str, int]     # label -> particles, labels the model does not know
    n_unlabelled: int
    metrics: dict[str, Any] | None      # compute_metrics of the scored rows; None when none


def score_particles(frame: pd.DataFrame, classes: Sequence[str],
                    class_map: Mapping[str, str] | None = None) -> ParticleScore:
    """Score ``classify_photos`` rows against their annotated labels.

    Labels are first renamed through ``class_map``; rows without a label, or with one the
    model does not know, are left out (the latter counted in ``unknown_classes``).
    """
    class_map = dict(class_map or {})
    labels = frame["true"].fillna("").astype(str).map(lambda v: class_map.get(v, v))
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


def write_external(out_dir: str | Path, frame: pd.DataFrame, predictor: Predictor, *, source: str | Path,
                   csv_path: str | Path | None = None, class_map: Mapping[str, str] | None = None
                   ) -> ParticleScore:
    """particles.csv, and for labelled particles the evaluation files with split "external"."""
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
             "n_particles": int(len(frame)), "n_scored": int(score.scored.sum()),
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
    write_evaluation(out_dir, model=predictor.name, classes=predictor.classes,
                     paths=[f"{p}#{b}" for p, b in zip(rows["photo"], rows["box_id"])], y_true=score.y_true,
                     y_pred=rows["pred"].tolist(), probs=probs, split_fingerprint=fingerprint,
                     weights=predictor.weights, train_seconds=None, split="external", extra=extra)
    return score


def default_margin(model_dir: Path) -> float:
    """The crop margin data-preprocessing.py used for the model's training data (0 if unknown)."""
    data = model_config(model_dir).get("data")
    return recorded_input(Path(data))[1] if data and Path(data).is_dir() else 0.0


def parse_class_map(items: Sequence[str] | None) -> dict[str, str]:
    """``["fiber=line", "pallet=pellet"]`` -> {"fiber": "line", "pallet": "pellet"}."""
    mapping = {}
    for item in items or []:
        old, sep, new = item.partition("=")
        if not sep or not old.strip() or not new.strip():
            raise UserError(f"--class-map {item!r}: expected OLD=NEW, e.g. --class-map pallet=pellet fiber=line")
        mapping[old.strip()] = new.strip()
    return mapping


# ----------------------------------------------------------------------------- command line

def get_args_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="prediction.py",
        description="Classify microplastic crops with a trained model (deep best.pt or classical model.skops). "
                    "Grid mode (--models): a grid of seeded test crops per model, true and predicted labels, "
                    "wrong ones in red, into RESULTS/<model>/predictions_grid.png. Crops mode (--model, --input): "
                    "a CSV path,pred,prob_<class>... Photos mode (--model, --photos): every annotated particle of "
                    "a MICRO folder (raw_img/ + annotation/) or a YOLO export, classified; labelled sets are "
                    "scored into metrics.json and confusion_matrix.png.",
        examples=["python prediction.py --models rf svm vgg16   # grids of test crops",
                  "python prediction.py --model results/vgg16 --input new_crops/",
                  "python prediction.py --model results/rf --photos other_lab/MICRO   # scored when annotated"])
    a = parser.add_argument
    a("--models", nargs="+", metavar="NAME", help="grid mode: model folder names under --results, "
                                                  "e.g. vgg16 resnet50 vit_b_16 rf svm")
    a("--results", default="results", help="folder holding one sub-folder per model")
    a("--model", metavar="DIR", help="crops/photos mode: a model folder (results/vgg16, results/rf...)")
    a("--input", nargs="+", metavar="PATH", help="crop images or folders of them to classify")
    a("--photos", metavar="DIR", help="a MICRO-style folder or a YOLO export whose annotated particles to classify")
    a("--format", choices=("auto", "deepparticle", "yolo"), default="auto", help="layout of --photos")
    a("--margin", type=finite_float, default=None, help="photos mode: widen each box by this fraction of its size "
                                                 "(default: the margin recorded for the model's training data, else 0)")
    a("--class-map", nargs="+", metavar="OLD=NEW", help="photos mode: rename annotation labels before scoring, "
                                                        "e.g. pallet=pellet fiber=line")
    a("--out", metavar="DIR", help="output folder (default: MODEL/classified for --input, MODEL/external "
                                   "for --photos)")
    a("--csv", metavar="FILE", help="write the per-crop CSV here instead of OUT/classified.csv or OUT/particles.csv")
    a("--data", help="grid mode: processed folder of the test crops (default: the one in the model's config.json)")
    a("--grid-size", type=int, default=32, help="grid mode: test crops per grid")
    a("--batch-size", type=int, default=32, help="crops per forward pass")
    a("--seed", type=int, default=42, help="seed of the crops drawn for the grid")
    a("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto", help="where deep models run")
    a("--precision", choices=PRECISIONS, default="auto",
      help="deep models' arithmetic. auto: bf16 autocast on a CPU with native bf16 (AVX512-BF16, AMX; about 2x "
           "faster), CUDA's mixed precision on a GPU, else fp32; fp32: full precision; bf16: bf16 autocast")
    from microplastics.find.sample_report import add_find_arguments

    add_find_arguments(parser)
    return parser


def _check_args(args: argparse.Namespace) -> str:
    modes = [m for m, v in (("grid", args.models), ("input", args.input), ("photos", args.photos)) if v]
    if len(modes) != 1:
        raise UserError("choose one mode: --models NAME... (grids), --model DIR --input PATH... (crops) "
                        "or --model DIR --photos DIR (annotated photos)")
    if modes[0] != "grid" and not args.model:
        raise UserError(f"--{modes[0]} needs --model DIR, the folder of a trained model")
    if args.batch_size < 1 or args.grid_size < 1:
        raise UserError("--batch-size and --grid-size must be at least 1")
    if args.margin is not None and not args.margin >= 0:
        raise UserError(f"--margin must be 0 or more, got {args.margin}")
    if args.out:
        fileio.check_output_dir(args.out, "--out")
    if args.csv:
        fileio.check_output_file(args.csv, "--csv")
    return modes[0]


def resolve_device(choice: str) -> str:
    from microplastics.deep.engine import resolve_device as engine_device

    return str(engine_device(choice))


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    mode = _check_args(args)
    if args.find and mode != "photos":
        raise UserError("--find works on photos: --model DIR --photos DIR --find")
    device = resolve_device(args.device)
    if mode == "grid":
        return run_grids(args, device)
    if mode == "input":
        return run_crops(args, device)
    if args.find:
        from microplastics.find.sample_report import run_find

        return run_find(args, device)
    return run_photos(args, device)


def run_grids(args: argparse.Namespace, device: str) -> int:
    dirs = [Path(args.results) / name for name in dict.fromkeys(args.models)]
    for folder in dirs:  # every folder checked before any work
        trained_model_file(folder)
    for folder in dirs:
        predictor = load_predictor(folder, device, args.precision)
        result = write_prediction_grid(folder, predictor, resolve_data_dir(folder, args.data), args.grid_size,
                                       args.seed, args.batch_size)
        print(f"{result.name}: {result.right}/{result.n} right, "
              f"{result.n - result.disagreements}/{result.n} as in predictions.csv -> {result.path}")
    return 0


def run_crops(args: argparse.Namespace, device: str) -> int:
    paths = collect_inputs(args.input)
    predictor = load_predictor(args.model, device, args.precision)
    frame, unreadable = classify_files(predictor, paths, args.batch_size)
    for path, why in unreadable:
        print(f"warning: skipped unreadable {path}: {why}", file=sys.stderr)
    if frame.empty:
        raise UserError(f"none of the {len(paths)} input file(s) could be read as an image")
    out = Path(args.csv) if args.csv else Path(args.out or Path(args.model) / "classified") / CROPS_CSV
    with fileio.atomic_path(out) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6f")
    counts = frame["pred"].value_counts().to_dict()
    print(f"{predictor.name}: {len(frame)} crop(s) classified ({counts}), {len(unreadable)} unreadable -> {out}")
    return 0


def run_photos(args: argparse.Namespace, device: str) -> int:
    class_map = parse_class_map(args.class_map)
    predictor = load_predictor(args.model, device, args.precision)
    margin = args.margin if args.margin is not None else default_margin(Path(args.model))
    frame = classify_photos(predictor, args.photos, margin, fmt=args.format, batch_size=args.batch_size)
    skipped = frame.attrs.get("skipped", [])
    for item, why in skipped[:20]:
        print(f"warning: skipped {item}: {why}", file=sys.stderr)
    if len(skipped) > 20:
        print(f"warning: ... and {len(skipped) - 20} more skipped (listed in metrics.json)", file=sys.stderr)
    if frame.empty:
        raise UserError(f"no annotated particle in {args.photos} could be classified "
                        f"({len(skipped)} item(s) skipped); check its annotation files")
    out_dir = Path(args.out or Path(args.model) / EXTERNAL_DIR)
    score = write_external(out_dir, frame, predictor, source=args.photos, csv_path=args.csv, class_map=class_map)
    line = f"{predictor.name}: {len(frame)} particle(s) in {frame['photo'].nunique()} photo(s) classified"
    if score.metrics is not None:
        line += f"; {int(score.scored.sum())} scored: accuracy {score.metrics['accuracy']:.4f}, " \
                f"macro F1 {score.metrics['macro_f1']:.4f}"
    print(f"{line} -> {out_dir}")
    return 0
