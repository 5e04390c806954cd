"""prediction.py: deep and classical models alike, crops, annotated photos, grids and bad input."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from datagen import train_tiny_models
from PIL import Image

from microplastics.core import layout
from microplastics.predict import prediction, predictor as predict
from microplastics.predict.external import score_particles
from microplastics.core import seeds
from microplastics.core.cli import run
from microplastics.data.synthetic import write_synthetic_micro

MODELS = ("resnet18", "rf")


@pytest.fixture(scope="module")
def results(processed_dir, tmp_path_factory) -> Path:
    """A deep model and a classical one, trained tiny through the real scripts' main functions."""
    return train_tiny_models(processed_dir, tmp_path_factory.mktemp("predict_results"))


@pytest.fixture(scope="module")
def micro(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("external") / "MICRO"
    write_synthetic_micro(root, n_images=4, seed=3, image_size=(200, 260))
    return root


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        run(prediction.main, [*argv, "--device", "cpu"])
    captured = capsys.readouterr()
    return int(info.value.code), captured.out, captured.err


def hand_count(micro: Path) -> list[tuple[str, str, str]]:
    """(photo, box ID, class) of every TSV row, read without the project's code."""
    rows = []
    for tsv in sorted((micro / "annotation").glob("*.tsv")):
        with open(tsv, newline="") as fh:
            for row in csv.DictReader(fh, delimiter="\t"):
                rows.append((f"raw_img/{tsv.name[:-4]}", row["ID"], row["class"].split("/")[0]))
    return rows


@pytest.mark.parametrize("name,kind", [("resnet18", predict.DeepPredictor), ("rf", predict.ClassicalPredictor)])
def test_load_predictor_dispatches_and_probabilities_sum_to_one(results, processed_dir, name, kind):
    predictor = predict.load_predictor(results / name)
    assert isinstance(predictor, kind) and predictor.name == name
    assert predictor.classes == ["foam", "hard", "line", "pellet"]
    paths = sorted((processed_dir / "test").rglob("*.png"))[:5]
    frame, unreadable = predict.classify_files(predictor, paths)
    probs = frame[[f"prob_{c}" for c in predictor.classes]].to_numpy()
    assert unreadable == [] and len(frame) == 5
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
    assert list(frame["pred"]) == [predictor.classes[i] for i in probs.argmax(axis=1)]


@pytest.mark.parametrize("name", MODELS)
def test_input_mode_csv_lists_unreadable_files_and_classifies_the_rest(results, processed_dir, tmp_path, name,
                                                                        capsys):
    folder = tmp_path / "crops"
    folder.mkdir()
    good = sorted((processed_dir / "test" / "line").glob("*.png"))[:3]
    for p in good:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "broken.png").write_bytes(b"not a png")
    code, out, err = cli(["--model", str(results / name), "--input", str(folder), "--csv", str(tmp_path / "o.csv")],
                         capsys)
    assert code == 0, err
    assert "broken.png" in err
    frame = pd.read_csv(tmp_path / "o.csv")
    assert sorted(Path(p).name for p in frame["path"]) == sorted(p.name for p in good)
    assert list(frame.columns) == ["path", "pred", "prob_foam", "prob_hard", "prob_line", "prob_pellet", "tta"]
    assert (frame["tta"] == "none").all()
    np.testing.assert_allclose(frame.filter(like="prob_").sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_grid_mode_agrees_with_predictions_csv(results, name, capsys):
    code, out, err = cli(["--models", name, "--results", str(results), "--grid-size", "8"], capsys)
    assert code == 0, err
    grid = pd.read_csv(results / name / layout.GRID_TABLE)
    assert len(grid) == 8 and grid["true"].nunique() == 4  # drawn from every class in turn
    assert (grid["pred"] == grid["recorded_pred"]).all()
    recorded = pd.read_csv(results / name / "predictions.csv").set_index("path")
    for c in ("foam", "hard", "line", "pellet"):
        np.testing.assert_allclose(grid[f"prob_{c}"], recorded.loc[grid["path"], f"prob_{c}"], atol=2e-3)
    assert (results / name / layout.GRID_IMAGE).stat().st_size > 0
    assert "8/8 as in predictions.csv" in out


@pytest.mark.parametrize("name", MODELS)
def test_photos_mode_rows_and_metrics_match_a_hand_count(results, micro, tmp_path, name, capsys):
    out_dir = tmp_path / "external"
    code, out, err = cli(["--model", str(results / name), "--photos", str(micro), "--out", str(out_dir)], capsys)
    assert code == 0, err
    boxes = hand_count(micro)
    frame = pd.read_csv(out_dir / "particles.csv", dtype={"box_id": str})
    assert sorted(zip(frame["photo"], frame["box_id"], frame["true"])) == sorted(boxes)
    np.testing.assert_allclose(frame.filter(like="prob_").sum(axis=1), 1.0, atol=1e-5)
    model_classes = {"foam", "hard", "line", "pellet"}
    unknown = sorted({label for _, _, label in boxes} - model_classes)
    assert unknown, "the synthetic set should carry classes the model does not know"
    metrics = json.loads((out_dir / "metrics.json").read_text())
    known = frame[frame["true"].isin(model_classes)]
    assert metrics["split"] == "external"
    assert metrics["n"] == sum(label in model_classes for _, _, label in boxes)
    assert metrics["accuracy"] == pytest.approx(float((known["true"] == known["pred"]).mean()))
    assert metrics["unknown_classes"] == unknown
    assert sum(metrics["unknown_counts"].values()) == len(boxes) - metrics["n"]
    for c in model_classes:
        assert metrics["per_class"][c]["support"] == int((known["true"] == c).sum())
    assert (out_dir / "confusion_matrix.png").is_file()
    assert "does not know" in err


def test_class_map_brings_renamed_labels_into_scoring(results, micro):
    predictor = predict.load_predictor(results / "rf")
    frame = predict.classify_photos(predictor, micro)
    plain = score_particles(frame, predictor.classes)
    mapped = score_particles(frame, predictor.classes, {"noise": "hard", "reference": "foam"})
    assert mapped.unknown_classes == {}
    assert mapped.scored.sum() == len(frame) == plain.scored.sum() + sum(plain.unknown_classes.values())


def test_unlabelled_yolo_export_gives_rows_and_no_metrics(results, tmp_path, capsys):
    root = tmp_path / "yolo"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    for k in range(2):
        Image.fromarray(rng.integers(0, 255, (100, 120, 3), dtype=np.uint8)).save(root / "images" / f"p{k}.jpg")
        (root / "labels" / f"p{k}.txt").write_text("0 0.5 0.5 0.2 0.3\n0 0.25 0.25 0.1 0.1")
    out_dir = tmp_path / "out"
    code, out, err = cli(["--model", str(results / "resnet18"), "--photos", str(root), "--out", str(out_dir)], capsys)
    assert code == 0, err
    frame = pd.read_csv(out_dir / "particles.csv", keep_default_na=False)
    assert len(frame) == 4 and set(frame["true"]) == {""}
    first = frame[(frame["photo"] == "images/p0.jpg") & (frame["box_id"] == 0)].iloc[0]
    assert (first["minr"], first["minc"], first["maxr"], first["maxc"]) == (35, 48, 65, 72)
    assert not (out_dir / "metrics.json").exists()


def test_unreadable_photo_is_listed_and_the_rest_classified(results, micro, tmp_path):
    root = tmp_path / "MICRO"
    (root / "raw_img").mkdir(parents=True)
    (root / "annotation").mkdir()
    photos = sorted((micro / "raw_img").iterdir())[:2]
    for p in photos:
        (root / "raw_img" / p.name).write_bytes(p.read_bytes())
        (root / "annotation" / f"{p.name}.tsv").write_bytes((micro / "annotation" / f"{p.name}.tsv").read_bytes())
    broken = root / "raw_img" / photos[1].name
    broken.write_bytes(broken.read_bytes()[:400])  # header intact, pixels cut off
    frame = predict.classify_photos(predict.load_predictor(results / "rf"), root)
    assert set(frame["photo"]) == {f"raw_img/{photos[0].name}"}
    assert any(photos[1].name in item for item, _ in frame.attrs["skipped"])


def test_a_later_unlabelled_run_leaves_no_stale_metrics(results, micro, tmp_path, capsys):
    out_dir = tmp_path / "external"
    assert cli(["--model", str(results / "rf"), "--photos", str(micro), "--out", str(out_dir)], capsys)[0] == 0
    assert (out_dir / "metrics.json").exists()
    root = tmp_path / "unlabelled"
    (root / "annotation").mkdir(parents=True)
    (root / "raw_img").mkdir()
    photo = sorted((micro / "raw_img").iterdir())[0]
    (root / "raw_img" / photo.name).write_bytes(photo.read_bytes())
    table = pd.read_csv(micro / "annotation" / f"{photo.name}.tsv", sep="\t").drop(columns="class")
    table.to_csv(root / "annotation" / f"{photo.name}.tsv", sep="\t", index=False)
    assert cli(["--model", str(results / "rf"), "--photos", str(root), "--out", str(out_dir)], capsys)[0] == 0
    assert not (out_dir / "metrics.json").exists()
    assert len(pd.read_csv(out_dir / "particles.csv")) == len(table)


@pytest.mark.parametrize("argv_of,needle", [
    (lambda r, t: ["--model", str(t), "--input", str(t)], "no image files"),
    (lambda r, t: ["--model", str(t), "--photos", str(t)], "holds no trained model"),
    (lambda r, t: ["--model", str(r / "rf"), "--input", str(t / "missing.png")], "no such file"),
    (lambda r, t: ["--models", "nope", "--results", str(r)], "holds no trained model"),
    (lambda r, t: ["--model", str(r / "rf")], "choose one mode"),
    (lambda r, t: ["--model", str(r / "rf"), "--photos", str(t)], "neither a DeepParticle folder"),
    (lambda r, t: ["--model", str(r / "rf"), "--photos", str(t), "--class-map", "x"], "OLD=NEW"),
])
def test_bad_input_is_one_line_and_exit_2(results, tmp_path, argv_of, needle, capsys):
    code, _, err = cli(argv_of(results, tmp_path), capsys)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and needle in err


def test_single_unreadable_image_is_exit_2(results, tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    code, _, err = cli(["--model", str(results / "resnet18"), "--input", str(bad), "--csv", str(tmp_path / "o.csv")],
                       capsys)
    assert code == 2 and "could be read" in err.splitlines()[-1]
    assert not (tmp_path / "o.csv").exists()


def test_pick_rows_is_seeded_and_balanced():
    labels = ["a"] * 10 + ["b"] * 3 + ["c"] * 1
    first = seeds.pick_rows(labels, n=6, seed=1)
    assert first == seeds.pick_rows(labels, n=6, seed=1) != seeds.pick_rows(labels, n=6, seed=2)
    assert sorted(labels[i] for i in first) == ["a", "a", "a", "b", "b", "c"]
    per = seeds.pick_rows(labels, per_class=2, seed=0)
    assert sorted(labels[i] for i in per) == ["a", "a", "b", "b", "c"]


def test_real_photos_with_other_class_names(results, mp100, tmp_path, capsys):
    """A few mp100 photos: its classes are unknown to the model until mapped with --class-map."""
    root = tmp_path / "MICRO"
    (root / "raw_img").mkdir(parents=True)
    (root / "annotation").mkdir()
    for photo in sorted((mp100 / "MICRO" / "raw_img").iterdir())[:2]:
        (root / "raw_img" / photo.name).write_bytes(photo.read_bytes())
        tsv = mp100 / "MICRO" / "annotation" / f"{photo.name}.tsv"
        (root / "annotation" / tsv.name).write_bytes(tsv.read_bytes())
    n_boxes = sum(len(pd.read_csv(t, sep="\t")) for t in (root / "annotation").iterdir())
    out_dir = tmp_path / "out"
    code, _, err = cli(["--model", str(results / "rf"), "--photos", str(root), "--out", str(out_dir)], capsys)
    assert code == 0, err
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["n"] == 0 and metrics["n_particles"] == n_boxes
    assert set(metrics["unknown_classes"]) <= {"fiber", "film", "fragment", "pallet"}
    assert sum(metrics["unknown_counts"].values()) == n_boxes
    code, _, err = cli(["--model", str(results / "rf"), "--photos", str(root), "--out", str(out_dir), "--class-map",
                        "fiber=line", "film=foam", "fragment=hard", "pallet=pellet"], capsys)
    assert code == 0, err
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["n"] == n_boxes and metrics["unknown_classes"] == []
