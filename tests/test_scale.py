"""Crops at one physical scale (calibration, --crop-um-per-px, --scale-augment) and the shape cues."""
from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from microplastics.classical import baselines
from microplastics.classical.features import (SHAPE_CUE_NAMES, FeatureSettings, augmented_features, cue_mask,
                                              extract_features, feature_names, shape_cue_features)
from microplastics.core import fileio
from microplastics.core.cli import UserError
from microplastics.core.images import read_rgb
from microplastics.data import scale
from microplastics.data.dataset import load_manifest, recorded_crop_scale
from microplastics.data.preprocessing import main as preprocess_main
from microplastics.predict.predictor import classify_photos, load_predictor
from test_preprocess import small_micro

ROOT = Path(__file__).resolve().parents[1]


def magnified(micro: Path, out: Path, factor: int) -> Path:
    """``micro``'s photos and boxes at ``factor`` times the magnification."""
    (out / "raw_img").mkdir(parents=True)
    (out / "annotation").mkdir(parents=True)
    for photo in sorted((micro / "raw_img").iterdir()):
        image = read_rgb(photo)
        big = cv2.resize(image, (image.shape[1] * factor, image.shape[0] * factor), interpolation=cv2.INTER_LINEAR)
        cv2.imwrite(str(out / "raw_img" / photo.name), cv2.cvtColor(big, cv2.COLOR_RGB2BGR))
        table = pd.read_csv(micro / "annotation" / f"{photo.name}.tsv", sep="\t")
        table[["minr", "minc", "maxr", "maxc"]] *= factor
        table.to_csv(out / "annotation" / f"{photo.name}.tsv", sep="\t", index=False)
    return out


def crop_sizes(processed: Path) -> dict[tuple[str, str], tuple[int, ...]]:
    manifest = load_manifest(processed)
    return {(row.source_image, str(row.box_id)): read_rgb(processed / row.path).shape[:2]
            for row in manifest.itertuples()}


def preprocess(micro: Path, out: Path, *extra: str) -> dict:
    assert preprocess_main(["--input", str(micro), "--output", str(out), "--workers", "1", *extra]) == 0
    return fileio.read_json(out / "summary.json")


# ----------------------------------------------------------------------------- resampling to one scale

def test_a_2x_magnification_gives_the_same_resampled_crops(tmp_path):
    micro = small_micro(tmp_path / "MICRO")
    big = magnified(micro, tmp_path / "MICRO_2x", 2)
    preprocess(micro, tmp_path / "plain_1x")
    preprocess(big, tmp_path / "plain_2x")
    plain_1x, plain_2x = crop_sizes(tmp_path / "plain_1x"), crop_sizes(tmp_path / "plain_2x")
    assert plain_1x.keys() == plain_2x.keys()
    assert all(plain_2x[k] == (2 * h, 2 * w) for k, (h, w) in plain_1x.items()), "without resampling, 2x crops"
    summary = preprocess(micro, tmp_path / "cal_1x", "--um-per-px", "2.0", "--crop-um-per-px", "3")
    preprocess(big, tmp_path / "cal_2x", "--um-per-px", "1.0", "--crop-um-per-px", "3")
    cal_1x, cal_2x = crop_sizes(tmp_path / "cal_1x"), crop_sizes(tmp_path / "cal_2x")
    assert cal_1x == cal_2x
    assert all(cal_1x[k] == scale.resampled_size(plain_1x[k], 2.0, 3.0) for k in cal_1x)
    assert any(cal_1x[k] != plain_1x[k] for k in cal_1x), "the crops were resampled"
    assert summary["calibration"]["crop_um_per_px"] == summary["settings"]["crop_um_per_px"] == 3.0
    assert summary["calibration"]["source"] == ["--um-per-px"]
    assert set(load_manifest(tmp_path / "cal_1x")["um_per_px"]) == {2.0}
    assert recorded_crop_scale(tmp_path / "cal_1x") == 3.0 and recorded_crop_scale(tmp_path / "plain_1x") is None


