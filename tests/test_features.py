"""Handcrafted features: fixed length, finite on odd crops, meaningful parts, parallel and cached."""
from __future__ import annotations

import shutil

import cv2
import numpy as np
import pandas as pd
import pytest

from datagen import make_processed
from microplastics.data import dataset
from microplastics.core.images import read_rgb
from microplastics.classical.features import (FEATURE_KINDS, FeatureSettings, cache_path, dataset_features,
                                              extract_features, extract_from_files, feature_names)


def odd_crops() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "1x1": np.array([[[200, 10, 10]]], dtype=np.uint8),
        "flat": np.full((40, 40, 3), 128, dtype=np.uint8),
        "all_black": np.zeros((64, 64, 3), dtype=np.uint8),
        "all_white": np.full((20, 30, 3), 255, dtype=np.uint8),
        "long_thin_vertical": rng.integers(0, 256, (600, 2, 3), dtype=np.uint8),
        "long_thin_horizontal": rng.integers(0, 256, (1, 500, 3), dtype=np.uint8),
        "grey_2d": rng.integers(0, 256, (33, 17), dtype=np.uint8),
        "rgba": rng.integers(0, 256, (25, 25, 4), dtype=np.uint8),
        "float_0_1": rng.random((30, 30, 3)),
        "uint16": rng.integers(0, 65536, (30, 30, 3)).astype(np.uint16),
        "bool_mask": rng.random((30, 30)) > 0.5,
        "single_dot": np.pad(np.zeros((1, 1, 3), np.uint8), ((20, 20), (20, 20), (0, 0)), constant_values=255),
    }


@pytest.mark.parametrize("kind", FEATURE_KINDS)
@pytest.mark.parametrize("name", sorted(odd_crops()))
def test_fixed_length_and_finite_on_odd_crops(kind, name):
    with np.errstate(all="raise"):  # no silent division by zero inside either
        vector = extract_features(odd_crops()[name], kind)
    assert vector.shape == (len(feature_names(kind)),)
    assert np.isfinite(vector).all(), dict(zip(feature_names(kind), vector))


def test_lengths_differ_by_kind_and_original_is_the_studys_13():
    assert len(feature_names("original")) == 13
    assert len(feature_names("full")) > 13
    assert feature_names("full")[:13] == feature_names("original")
    crop = odd_crops()["rgba"]
    assert np.array_equal(extract_features(crop, "full")[:13], extract_features(crop, "original"))


def test_other_dtypes_map_to_the_same_uint8_image():
    img = np.random.default_rng(2).integers(0, 256, (20, 20, 3)).astype(np.uint8)
    expected = extract_features(img)
    assert np.allclose(extract_features(img / 255.0), expected)
    assert np.allclose(extract_features(img.astype(np.uint16) * 257), expected)


def test_empty_image_and_unknown_kind_are_errors():
    with pytest.raises(ValueError, match="empty"):
        extract_features(np.zeros((0, 5, 3), np.uint8))
    with pytest.raises(ValueError, match="unknown feature kind"):
        extract_features(np.zeros((5, 5, 3), np.uint8), "fancy")


def named(vector: np.ndarray) -> dict[str, float]:
    return dict(zip(feature_names("full"), vector))


