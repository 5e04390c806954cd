"""Test-time augmentation: a model's probabilities averaged over flipped and rotated copies of each crop.

A particle under the microscope has no up or down and no left or right, so the eight symmetries of
the square (rotations by 0, 90, 180 and 270 degrees, each with and without a mirror flip) show the
same particle. ``TTAPredictor`` wraps any predictor (deep or classical), classifies every crop in
each of these views and returns the mean of the views' probabilities. The views go through the
model one at a time over the whole batch, so memory stays that of a plain pass; time is 8x.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from microplastics.predict.predictor import Predictor

NONE = "none"
DIHEDRAL = "dihedral8"
# (mirror left-right first, then quarter turns counter-clockwise): the 8 views of DIHEDRAL
VIEWS: tuple[tuple[bool, int], ...] = tuple((flip, k) for flip in (False, True) for k in range(4))


def view(image: np.ndarray, flip: bool, quarter_turns: int) -> np.ndarray:
    """``image`` (H, W[, C]) mirrored left-right when ``flip``, then rotated by ``quarter_turns`` x 90 degrees."""
    out = image[:, ::-1] if flip else image
    return np.ascontiguousarray(np.rot90(out, quarter_turns))


@dataclass
class TTAPredictor:
    """A predictor whose probabilities are the mean over ``VIEWS`` of the wrapped predictor's."""

    base: Predictor
    tta: str = DIHEDRAL
    name: str = field(init=False)
    classes: list[str] = field(init=False)
    weights: str = field(init=False)

    def __post_init__(self) -> None:
        self.name, self.classes, self.weights = self.base.name, list(self.base.classes), self.base.weights

    def predict_proba(self, images: Sequence[np.ndarray]) -> np.ndarray:
        images = list(images)
        total = np.zeros((len(images), len(self.classes)))
        if not images:
            return total
        for flip, turns in VIEWS:
            total += np.asarray(self.base.predict_proba([view(im, flip, turns) for im in images]), dtype=np.float64)
        return total / len(VIEWS)


def with_tta(predictor: Predictor, enabled: bool) -> Predictor:
    """``predictor`` itself, or wrapped to average over the 8 flips and rotations when ``enabled``."""
    if not enabled or isinstance(predictor, TTAPredictor):
        return predictor
    return TTAPredictor(predictor)


def tta_of(predictor: object) -> str:
    """What test-time augmentation a predictor applies: "dihedral8" or "none" (recorded in outputs)."""
    return str(getattr(predictor, "tta", NONE))
