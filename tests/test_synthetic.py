"""The synthetic MICRO generator: layout, TSV format, determinism, class balance, class looks."""
from __future__ import annotations

import hashlib
import re
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from microplastics.core.cli import UserError
from microplastics.core.images import read_rgb
from microplastics.data.annotations import read_annotations
from microplastics.data.origin import read_origin
from microplastics.data.synthetic import (
    CLASSES,
    HEADER,
    _tight_box,
    draw_particle,
    draw_photo,
    flatten_shading,
    loosen_box,
    photo_classes,
    randomise_particle,
    write_synthetic_micro,
)

N_PHOTOS = 12
SIZE = (480, 640)
STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.jpg$")


@pytest.fixture(scope="module")
def micro(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("syn") / "MICRO"
    return out, write_synthetic_micro(out, n_images=N_PHOTOS, seed=7, image_size=SIZE)


def _rows(folder: Path) -> list[tuple[str, list[str]]]:
    rows = []
    for tsv in sorted((folder / "annotation").glob("*.tsv")):
        lines = tsv.read_text(encoding="utf-8").splitlines()
        assert lines[0] == HEADER
        rows += [(tsv.name[:-len(".tsv")], line.split("\t")) for line in lines[1:]]
    return rows


def _crops(folder: Path, label: str) -> list[np.ndarray]:
    crops, images = [], {}
    for photo, (_id, minr, minc, maxr, maxc, cls) in _rows(folder):
        if cls.split("/")[0] == label:
            if photo not in images:
                images[photo] = read_rgb(folder / "raw_img" / photo)
            image = images[photo]
            crops.append(image[int(minr):int(maxr), int(minc):int(maxc)].astype(np.float32))
    return crops


def _circularity(alpha: np.ndarray) -> float:
    contours, _ = cv2.findContours((alpha > 0.5).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    contour = max(contours, key=cv2.contourArea)
    return 4 * np.pi * cv2.contourArea(contour) / cv2.arcLength(contour, True) ** 2


def _fill(alpha: np.ndarray, box: tuple[int, int, int, int]) -> float:
    r0, c0, r1, c1 = box
    return float((alpha[r0:r1, c0:c1] > 0.5).mean())


def test_layout_and_tsv_format(micro):
    folder, summary = micro
    photos = sorted(p.name for p in (folder / "raw_img").iterdir())
    assert len(photos) == N_PHOTOS and all(p.endswith(".jpg") for p in photos)
    assert sorted(p.name for p in (folder / "annotation").iterdir()) == [f"{p}.tsv" for p in photos]
    rows = _rows(folder)
    boxes_by_photo: dict[str, list[tuple[int, ...]]] = {}
    for photo, fields in rows:
        assert len(fields) == 6
        minr, minc, maxr, maxc = (int(v) for v in fields[1:5])  # int() fails on anything but integers
        assert 0 <= minr < maxr <= SIZE[0] and 0 <= minc < maxc <= SIZE[1]
        label, crop = fields[5].split("/")
        assert label in CLASSES and STAMP.match(crop), fields[5]
        boxes_by_photo.setdefault(photo, []).append((minr, minc, maxr, maxc))
    assert len({fields[5].split("/")[1] for _, fields in rows}) == len(rows)  # crop names unique
    for boxes in boxes_by_photo.values():  # particles never overlap
        for i, a in enumerate(boxes):
            for b in boxes[i + 1:]:
                assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)
    assert summary["photos"] == N_PHOTOS and summary["boxes"] == len(rows)
    assert summary["boxes_per_class"] == {c: sum(f[5].startswith(c + "/") for _, f in rows) for c in CLASSES}
    readme = (folder / "README.txt").read_text()
    assert "SYNTHETIC" in readme and "seed 7" in readme


def test_the_project_reader_takes_every_box(micro):
    folder, summary = micro
    annotations = read_annotations(folder)
    assert annotations.skipped == [] and annotations.clamped == []
    assert Counter(r.label for r in annotations.records) == Counter(
        {k: v for k, v in summary["boxes_per_class"].items() if v})


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, micro):
    folder, _ = micro
    write_synthetic_micro(tmp_path / "a", n_images=3, seed=7, image_size=SIZE)
    write_synthetic_micro(tmp_path / "b", n_images=3, seed=8, image_size=SIZE)
    for name in ("syn_0001.jpg", "syn_0003.jpg"):
        # Photo i depends on (seed, i) only, not on how many photos are drawn.
        assert (tmp_path / "a/raw_img" / name).read_bytes() == (folder / "raw_img" / name).read_bytes()
        assert (tmp_path / "a/annotation" / f"{name}.tsv").read_bytes() == \
            (folder / "annotation" / f"{name}.tsv").read_bytes()
        assert (tmp_path / "b/raw_img" / name).read_bytes() != (folder / "raw_img" / name).read_bytes()


