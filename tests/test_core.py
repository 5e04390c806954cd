"""The shared contracts: atomic writes, manifest checks, metrics and the split fingerprint."""
import json

import numpy as np
import pandas as pd
import pytest

from microplastics.data import dataset
from microplastics.core import fileio
from microplastics.results import metrics
from microplastics.core.cli import UserError


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "a.json"
    fileio.write_json(target, {"x": 1})
    with pytest.raises(RuntimeError):
        with fileio.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert json.loads(target.read_text()) == {"x": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_replace_dir_swaps_whole_folder(tmp_path):
    final = tmp_path / "out"
    (final).mkdir()
    (final / "stale.txt").write_text("old")
    staging = fileio.staging_dir(final)
    (staging / "new.txt").write_text("new")
    fileio.replace_dir(staging, final)
    assert [p.name for p in final.iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_manifest_and_fingerprint(processed_dir):
    man = dataset.load_manifest(processed_dir)
    assert dataset.class_names(man) == ["foam", "hard", "line", "pellet"]
    fp = dataset.split_fingerprint(man)
    assert fp == dataset.split_fingerprint(man.sample(frac=1, random_state=1))
    changed = man.copy()
    idx = changed.index[changed["split"] == "test"][0]
    changed.loc[idx, "label"] = "line" if changed.loc[idx, "label"] != "line" else "foam"
    assert dataset.split_fingerprint(changed) != fp
    # train rows do not change the test fingerprint
    other = man.copy()
    other.loc[other["split"] == "train", "label"] = "foam"
    assert dataset.split_fingerprint(other) == fp


def test_missing_manifest_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="data-preprocessing"):
        dataset.load_manifest(tmp_path)
    pd.DataFrame({"path": ["a"], "label": ["x"]}).to_csv(tmp_path / "manifest.csv", index=False)
    with pytest.raises(UserError, match="split"):
        dataset.load_manifest(tmp_path)


def test_metrics_match_hand_count():
    classes = ["a", "b", "c"]
    y_true = ["a", "a", "a", "b", "b", "c"]
    y_pred = ["a", "a", "b", "b", "c", "c"]
    m = metrics.compute_metrics(y_true, y_pred, classes)
    assert m["accuracy"] == pytest.approx(4 / 6)
    # a: TP2 FP0 FN1 -> 2/3; b: TP1 FP1 FN1 -> 1/3; c: TP1 FP1 FN0 -> 1/2
    assert m["per_class"]["a"]["iou"] == pytest.approx(2 / 3)
    assert m["per_class"]["b"]["iou"] == pytest.approx(1 / 3)
    assert m["per_class"]["c"]["iou"] == pytest.approx(1 / 2)
    assert m["mean_iou"] == pytest.approx((2 / 3 + 1 / 3 + 1 / 2) / 3)
    assert m["per_class"]["a"]["recall"] == pytest.approx(2 / 3)
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]


def test_absent_class_is_left_out_of_means():
    m = metrics.compute_metrics(["a", "b"], ["a", "b"], ["a", "b", "z"])
    assert m["macro_f1"] == 1.0 and m["mean_iou"] == 1.0
    assert m["per_class"]["z"]["support"] == 0 and m["per_class"]["z"]["iou"] is None


def test_write_evaluation_files(tmp_path):
    classes = ["a", "b"]
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    out = metrics.write_evaluation(tmp_path, model="toy", classes=classes, paths=["p1", "p2", "p3"],
                                   y_true=["a", "b", "b"], y_pred=["a", "b", "a"], probs=probs,
                                   split_fingerprint="abc", weights="none", train_seconds=1.5)
    for name in ("metrics.json", "predictions.csv", "classification_report.txt", "confusion_matrix.png"):
        assert (tmp_path / name).stat().st_size > 0
    saved = metrics.load_metrics(tmp_path)
    assert saved["accuracy"] == pytest.approx(2 / 3) == out["accuracy"]
    pred = metrics.read_predictions(tmp_path / "predictions.csv")
    assert list(pred.columns) == ["path", "true", "pred", "prob_a", "prob_b"]
    np.testing.assert_allclose(pred[["prob_a", "prob_b"]].to_numpy(), probs)
    with pytest.raises(ValueError):
        metrics.compute_metrics(["a"], ["q"], classes)
