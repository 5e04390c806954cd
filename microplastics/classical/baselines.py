"""ml-baselines.py: handcrafted features -> Random Forest and SVM, scored on the test split.

Each model is one imbalanced-learn pipeline (scaler, optional SMOTE, classifier), fitted on
the train split's features. Resampling sits inside the pipeline, so it touches training data
only; validation and test crops are scored as they are. Every model folder gets the files
ARCHITECTURE.md lists, ``val_metrics.json``, a grid of test crops (``test_grid.png`` with its
labels in ``test_grid.csv``) and ``model.skops``: the fitted pipeline with the class names
and feature settings, which ``load_model`` turns back into a classifier of raw crops.
"""
from __future__ import annotations

import argparse
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import sklearn
import skops.io
from imblearn import FunctionSampler
from imblearn.pipeline import Pipeline
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import RandomForestClassifier
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from microplastics.data import dataset
from microplastics.core import fileio, provenance
from microplastics.results import metrics
from microplastics.core.cli import ArgumentParser, UserError, add_workers_argument, finite_float, one_line
from microplastics.data.augment import AUGMENT_CHOICES
from microplastics.data.background_swap import check_swap_probability
from microplastics.data.scale import check_scale_augment
from microplastics.data.mixing import check_fraction, mixed_train
from microplastics.classical.features import (FEATURE_KINDS, FeatureSettings, augmented_features, dataset_features,
                                              extract_features, feature_names)
from microplastics.core.seeds import pick_rows
from microplastics.results.grids import save_prediction_grid
from microplastics.core.images import read_rgb
from microplastics.core.layout import CLASSICAL_NAME as MODEL_FILE, CONFIG_NAME as CONFIG_FILE
from microplastics.core.layout import LEGACY_CLASSICAL_NAME as LEGACY_MODEL_FILE
from microplastics.data.balance import SMOTE_NEIGHBOURS, smote_resample

PROG = "ml-baselines.py"
VAL_METRICS_FILE = "val_metrics.json"
GRID_IMAGE = "test_grid.png"
GRID_TABLE = "test_grid.csv"
MODEL_NAMES = ("rf", "svm")
BALANCE_CHOICES = ("none", "smote", "class-weight")
WEIGHTS = "none (trained from scratch)"
FORMAT_VERSION = 2  # 1: model.joblib
# What skops may build beyond scikit-learn's own types, which it trusts itself: the types of
# make_pipeline's pipelines, and nothing else. The SMOTE step under both the names it was saved by
# (data.balance today, classical.baselines before), so that older model files still load.
TRUSTED_TYPES = ("imblearn.pipeline.Pipeline", "imblearn.base.FunctionSampler",
                 "microplastics.data.balance.smote_resample",
                 "microplastics.classical.baselines.smote_resample", "sklearn.tree._tree.Tree",
                 "sklearn.calibration._CalibratedClassifier", "sklearn.calibration._SigmoidCalibration")
SHAPE_CUES_DEFAULT = "on"  # measured on mp100: docs/scale.md
# With --augment robust on uncalibrated crops, the augmented copies are also put at other magnifications and on
# other filters: both models then lose less on mp100's photos at 0.5x/2x and on other filters, at the same clean
# macro-F1 (docs/generalisation.md). Calibrated crops are already at one scale, so they are not rescaled.
SCALE_AUGMENT_DEFAULT = 2.0
SWAP_BACKGROUND_DEFAULT = 0.5
VAL_KEYS = ("n", "accuracy", "macro_precision", "macro_recall", "macro_f1", "weighted_f1", "mean_iou")


# ---------------------------------------------------------------- pipelines

def make_pipeline(name: str, balance: str, seed: int, y_train: Sequence[str], workers: int = 1) -> Pipeline:
    """Scaler, SMOTE when asked, then the study's Random Forest or RBF SVM."""
    if name not in MODEL_NAMES:
        raise UserError(f"unknown model {name!r}; choose from {', '.join(MODEL_NAMES)}")
    class_weight = "balanced" if balance == "class-weight" else None
    if name == "rf":
        clf: Any = RandomForestClassifier(n_estimators=200, class_weight=class_weight, random_state=seed,
                                          n_jobs=workers)
    else:
        # SVC(probability=True) is deprecated; the same Platt scaling, fitted on cross-validated
        # decision values, with the final SVM trained on all training crops.
        folds = max(2, min(5, min(Counter(y_train).values())))
        clf = CalibratedClassifierCV(SVC(kernel="rbf", C=10, gamma="scale", class_weight=class_weight,
                                         random_state=seed),
                                     method="sigmoid", ensemble=False, cv=folds)
    steps: list[tuple[str, Any]] = [("scale", StandardScaler())]
    if balance == "smote":
        steps.append(("smote", FunctionSampler(func=smote_resample,
                                               kw_args={"k_neighbors": SMOTE_NEIGHBOURS, "random_state": seed})))
    steps.append(("clf", clf))
    return Pipeline(steps)