def test_class_imbalance_like_the_real_set(micro):
    counts = Counter(c for i in range(300) for c in photo_classes(42, i))
    share = {c: counts[c] / sum(counts.values()) for c in CLASSES}
    assert max(share, key=share.get) == "hard" and 0.6 <= share["hard"] <= 0.75
    assert 0.005 <= share["reference"] <= 0.03 and share["reference"] == min(share.values())
    assert 0.08 <= share["line"] <= 0.16
    for seed in range(25):  # any seed: ten photos hold every class
        assert set(c for i in range(10) for c in photo_classes(seed, i)) == set(CLASSES)
    assert all(v > 0 for v in micro[1]["boxes_per_class"].values())


def test_shapes_differ_as_claimed():
    rng = np.random.default_rng(3)
    drawn = {c: [draw_particle(c, rng) for _ in range(30)] for c in ("line", "pellet", "hard", "foam", "reference")}
    fill = {c: np.median([_fill(p.alpha, p.box) for p in ps]) for c, ps in drawn.items()}
    assert fill["line"] < 0.2 < fill["hard"] and fill["line"] < fill["pellet"]  # fibres: thin, low fill
    circ = {c: np.mean([_circularity(p.alpha) for p in drawn[c]]) for c in ("pellet", "hard")}
    assert circ["pellet"] > 0.85 and circ["pellet"] > circ["hard"] + 0.15  # pellets round, fragments angular
    sides = [max(r1 - r0, c1 - c0) for p in drawn["hard"] + drawn["line"] for r0, c0, r1, c1 in [p.box]]
    assert min(sides) >= 5 and max(sides) <= 130 and np.ptp(sides) > 50  # sizes vary widely
    ref = [(p.box[2] - p.box[0]) / (p.box[3] - p.box[1]) for p in drawn["reference"]]
    assert all(0.9 < r < 1.1 for r in ref)  # the reference is always a square
    with pytest.raises(ValueError, match="unknown class"):
        draw_particle("film", rng)


def test_colours_differ_on_the_photos(micro):
    folder, _ = micro
    grey = {c: [crop.mean(axis=2) for crop in _crops(folder, c)] for c in ("foam", "hard", "noise", "reference")}
    assert all(len(v) >= 1 for v in grey.values())
    mean = {c: np.mean([g.mean() for g in v]) for c, v in grey.items()}
    assert mean["foam"] > mean["hard"] + 10  # foam is pale
    assert mean["reference"] < mean["hard"]  # the reference is dark
    contrast = {c: np.median([g.std() for g in v]) for c, v in grey.items()}
    assert contrast["noise"] < contrast["hard"]  # noise is faint


def test_bad_arguments(tmp_path):
    with pytest.raises(UserError, match="at least 1"):
        write_synthetic_micro(tmp_path / "x", n_images=0)
    with pytest.raises(UserError, match="160x160"):
        write_synthetic_micro(tmp_path / "y", n_images=1, image_size=(64, 64))


# ---------------------------------------------------------------- domain randomisation

def test_plain_photos_unchanged_by_the_randomised_preset():
    # Digests of the plain generator's pixels before the randomised preset existed: the demo's
    # photos (and every figure computed from them) must stay the same.
    for index, digest in ((0, "d44ff09bfea67f18"), (5, "82908b3d095e632a"), (7, "79217deab56fe896")):
        image, _rows = draw_photo(42, index, (480, 640))
        assert hashlib.sha256(image.tobytes()).hexdigest()[:16] == digest


def test_randomised_photos_are_seeded():
    a, rows_a = draw_photo(3, 2, (240, 320), randomise=True)
    b, rows_b = draw_photo(3, 2, (240, 320), randomise=True)
    assert np.array_equal(a, b) and rows_a == rows_b
    c, _ = draw_photo(4, 2, (240, 320), randomise=True)
    assert not np.array_equal(a, c)
    plain, _ = draw_photo(3, 2, (240, 320))
    assert not np.array_equal(a, plain)


def _background_colour(image: np.ndarray, rows: list) -> np.ndarray:
    """Median colour of the pixels outside every box and inside the field of view."""
    free = np.ones(image.shape[:2], bool)
    for _label, (r0, c0, r1, c1) in rows:
        free[r0:r1, c0:c1] = False
    free &= image.mean(axis=-1) > 25  # not the black outside a round field stop
    return np.median(image[free], axis=0)


def test_randomised_backgrounds_vary_far_more_than_plain_ones():
    def spread(randomise: bool) -> float:
        colours = [_background_colour(*draw_photo(11, i, (200, 260), randomise=randomise)) for i in range(10)]
        return float(np.std(np.stack(colours), axis=0).mean())
    plain, randomised = spread(False), spread(True)
    assert randomised > 25 and randomised > 2 * plain, (plain, randomised)


