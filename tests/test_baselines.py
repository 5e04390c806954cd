"""ml-baselines.py: model folders, reproducibility, reloading, the grid, imbalance handling, errors."""
from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from datagen import make_processed
from microplastics.classical import baselines
from microplastics.data import dataset
from microplastics.results import metrics
from microplastics.core.cli import UserError
from microplastics.core.fileio import read_json
from microplastics.core.images import read_rgb

ROOT = Path(__file__).resolve().parents[1]
EXPECTED_FILES = {"config.json", "metrics.json", "predictions.csv", "classification_report.txt",
                  "confusion_matrix.png", "model.skops", "val_metrics.json", "test_grid.png", "test_grid.csv"}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    # Own copy: the features cache is written next to the data, the shared fixture stays untouched.
    return make_processed(tmp_path_factory.mktemp("baselines") / "data", per_class=15, size=40, seed=1)


@pytest.fixture(scope="module")
def results(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("results")
    assert baselines.main(["--data", str(data), "--results", str(out), "--workers", "1", "--grid-size", "12"]) == 0
    return out


@pytest.mark.parametrize("model", baselines.MODEL_NAMES)
def test_model_folder_follows_the_contract(results, data, model):
    folder = results / model
    assert EXPECTED_FILES <= {p.name for p in folder.iterdir()}
    assert not [p for p in results.iterdir() if p.name.startswith(".")], "staging folder left behind"
    m = metrics.load_metrics(folder)
    manifest = dataset.load_manifest(data)
    assert m["model"] == model and m["split"] == "test"
    assert m["split_fingerprint"] == dataset.split_fingerprint(manifest, "test")
    assert m["n"] == len(dataset.split_frame(manifest, "test"))
    assert m["weights"] == "none (trained from scratch)"
    assert m["train_seconds"] > 0
    assert m["val"]["n"] == len(dataset.split_frame(manifest, "val"))
    assert read_json(folder / "val_metrics.json")["split"] == "val"
    config = read_json(folder / "config.json")
    assert config["features"] == "robust" and config["augment"] == "robust"  # the defaults
    # the robust copies also go to other magnifications and onto other filters by default
    assert config["scale_augment"] == baselines.SCALE_AUGMENT_DEFAULT == 2.0
    assert config["swap_background"] == baselines.SWAP_BACKGROUND_DEFAULT == 0.5
    assert config["balance"] == "smote" and config["seed"] == 42
    # The drawn classes are easy to tell apart: a working pipeline gets most test crops right.
    assert m["accuracy"] >= 0.75


@pytest.mark.parametrize("augment, calibrated, given, expected", [
    ("robust", False, (None, None), (2.0, 0.5)),
    ("robust", True, (None, None), (1.0, 0.5)),   # calibrated crops are at one scale already
    ("none", False, (None, None), (1.0, 0.0)),    # the study's: no augmented copies at all
    ("none", False, (1.5, 0.2), (1.5, 0.2)),      # what is given is kept
    ("robust", False, (1.0, 0.0), (1.0, 0.0)),
])
def test_scale_and_filter_defaults_follow_the_augmentation_and_the_calibration(augment, calibrated, given,
                                                                               expected):
    args = baselines.get_args_parser().parse_args(["--augment", augment])
    args.scale_augment, args.swap_background = given
    baselines.resolve_augment_defaults(args, calibrated=calibrated)
    assert (args.scale_augment, args.swap_background) == expected


def test_test_split_is_scored_not_val(results, data):
    pred = metrics.read_predictions(results / "rf" / "predictions.csv")
    test = dataset.split_frame(dataset.load_manifest(data), "test")
    assert sorted(pred["path"]) == sorted(test["path"])


def test_same_seed_same_predictions_and_features_come_from_cache(results, data, tmp_path):
    again = tmp_path / "again"
    baselines.main(["--data", str(data), "--results", str(again), "--workers", "2", "--grid-size", "0"])
    assert read_json(again / "rf" / "config.json")["feature_cache"]["from_cache"] is True
    for model in baselines.MODEL_NAMES:
        first = pd.read_csv(results / model / "predictions.csv")
        second = pd.read_csv(again / model / "predictions.csv")
        pd.testing.assert_frame_equal(first, second)


@pytest.mark.parametrize("model", baselines.MODEL_NAMES)
def test_model_file_reloads_and_predicts_what_predictions_csv_says(results, data, model):
    loaded = baselines.load_model(results / model)
    pred = metrics.read_predictions(results / model / "predictions.csv")
    assert loaded.name == model
    assert loaded.classes == dataset.class_names(dataset.load_manifest(data))
    images = [read_rgb(data / p) for p in pred["path"]]
    probs = loaded.predict_proba_images(images)
    assert probs.shape == (len(pred), len(loaded.classes))
    assert np.allclose(probs.sum(axis=1), 1.0)
    assert np.allclose(probs, pred[[f"prob_{c}" for c in loaded.classes]].to_numpy(), atol=1e-5)
    assert loaded.predict_images(images) == pred["pred"].tolist()


@pytest.mark.parametrize("model", baselines.MODEL_NAMES)
def test_grid_shows_the_models_real_predictions(results, model):
    """The grid's labels must be predictions.csv's; a skipped scaler would make them one class."""
    grid = pd.read_csv(results / model / "test_grid.csv")
    pred = metrics.read_predictions(results / model / "predictions.csv").set_index("path")
    assert len(grid) == 12
    assert set(grid["true"]) == set(pred["true"]), "the grid should show every class"
    assert grid["pred"].tolist() == pred.loc[grid["path"], "pred"].tolist()
    assert grid["pred"].nunique() > 1


def test_a_pipeline_without_its_scaler_is_caught(results, data):
    """What the grid check guards against: the SVM fed unscaled features predicts differently."""
    loaded = baselines.load_model(results / "svm")
    pred = metrics.read_predictions(results / "svm" / "predictions.csv")
    X = loaded.features([read_rgb(data / p) for p in pred["path"]])
    unscaled = loaded.pipeline.named_steps["clf"].predict(X)
    assert unscaled.tolist() != pred["pred"].tolist()


def test_smote_shrinks_k_for_tiny_classes_and_leaves_singletons():
    rng = np.random.default_rng(0)
    y = np.array(["a"] * 10 + ["b"] * 2 + ["c"] * 1)
    X = rng.normal(size=(len(y), 4))
    Xr, yr = baselines.smote_resample(X, y, k_neighbors=5, random_state=0)
    assert Counter(yr.tolist()) == {"a": 10, "b": 10, "c": 1}
    assert np.array_equal(Xr[: len(y)], X)  # the real crops are kept as they are


@pytest.mark.parametrize("balance", baselines.BALANCE_CHOICES)
def test_balance_options_build_the_right_pipeline(balance):
    y = ["a"] * 8 + ["b"] * 3
    for name in baselines.MODEL_NAMES:
        pipe = baselines.make_pipeline(name, balance, seed=0, y_train=y)
        assert ("smote" in pipe.named_steps) == (balance == "smote")
        assert list(pipe.named_steps)[0] == "scale"
        clf = pipe.named_steps["clf"]
        core = getattr(clf, "estimator", clf) if name == "svm" else clf
        assert core.class_weight == ("balanced" if balance == "class-weight" else None)


def test_tiny_class_trains_with_smote(tmp_path):
    data = make_processed(tmp_path / "data", per_class=[12, 12, 12, 4], size=32, seed=2)
    out = tmp_path / "results"
    baselines.main(["--data", str(data), "--results", str(out), "--workers", "1", "--grid-size", "4",
                    "--features", "original", "--no-cache"])
    assert (out / "svm" / "metrics.json").is_file() and (out / "rf" / "metrics.json").is_file()
    assert not (data / ".cache").exists()


def test_single_training_crop_is_refused_for_the_svm(tmp_path):
    data = make_processed(tmp_path / "data", per_class=[10, 10, 2], size=32, seed=2,
                          classes=("foam", "line", "pellet"))
    with pytest.raises(UserError, match="pellet"):
        baselines.main(["--data", str(data), "--results", str(tmp_path / "r"), "--workers", "1"])


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "ml-baselines.py"), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def test_missing_data_is_one_line_and_exit_2(tmp_path):
    proc = run_script("--data", str(tmp_path / "nowhere"), "--results", str(tmp_path / "r"))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error:")
    assert "data-preprocessing.py" in proc.stderr


def test_help_explains_the_options():
    proc = run_script("--help")
    assert proc.returncode == 0
    for flag in ("--data", "--results", "--models", "--features", "--balance", "--seed", "--workers"):
        assert flag in proc.stdout


def test_prediction_grid_draws_any_crops_and_checks_its_input(tmp_path):
    from microplastics.results.grids import save_prediction_grid

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (20, 30, 3), dtype=np.uint8), rng.integers(0, 256, (9, 40), dtype=np.uint8),
              np.zeros((1, 1, 3), np.uint8)]
    path = tmp_path / "grid.png"
    save_prediction_grid(images, ["a", "b", ""], ["a", "a", "c"], path, title="t", ncols=2)
    assert read_rgb(path).shape[0] > 50
    with pytest.raises(ValueError, match="differ in length"):
        save_prediction_grid(images, ["a"], ["a", "b", "c"], path)
    with pytest.raises(ValueError, match="no images"):
        save_prediction_grid([], [], [], path)