# ---------------------------------------------------------------- the trained model

@dataclass
class ClassicalModel:
    """A fitted pipeline with its class names and the feature settings it was trained on."""

    name: str
    classes: list[str]
    pipeline: Pipeline
    settings: FeatureSettings
    info: dict[str, Any] = field(default_factory=dict)

    def predict_proba_features(self, X: np.ndarray) -> np.ndarray:
        """Probabilities (n, len(classes)), columns in ``classes`` order; rows sum to 1.

        A class the pipeline never saw in training keeps probability 0.
        """
        X = np.asarray(X, dtype=np.float64)
        out = np.zeros((len(X), len(self.classes)))
        if not len(X):
            return out
        probs = self.pipeline.predict_proba(X)
        index = {c: i for i, c in enumerate(self.classes)}
        for j, c in enumerate(self.pipeline.classes_):
            out[:, index[str(c)]] = probs[:, j]
        return out / out.sum(axis=1, keepdims=True)

    def features(self, images: Sequence[np.ndarray]) -> np.ndarray:
        n_dim = len(feature_names(settings=self.settings))
        if not len(images):
            return np.zeros((0, n_dim))
        return np.stack([extract_features(img, settings=self.settings) for img in images])

    def predict_proba_images(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Probabilities for raw RGB crops, features computed as in training."""
        return self.predict_proba_features(self.features(images))

    def predict_images(self, images: Sequence[np.ndarray]) -> list[str]:
        """Class names of raw RGB crops: the most probable class of each."""
        return self.labels(self.predict_proba_images(images))

    def labels(self, probs: np.ndarray) -> list[str]:
        return [self.classes[i] for i in np.argmax(probs, axis=1)]

    def save(self, path: str | Path) -> None:
        payload = {"format": FORMAT_VERSION, "name": self.name, "classes": self.classes,
                   "feature_settings": self.settings.to_dict(), "feature_names": feature_names(settings=self.settings),
                   "pipeline": self.pipeline, "sklearn_version": sklearn.__version__, **self.info}
        with fileio.atomic_path(path) as tmp:
            skops.io.dump(payload, tmp)


def load_model(model_dir: str | Path) -> ClassicalModel:
    """The classical model saved in ``model_dir/model.skops`` (or that file itself)."""
    path = Path(model_dir)
    if path.is_dir():
        legacy_only = not (path / MODEL_FILE).is_file() and (path / LEGACY_MODEL_FILE).is_file()
        path = path / (LEGACY_MODEL_FILE if legacy_only else MODEL_FILE)
    if path.suffix == Path(LEGACY_MODEL_FILE).suffix:
        raise UserError(f"{path} is a pickle (joblib) file, which can run any code when loaded, so it is not read; "
                        f"retrain with ml-baselines.py, which writes {MODEL_FILE}")
    if not path.is_file():
        raise UserError(f"{path} not found; train the model with ml-baselines.py first")
    payload = read_trusted(path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION \
            or not isinstance(payload.get("pipeline"), Pipeline) or not isinstance(payload.get("classes"), list):
        raise UserError(f"{path} is not a {MODEL_FILE} written by this version of ml-baselines.py; retrain it")
    if payload.get("sklearn_version") != sklearn.__version__:
        warnings.warn(f"{path} was saved with scikit-learn {payload.get('sklearn_version')}, "
                      f"loaded with {sklearn.__version__}", stacklevel=2)
    info = {k: v for k, v in payload.items()
            if k not in ("format", "name", "classes", "feature_settings", "pipeline", "sklearn_version")}
    try:
        settings = FeatureSettings(**payload["feature_settings"])
    except (KeyError, TypeError) as err:
        raise UserError(f"{path} holds no valid feature settings ({one_line(err)}); "
                        "retrain with ml-baselines.py") from None
    return ClassicalModel(name=str(payload.get("name")), classes=[str(c) for c in payload["classes"]],
                          pipeline=payload["pipeline"], settings=settings, info=info)


def read_trusted(path: Path) -> Any:
    """What a skops file holds, built only from trusted types.

    skops lists every type a file would build before building any; a file that needs one
    outside scikit-learn's own (which skops trusts) and ``TRUSTED_TYPES`` is refused unread,
    so loading a model never runs code that came with the file.
    """
    try:
        untrusted = sorted(set(skops.io.get_untrusted_types(file=path)) - set(TRUSTED_TYPES))
        if not untrusted:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # load_model reports a version mismatch itself
                return skops.io.load(path, trusted=list(TRUSTED_TYPES))
    except Exception as err:  # a damaged or foreign file fails in many ways
        raise UserError(f"{path} is not a readable {MODEL_FILE} ({type(err).__name__}: {one_line(err)}); "
                        "retrain with ml-baselines.py") from None
    raise UserError(f"{path} would build type(s) {', '.join(untrusted[:5])}, which no model of ml-baselines.py "
                    f"holds, so it was not loaded; use a {MODEL_FILE} written by ml-baselines.py")


# ---------------------------------------------------------------- data

@dataclass
class SplitData:
    paths: list[str]
    labels: list[str]
    X: np.ndarray


def load_features(data_dir: Path, settings: FeatureSettings, workers: int, use_cache: bool,
                  mix_synthetic: float = 0.0,
                  seed: int = 42) -> tuple[pd.DataFrame, dict[str, SplitData], dict[str, Any]]:
    """Manifest, features per split and how they were obtained (cache hit, seconds, what was mixed in).

    The train split holds the synthetic crops ``mix_synthetic`` asks for after its real ones; val and
    test hold real crops only."""
    manifest = dataset.load_manifest(data_dir)
    start = time.perf_counter()
    digest = dataset.manifest_digest(data_dir)
    X, cached = dataset_features(data_dir, manifest["path"].tolist(), digest, settings,
                                 workers=workers, use_cache=use_cache)
    seconds = time.perf_counter() - start
    row_of = {p: i for i, p in enumerate(manifest["path"])}
    train, mixed = mixed_train(manifest, mix_synthetic, seed)
    splits = {}
    for split in dataset.SPLITS:
        rows = train if split == "train" else dataset.split_frame(manifest, split)
        index = [row_of[p] for p in rows["path"]]
        splits[split] = SplitData(rows["path"].tolist(), rows["label"].tolist(), X[index])
    return manifest, splits, {"from_cache": cached, "seconds": round(seconds, 3), "manifest_digest": digest,
                              "mix_synthetic": mixed}


def check_training_data(train: SplitData, test: SplitData, models: Sequence[str]) -> None:
    if not train.labels:
        raise UserError("the train split has no crops; rebuild the data folder with data-preprocessing.py")
    if not test.labels:
        raise UserError("the test split has no crops; rebuild the data folder with data-preprocessing.py")
    counts = Counter(train.labels)
    if len(counts) < 2:
        raise UserError(f"the train split holds one class only ({next(iter(counts))}); a classifier needs two")
    lonely = sorted(c for c, n in counts.items() if n < 2)
    if "svm" in models and lonely:
        raise UserError(f"class(es) {', '.join(lonely)} have a single training crop; the SVM's probability "
                        "calibration needs two per class. Leave them out in data-preprocessing.py "
                        "(its minimum class size) or train with --models rf")


# ---------------------------------------------------------------- one model

def train_one(name: str, args: argparse.Namespace, classes: list[str], splits: dict[str, SplitData],
              settings: FeatureSettings, fingerprint: str, extra_config: dict[str, Any],
              train_extra: tuple[np.ndarray, list[str]] | None = None,
              crop_um_per_px: float | None = None) -> dict[str, Any]:
    """Fit (on the train split plus ``train_extra``, augmented copies), score on val and test, and write
    ``results/<name>/`` in one swap."""
    train, val, test = splits["train"], splits["val"], splits["test"]
    pipeline = make_pipeline(name, args.balance, args.seed, train.labels, workers=args.workers)
    start = time.perf_counter()
    pipeline.fit(*training_matrix(train, train_extra))
    train_seconds = round(time.perf_counter() - start, 3)
    model = ClassicalModel(name=name, classes=classes, pipeline=pipeline, settings=settings,
                           info={"balance": args.balance, "seed": args.seed,
                                 # the scale of the training crops: new photos' crops are resampled to it
                                 "crop_um_per_px": crop_um_per_px,
                                 "mix_synthetic": extra_config.get("mix_synthetic", {}).get("fraction", 0.0)})
    final = Path(args.results) / name
    with fileio.staged_dir(final) as stage:
        model.save(stage / MODEL_FILE)
        val_summary = score_val(model, val, classes, stage)
        test_probs = model.predict_proba_features(test.X)
        result = metrics.write_evaluation(
            stage, model=name, classes=classes, paths=test.paths, y_true=test.labels,
            y_pred=model.labels(test_probs), probs=test_probs, split_fingerprint=fingerprint, weights=WEIGHTS,
            train_seconds=train_seconds,
            extra={"features": settings.kind, "balance": args.balance, "augment": args.augment,
                   "mix_synthetic": extra_config.get("mix_synthetic", {}).get("fraction", 0.0), "val": val_summary})
        write_grid(stage, Path(args.data), test, name, args.grid_size, args.seed)
        fileio.write_json(stage / CONFIG_FILE, {**extra_config, "model": name,
                                                "classifier": describe(pipeline), "train_seconds": train_seconds})
    return result


def training_matrix(train: SplitData, extra: tuple[np.ndarray, list[str]] | None) -> tuple[np.ndarray, np.ndarray]:
    """The train split's features, followed by those of its augmented copies when there are any."""
    if extra is None or not len(extra[1]):
        return train.X, np.asarray(train.labels)
    return np.concatenate([train.X, extra[0]]), np.asarray([*train.labels, *extra[1]])


def augment_train(data_dir: Path, train: SplitData, settings: FeatureSettings, args: argparse.Namespace
                  ) -> tuple[np.ndarray, list[str]] | None:
    """Features of ``--aug-copies`` augmented copies of every training crop: robust-augmented
    (``--augment robust``), rescaled to random magnifications first (``--scale-augment``), or both."""
    scale_augment = getattr(args, "scale_augment", 1.0)  # callers from before the options pass none
    swap = getattr(args, "swap_background", 0.0)
    if args.augment == "none" and scale_augment <= 1 and swap <= 0:
        return None
    X = augmented_features([data_dir / p for p in train.paths], settings, args.aug_copies, args.seed,
                           workers=args.workers, robust=args.augment != "none", scale_augment=scale_augment,
                           swap_background=swap)
    return X, [label for label in train.labels for _ in range(args.aug_copies)]


def score_val(model: ClassicalModel, val: SplitData, classes: list[str], out_dir: Path) -> dict[str, Any] | None:
    """Validation scores (the study's only scores) in val_metrics.json; a summary for metrics.json."""
    if not val.labels:
        return None
    probs = model.predict_proba_features(val.X)
    scores = metrics.compute_metrics(val.labels, model.labels(probs), classes)
    fileio.write_json(out_dir / VAL_METRICS_FILE, {"model": model.name, "split": "val", **scores})
    return {k: scores[k] for k in VAL_KEYS}


def write_grid(out_dir: Path, data_dir: Path, test: SplitData, name: str, size: int, seed: int) -> None:
    """Classify sample test crops from their image files through the saved model.skops.

    Going through the file a later stage loads (raw crop -> features -> scaler -> classifier)
    rather than reusing the cached features is the point: a step skipped on that path shows
    as a grid that disagrees with predictions.csv.
    """
    if size <= 0:
        return
    rows = pick_rows(test.labels, n=size, seed=seed)
    images = [read_rgb(data_dir / test.paths[i]) for i in rows]
    model = load_model(out_dir)
    pred = model.predict_images(images)
    true = [test.labels[i] for i in rows]
    table = pd.DataFrame({"path": [test.paths[i] for i in rows], "true": true, "pred": pred})
    with fileio.atomic_path(out_dir / GRID_TABLE) as tmp:
        table.to_csv(tmp, index=False)
    right = sum(t == p for t, p in zip(true, pred))
    save_prediction_grid(images, true, pred, out_dir / GRID_IMAGE,
                         title=f"{name}: test crops, {right}/{len(rows)} right (✗ and red: wrong)")


def describe(pipeline: Pipeline) -> dict[str, Any]:
    """The pipeline's steps and the classifier's settings, JSON-ready."""
    clf = pipeline.named_steps["clf"]
    calibrated = isinstance(clf, CalibratedClassifierCV)
    core = clf.estimator if calibrated else clf
    params = {k: v for k, v in core.get_params().items() if isinstance(v, (int, float, str, bool, type(None)))}
    return {"steps": [n for n, _ in pipeline.steps], "estimator": type(core).__name__, "params": params,
            "calibration": f"sigmoid (Platt), {clf.cv}-fold cross-validated" if calibrated else None}


# ---------------------------------------------------------------- command line

def get_args_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog=PROG,
        description="Compute handcrafted features of every crop (cached next to the data), train a Random "
                    "Forest (200 trees) and an RBF SVM (C=10, gamma scale) on the train split and score them "
                    "on the test split, the one the deep models use; validation scores go to val_metrics.json. "
                    "Writes results/<model>/ with metrics.json, predictions.csv, classification_report.txt, "
                    "confusion_matrix.png, model.skops, config.json and a grid of test crops.",
        examples=["python ml-baselines.py --data processed_MICRO --results results",
                  "python ml-baselines.py --features original --augment none   # the study's features",
                  "python ml-baselines.py --models rf --balance class-weight --workers 2"],
    )
    parser.add_argument("--data", default="processed_MICRO", help="processed folder from data-preprocessing.py")
    parser.add_argument("--results", default="results", help="folder that receives one sub-folder per model")
    parser.add_argument("--models", nargs="+", default=list(MODEL_NAMES), choices=MODEL_NAMES,
                        help="which classical models to train")
    parser.add_argument("--features", default="robust", choices=FEATURE_KINDS,
                        help="the default 'robust' holds up under other imaging conditions at no cost in clean scores "
                             "(docs/robustness.md); 'original': the study's 13 grayscale intensity/texture/edge "
                             "features; 'full': "
                             "those plus colour, crop size, particle shape (Otsu mask) and an LBP histogram; 'robust': "
                             "measures stable under light, white-balance, focus, noise and resolution changes "
                             "(normalised intensity, colour relative to the background, shape, texture on a "
                             "fixed scale; docs/robustness.md)")
    parser.add_argument("--balance", default="smote", choices=BALANCE_CHOICES,
                        help="class imbalance: SMOTE oversampling of the training features inside the "
                             "pipeline (the study's choice), balanced class weights, or nothing")
    parser.add_argument("--seed", type=int, default=42, help="seed of the forest, SVM and SMOTE")
    add_workers_argument(parser, "processes for the features and threads for the forest")
    parser.add_argument("--grid-size", type=int, default=32, help="test crops in test_grid.png (0: no grid)")
    parser.add_argument("--no-cache", action="store_true", help="recompute the features and do not store them")
    parser.add_argument("--augment", default="robust", choices=AUGMENT_CHOICES,
                        help="'none': train on the crops as they are (the study); 'robust' (default): also on "
                             "augmented copies (light, white balance, blur, noise, JPEG, down-scaling; see "
                             "docs/robustness.md)")
    parser.add_argument("--mix-synthetic", type=finite_float, default=0.0, metavar="FRACTION",
                        help="share of the training crops drawn from the data folder's synthetic pool "
                             "(data-preprocessing.py --mix-synthetic-photos); 0: real crops only. Synthetic crops "
                             "are never validated or tested on")
    parser.add_argument("--aug-copies", type=int, default=2,
                        help="with --augment robust or --scale-augment: augmented copies of each training crop")
    parser.add_argument("--scale-augment", type=finite_float, default=None, metavar="FACTOR",
                        help="for uncalibrated photos: the augmented copies are first rescaled by a random factor in "
                             f"[1/FACTOR, FACTOR] (another magnification); 1: off. Default: {SCALE_AUGMENT_DEFAULT:g} "
                             "with --augment robust on crops without a recorded scale, else 1 (docs/scale.md)")
    parser.add_argument("--swap-background", type=finite_float, default=None, metavar="P",
                        help="for other labs' filters: each augmented copy is put, with probability P, on a random "
                             "filter (colours, paper, membrane, mesh, debris, sludge), the particle kept; 0: off. "
                             f"Default: {SWAP_BACKGROUND_DEFAULT:g} with --augment robust, else 0 "
                             "(docs/generalisation.md)")
    parser.add_argument("--shape-cues", choices=("on", "off"), default=SHAPE_CUES_DEFAULT,
                        help="add the shape cues (elongation, skeleton length over width, curl, skeleton ends; "
                             "independent of colour, contrast and magnification) to any --features kind")
    return parser


