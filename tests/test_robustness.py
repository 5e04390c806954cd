"""robustness.py: conditions scored, files written, figures recomputable, photos corrupted before cropping."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from datagen import CLASSES, draw_crop
from microplastics.data import dataset
from microplastics.predict import robustness
from microplastics.core.images import read_rgb
from microplastics.results.metrics import compute_metrics

ROOT = Path(__file__).resolve().parents[1]


class MeanColourPredictor:
    """Nearest class centroid of the mean colour: a real, corruption-sensitive classifier in a few lines."""

    name = "mean_colour"

    def __init__(self, data_dir: Path):
        manifest = dataset.load_manifest(data_dir)
        train = dataset.split_frame(manifest, "train")
        self.classes = dataset.class_names(manifest)
        feats = np.array([self._feature(read_rgb(data_dir / p)) for p in train["path"]])
        self.centroids = np.array([feats[(train["label"] == c).to_numpy()].mean(axis=0) for c in self.classes])

    @staticmethod
    def _feature(image: np.ndarray) -> np.ndarray:
        return image.reshape(-1, 3).mean(axis=0)

    def predict_proba(self, images):
        feats = np.array([self._feature(im) for im in images])
        dist = ((feats[:, None, :] - self.centroids[None]) ** 2).sum(axis=2)
        logits = -dist / 100.0
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)


def crop_setup(data_dir: Path, names=("darker", "sensor_noise"), severities=(1, 3), seed=42) -> robustness.Setup:
    manifest = dataset.load_manifest(data_dir)
    return robustness.Setup(data_dir=data_dir, test=dataset.split_frame(manifest, "test"),
                            classes=dataset.class_names(manifest), photo_dir=None, margin=0.0,
                            conditions=robustness.conditions(list(names), list(severities)), seed=seed,
                            batch_size=5)


@pytest.fixture(scope="module")
def scored(processed_dir, tmp_path_factory):
    """One model scored in crop mode, its files written to a fresh model folder."""
    predictor = MeanColourPredictor(processed_dir)
    setup = crop_setup(processed_dir)
    preds = robustness.score_model(predictor, setup)
    model_dir = tmp_path_factory.mktemp("model")
    summary = robustness.write_outputs(model_dir, predictor.name, preds, setup.classes, {"applied_to": "crop"})
    return predictor, setup, preds, model_dir, summary


def test_every_condition_scores_every_test_crop(scored):
    _, setup, preds, _, _ = scored
    n_test = len(setup.test)
    counts = preds.groupby(["corruption", "severity"]).size()
    assert len(counts) == 1 + 2 * 2 and set(counts) == {n_test}
    assert (preds["applied_to"] == "crop").all()
    assert list(preds.columns[:4]) == ["corruption", "severity", "applied_to", "path"]
    # Labels come from the manifest unchanged in every condition.
    for _, group in preds.groupby(["corruption", "severity"]):
        assert group["true"].tolist() == setup.test["label"].tolist()


def test_table_equals_recomputation_from_saved_predictions(scored):
    _, setup, _, model_dir, _ = scored
    table = pd.read_csv(model_dir / robustness.TABLE_NAME)
    saved = pd.read_csv(model_dir / robustness.PREDICTIONS_NAME, dtype={"true": str, "pred": str})
    assert list(table.columns) == ["corruption", "severity", "accuracy", "macro_f1", "n", "applied_to"]
    for row in table.itertuples():
        rows = saved[(saved["corruption"] == row.corruption) & (saved["severity"] == row.severity)]
        again = compute_metrics(rows["true"], rows["pred"], setup.classes)
        assert row.n == len(rows) == again["n"]
        assert row.accuracy == pytest.approx(again["accuracy"], abs=1e-6)
        assert row.macro_f1 == pytest.approx(again["macro_f1"], abs=1e-6)
        assert row.accuracy == pytest.approx((rows["true"] == rows["pred"]).mean(), abs=1e-6)


def test_corruption_moves_scores_and_summary_is_consistent(scored):
    _, _, _, model_dir, summary = scored
    table = pd.read_csv(model_dir / robustness.TABLE_NAME)
    clean = table.loc[table["corruption"] == "none", "macro_f1"].item()
    dark3 = table.loc[(table["corruption"] == "darker") & (table["severity"] == 3), "macro_f1"].item()
    assert clean > 0.6 and dark3 < clean - 0.2, "a mean-colour model must suffer in the dark"
    corrupted = table[table["corruption"] != "none"]["macro_f1"]
    assert summary["clean_macro_f1"] == pytest.approx(clean)
    assert summary["mean_corrupted_macro_f1"] == pytest.approx(corrupted.mean())
    assert summary["relative_drop"] == pytest.approx((clean - corrupted.mean()) / clean)
    assert (model_dir / robustness.PLOT_NAME).stat().st_size > 1000
    assert (model_dir / robustness.SUMMARY_NAME).is_file()


def test_same_seed_same_predictions_other_seed_other_noise(scored, processed_dir):
    predictor, _, preds, _, _ = scored
    again = robustness.score_model(predictor, crop_setup(processed_dir))
    pd.testing.assert_frame_equal(preds, again)
    other = robustness.score_model(predictor, crop_setup(processed_dir, names=("sensor_noise",), severities=(3,),
                                                         seed=7))
    noisy = preds[(preds["corruption"] == "sensor_noise") & (preds["severity"] == 3)].reset_index(drop=True)
    other = other[other["corruption"] == "sensor_noise"].reset_index(drop=True)
    assert not np.allclose(noisy.filter(like="prob_").to_numpy(), other.filter(like="prob_").to_numpy())


def make_photo_data(root: Path, n_photos: int = 3, seed: int = 0) -> tuple[Path, pd.DataFrame]:
    """Raw photos of four drawn particles each, and manifest-style test rows for their boxes."""
    rng = np.random.default_rng(seed)
    raw = root / "raw_img"
    raw.mkdir(parents=True)
    rows = []
    for k in range(n_photos):
        photo = np.full((160, 160, 3), 170, np.uint8)
        name = f"photo_{k}.jpg"
        for j, label in enumerate(CLASSES):
            r, c = 10 + 75 * (j // 2), 10 + 75 * (j % 2)
            photo[r:r + 60, c:c + 60] = np.asarray(draw_crop(label, 60, rng))
            rows.append({"path": f"test/{label}/{name}_{j}.png", "label": label, "split": "test",
                         "source_image": name, "minr": r, "minc": c, "maxr": r + 60, "maxc": c + 60})
        from PIL import Image
        Image.fromarray(photo).save(raw / name, quality=95)
    return root, pd.DataFrame(rows)


@pytest.mark.parametrize("name", ["defocus_blur", "colour_temperature", "low_resolution"])
def test_corrupted_photo_folder_keeps_boxes_and_labels(tmp_path, name):
    raw_root, test = make_photo_data(tmp_path / "MICRO")
    out = robustness.write_corrupted_photos(test, raw_root / "raw_img", tmp_path / "out", name, 2, seed=42)
    for photo, rows in test.groupby("source_image"):
        before = read_rgb(raw_root / "raw_img" / photo)
        after = read_rgb(out / "raw_img" / f"{photo}.png")
        assert after.shape == before.shape and np.abs(after.astype(int) - before).mean() > 0.5
        tsv = pd.read_csv(out / "annotation" / f"{photo}.png.tsv", sep="\t")
        assert list(tsv.columns) == ["ID", "minr", "minc", "maxr", "maxc", "class"]
        assert tsv[["minr", "minc", "maxr", "maxc"]].to_numpy().tolist() == \
            rows[["minr", "minc", "maxr", "maxc"]].to_numpy().tolist()
        assert [c.split("/")[0] for c in tsv["class"]] == rows["label"].tolist()


def test_locate_photos_finds_raw_img_or_gives_none(tmp_path):
    raw_root, test = make_photo_data(tmp_path / "MICRO")
    assert robustness.locate_photos([None, raw_root], test["source_image"]) == (raw_root / "raw_img").resolve()
    assert robustness.locate_photos([tmp_path / "nowhere"], test["source_image"]) is None
    assert robustness.locate_photos([raw_root], ["missing.jpg"]) is None


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "robustness.py"), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def test_unknown_corruption_is_one_line_and_exit_2(tmp_path):
    done = run_cli("--corruptions", "darker", "fog", "--results", str(tmp_path))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "fog" in lines[0] and "defocus_blur" in lines[0] and "Traceback" not in done.stderr


def test_missing_models_and_bad_severity_are_one_line_errors(tmp_path, processed_dir):
    done = run_cli("--results", str(tmp_path), "--data", str(processed_dir))
    assert done.returncode == 2 and "no trained model" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    done = run_cli("--severities", "5", "--results", str(tmp_path))
    assert done.returncode == 2 and "unknown severity 5" in done.stderr


# ---------------------------------------------------------------- end to end on photos

@pytest.fixture(scope="module")
def photo_run(tmp_path_factory):
    """Synthetic photos -> data-preprocessing -> RF on robust features -> robustness.py on whole photos."""
    from microplastics.data import synthetic

    root = tmp_path_factory.mktemp("photo_run")
    synthetic.write_synthetic_micro(root / "MICRO", n_images=24, seed=3, image_size=(240, 320))
    steps = [["data-preprocessing.py", "--input", str(root / "MICRO"), "--output", str(root / "data"),
              "--workers", "1"],
             ["ml-baselines.py", "--data", str(root / "data"), "--results", str(root / "results"), "--models", "rf",
              "--features", "robust", "--augment", "robust", "--aug-copies", "1", "--workers", "1",
              "--grid-size", "0"],
             ["robustness.py", "--data", str(root / "data"), "--results", str(root / "results"),
              "--corruptions", "darker", "defocus_blur", "--severities", "1", "3", "--device", "cpu"]]
    outputs = []
    for step in steps:
        done = subprocess.run([sys.executable, str(ROOT / step[0]), *step[1:]], capture_output=True, text=True,
                              cwd=ROOT, timeout=300)
        assert done.returncode == 0, f"{step[0]} failed: {done.stderr[-2000:]}"
        outputs.append(done.stdout + done.stderr)
    return root, outputs[-1]


@pytest.mark.slow
def test_photo_mode_reuses_prediction_path_and_clean_matches_the_model(photo_run):
    root, log = photo_run
    model_dir = root / "results" / "rf"
    assert "applied to each photo" in log and "rf: clean macro-F1" in log
    saved = pd.read_csv(model_dir / robustness.PREDICTIONS_NAME, dtype={"true": str, "pred": str})
    assert set(saved["applied_to"]) == {"photo"}
    assert set(zip(saved["corruption"], saved["severity"])) == {("none", 0), ("darker", 1), ("darker", 3),
                                                                 ("defocus_blur", 1), ("defocus_blur", 3)}
    # Cut again from the untouched photos, the clean crops are the stored crops: same predictions.
    clean = saved[saved["corruption"] == "none"].set_index("path")
    recorded = pd.read_csv(model_dir / "predictions.csv", dtype={"path": str, "pred": str}).set_index("path")
    assert sorted(clean.index) == sorted(recorded.index)
    assert (clean.loc[recorded.index, "pred"] == recorded["pred"]).all()
    probs = [c for c in recorded.columns if c.startswith("prob_")]
    assert np.allclose(clean.loc[recorded.index, probs].to_numpy(), recorded[probs].to_numpy(), atol=1e-5)
    summary = json.loads((model_dir / robustness.SUMMARY_NAME).read_text())
    assert summary["applied_to"] == "photo" and summary["photos"].endswith("raw_img")
    assert summary["clean_macro_f1"] == pytest.approx(json.loads((model_dir / "metrics.json").read_text())["macro_f1"])


# ---------------------------------------------------------------- hardening

def test_robust_features_hold_still_where_the_studys_move():
    """Light, white balance, contrast and mild blur move the robust vector far less than the study's 13."""
    from microplastics.data import corruptions
    from microplastics.classical.features import extract_features

    rng = np.random.default_rng(5)
    crops = [np.asarray(draw_crop(label, 48, rng)) for label in CLASSES for _ in range(4)]
    for kind in ("original", "robust"):
        clean = np.stack([extract_features(c, kind) for c in crops])
        scale = clean.std(axis=0) + 1e-9
        drift = {}
        for name in ("darker", "brighter", "colour_temperature", "contrast_loss", "defocus_blur"):
            moved = np.stack([extract_features(corruptions.corrupt(c, name, 1, key=str(i)), kind)
                              for i, c in enumerate(crops)])
            drift[name] = float(np.median(np.abs(moved - clean) / scale))
        if kind == "original":
            original = drift
    for name, value in drift.items():
        assert value < 0.5 * original[name] + 1e-6, f"{name}: robust drift {value:.3f}, original {original[name]:.3f}"
        assert value < 0.15, f"{name}: robust features drift {value:.3f} class spreads"


