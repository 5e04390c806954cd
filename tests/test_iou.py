"""ml-IOU.py: label IoU against a hand-computed example, the table's layout, refusal of mixed splits."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from microplastics.core import fileio
from microplastics.classical import iou
from microplastics.results import metrics
from microplastics.core.cli import UserError

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["x", "y", "z"]
TRUE = ["x", "x", "x", "y", "y", "z"]
PRED = ["x", "x", "y", "y", "z", "z"]
# By hand: x TP 2, FP 0, FN 1 -> 2/3; y TP 1, FP 1 (an x), FN 1 (to z) -> 1/3; z TP 1, FP 1, FN 0 -> 1/2.
HAND = {"x": 2 / 3, "y": 1 / 3, "z": 1 / 2}


def write_model(results: Path, name: str, true, pred, fingerprint: str = "abc123", classes=CLASSES) -> Path:
    folder = results / name
    metrics.write_evaluation(folder, model=name, classes=classes, paths=[f"test/{i}.png" for i in range(len(true))],
                             y_true=true, y_pred=pred, probs=None, split_fingerprint=fingerprint,
                             weights="none", train_seconds=1.0)
    return folder


def test_iou_equals_the_hand_computed_example(tmp_path):
    write_model(tmp_path, "a", TRUE, PRED)
    assert iou.main(["--results", str(tmp_path)]) == 0
    table = pd.read_csv(tmp_path / "iou.csv", index_col="class")
    for c, value in HAND.items():
        assert table.loc[c, "a"] == pytest.approx(value, abs=1e-4)
    assert table.loc["mean", "a"] == pytest.approx(np.mean(list(HAND.values())), abs=1e-4)
    # ... and agrees with the figures metrics.json carries.
    stored = metrics.load_metrics(tmp_path / "a")
    assert table.loc["mean", "a"] == pytest.approx(stored["mean_iou"], abs=1e-4)
    assert (tmp_path / "iou.png").stat().st_size > 0


def test_markdown_has_models_as_columns_classes_as_rows_and_says_label_iou(tmp_path):
    write_model(tmp_path, "rf", TRUE, PRED)
    write_model(tmp_path, "vgg16", TRUE, TRUE)
    iou.main(["--results", str(tmp_path)])
    md = (tmp_path / "iou.md").read_text()
    assert "| class | rf | vgg16 |" in md
    assert "| y | 0.333 | 1.000 |" in md
    assert "| **mean** | 0.500 | 1.000 |" in md
    assert "not bounding-box IoU" in md


def test_a_class_a_model_never_saw_is_blank_not_zero(tmp_path):
    write_model(tmp_path, "a", ["x", "x", "y"], ["x", "y", "y"], classes=["x", "y", "z"])
    table = iou.iou_table(tmp_path)
    assert np.isnan(table.loc["z", "a"])
    assert table.loc["mean", "a"] == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert "| z | – |" in iou.to_markdown(table)


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "ml-IOU.py"), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def test_mixed_test_splits_are_refused_in_one_line(tmp_path):
    write_model(tmp_path, "rf", TRUE, PRED, fingerprint="aaaa1111")
    write_model(tmp_path, "resnet50", TRUE, PRED, fingerprint="bbbb2222")
    proc = run_script("--results", str(tmp_path))
    assert proc.returncode == 2
    line = proc.stderr.strip()
    assert "\n" not in line and line.startswith("error:")
    for word in ("rf", "resnet50", "aaaa1111", "bbbb2222"):
        assert word in line
    assert not (tmp_path / "iou.csv").exists()


def test_models_picks_a_subset_that_shares_a_split(tmp_path):
    write_model(tmp_path, "rf", TRUE, PRED, fingerprint="aaaa1111")
    write_model(tmp_path, "svm", TRUE, TRUE, fingerprint="aaaa1111")
    write_model(tmp_path, "old", TRUE, PRED, fingerprint="bbbb2222")
    iou.main(["--results", str(tmp_path), "--models", "svm", "rf"])
    assert list(pd.read_csv(tmp_path / "iou.csv", index_col="class").columns) == ["svm", "rf"]


def test_missing_fingerprint_or_model_is_a_user_error(tmp_path):
    folder = write_model(tmp_path, "a", TRUE, PRED)
    with pytest.raises(UserError, match="nothere"):
        iou.main(["--results", str(tmp_path), "--models", "nothere"])
    stored = metrics.load_metrics(folder)
    del stored["split_fingerprint"]
    fileio.write_json(folder / "metrics.json", stored)
    with pytest.raises(UserError, match="split_fingerprint"):
        iou.main(["--results", str(tmp_path)])
    with pytest.raises(UserError, match="does not exist"):
        iou.main(["--results", str(tmp_path / "none")])
