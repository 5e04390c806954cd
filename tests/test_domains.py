"""The shifted photo folders of the leave-one-domain-out benchmark: magnification, background, class names."""
from __future__ import annotations

import numpy as np

from microplastics.core.images import read_rgb
from microplastics.data import domains
from microplastics.data.annotations import read_annotations
from microplastics.data.synthetic import write_synthetic_micro


def drawn_photo() -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """A beige filter with a dark field-stop corner, a red square particle and a blue bar, their boxes."""
    image = np.full((120, 160, 3), (190, 175, 150), np.uint8)
    image[:20, :20] = 5  # the field stop
    image[30:50, 40:60] = (200, 30, 30)
    image[80:84, 90:140] = (30, 40, 160)
    return image, [(28, 38, 52, 62), (78, 88, 86, 142)]


def test_half_magnification_halves_the_boxes_inside_the_photo():
    image, boxes = drawn_photo()
    boxes = [*boxes, (101, 151, 120, 160)]  # odd corners, one at the photo's edge
    small, scaled = domains.rescale_photo(image, boxes, 0.5)
    assert small.shape == (60, 80, 3)
    for (r0, c0, r1, c1), (s0, t0, s1, t1) in zip(boxes, scaled):
        assert (s0, t0, s1, t1) == (r0 // 2, c0 // 2, -(-r1 // 2), -(-c1 // 2))
        assert 0 <= s0 < s1 <= 60 and 0 <= t0 < t1 <= 80
    assert np.allclose(small[20:25, 24:30], (200, 30, 30), atol=2)  # the square moved with its box


def test_double_magnification_doubles_the_boxes():
    image, boxes = drawn_photo()
    big, scaled = domains.rescale_photo(image, boxes, 2.0)
    assert big.shape == (240, 320, 3)
    assert scaled == [tuple(2 * v for v in b) for b in boxes]


def test_new_background_keeps_the_particle_pixels_and_the_field_stop():
    image, boxes = drawn_photo()
    pattern = np.full((*image.shape[:2], 3), (60, 60, 68), np.float32)  # a dark grey filter
    out, alpha = domains.replace_background(image, boxes, pattern)
    particle = alpha >= 1
    assert particle[35:45, 45:55].all() and particle[81:83, 95:135].all()
    assert np.array_equal(out[particle], image[particle])
    assert not (alpha > 0)[~domains.box_mask(image.shape[:2], boxes)].any()  # outside the boxes all is filter
    filter_area = out[60:75, 10:80].reshape(-1, 3).astype(float)
    assert np.abs(filter_area.mean(axis=0) - (60, 60, 68)).max() < 3  # the filter is the new one
    assert out[:12, :12].max() < 30  # the field stop stays dark


def test_backgrounds_are_seeded_and_vary():
    shape = (64, 64)
    one = domains.background_pattern(np.random.default_rng([7, 0]), shape, "texture")
    again = domains.background_pattern(np.random.default_rng([7, 0]), shape, "texture")
    other = [domains.background_pattern(np.random.default_rng([7, i]), shape, "texture") for i in range(1, 6)]
    assert np.array_equal(one, again)
    assert len({tuple(np.round(o.mean(axis=(0, 1)))) for o in [one, *other]}) > 2


def test_shifted_folder_reads_back_with_mapped_classes(tmp_path):
    write_synthetic_micro(tmp_path / "syn", n_images=6, seed=3, image_size=(160, 200))
    mapping = {"line": "fiber", "hard": "fragment", "pellet": "pallet"}
    summary = domains.write_shifted(tmp_path / "syn", tmp_path / "half", domains.magnification(0.5),
                                    class_map=mapping)
    source = read_annotations(tmp_path / "syn").records
    kept = [r for r in source if r.label in mapping]
    found = read_annotations(tmp_path / "half")
    assert not found.skipped and summary["boxes"] == len(kept) == len(found.records)
    assert {r.label for r in found.records} <= set(mapping.values())
    assert read_rgb(found.records[0].photo).shape == (80, 100, 3)
    originals = {(r.photo.stem, r.box_id): r for r in kept}
    for rec in found.records:
        src = originals[(rec.photo.stem, rec.box_id)]
        assert (rec.minr, rec.maxr) == (src.minr // 2, -(-src.maxr // 2))
        assert rec.label == mapping[src.label]


# -- the crop-level filter swap (training augmentation) --------------------------------------------
def filter_crop(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A beige crop with grain and a dark fibre through it; returns (crop, where the fibre is solid)."""
    import cv2

    rng = np.random.default_rng(seed)
    crop = np.clip(np.array([200, 186, 160]) + rng.normal(0, 2, (48, 64, 3)), 0, 255).astype(np.uint8)
    cv2.line(crop, (10, 30), (54, 14), (40, 40, 60), 4)
    solid = np.zeros(crop.shape[:2], np.uint8)
    cv2.line(solid, (10, 30), (54, 14), 1, 1)  # the fibre's core, away from its blurred edge
    return crop, solid.astype(bool)


def test_swapped_background_keeps_the_particle_and_changes_the_filter():
    from microplastics.data.background_swap import particle_share, swap_background

    crop, core = filter_crop()
    share = particle_share(crop)
    assert share[core].min() == 1.0 and share[:4].max() == 0.0  # the fibre is particle, the margin filter
    swapped = [swap_background(crop, np.random.default_rng(s)) for s in (0, 1, 0)]
    assert np.array_equal(swapped[0], swapped[2]), "seeded"
    for out in swapped[:2]:
        assert out.shape == crop.shape and out.dtype == np.uint8
        assert np.array_equal(out[core], crop[core]), "the particle's own pixels stay"
        assert np.abs(out[:4].astype(float).mean((0, 1)) - crop[:4].mean((0, 1))).max() > 8, "a new filter"
    assert np.abs(swapped[0].astype(int) - swapped[1]).mean() > 5, "another seed, another filter"


def test_train_preset_swaps_filters_with_its_probability_and_seed():
    import torch

    from microplastics.deep.transforms import TrainPreset

    crop, _ = filter_crop()
    plain, always = TrainPreset(32), TrainPreset(32, swap_background=1.0)
    assert torch.equal(always(crop, seed=5), always(crop, seed=5))
    assert not torch.allclose(always(crop, seed=5), plain(crop, seed=5), atol=1e-3)
    assert torch.equal(TrainPreset(32, swap_background=0.0)(crop, seed=5), plain(crop, seed=5))
    half = TrainPreset(32, swap_background=0.5)
    swapped = sum(not torch.allclose(half(crop, seed=s), plain(crop, seed=s), atol=1e-3) for s in range(40))
    assert 10 <= swapped <= 30, swapped


def test_classical_augmented_copies_swap_filters_seeded(tmp_path):
    from PIL import Image

    from microplastics.classical.features import FeatureSettings, augmented_features

    paths = []
    for seed in range(3):
        crop, _ = filter_crop(seed)
        paths.append(tmp_path / f"c{seed}.png")
        Image.fromarray(crop).save(paths[-1])
    settings = FeatureSettings(kind="robust", shape_cues=True)

    def copies(swap, workers=1):
        return augmented_features(paths, settings, 2, seed=4, workers=workers, progress=False, robust=False,
                                  swap_background=swap)
    plain, swapped = copies(0.0), copies(1.0)
    assert plain.shape == swapped.shape == (6, len(plain[0]))
    assert np.array_equal(swapped, copies(1.0, workers=2)), "seeded per copy, whatever the workers"
    changed = ~np.isclose(plain, swapped).all(axis=1)
    assert changed.all(), "every copy is on another filter"