def test_a_per_photo_csv_scale_and_a_missing_photo(tmp_path):
    micro = small_micro(tmp_path / "MICRO")
    names = sorted(p.name for p in (micro / "raw_img").iterdir())
    table = tmp_path / "scale.csv"
    table.write_text("photo,um_per_px\n" + "".join(f"{n},{1.0 + i % 2}\n" for i, n in enumerate(names)))
    preprocess(micro, tmp_path / "out", "--um-per-px", str(table), "--crop-um-per-px", "2")
    manifest = load_manifest(tmp_path / "out")
    per_photo = manifest.groupby("source_image")["um_per_px"].first().to_dict()
    assert per_photo == {n: 1.0 + i % 2 for i, n in enumerate(names)}
    table.write_text("photo,um_per_px\n" + "".join(f"{n},1.0\n" for n in names[1:]))
    with pytest.raises(UserError, match="no value for 1 photo"):
        preprocess(micro, tmp_path / "out2", "--um-per-px", str(table))


def test_reference_objects_give_each_photo_its_scale(tmp_path):
    """Discs of the 'reference' class, 20 px across in one photo and 10 px in another, 100 um each."""
    from test_annotations import rows, write_micro

    tsvs, photos = {}, {}
    for p in range(9):
        boxes = [(i, 4 + 12 * i, 4, 14 + 12 * i, 30, f"{'line' if i % 2 else 'hard'}/c{p}{i}.png") for i in range(4)]
        if p < 2:
            boxes.append((9, 50, 40, 50 + 24, 40 + 24, f"reference/r{p}.png"))
        tsvs[f"{p}.png.tsv"] = rows(*boxes)
        photos[f"{p}.png"] = (80, 80)
    micro = write_micro(tmp_path / "MICRO", tsvs, photos)
    for p, diameter in ((0, 20), (1, 10)):  # the reference disc drawn into its box
        path = micro / "raw_img" / f"{p}.png"
        image = read_rgb(path).copy()
        image[50:74, 40:64] = 230
        cv2.circle(image, (52, 62), diameter // 2, (20, 20, 20), -1)
        cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    summary = preprocess(micro, tmp_path / "out", "--reference-size-um", "100", "--min-class-crops", "1")
    manifest = load_manifest(tmp_path / "out")
    per_photo = manifest.groupby("source_image")["um_per_px"].first()
    assert per_photo["0.png"] == pytest.approx(100 / 21, rel=0.08)  # Feret max of a drawn 20 px disc: ~21 px
    assert per_photo["1.png"] == pytest.approx(100 / 11, rel=0.1)
    assert per_photo["5.png"] == pytest.approx(np.median([per_photo["0.png"], per_photo["1.png"]]))
    assert set(summary["calibration"]["source"]) == {"reference", "reference (median of other photos)"}


def test_bad_scale_options_are_one_line_errors(tmp_path):
    micro = small_micro(tmp_path / "MICRO")
    for extra, message in ((["--crop-um-per-px", "3"], "needs calibrated photos"),
                           (["--um-per-px", "2", "--crop-um-per-px", "-1"], "must be a positive number"),
                           (["--um-per-px", "2", "--reference-size-um", "50"], "give one scale"),
                           (["--um-per-px", "nope.csv"], "neither a number nor a CSV")):
        done = subprocess.run([sys.executable, str(ROOT / "data-preprocessing.py"), "--input", str(micro),
                               "--output", str(tmp_path / "out"), "--workers", "1", *extra],
                              capture_output=True, text=True)
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().splitlines()[-1].startswith("error:") and message in done.stderr
    assert not (tmp_path / "out").exists()


class Recording:
    """A predictor that records the crops it is given."""

    classes = ["hard", "line"]
    name, weights = "recording", "none"

    def __init__(self, crop_um_per_px: float | None) -> None:
        self.crop_um_per_px, self.shapes = crop_um_per_px, []

    def predict_proba(self, images):
        self.shapes += [im.shape[:2] for im in images]
        return np.full((len(images), 2), 0.5)


def test_prediction_resamples_new_photos_as_the_training_crops_were(tmp_path):
    micro = small_micro(tmp_path / "MICRO")
    big = magnified(micro, tmp_path / "MICRO_2x", 2)
    trained = preprocess(micro, tmp_path / "cal", "--um-per-px", "2.0", "--crop-um-per-px", "3")
    expected = sorted(crop_sizes(tmp_path / "cal").values())
    at_1x, at_2x, unscaled = Recording(3.0), Recording(3.0), Recording(None)
    classify_photos(at_1x, micro, um_per_px=2.0)
    classify_photos(at_2x, big, um_per_px=1.0)
    classify_photos(unscaled, big, um_per_px=1.0)  # a model trained on crops as cut takes them as cut
    assert sorted(at_1x.shapes) == sorted(at_2x.shapes) == expected
    boxes = load_manifest(tmp_path / "cal")
    heights, widths = 2 * (boxes["maxr"] - boxes["minr"]), 2 * (boxes["maxc"] - boxes["minc"])
    assert sorted(unscaled.shapes) == sorted(zip(heights, widths))
    assert trained["calibration"]["crop_um_per_px"] == 3.0


def resampled_copy(processed_dir: Path, tmp_path: Path) -> Path:
    """The shared small folder, as if its crops had been resampled to 4 um/px."""
    data = tmp_path / "data"
    shutil.copytree(processed_dir, data)
    summary = fileio.read_json(data / "summary.json")
    summary["calibration"] = {"unit": "um", "crop_um_per_px": 4.0}
    fileio.write_json(data / "summary.json", summary)
    return data


def test_the_classical_model_carries_the_crop_scale(processed_dir, tmp_path):
    data = resampled_copy(processed_dir, tmp_path)
    assert baselines.main(["--data", str(data), "--results", str(tmp_path / "res"), "--models", "rf",
                           "--workers", "1", "--grid-size", "0", "--augment", "none", "--shape-cues", "off"]) == 0
    assert fileio.read_json(tmp_path / "res" / "rf" / "config.json")["crop_um_per_px"] == 4.0
    assert load_predictor(tmp_path / "res" / "rf").crop_um_per_px == 4.0


def test_the_deep_checkpoint_carries_the_crop_scale(processed_dir, tmp_path):
    import torch

    from microplastics.deep.stage import main_for

    data = resampled_copy(processed_dir, tmp_path)
    main_for("resnet50")(["--data", str(data), "--results", str(tmp_path / "res"), "--weights", "none",
                          "--image-size", "32", "--workers", "0", "--arch", "resnet18", "--epochs", "1",
                          "--aug-views", "1", "--scale-augment", "2"])
    best = torch.load(tmp_path / "res" / "resnet18" / "best.pt", weights_only=True)
    assert best["config"]["crop_um_per_px"] == 4.0 and best["config"]["scale_augment"] == 2.0
    assert load_predictor(tmp_path / "res" / "resnet18").crop_um_per_px == 4.0


# ----------------------------------------------------------------------------- scale augmentation

def test_random_rescale_is_seeded_and_stays_in_range():
    crop = np.zeros((40, 20, 3), np.uint8)
    sizes = [scale.random_rescale(crop, 2.0, np.random.default_rng(s)).shape[:2] for s in range(40)]
    assert sizes == [scale.random_rescale(crop, 2.0, np.random.default_rng(s)).shape[:2] for s in range(40)]
    heights = np.array([h for h, _ in sizes])
    assert heights.min() >= 20 and heights.max() <= 80 and heights.min() < 36 and heights.max() > 44
    assert scale.random_rescale(crop, 1.0, np.random.default_rng(0)) is crop
    with pytest.raises(UserError, match="at least 1"):
        scale.check_scale_augment(0.5)


def test_scale_augmented_copies_change_the_size_features(processed_dir):
    paths = sorted(processed_dir.glob("train/*/*.png"))[:6]
    settings = FeatureSettings(kind="robust")
    plain = augmented_features(paths, settings, 2, seed=0, robust=False, progress=False)
    rescaled = augmented_features(paths, settings, 2, seed=0, robust=False, scale_augment=2.0, progress=False)
    area = feature_names(settings=settings).index("crop_log_area")
    assert np.allclose(plain[:, area], np.log(48 * 48))
    assert not np.allclose(rescaled[:, area], np.log(48 * 48))
    again = augmented_features(paths, settings, 2, seed=0, robust=False, scale_augment=2.0, progress=False)
    assert np.array_equal(rescaled, again)


# ----------------------------------------------------------------------------- shape cues

def cues(mask: np.ndarray) -> dict[str, float]:
    return dict(zip(SHAPE_CUE_NAMES, shape_cue_features(mask)))


def test_shape_cues_of_a_straight_line_equal_the_hand_computation():
    mask = np.zeros((40, 240), bool)
    mask[15:25, 20:220] = True  # 200 x 10 px
    got = cues(mask)
    assert got["cue_elongation"] == pytest.approx(1 - 10 / math.hypot(200, 10), abs=1e-6)
    assert got["cue_slenderness"] == pytest.approx(200 / 10, rel=0.05)  # length / width
    assert got["cue_curl"] == pytest.approx(0.0, abs=0.02)
    assert got["cue_skeleton_ends"] == 2


def test_shape_cues_of_a_half_circle_equal_the_hand_computation():
    mask = np.zeros((200, 200), np.uint8)
    cv2.ellipse(mask, (100, 120), (80, 80), 0, 180, 360, 1, 4)  # a half ring of radius 80, 4 px thick
    got = cues(mask.astype(bool))
    length = math.pi * 80  # the arc; the chord is the diameter
    assert got["cue_curl"] == pytest.approx(1 - 2 * 80 / length, abs=0.03)  # 1 - 2/pi
    assert got["cue_elongation"] == pytest.approx(1 - 82 / 164, abs=0.04)  # Feret min: the half ring's height
    assert got["cue_slenderness"] == pytest.approx(length / 4, rel=0.1)
    assert got["cue_skeleton_ends"] == 2


def test_shape_cues_of_a_disc_equal_the_hand_computation():
    mask = np.zeros((100, 100), np.uint8)
    cv2.circle(mask, (50, 50), 30, 1, -1)
    got = cues(mask.astype(bool))
    assert got["cue_elongation"] == pytest.approx(0.0, abs=0.03)
    assert got["cue_slenderness"] == pytest.approx(1.0, abs=0.05)  # a blob is as long as it is wide
    assert got["cue_curl"] == 0.0
    assert got["cue_skeleton_ends"] <= 2
    assert np.array_equal(shape_cue_features(np.zeros((5, 5), bool)), np.zeros(4))


def test_shape_cues_ignore_colour_contrast_and_magnification():
    def drawn(fg, bg, factor):
        image = np.full((60 * factor, 160 * factor, 3), bg, np.uint8)
        cv2.ellipse(image, (80 * factor, 50 * factor), (60 * factor, 30 * factor), 0, 180, 360, fg, 4 * factor)
        return image
    reference = shape_cue_features(cue_mask(drawn((30, 30, 30), (220, 220, 220), 1)))
    for fg, bg, factor in (((200, 40, 40), (90, 90, 90), 1), ((240, 240, 240), (60, 60, 120), 1),
                           ((30, 30, 30), (220, 220, 220), 2)):
        assert np.allclose(shape_cue_features(cue_mask(drawn(fg, bg, factor))), reference, rtol=0.1, atol=0.03)


def test_the_shape_cues_are_a_group_that_turns_on_and_off():
    image = np.full((30, 90, 3), 200, np.uint8)
    image[12:18, 5:85] = 30
    for kind in ("original", "full", "robust"):
        off, on = FeatureSettings(kind=kind), FeatureSettings(kind=kind, shape_cues=True)
        plain, more = extract_features(image, settings=off), extract_features(image, settings=on)
        assert len(plain) == len(feature_names(settings=off)) and len(more) == len(feature_names(settings=on))
        assert np.array_equal(more[:len(plain)], plain)
        assert feature_names(settings=on)[-len(SHAPE_CUE_NAMES):] == list(SHAPE_CUE_NAMES)
        assert more[-4] > 0.8  # a fibre: elongated
    assert FeatureSettings().shape_cues is False, "models saved before the cues load without them"
