"""Synthetic crops mixed into training: the pool in processed_MICRO, the class map, the fraction,
and that neither model family ever validates or tests on a synthetic crop."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from microplastics.classical import baselines
from microplastics.core import fileio
from microplastics.core.cli import UserError
from microplastics.data import dataset
from microplastics.data.mixing import mixed_train, parse_class_map
from microplastics.data.preprocessing import preprocess
from microplastics.data.synthetic import write_synthetic_micro
from microplastics.deep import checkpoint
from microplastics.deep.stage import main_for

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--weights", "none", "--image-size", "32", "--workers", "0"]


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    """Plain synthetic photos standing in for a lab's real ones."""
    root = tmp_path_factory.mktemp("raw") / "MICRO"
    write_synthetic_micro(root, n_images=16, seed=3, image_size=(240, 320))
    return root


@pytest.fixture(scope="module")
def plain(raw, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("plain") / "P"
    preprocess(raw, out, workers=1)
    return out


@pytest.fixture(scope="module")
def mixed(raw, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mixed") / "P"
    preprocess(raw, out, workers=1, synthetic_photos=10, synthetic_class_map="line=line,hard=hard,pellet=pellet")
    return out


def test_pool_is_marked_in_train_only_and_leaves_the_real_split_as_it_was(plain, mixed):
    before, after = dataset.load_manifest(plain), dataset.load_manifest(mixed)
    marked = after[after[dataset.SYNTHETIC_COLUMN] == 1]
    assert len(marked) > 20
    assert set(marked["split"]) == {"train"} and set(marked["label"]) <= {"line", "hard", "pellet"}
    assert marked["path"].str.startswith("train/").all() and marked["path"].map(lambda p: "/syn-" in p).all()
    assert all((mixed / p).is_file() for p in marked["path"])
    real = after[after[dataset.SYNTHETIC_COLUMN] == 0].drop(columns=dataset.SYNTHETIC_COLUMN)
    assert real.reset_index(drop=True).equals(before.reset_index(drop=True))
    for split in dataset.SPLITS:  # no stage that reads a split sees the pool
        assert dataset.split_frame(after, split).drop(columns=dataset.SYNTHETIC_COLUMN).equals(
            dataset.split_frame(before, split))
    summary = fileio.read_json(mixed / dataset.SUMMARY_NAME)
    assert summary["split_fingerprints"] == fileio.read_json(plain / dataset.SUMMARY_NAME)["split_fingerprints"]
    assert summary["synthetic"]["crops"] == len(marked) and summary["synthetic"]["randomised"] is True
    assert summary["synthetic"]["class_map"] == {"line": "line", "hard": "hard", "pellet": "pellet"}


def _edit_manifest(folder: Path, edit) -> None:
    frame = pd.read_csv(folder / dataset.MANIFEST_NAME, keep_default_na=False)
    edit(frame)
    frame.to_csv(folder / dataset.MANIFEST_NAME, index=False, lineterminator="\n")
    summary = fileio.read_json(folder / dataset.SUMMARY_NAME)
    fileio.write_json(folder / dataset.SUMMARY_NAME, {**summary, "manifest_digest": dataset.manifest_digest(folder)})


def test_a_synthetic_crop_in_val_or_test_is_refused(mixed, tmp_path):
    import shutil

    for split in ("val", "test"):
        copy = tmp_path / split
        shutil.copytree(mixed, copy)

        def mark(frame, split=split):
            frame.loc[frame.index[frame["split"] == split][0], dataset.SYNTHETIC_COLUMN] = 1
        _edit_manifest(copy, mark)
        with pytest.raises(UserError, match=f"is in the {split} split; synthetic crops are for training only"):
            dataset.load_manifest(copy)
    bad = tmp_path / "bad"
    shutil.copytree(mixed, bad)
    _edit_manifest(bad, lambda frame: frame.__setitem__(dataset.SYNTHETIC_COLUMN, "yes"))
    with pytest.raises(UserError, match="not 0 or 1"):
        dataset.load_manifest(bad)


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.3])
def test_the_fraction_is_respected_and_spread_over_the_classes(mixed, fraction):
    manifest = dataset.load_manifest(mixed)
    rows, record = mixed_train(manifest, fraction, seed=1)
    real = dataset.split_frame(manifest, "train")
    n_syn = int(rows[dataset.SYNTHETIC_COLUMN].sum())
    assert rows.iloc[:len(real)]["path"].tolist() == real["path"].tolist()
    assert abs(n_syn / len(rows) - fraction) <= 1 / len(rows)
    assert record["synthetic_crops"] == n_syn and record["real_crops"] == len(real)
    counts = rows[rows[dataset.SYNTHETIC_COLUMN] == 1]["label"].value_counts()
    pool = dataset.synthetic_frame(manifest)["label"].value_counts()
    left = counts[counts < pool[counts.index]]  # classes whose pool did not run out: within one of each other
    assert len(counts) == len(pool) and counts.max() - left.min() <= 1
    again, _ = mixed_train(manifest, fraction, seed=1)
    assert again["path"].tolist() == rows["path"].tolist()
    other, _ = mixed_train(manifest, fraction, seed=2)
    assert set(other["path"]) != set(rows["path"])


