"""Shape cues: ratios of lengths of a particle's mask that hold in every lab.

The particle is segmented from contrast-normalised intensity (``normalised_intensity``,
``robust_mask``) at a fixed size, so neither the light, its colour, the contrast nor the
magnification changes the cues. Both families use them: the classical features
(``ml-baselines.py --shape-cues``) and the deep heads (``--shape-cues`` of the deep scripts).
"""
from __future__ import annotations

import cv2
import numpy as np
from skimage.filters import threshold_otsu
from skimage.measure import label

from microplastics.core.images import border_pixels

SMOOTH_SIGMA = 1.0  # px: the crop is smoothed before it is segmented (the robust features' sigma too)


def normalised_intensity(gray: np.ndarray) -> np.ndarray:
    """(gray - background level) / spread: the same for any gain, offset or contrast of the light."""
    background = float(np.median(border_pixels(gray)))
    low, high = np.percentile(gray, [2, 98])
    return (gray - background) / max(float(high - low), 4.0)


def robust_mask(z: np.ndarray) -> np.ndarray:
    """The particle: pixels far from the background level (either side), largest piece kept."""
    far = np.abs(z)
    if far.max() <= 0:
        return np.zeros(z.shape, dtype=bool)
    mask = far > max(0.25, float(threshold_otsu(far)) if far.min() < far.max() else 0.25)
    labels = label(mask, connectivity=2)
    if labels.max() == 0:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    return labels == (int(np.argmax(sizes)) + 1)


# The longer side the crop is brought to before its particle is segmented: the cues are ratios,
# so a fixed size makes them the same at any magnification, and skeletons of 96 px cost little.
CUE_SIZE = 96
SHAPE_CUE_NAMES = ("cue_elongation", "cue_slenderness", "cue_curl", "cue_skeleton_ends")


def cue_mask(rgb_native: np.ndarray) -> np.ndarray:
    """The particle of a crop at CUE_SIZE px on its longer side, from contrast-normalised intensity
    (``normalised_intensity``, ``robust_mask``): neither the light, the colour nor the contrast matter."""
    h, w = rgb_native.shape[:2]
    factor = CUE_SIZE / max(h, w)
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    rgb = cv2.resize(rgb_native, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)
    gray = cv2.GaussianBlur(rgb.astype(np.float32).mean(axis=2), (0, 0), SMOOTH_SIGMA)
    if min(gray.shape) < 5:  # too thin for a border frame: the crop is the particle
        return np.ones(gray.shape, dtype=bool)
    return robust_mask(normalised_intensity(gray))


def shape_cue_features(mask: np.ndarray) -> np.ndarray:
    """SHAPE_CUE_NAMES of one particle mask, every one a ratio of lengths (no unit):

    - elongation: 1 - Feret min / Feret max (0 for a disc, towards 1 for a fibre);
    - slenderness: skeleton length / mean width (``measure.fibre_length``; 1 for a disc);
    - curl: 1 - Feret max / skeleton length, at least 0 (0 for a straight fibre, 1 - 2/pi for a
      half circle: how far the particle bends away from a straight line);
    - skeleton ends: the skeleton's end points (2 for a fibre, 0 for a ring, more for a branched piece).
    """
    from microplastics.find.measure import feret_diameters, fibre_length

    if not mask.any():
        return np.zeros(len(SHAPE_CUE_NAMES))
    feret_max, feret_min = feret_diameters(mask)
    length, width = fibre_length(mask)
    elongation = 1.0 - feret_min / feret_max if feret_max else 0.0
    slenderness = length / width if width else 0.0
    curl = max(0.0, 1.0 - feret_max / length) if length else 0.0
    return np.array([elongation, slenderness, curl, skeleton_ends(mask)])


def skeleton_ends(mask: np.ndarray) -> float:
    """End points of the mask's skeleton: skeleton pixels with exactly one of 8 neighbours on it."""
    from skimage.morphology import skeletonize

    sk = skeletonize(mask).astype(np.uint8)
    neighbours = cv2.filter2D(sk, -1, np.ones((3, 3), np.float32), borderType=cv2.BORDER_CONSTANT) - sk
    return float(((sk == 1) & (neighbours == 1)).sum())
