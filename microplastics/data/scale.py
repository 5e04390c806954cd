"""Crops at one physical scale: the calibration of annotated photos and the resampling of their crops.

A model that sees every crop at the same micrometres per pixel (``--crop-um-per-px``) sees a
particle of a given size at the same pixel size whatever the microscope's magnification: a
photo taken at twice the magnification has twice the pixels per micrometre, and its crops are
shrunk by two before the model sees them. The scale comes from the calibration the finder
uses (``microplastics.find.measure``: ``--um-per-px`` or ``--reference-size-um``); the
target scale is recorded in summary.json, in every model trained on the folder, and applied
again when the model classifies new photos (``model_scale``).

Without a calibration, ``random_rescale`` (the training stages' ``--scale-augment``) shows
the model every crop at random magnifications instead.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import cv2
import numpy as np

from microplastics.core.errors import InputError
from microplastics.core.images import particle_mask, read_rgb


def check_crop_scale(crop_um_per_px: float | None, calibrated: bool) -> None:
    if crop_um_per_px is None:
        return
    if not (math.isfinite(crop_um_per_px) and crop_um_per_px > 0):
        raise InputError(f"--crop-um-per-px must be a positive number of micrometres per pixel, got {crop_um_per_px}")
    if not calibrated:
        raise InputError("--crop-um-per-px needs calibrated photos: give --um-per-px X|CSV or --reference-size-um")


def resampled_size(shape: Sequence[int], um_per_px: float, crop_um_per_px: float) -> tuple[int, int]:
    """(height, width) in pixels of a crop of ``shape`` at ``um_per_px`` once brought to ``crop_um_per_px``."""
    factor = um_per_px / crop_um_per_px
    return max(1, round(shape[0] * factor)), max(1, round(shape[1] * factor))


def resample_crop(crop: np.ndarray, um_per_px: float, crop_um_per_px: float) -> np.ndarray:
    """``crop`` (taken at ``um_per_px``) resampled to ``crop_um_per_px``: area averaging to shrink,
    bilinear to enlarge."""
    height, width = resampled_size(crop.shape, um_per_px, crop_um_per_px)
    if (height, width) == crop.shape[:2]:
        return crop
    interp = cv2.INTER_AREA if height < crop.shape[0] else cv2.INTER_LINEAR
    return cv2.resize(crop, (width, height), interpolation=interp)


def model_scale(crops: Sequence[np.ndarray], um_per_px: float | None, crop_um_per_px: float | None
                ) -> list[np.ndarray]:
    """Crops of a photo at ``um_per_px`` as a model trained at ``crop_um_per_px`` expects them.

    Unchanged when either is unknown: a model trained without resampling takes crops as they come."""
    if not (um_per_px and crop_um_per_px):
        return list(crops)
    return [resample_crop(c, um_per_px, crop_um_per_px) for c in crops]


def predictor_scale(predictor: Any) -> float | None:
    """The ``crop_um_per_px`` a trained model was trained at (None: crops were not resampled)."""
    value = getattr(predictor, "crop_um_per_px", None)
    return float(value) if value else None


def reference_ferets(crop_files: Mapping[str, Sequence[Path]]) -> dict[str, list[float]]:
    """Feret max in pixels of the reference particle in each crop file, by photo.

    The particle is segmented as the classical features segment it (Otsu, the side that touches
    the border least) and measured with the finder's Feret diameter, so a reference object counts
    the same in training data and in found particles."""
    from microplastics.find.measure import feret_diameters

    ferets: dict[str, list[float]] = {}
    for photo, files in crop_files.items():
        for path in files:
            gray = cv2.cvtColor(read_rgb(path), cv2.COLOR_RGB2GRAY)
            mask = particle_mask(gray)
            length = feret_diameters(mask)[0] if mask.any() else float(max(gray.shape))
            ferets.setdefault(photo, []).append(length)
    return ferets


def resample_files(files: Sequence[tuple[Path, float]], crop_um_per_px: float) -> None:
    """Resample crop files in place, each from its photo's um/px to ``crop_um_per_px``."""
    from PIL import Image

    for path, um_per_px in files:
        crop = read_rgb(path)
        resampled = resample_crop(crop, um_per_px, crop_um_per_px)
        if resampled is not crop:
            Image.fromarray(resampled).save(path, format="PNG")


def check_scale_augment(factor: float) -> float:
    if not (math.isfinite(factor) and factor >= 1):
        raise InputError(f"--scale-augment must be a factor of at least 1 (1: off; 2: crops rescaled by 0.5-2x), "
                        f"got {factor}")
    return factor


def random_rescale(crop: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    """``crop`` rescaled by a log-uniform draw from [1/factor, factor]: another magnification."""
    if factor <= 1:
        return crop
    scale = float(np.exp(rng.uniform(-math.log(factor), math.log(factor))))
    height, width = max(1, round(crop.shape[0] * scale)), max(1, round(crop.shape[1] * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(crop, (width, height), interpolation=interp)