def test_robust_augmentation_is_reproducible_and_apart_from_the_suite():
    from microplastics.data import augment, corruptions

    aug = augment.RobustAugmenter(seed=42, p=1.0)
    image = np.asarray(draw_crop("pellet", 48, np.random.default_rng(0)))
    a, b, c = aug(image, 0, 3), aug(image, 0, 3), aug(image, 1, 3)
    assert a.shape == image.shape and np.array_equal(a, b) and not np.array_equal(a, c)
    assert not np.array_equal(a, image)
    suite = corruptions.CORRUPTIONS
    # "robust" stops short of every corruption's moderate severity: those conditions stay unseen.
    r = augment.ROBUST
    assert r.jpeg_quality[0] > suite["jpeg_compression"].levels[1]
    assert r.downscale[0] > 1 / suite["low_resolution"].levels[1]
    assert r.blur_sigma[1] < suite["defocus_blur"].levels[1]
    assert r.noise_std[1] * 255 < suite["sensor_noise"].levels[1]
    assert r.brightness[0] > suite["darker"].levels[1] and r.brightness[1] < suite["brighter"].levels[1]
    assert r.contrast[0] > suite["contrast_loss"].levels[1]
    # "strong" reaches the strong severities of the light, noise, JPEG and resolution corruptions
    s = augment.STRONG
    assert s.jpeg_quality[0] <= suite["jpeg_compression"].levels[2]
    assert s.downscale[0] <= 1 / suite["low_resolution"].levels[2]
    assert s.noise_std[1] * 255 >= suite["sensor_noise"].levels[2]
    assert s.brightness[0] <= suite["darker"].levels[2] and s.brightness[1] >= suite["brighter"].levels[2]
    assert s.contrast[0] <= suite["contrast_loss"].levels[2]


