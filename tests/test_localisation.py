"""Localisation of heat maps: the particle's box inside its crop, mass inside it, the pointing game."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from microplastics.explain import localisation
from microplastics.data.annotations import BoxRecord, crop_box
from microplastics.explain.localisation import Box, localise, particle_box

# A 4x4 map over an 8x8 crop: map cell (i, j) covers crop rows 2i..2i+1 and columns 2j..2j+1.
HAND_MAP = np.array([[0, 0, 0, 0],
                     [0, 1, 3, 0],
                     [0, 2, 0, 0],
                     [0, 0, 0, 4]], dtype=np.float32)


def test_figures_equal_a_hand_computation_on_a_hand_made_map():
    # Box rows and columns 2..5 of the crop = map cells 1..2: inside lie 1 + 3 + 2 + 0 of the total 10.
    # The peak (4) is cell (3, 3), centred on crop pixel (7, 7): outside.
    mass, hit = localise(HAND_MAP, Box(2, 2, 6, 6), (8, 8))
    assert mass == pytest.approx(0.6) and hit is False
    # Box rows 1..4 cover half of map row 0, all of row 1, half of row 2: 0.5 * 0 + (1 + 3) + 0.5 * 2 = 5.
    mass, hit = localise(HAND_MAP, Box(1, 2, 5, 6), (8, 8))
    assert mass == pytest.approx(0.5) and hit is False
    # Move the peak to cell (1, 2), centred on (3, 5): inside; mass (1 + 5 + 2) / (1 + 5 + 2 + 4).
    moved = HAND_MAP.copy()
    moved[1, 2], moved[3, 3] = 5, 4
    mass, hit = localise(moved, Box(2, 2, 6, 6), (8, 8))
    assert mass == pytest.approx(8 / 12) and hit is True
    # A non-square crop (8 rows, 16 columns): map columns are 4 crop pixels wide. Box columns 4..11 =
    # map columns 1..2, rows 0..3 = map rows 0..1: 1 + 3 of 10; the peak's centre (7, 14) is outside.
    mass, hit = localise(HAND_MAP, Box(0, 4, 4, 12), (8, 16))
    assert mass == pytest.approx(0.4) and hit is False


def test_flat_and_empty_maps_point_nowhere():
    box = Box(2, 2, 6, 6)
    mass, hit = localise(np.ones((4, 4)), box, (8, 8))
    assert mass == pytest.approx(16 / 64) and hit is False  # spread evenly: the box's share of the area
    mass, hit = localise(np.zeros((4, 4)), box, (8, 8))
    assert math.isnan(mass) and hit is False


@pytest.mark.parametrize("margin", [0.0, 0.25, 0.5, 1.0])
def test_particle_box_finds_the_box_inside_a_real_crop(margin):
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, size=(60, 80, 3), dtype=np.uint8)
    # boxes in the middle and against every edge, where the margin is clipped
    for minr, minc, maxr, maxc in [(20, 30, 32, 45), (0, 0, 10, 7), (3, 70, 17, 80), (50, 2, 60, 19), (1, 1, 59, 79)]:
        record = BoxRecord(Path("p.jpg"), "1", minr, minc, maxr, maxc, "film", "c.png")
        crop = crop_box(photo, record, margin)
        box = particle_box(minr, minc, maxr, maxc, crop.shape[:2], margin)
        assert np.array_equal(crop[box.top:box.bottom, box.left:box.right], photo[minr:maxr, minc:maxc])


def test_summary_and_files(tmp_path, capsys):
    maps = {"gradcam": np.stack([HAND_MAP, np.ones((4, 4)), HAND_MAP.T])}
    shapes = [(8, 8)] * 3
    boxes = [Box(2, 2, 6, 6), Box(2, 2, 6, 6), None]  # the third crop has no manifest row
    table = localisation.measure(["a.png", "b.png", "c.png"], ["film"] * 3, ["film", "fiber", "film"], shapes,
                                 boxes, maps)
    assert table["path"].tolist() == ["a.png", "b.png"]
    assert table["mass_inside"].tolist() == pytest.approx([0.6, 0.25])
    assert table["box_fraction"].tolist() == pytest.approx([0.25, 0.25])
    summary = localisation.summarise(table, margin=0.5, target="pred")
    assert summary["method"] == "gradcam" and summary["n"] == 2
    assert summary["mean_mass_inside"] == pytest.approx(0.425) and summary["pointing_hit_rate"] == 0.0
    localisation.write(tmp_path, table, summary)
    assert list(pd.read_csv(tmp_path / localisation.CSV_NAME).columns) == list(localisation.CSV_COLUMNS)
    assert localisation.read_summary(tmp_path)["mean_mass_inside"] == pytest.approx(0.425)
    assert "pointing game 0/2 = 0.000" in localisation.summary_line(summary)
    assert "by construction" in localisation.summary_line({**summary, "margin": 0.0})
    assert localisation.read_summary(tmp_path / "nope") is None
