"""robustness.py --external and --tta: figures from the saved predictions, TTA by hand, bad input, the report."""
from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from datagen import train_tiny_models

from microplastics.data.synthetic import write_synthetic_micro
from microplastics.predict import external, robustness, tta
from microplastics.predict.predictor import load_predictor
from microplastics.results import external_sets, stats
from microplastics.results.metrics import compute_metrics

ROOT = Path(__file__).resolve().parents[1]
MAP = ["noise=-", "reference=-"]  # the tiny models know foam, hard, line and pellet


@pytest.fixture(scope="module")
def results(processed_dir, tmp_path_factory) -> Path:
    """A deep model and a classical one, trained tiny through the real stages."""
    return train_tiny_models(processed_dir, tmp_path_factory.mktemp("external_results"))


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("other_lab") / "MICRO"
    write_synthetic_micro(root, n_images=4, seed=5, image_size=(200, 260))
    return root


def run_cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "robustness.py"), *argv, "--device", "cpu"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300, check=False)


def hand_labels(folder: Path) -> list[str]:
    """The class of every TSV row, read without the project's code."""
    labels = []
    for tsv in sorted((folder / "annotation").glob("*.tsv")):
        with open(tsv, newline="") as fh:
            labels.extend(row["class"].split("/")[0] for row in csv.DictReader(fh, delimiter="\t"))
    return labels


@pytest.fixture(scope="module")
def scored(results, processed_dir, photos):
    """Both models on one set, plain and then with --tta (the latter also rescoring the test split)."""
    common = ["--results", str(results), "--data", str(processed_dir), "--external", f"lab={photos}",
              "--class-map", "lab", *MAP, "--n-boot", "200"]
    plain = run_cli(*common)
    assert plain.returncode == 0, plain.stderr[-2000:]
    with_tta = run_cli(*common, "--tta", "--model", "rf")
    assert with_tta.returncode == 0, with_tta.stderr[-2000:]
    return results, plain.stdout


@pytest.mark.parametrize("model", ["resnet18", "rf"])
def test_external_figures_equal_a_recomputation_from_the_saved_predictions(scored, photos, model):
    results, _ = scored
    table = pd.read_csv(results / model / external_sets.TABLE_NAME, keep_default_na=False, na_values=[""])
    row = table[(table["set"] == "lab") & (table["tta"] == "none")].iloc[0]
    saved = pd.read_csv(results / model / row["predictions"], dtype={"true": str, "pred": str})
    assert row["predictions"] == "external/lab/predictions.csv"
    # every annotated particle of a kept class, under its own label
    kept = sorted(c for c in hand_labels(photos) if c not in ("noise", "reference"))
    assert sorted(saved["true"]) == kept and int(row["n"]) == len(kept)
    classes = [c[len("prob_"):] for c in saved.columns if c.startswith("prob_")]
    assert saved["pred"].tolist() == [classes[i] for i in saved[[f"prob_{c}" for c in classes]].to_numpy().argmax(1)]
    accuracy = float((saved["true"] == saved["pred"]).mean())
    assert row["accuracy"] == pytest.approx(accuracy, abs=1e-6)
    recomputed = compute_metrics(saved["true"], saved["pred"], classes)
    assert row["macro_f1"] == pytest.approx(recomputed["macro_f1"], abs=1e-6)
    for c in classes:
        hits, support = ((saved["true"] == c) & (saved["pred"] == c)).sum(), (saved["true"] == c).sum()
        expected = hits / support if support else math.nan
        assert (math.isnan(expected) and math.isnan(row[f"recall_{c}"])) or \
            row[f"recall_{c}"] == pytest.approx(expected, abs=1e-6)
    boot = stats.bootstrap_intervals(saved["true"], saved["pred"], classes, n_boot=200, seed=42)
    assert row["macro_f1_low"] == pytest.approx(boot["macro_f1"].low, abs=1e-6)
    assert row["macro_f1_high"] == pytest.approx(boot["macro_f1"].high, abs=1e-6)
    own = json.loads((results / model / "metrics.json").read_text())
    assert row["test_reference"] == "metrics.json"
    assert row["drop_macro_f1"] == pytest.approx(own["macro_f1"] - recomputed["macro_f1"], abs=1e-6)
    metrics = json.loads((results / model / "external" / "lab" / "metrics.json").read_text())
    assert metrics["split"] == "external" and metrics["tta"] == "none" and metrics["class_map"] == dict(
        m.split("=") for m in MAP)