def resolve_augment_defaults(args: argparse.Namespace, calibrated: bool) -> None:
    """Fill in --scale-augment and --swap-background where they were not given, then check them.

    They come with the robust augmentation (the study's --augment none stays without augmented copies),
    and calibrated crops, resampled to one scale already, are not put at other magnifications."""
    robust = args.augment == "robust"
    if args.scale_augment is None:
        args.scale_augment = SCALE_AUGMENT_DEFAULT if robust and not calibrated else 1.0
    if args.swap_background is None:
        args.swap_background = SWAP_BACKGROUND_DEFAULT if robust else 0.0
    check_scale_augment(args.scale_augment)
    check_swap_probability(args.swap_background)


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    if args.workers < 1:
        raise UserError(f"--workers must be at least 1, got {args.workers}")
    if args.grid_size < 0:
        raise UserError(f"--grid-size must be 0 or more, got {args.grid_size}")
    if args.aug_copies < 1:
        raise UserError(f"--aug-copies must be at least 1, got {args.aug_copies}")
    check_fraction(args.mix_synthetic)
    fileio.check_output_dir(args.results, "--results")
    models = list(dict.fromkeys(args.models))
    data_dir = Path(args.data)
    settings = FeatureSettings(kind=args.features, shape_cues=args.shape_cues == "on")
    crop_um_per_px = dataset.recorded_crop_scale(data_dir)
    resolve_augment_defaults(args, calibrated=crop_um_per_px is not None)
    manifest, splits, feature_info = load_features(data_dir, settings, args.workers, use_cache=not args.no_cache,
                                                   mix_synthetic=args.mix_synthetic, seed=args.seed)
    check_training_data(splits["train"], splits["test"], models)
    train_extra = augment_train(data_dir, splits["train"], settings, args)
    classes = dataset.class_names(manifest)
    fingerprint = dataset.split_fingerprint(manifest, "test")
    digest = feature_info.pop("manifest_digest")
    mixed = feature_info.pop("mix_synthetic")
    config = {"data": str(data_dir.resolve()), "results": str(Path(args.results).resolve()),
              "features": args.features, "feature_settings": settings.to_dict(),
              "n_features": len(feature_names(settings=settings)), "feature_cache": feature_info,
              "balance": args.balance, "seed": args.seed, "workers": args.workers, "classes": classes,
              "augment": args.augment, "scale_augment": args.scale_augment, "shape_cues": args.shape_cues,
              "swap_background": args.swap_background,
              "aug_copies": args.aug_copies if train_extra is not None else 0, "crop_um_per_px": crop_um_per_px,
              "n": {s: len(splits[s].labels) for s in dataset.SPLITS}, "mix_synthetic": mixed,
              "manifest_digest": digest, "split_fingerprint": fingerprint,
              "weights": WEIGHTS, "sklearn_version": sklearn.__version__,
              provenance.RUN_KEY: provenance.run_record(PROG, argv)}
    if mixed["synthetic_crops"]:
        print(f"training on {mixed['real_crops']} real + {mixed['synthetic_crops']} synthetic crops "
              f"({mixed['achieved']:.1%} synthetic: {mixed['synthetic_per_class']})")
    print(f"features: {args.features}, {config['n_features']} per crop, "
          f"{'from cache' if feature_info['from_cache'] else 'computed'} in {feature_info['seconds']:.1f} s")
    for name in models:
        result = train_one(name, args, classes, splits, settings, fingerprint, config, train_extra, crop_um_per_px)
        val = result.get("val") or {}
        print(f"{name}: test accuracy {result['accuracy']:.4f}, macro-F1 {result['macro_f1']:.4f} "
              f"(val macro-F1 {val.get('macro_f1', float('nan')):.4f}), trained in {result['train_seconds']:.1f} s "
              f"-> {Path(args.results) / name}")
    return 0