def disc(colour: tuple[int, int, int], size: int = 64, radius: int = 16) -> np.ndarray:
    img = np.full((size, size, 3), 200, np.uint8)
    cv2.circle(img, (size // 2, size // 2), radius, colour, -1)
    return img


def test_colour_features_tell_a_blue_film_from_a_grey_one():
    blue, grey = named(extract_features(disc((30, 60, 220)))), named(extract_features(disc((90, 90, 90))))
    assert blue["sat_mean"] > grey["sat_mean"] + 0.1
    assert blue["b_mean"] > blue["r_mean"]
    assert blue["colourfulness"] > grey["colourfulness"]


def test_shape_features_of_a_disc_and_a_fibre():
    round_ = named(extract_features(disc((40, 40, 40), radius=16)))
    assert round_["area_fraction"] == pytest.approx(np.pi * 16 ** 2 / 64 ** 2, rel=0.1)
    assert round_["eccentricity"] < 0.3
    assert round_["solidity"] > 0.95
    assert round_["particle_contrast"] < 0  # a dark particle on a light filter
    line = np.full((64, 64, 3), 200, np.uint8)
    cv2.line(line, (5, 10), (58, 54), (40, 40, 40), 2)
    fibre = named(extract_features(line))
    assert fibre["eccentricity"] > 0.95
    assert fibre["aspect_ratio"] > 5 * round_["aspect_ratio"]
    # A light particle on a dark background is segmented too (the mask follows the border).
    light = named(extract_features(255 - disc((40, 40, 40), radius=16)))
    assert light["area_fraction"] == pytest.approx(round_["area_fraction"], rel=0.05)


def test_crop_size_is_kept_although_features_use_a_square():
    tall = named(extract_features(np.full((120, 12, 3), 100, np.uint8)))
    square = named(extract_features(np.full((40, 40, 3), 100, np.uint8)))
    assert tall["crop_log_aspect"] == pytest.approx(np.log(10))
    assert square["crop_log_aspect"] == 0


@pytest.fixture()
def small_data(tmp_path):
    return make_processed(tmp_path / "data", per_class=5, size=32, seed=3)


def test_parallel_equals_serial(small_data):
    paths = [small_data / p for p in dataset.load_manifest(small_data)["path"]]
    settings = FeatureSettings("full")
    serial = extract_from_files(paths, settings, workers=1, progress=False)
    parallel = extract_from_files(paths, settings, workers=2, progress=False)
    assert serial.shape == (20, len(feature_names("full")))
    assert np.array_equal(serial, parallel)


def test_cache_is_reused_and_keyed_by_manifest_and_settings(small_data, monkeypatch):
    rel = dataset.load_manifest(small_data)["path"].tolist()
    digest = dataset.manifest_digest(small_data)
    first, hit1 = dataset_features(small_data, rel, digest, FeatureSettings("full"))
    assert not hit1 and cache_path(small_data, digest, FeatureSettings("full")).is_file()
    # A second run must not compute anything: make computing impossible.
    monkeypatch.setattr("microplastics.classical.features.extract_from_files",
                        lambda *a, **k: pytest.fail("features recomputed despite the cache"))
    second, hit2 = dataset_features(small_data, rel, digest, FeatureSettings("full"))
    assert hit2 and np.array_equal(first, second)
    monkeypatch.undo()
    # Other settings or another manifest miss the cache.
    assert cache_path(small_data, digest, FeatureSettings("original")) != cache_path(small_data, digest,
                                                                                    FeatureSettings("full"))
    _, hit3 = dataset_features(small_data, rel, digest, FeatureSettings("original"))
    assert not hit3
    manifest = pd.read_csv(small_data / "manifest.csv")
    manifest.iloc[::-1].to_csv(small_data / "manifest.csv", index=False)
    assert dataset.manifest_digest(small_data) != digest


def test_unreadable_crop_is_a_user_error(small_data):
    from microplastics.core.cli import UserError

    bad = small_data / "train" / "foam" / "foam_0000.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(UserError, match="foam_0000.png"):
        extract_from_files([bad], FeatureSettings("full"), progress=False)
    shutil.rmtree(small_data)


def test_real_mp100_crops_give_finite_vectors_that_separate_classes(mp100):
    """Boxes cut straight from real photos: every vector finite; the classes differ in their means."""
    micro = mp100 / "MICRO"
    vectors: dict[str, list[np.ndarray]] = {}
    for tsv in sorted((micro / "annotation").glob("*.tsv"))[:12]:
        photo = read_rgb(micro / "raw_img" / tsv.name[: -len(".tsv")])
        for row in pd.read_csv(tsv, sep="\t").itertuples():
            crop = photo[row.minr:row.maxr, row.minc:row.maxc]
            vectors.setdefault(row._6.split("/")[0], []).append(extract_features(crop, "full"))
    stacked = {c: np.stack(v) for c, v in vectors.items()}
    assert len(stacked) >= 3
    assert all(np.isfinite(v).all() for v in stacked.values())
    means = np.stack([v.mean(axis=0) for v in stacked.values()])
    assert (means.std(axis=0) > 0).sum() > 40  # most features vary between classes


def test_moments_match_scipy():
    from scipy import stats

    from microplastics.classical.features import moments

    values = np.random.default_rng(1).gamma(2.0, size=4096)
    skew, kurt = moments(values)
    assert skew == pytest.approx(stats.skew(values)) and kurt == pytest.approx(stats.kurtosis(values))
    assert moments(np.full(10, 3.0)) == (0.0, 0.0)


@pytest.mark.parametrize("name", ["flat", "all_black", "grey_2d", "long_thin_vertical", "rgba"])
def test_compact_glcm_gives_the_256_level_texture_figures(name):
    from skimage.feature import graycomatrix, graycoprops

    from microplastics.classical.features import as_rgb_uint8, cooccurrence, resize_square

    gray = cv2.cvtColor(resize_square(as_rgb_uint8(odd_crops()[name]), 64), cv2.COLOR_RGB2GRAY)
    reference = graycomatrix(gray, [1], [0], levels=256, symmetric=True, normed=True)
    compact = cooccurrence(gray)
    for prop in ("contrast", "homogeneity", "correlation"):
        assert graycoprops(compact, prop)[0, 0] == pytest.approx(graycoprops(reference, prop)[0, 0], abs=1e-9)


def test_integer_arrays_are_scaled_as_the_photo_reader_scales_them():
    from microplastics.classical.features import as_rgb_uint8
    from microplastics.core.images import to_uint8

    sixteen = np.random.default_rng(0).integers(0, 65536, (6, 5, 3)).astype(np.uint16)
    expected = to_uint8(sixteen)
    assert np.array_equal(as_rgb_uint8(sixteen), expected)
    # a 32-bit array of the same 16-bit values is the same image, not one near black
    assert np.array_equal(as_rgb_uint8(sixteen.astype(np.int32)), expected)
    with pytest.raises(ValueError):
        as_rgb_uint8(np.full((4, 4, 3), -1, dtype=np.int32))
    assert as_rgb_uint8(np.ones((2, 2), dtype=bool)).max() == 255