def test_deep_robust_preset_adds_to_the_study_preset():
    from microplastics.deep.transforms import TrainPreset

    image = np.asarray(draw_crop("line", 48, np.random.default_rng(1)))
    study, robust = TrainPreset(32), TrainPreset(32, augment="robust")
    names = lambda preset: [type(t).__name__ for t in preset.transform.transforms]  # noqa: E731
    assert names(robust)[:len(names(study)) - 2] == names(study)[:-2], "the study's steps come first, unchanged"
    assert {"GaussianBlur", "ImageCompression", "Downscale", "ColorJitter"} <= set(names(robust)) - set(names(study))
    assert np.array_equal(robust(image, seed=9).numpy(), robust(image, seed=9).numpy())
    with pytest.raises(ValueError, match="unknown augmentation"):
        TrainPreset(32, augment="heavy")


def test_ml_baselines_augment_robust_trains_on_copies(processed_dir, tmp_path):
    import argparse

    from microplastics.classical import baselines
    from microplastics.classical.features import FeatureSettings

    settings = FeatureSettings(kind="robust")
    _, splits, _ = baselines.load_features(processed_dir, settings, workers=1, use_cache=False)
    train = splits["train"]
    args = argparse.Namespace(augment="robust", aug_copies=2, seed=42, workers=1)
    X_aug, y_aug = baselines.augment_train(processed_dir, train, settings, args)
    assert X_aug.shape == (2 * len(train.labels), train.X.shape[1]) and np.isfinite(X_aug).all()
    assert y_aug == [label for label in train.labels for _ in range(2)]
    assert not np.allclose(X_aug[::2], train.X), "augmented copies must differ from the clean crops"
    X, y = baselines.training_matrix(train, (X_aug, y_aug))
    assert len(X) == len(y) == 3 * len(train.labels)
    again, _ = baselines.augment_train(processed_dir, train, settings, args)
    assert np.array_equal(again, X_aug), "the same seed gives the same augmented copies"
    assert baselines.augment_train(processed_dir, train, settings, argparse.Namespace(augment="none")) is None

    results = tmp_path / "results"
    baselines.main(["--data", str(processed_dir), "--results", str(results), "--models", "rf", "--features",
                    "robust", "--augment", "robust", "--aug-copies", "1", "--workers", "1", "--grid-size", "0",
                    "--no-cache"])
    config = json.loads((results / "rf" / "config.json").read_text())
    assert config["augment"] == "robust" and config["aug_copies"] == 1 and config["features"] == "robust"
    assert json.loads((results / "rf" / "metrics.json").read_text())["augment"] == "robust"