def test_randomised_fibres_include_thin_faint_ones():
    # Fibre boxes: the plain ones are drawn 1.4-3.2 px wide at full opacity; the randomised preset
    # draws many thinner and fainter ones, which show as a lower darkest-pixel contrast.
    def contrasts(randomise: bool) -> list[float]:
        out = []
        for i in range(12):
            image, rows = draw_photo(5, i, (240, 320), randomise=randomise)
            grey = image.mean(axis=-1)
            for label, (r0, c0, r1, c1) in rows:
                if label == "line":
                    crop = grey[r0:r1, c0:c1]
                    out.append(float(np.median(crop) - crop.min()) / max(float(np.median(crop)), 1.0))
        return out
    plain, randomised = contrasts(False), contrasts(True)
    assert len(randomised) >= 8
    assert np.median(randomised) < np.median(plain), (np.median(plain), np.median(randomised))


def test_loosen_box_adds_an_empty_margin_and_keeps_the_particle():
    particle = draw_particle("pellet", np.random.default_rng(0))
    r0, c0, r1, c1 = particle.box
    side = max(r1 - r0, c1 - c0)
    loose = loosen_box(particle, np.array([0.5, 0.0, 0.25, 0.1]))
    pads = np.ceil(np.array([0.5, 0.0, 0.25, 0.1]) * side).astype(int)
    assert loose.box == (r0, c0, r1 + pads[0] + pads[2], c1 + pads[1] + pads[3])
    h, w = particle.alpha.shape
    assert loose.alpha.shape == (h + pads[0] + pads[2], w + pads[1] + pads[3])
    # The particle's pixels sit unchanged inside the grown patch, the new rows and columns empty.
    inner = loose.alpha[pads[0]:pads[0] + h, pads[1]:pads[1] + w]
    assert np.array_equal(inner, particle.alpha)
    assert loose.alpha.sum() == pytest.approx(particle.alpha.sum())
    lr0, lc0, lr1, lc1 = loose.box
    assert lr0 <= _tight_box(loose.alpha)[0] and lr1 >= _tight_box(loose.alpha)[2]
    assert _tight_box(loose.alpha)[0] - lr0 >= pads[0]  # the margin above the particle is empty


def test_flatten_shading_keeps_the_mean_colour():
    particle = draw_particle("hard", np.random.default_rng(4))
    rgb, alpha = particle.rgb, particle.alpha
    flat = flatten_shading(rgb, alpha, 0.0)
    mean = (rgb * alpha[..., None]).sum(axis=(0, 1)) / alpha.sum()
    assert np.allclose(flat, mean, atol=1e-3)
    assert np.allclose(flatten_shading(rgb, alpha, 1.0), rgb, atol=1e-3)
    inside = alpha > 0.5
    half = flatten_shading(rgb, alpha, 0.5)
    assert half[inside].std(axis=0).mean() == pytest.approx(0.5 * rgb[inside].std(axis=0).mean(), rel=1e-3)


def _shading(particle) -> float:
    """Relative spread of the particle's brightness over its solid pixels."""
    luminance = particle.rgb.mean(axis=-1)[particle.alpha > 0.5 * particle.alpha.max()]
    return float(luminance.std() / max(luminance.mean(), 1.0))


def test_randomised_particles_are_faint_flat_and_loose_for_every_class_alike():
    # Each look change must hit every class at the same odds, or it becomes a class cue.
    shares: dict[str, dict[str, float]] = {"loose": {}, "faint": {}, "flat": {}}
    for label in ("hard", "pellet", "foam", "line"):
        counts = Counter()
        for k in range(150):
            particle = draw_particle(label, np.random.default_rng([7, k]))
            changed = randomise_particle(particle, np.random.default_rng([8, k]), 1.0)
            counts["loose"] += changed.box != _tight_box(changed.alpha)
            counts["faint"] += changed.alpha.max() < 0.5 * particle.alpha.max()
            counts["flat"] += _shading(changed) < 0.7 * _shading(particle)
        for key, share in shares.items():
            share[label] = counts[key] / 150
    for key in ("faint", "flat"):
        del shares[key]["line"]  # curly fibres replace half the fibres, drawn faint at their own odds
    expected = {"loose": (0.35, 0.65), "faint": (0.05, 0.30), "flat": (0.3, 0.7)}
    for key, share in shares.items():
        low, high = expected[key]
        assert all(low < v < high for v in share.values()), (key, share)
        assert max(share.values()) - min(share.values()) < 0.2, (key, share)


def test_randomised_folder_records_it(tmp_path):
    summary = write_synthetic_micro(tmp_path / "R", n_images=2, seed=1, image_size=(200, 240), randomise=True)
    assert summary["randomised"] is True
    assert read_origin(tmp_path / "R")["randomised"] is True
    assert "domain-randomised" in (tmp_path / "R" / "README.txt").read_text()
    boxes = read_annotations(tmp_path / "R", "auto").records
    assert len(boxes) == summary["boxes"] > 0