def test_tta_rows_sit_beside_the_plain_ones_and_rescore_the_test_split(scored, processed_dir):
    results, stdout = scored
    table = external_sets.read_table(results / "rf")
    assert sorted(table["tta"]) == ["dihedral8", "none"]
    row = table[table["tta"] == "dihedral8"].iloc[0]
    assert row["predictions"] == "external/lab.tta/predictions.csv"
    assert "scored in this run" in row["test_reference"]
    assert row["drop_macro_f1"] == pytest.approx(row["test_macro_f1"] - row["macro_f1"], abs=1e-6)
    plain = pd.read_csv(results / "rf" / "external" / "lab" / "predictions.csv")
    augmented = pd.read_csv(results / "rf" / "external" / "lab.tta" / "predictions.csv")
    assert plain["path"].tolist() == augmented["path"].tolist()
    assert not np.allclose(plain.filter(like="prob_").to_numpy(), augmented.filter(like="prob_").to_numpy())
    assert (results / "rf" / external_sets.PLOT_NAME).is_file()
    assert not (results / "rf" / robustness.TABLE_NAME).exists()  # --external alone runs no corruption suite
    assert "resnet18 on lab (tta none" in stdout and "rf on lab (tta none" in stdout


class CornerPredictor:
    """Probabilities from the top-left pixel only, through a non-linear map, so each view is known by hand."""

    name, classes, weights = "corner", ["bright", "dark"], "none"

    def predict_proba(self, images):
        p = np.array([(im[0, 0, 0] / 255.0) ** 2 for im in images])
        return np.stack([p, 1 - p], axis=1)


def test_tta_averages_the_probabilities_of_the_eight_views_by_hand():
    image = np.zeros((3, 5, 3), dtype=np.uint8)
    corners = {"tl": 40, "tr": 90, "bl": 160, "br": 250}
    image[0, 0], image[0, -1], image[-1, 0], image[-1, -1] = corners.values()
    # The 8 flips and quarter turns bring each corner to the top left exactly twice.
    assert sorted(tta.view(image, f, k)[0, 0, 0] for f, k in tta.VIEWS) == sorted(list(corners.values()) * 2)
    wrapped = tta.with_tta(CornerPredictor(), True)
    expected = np.mean([(v / 255.0) ** 2 for v in corners.values()])
    assert wrapped.predict_proba([image])[0] == pytest.approx([expected, 1 - expected])
    # ... which is not the plain prediction, nor the prediction of the mean corner
    assert CornerPredictor().predict_proba([image])[0, 0] != pytest.approx(expected)
    assert (np.mean(list(corners.values())) / 255.0) ** 2 != pytest.approx(expected)
    assert tta.tta_of(wrapped) == "dihedral8" and tta.tta_of(CornerPredictor()) == "none"
    assert tta.with_tta(wrapped, True) is wrapped and wrapped.predict_proba([]).shape == (0, 2)


def test_tta_of_a_real_model_is_the_mean_over_views(results, processed_dir):
    manifest = pd.read_csv(processed_dir / "manifest.csv")
    from microplastics.core.images import read_rgb

    crops = [read_rgb(processed_dir / p) for p in manifest["path"][:3]]
    for name in ("rf", "resnet18"):
        base = load_predictor(results / name)
        by_hand = np.mean([base.predict_proba([tta.view(c, f, k) for c in crops]) for f, k in tta.VIEWS], axis=0)
        assert tta.with_tta(base, True).predict_proba(crops) == pytest.approx(by_hand, abs=1e-6)


