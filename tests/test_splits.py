"""The train/val/test split: whole groups per split, class fractions close to the request, seeded."""
from __future__ import annotations

import numpy as np
import pytest

from microplastics.core.cli import UserError
from microplastics.data.splits import (achieved_fractions, check_fractions, crop_split, group_key, group_split,
                                  small_classes)

FRACTIONS = (0.7, 0.15, 0.15)


def photo_set(n_photos: int = 150, seed: int = 1) -> tuple[list[str], list[str]]:
    """Crops of ``n_photos`` photos with 3-20 boxes each; one class common, one rare."""
    rng = np.random.default_rng(seed)
    labels, groups = [], []
    for p in range(n_photos):
        n = int(rng.integers(3, 21))
        labels += list(rng.choice(["hard", "line", "foam", "reference"], size=n, p=[0.6, 0.25, 0.12, 0.03]))
        groups += [f"photo{p:03d}.jpg"] * n
    return labels, groups


def test_group_split_keeps_each_photo_in_one_split_and_classes_near_the_request():
    labels, groups = photo_set()
    splits = group_split(labels, groups, FRACTIONS, seed=42)
    split_of = {}
    for group, split in zip(groups, splits):
        assert split_of.setdefault(group, split) == split, f"{group} is in two splits"
    fractions = achieved_fractions(labels, splits)
    for label, shares in fractions.items():
        for split, wanted in zip(("train", "val", "test"), FRACTIONS):
            # 0.02 holds even for the rare class (~50 crops spread over ~40 photos)
            assert abs(shares[split] - wanted) <= 0.02, (label, split, shares)


def test_group_split_depends_on_the_seed_only():
    labels, groups = photo_set()
    first = group_split(labels, groups, FRACTIONS, seed=7)
    assert list(first) == list(group_split(labels, groups, FRACTIONS, seed=7))
    assert list(first) != list(group_split(labels, groups, FRACTIONS, seed=8))


def test_crop_split_is_the_stratified_study_split():
    labels = ["hard"] * 700 + ["line"] * 200 + ["foam"] * 100
    splits = crop_split(labels, FRACTIONS, seed=42)
    fractions = achieved_fractions(labels, splits)
    assert fractions["hard"] == {"train": 0.7, "val": 0.15, "test": 0.15}
    assert fractions["foam"] == {"train": 0.7, "val": 0.15, "test": 0.15}
    assert list(splits) == list(crop_split(labels, FRACTIONS, seed=42))


def test_small_classes_are_named_with_the_reason():
    labels = ["hard"] * 20 + ["tiny"] * 3 + ["clumped"] * 12
    groups = [f"p{i}" for i in range(20)] + ["a", "b", "c"] + ["q1"] * 6 + ["q2"] * 6
    found = small_classes(labels, groups, min_crops=5)
    assert set(found) == {"tiny", "clumped"}
    assert "only 3 crop(s)" in found["tiny"] and "2 group(s)" in found["clumped"]
    assert set(small_classes(labels, None, min_crops=5)) == {"tiny"}


def test_series_is_the_name_before_the_first_underscore():
    assert group_key("128-b_png.rf.abc.jpg", "series") == "128-b"
    assert group_key("128-b_png.rf.abc.jpg", "photo") == "128-b_png.rf.abc.jpg"


@pytest.mark.parametrize("val, test", [(0.0, 0.15), (0.5, 0.5), (0.15, 1.2)])
def test_bad_fractions_are_refused(val, test):
    with pytest.raises(UserError, match="fraction"):
        check_fractions(val, test)