def test_fractions_that_cannot_be_met_are_user_errors(plain, mixed):
    assert mixed_train(dataset.load_manifest(mixed), 0.0, 1)[1]["synthetic_crops"] == 0
    with pytest.raises(UserError, match="holds no synthetic crops"):
        mixed_train(dataset.load_manifest(plain), 0.2, 1)
    with pytest.raises(UserError, match="needs .* synthetic crops"):
        mixed_train(dataset.load_manifest(mixed), 0.9, 1)
    with pytest.raises(UserError, match=r"\[0, 1\)"):
        mixed_train(dataset.load_manifest(mixed), 1.0, 1)


def test_class_map():
    assert parse_class_map("auto", ["fiber", "film", "fragment", "pallet"]) == {
        "line": "fiber", "hard": "fragment", "pellet": "pallet"}
    assert parse_class_map(" line = fiber , hard=film", ["fiber", "film"]) == {"line": "fiber", "hard": "film"}
    for text, message in (("line=cat", "not a class of the real data"), ("wire=fiber", "not a class of the generator"),
                          ("line", "not GENERATOR_CLASS=REAL_CLASS"), ("auto-ish", "not GENERATOR_CLASS")):
        with pytest.raises(UserError, match=message):
            parse_class_map(text, ["fiber"])
    with pytest.raises(UserError, match="found none"):
        parse_class_map("auto", ["cat", "dog"])


def test_random_forest_trains_on_the_mix_and_scores_real_crops_only(mixed, tmp_path):
    baselines.main(["--data", str(mixed), "--results", str(tmp_path), "--models", "rf", "--mix-synthetic", "0.3",
                    "--workers", "1", "--grid-size", "0", "--augment", "none"])
    folder = tmp_path / "rf"
    manifest = dataset.load_manifest(mixed)
    config = fileio.read_json(folder / "config.json")
    n_real = len(dataset.split_frame(manifest, "train"))
    assert config["mix_synthetic"]["fraction"] == 0.3
    assert config["n"]["train"] == n_real + config["mix_synthetic"]["synthetic_crops"]
    assert abs(config["mix_synthetic"]["synthetic_crops"] / config["n"]["train"] - 0.3) <= 1 / config["n"]["train"]
    predictions = pd.read_csv(folder / "predictions.csv")
    assert predictions["path"].tolist() == dataset.split_frame(manifest, "test")["path"].tolist()
    assert fileio.read_json(folder / "val_metrics.json")["n"] == len(dataset.split_frame(manifest, "val"))
    assert fileio.read_json(folder / "metrics.json")["mix_synthetic"] == 0.3
    assert baselines.load_model(folder).info["mix_synthetic"] == 0.3


def test_deep_stage_trains_on_the_mix_and_scores_real_crops_only(mixed, tmp_path, capsys):
    torch.set_num_threads(2)
    main_for("resnet50")(["--data", str(mixed), "--results", str(tmp_path), *TINY, "--arch", "resnet18",
                          "--epochs", "1", "--aug-views", "0", "--balance", "none", "--mix-synthetic", "0.25"])
    folder = tmp_path / "resnet18"
    manifest = dataset.load_manifest(mixed)
    n_real = len(dataset.split_frame(manifest, "train"))
    config = fileio.read_json(folder / "config.json")
    mix = config["synthetic_mix"]
    assert config["mix_synthetic"] == 0.25 and mix["real_crops"] == n_real
    assert abs(mix["synthetic_crops"] / (n_real + mix["synthetic_crops"]) - 0.25) <= 1 / n_real
    # the cached train embeddings hold exactly the real plus the mixed-in crops
    assert "train views: computed" in capsys.readouterr().out
    cached = list((tmp_path / ".embeddings").glob("*.pt"))
    assert len(cached) == 1
    assert torch.load(cached[0], weights_only=True)["train"].shape[1] == n_real + mix["synthetic_crops"]
    predictions = pd.read_csv(folder / "predictions.csv")
    assert predictions["path"].tolist() == dataset.split_frame(manifest, "test")["path"].tolist()
    assert not predictions["path"].str.contains("/syn-").any()
    best = checkpoint.load(folder / checkpoint.BEST_NAME)
    assert best["config"]["mix_synthetic"] == 0.25 and best["config"]["synthetic_mix"] == mix


@pytest.mark.parametrize("script,flags,message", [
    ("data-preprocessing.py", ["--mix-synthetic-photos", "-1"], "--mix-synthetic-photos must be 0 or more"),
    ("ml-baselines.py", ["--mix-synthetic", "1.5"], "--mix-synthetic must be a share"),
])
def test_bad_values_are_one_line_and_exit_2(script, flags, message, mixed, raw, tmp_path):
    where = ["--input", str(raw), "--output", str(tmp_path / "out")] if script.startswith("data") else [
        "--data", str(mixed), "--results", str(tmp_path)]
    proc = subprocess.run([sys.executable, str(ROOT / script), *where, *flags], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ") and message in proc.stderr