def test_without_photos_the_crops_are_corrupted_and_the_output_says_so(processed_dir, tmp_path):
    from microplastics.classical import baselines

    results = tmp_path / "results"
    baselines.main(["--data", str(processed_dir), "--results", str(results), "--models", "rf", "--features",
                    "original", "--workers", "1", "--grid-size", "0", "--no-cache"])
    done = run_cli("--data", str(processed_dir), "--results", str(results), "--corruptions", "contrast_loss",
                   "--severities", "2", "--device", "cpu")
    assert done.returncode == 0, done.stderr[-1500:]
    assert "applied to each crop (test photos not found)" in done.stdout
    table = pd.read_csv(results / "rf" / robustness.TABLE_NAME)
    assert table[["corruption", "severity"]].values.tolist() == [["none", 0], ["contrast_loss", 2]]
    assert set(table["applied_to"]) == {"crop"}
    clean = json.loads((results / "rf" / "metrics.json").read_text())["macro_f1"]
    assert table.loc[0, "macro_f1"] == pytest.approx(clean, abs=1e-6), "clean crops score as the model did"
    done = run_cli("--data", str(processed_dir), "--results", str(results), "--apply-to", "photo")
    assert done.returncode == 2 and "--photos" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def _particle_on_background(colour: tuple[int, int, int], size: int = 40) -> np.ndarray:
    """A coloured disk on the mp100-like beige background, with a little texture."""
    rng = np.random.default_rng(3)
    image = np.empty((size, size, 3), dtype=np.float32)
    image[:] = (166, 155, 138)
    yy, xx = np.mgrid[:size, :size]
    disk = (yy - size / 2) ** 2 + (xx - size / 2.5) ** 2 < (size / 4) ** 2
    image[disk] = colour
    image += rng.normal(0, 2, image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def test_crop_normalisation_cancels_light_white_balance_and_contrast():
    from microplastics.data.corruptions import corrupt
    from microplastics.deep.transforms import background_relative

    image = _particle_on_background((60, 90, 150))
    clean = background_relative(image)
    scale = np.abs(clean).mean()
    for name in ("darker", "colour_temperature", "contrast_loss"):
        for severity in (1, 3):
            shifted = corrupt(image, name, severity, key="p")
            raw_change = np.abs(shifted.astype(np.float32) - image).mean()
            assert raw_change > 5, f"{name}@{severity} must change the pixels for this test to mean anything"
            change = np.abs(background_relative(shifted) - clean).mean()
            # what is left is rounding to whole grey levels (the light noise of the crop quantised)
            assert change < 0.15 * scale, f"{name}@{severity}: the normalised crop moved by {change / scale:.1%}"
    # ImageNet normalisation, a fixed affine map, keeps every such change.
    from microplastics.deep.transforms import EvalPreset

    imagenet = EvalPreset(32)
    moved = (imagenet(corrupt(image, "darker", 3)) - imagenet(image)).abs().mean() / imagenet(image).abs().mean()
    assert moved > 0.5


def test_crop_normalisation_keeps_colour_and_stays_bounded():
    from microplastics.deep.transforms import CROP_NORM_CLIP, background_relative

    blue, red = (background_relative(_particle_on_background(c)) for c in ((60, 90, 150), (150, 70, 60)))
    assert blue.dtype == np.float32 and blue.shape == (40, 40, 3)
    # The background maps to about 0; the particle keeps which channels differ from it, and how.
    assert abs(float(np.median(blue[:3]))) < 0.2
    centre_blue, centre_red = blue[20, 16], red[20, 16]
    assert centre_blue[2] > centre_blue[0] and centre_red[0] > centre_red[2]
    assert np.abs(centre_blue - centre_red).max() > 1.0
    flat = np.full((16, 16, 3), 200, dtype=np.uint8)
    flat[0, 0] = 201
    out = background_relative(flat)
    assert np.isfinite(out).all() and np.abs(out).max() <= CROP_NORM_CLIP
    assert np.abs(out[1:, 1:]).max() < 1e-6 and abs(out[0, 0]).max() < 0.5, \
        "a flat crop stays flat: its one odd pixel is not blown up"


def test_presets_share_the_input_normalisation():
    from microplastics.deep.transforms import EvalPreset, TrainPreset

    image = _particle_on_background((60, 90, 150), size=48)
    crop_eval, imagenet_eval = EvalPreset(32, input_norm="crop")(image), EvalPreset(32)(image)
    assert crop_eval.shape == imagenet_eval.shape == (3, 32, 32)
    assert not np.allclose(crop_eval.numpy(), imagenet_eval.numpy(), atol=1e-3)
    names = [type(t).__name__ for t in TrainPreset(32, augment="robust", input_norm="crop").transform.transforms]
    assert names[-2:] == ["BackgroundRelative", "ToTensorV2"]
    with pytest.raises(ValueError, match="unknown input normalisation"):
        EvalPreset(32, input_norm="per-photo")


def test_strong_augmentation_corrupts_the_crop_before_it_is_enlarged():
    import albumentations as A
    import torch

    from microplastics.deep.transforms import TrainPreset

    from microplastics.data import augment

    strong = TrainPreset(64, augment="strong")
    native = {type(t): t for t in strong.native.transforms}      # at the crop's own resolution,
    assert native[A.ImageCompression].quality_range == augment.STRONG.jpeg_quality   # as a camera compresses
    assert A.ImageCompression not in {type(t) for t in strong.transform.transforms}
    robust = TrainPreset(64, augment="robust")   # the robust steps stay on the enlarged crop
    steps = [type(t) for t in robust.transform.transforms]
    assert robust.native is None and steps.index(A.ImageCompression) > steps.index(A.RandomResizedCrop)
    # every crop size works, down to a few pixels, and a seed repeats
    for shape in [(3, 2, 3), (15, 40, 3), (40, 30, 3)]:
        crop = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
        a, b = strong(crop, seed=7), strong(crop, seed=7)
        assert a.shape == (3, 64, 64) and torch.equal(a, b)