@pytest.mark.parametrize("argv_of,needle", [
    (lambda r, p, t: ["--external", f"lab={t / 'missing'}"], "no such folder"),
    (lambda r, p, t: ["--external", f"lab={p}"], "unknown to model"),
    (lambda r, p, t: ["--external", f"lab={p}", "--class-map", "other", "noise=-"], "name of an --external set"),
    (lambda r, p, t: ["--external", f"lab={p}", "--class-map", "lab", "noise"], "OLD=NEW"),
    (lambda r, p, t: ["--external", f"lab={t / 'empty'}"], "no annotated particle"),
    (lambda r, p, t: ["--external", f"lab={p}", "--class-map", "lab", "foam=-", "hard=-", "line=-", "pellet=-",
                      *MAP], "has a class to score"),
    (lambda r, p, t: ["--external", "lab"], "NAME=DIR"),
])
def test_bad_external_input_is_one_line_exit_2_and_writes_nothing(results, photos, tmp_path, argv_of, needle):
    (tmp_path / "empty" / "raw_img").mkdir(parents=True)
    (tmp_path / "empty" / "annotation").mkdir()
    models = tmp_path / "models"
    models.mkdir()
    for name in ("rf", "resnet18"):  # copies, so that nothing written could hide among earlier runs' files
        subprocess.run(["cp", "-r", str(results / name), str(models / name)], check=True)
        for stale in ("external", external_sets.TABLE_NAME):
            subprocess.run(["rm", "-rf", str(models / name / stale)], check=True)
    before = sorted(p.relative_to(models) for p in models.rglob("*"))
    done = run_cli("--results", str(models), *argv_of(results, photos, tmp_path))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], done.stderr
    assert sorted(p.relative_to(models) for p in models.rglob("*")) == before


def test_report_shows_other_photo_sets_with_the_drop(scored, processed_dir):
    results, _ = scored
    done = subprocess.run([sys.executable, str(ROOT / "report.py"), "--results", str(results), "--data",
                           str(processed_dir), "--n-boot", "50"], capture_output=True, text=True, cwd=ROOT, check=False,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    page = (results / "report.html").read_text()
    section = page[page.index("id=\"external\""):].split("</section>")[0]
    assert "Other photo sets" in section and "recall line" in section and "drop in macro F1" in section
    for model in ("rf", "resnet18"):
        row = external_sets.read_table(results / model).query("tta == 'none'").iloc[0]
        assert f"{row['drop_macro_f1']:.3f}" in section and f"{row['macro_f1']:.3f}" in section
    assert section.count("<tr>") == 1 + 3  # header, resnet18 plain, rf plain and with TTA
    assert "rerun robustness.py --external" not in page
    assert 'src="rf/external.png"' in section


def test_class_map_parsing_and_dropped_classes():
    assert external.parse_class_map(["a=b", " c = - "]) == {"a": "b", "c": "-"}
    labels = external.mapped_labels(pd.Series(["a", "c", "", "d"]), {"a": "b", "c": "-"})
    assert labels.tolist() == ["b", "", "", "d"]


def test_prediction_photos_mode_with_tta_records_it(results, photos, processed_dir, tmp_path, capsys):
    from microplastics.core.cli import run
    from microplastics.predict import prediction

    out = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        run(prediction.main, ["--model", str(results / "rf"), "--photos", str(photos), "--out", str(out), "--tta",
                             "--class-map", *MAP, "--device", "cpu"])
    assert info.value.code == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tta"] == "dihedral8" and metrics["n"] == len([c for c in hand_labels(photos)
                                                                  if c not in ("noise", "reference")])
    crops = tmp_path / "crops.csv"
    with pytest.raises(SystemExit) as info:  # crops mode writes no metrics.json: its table records it
        run(prediction.main, ["--model", str(results / "rf"), "--input", str(processed_dir / "test"), "--tta",
                              "--csv", str(crops), "--device", "cpu"])
    assert info.value.code == 0 and set(pd.read_csv(crops)["tta"]) == {"dihedral8"}
    with pytest.raises(SystemExit) as info:
        run(prediction.main, ["--models", "rf", "--results", str(results), "--tta", "--device", "cpu"])
    assert info.value.code == 2 and "--tta works in" in capsys.readouterr().err
