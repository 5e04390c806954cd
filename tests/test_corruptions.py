"""The corruption suite: it changes pictures, keeps their shape, orders its severities and is reproducible."""
import numpy as np
import pytest

from datagen import draw_crop
from microplastics.data import corruptions
from microplastics.core.cli import UserError
from microplastics.core.images import read_rgb

NAMES = corruptions.corruption_names()


@pytest.fixture(scope="module")
def picture() -> np.ndarray:
    """A 128 px picture with four drawn particles on a textured background."""
    rng = np.random.default_rng(3)
    tiles = [np.asarray(draw_crop(label, 64, rng)) for label in ("line", "pellet", "foam", "hard")]
    return np.vstack([np.hstack(tiles[:2]), np.hstack(tiles[2:])])


def mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(float) - b.astype(float)).mean())


def test_suite_covers_the_spec():
    assert set(NAMES) == {"defocus_blur", "darker", "brighter", "colour_temperature", "sensor_noise",
                          "jpeg_compression", "low_resolution", "contrast_loss"}
    assert corruptions.SEVERITIES == (1, 2, 3)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("severity", corruptions.SEVERITIES)
def test_each_corruption_changes_the_picture_but_not_its_shape(picture, name, severity):
    before = picture.copy()
    out = corruptions.corrupt(picture, name, severity, seed=42, key="p")
    assert out.shape == picture.shape and out.dtype == np.uint8
    assert mad(out, picture) > 0.5, f"{name} at severity {severity} hardly changed the picture"
    assert np.array_equal(picture, before), "the input must not be modified in place"


@pytest.mark.parametrize("name", NAMES)
def test_severities_are_ordered(picture, name):
    diffs = [mad(corruptions.corrupt(picture, name, s, seed=1, key="p"), picture) for s in (0, 1, 2, 3)]
    assert diffs[0] == 0.0
    assert diffs[1] < diffs[2] < diffs[3], f"{name}: mean absolute differences {diffs} are not increasing"


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_pixels_other_seed_other_noise(picture, name):
    a = corruptions.corrupt(picture, name, 2, seed=7, key="photo_1.jpg")
    b = corruptions.corrupt(picture, name, 2, seed=7, key="photo_1.jpg")
    assert np.array_equal(a, b)


def test_random_corruptions_depend_on_seed_and_picture_key(picture):
    base = corruptions.corrupt(picture, "sensor_noise", 2, seed=7, key="a")
    assert not np.array_equal(base, corruptions.corrupt(picture, "sensor_noise", 2, seed=8, key="a"))
    assert not np.array_equal(base, corruptions.corrupt(picture, "sensor_noise", 2, seed=7, key="b"))
    # Both directions of the colour-temperature shift occur across pictures.
    reds = {int(np.sign(corruptions.corrupt(picture, "colour_temperature", 3, seed=7, key=str(k))[..., 0]
                        .astype(int).sum()
                        - picture[..., 0].astype(int).sum())) for k in range(12)}
    assert reds == {-1, 1}


def test_unknown_names_and_severities_are_user_errors():
    with pytest.raises(UserError, match="unknown corruption.*fog.*choose from"):
        corruptions.resolve_names(["darker", "fog"])
    with pytest.raises(UserError, match="unknown severity 4"):
        corruptions.corrupt(np.zeros((8, 8, 3), np.uint8), "darker", 4)
    assert corruptions.resolve_names(None) == NAMES
    assert corruptions.resolve_names(["darker", "darker"]) == ["darker"]


def test_suite_on_a_real_photo_keeps_order(mp100):
    photo = read_rgb(sorted((mp100 / "MICRO" / "raw_img").iterdir())[0])
    for name in NAMES:
        diffs = [mad(corruptions.corrupt(photo, name, s, seed=42, key="x"), photo) for s in (1, 2, 3)]
        assert diffs[0] < diffs[1] < diffs[2], f"{name} on a real photo: {diffs}"
