"""Training augmentation for other filters: a crop's filter replaced by a random one, the particle kept.

A lab's particles lie on its own filter (cellulose, glass fibre, a coloured membrane, black
polycarbonate), often under sludge residue. A model trained on one filter learns its colour and
grain as part of every class. ``swap_background`` separates a crop into particle and filter and
puts the particle on a filter drawn from the synthetic generator's domain-randomised filter model
(``synthetic.random_filter``: colours, paper fibres, membrane pores, woven mesh, debris, sludge), so
the particle's own pixels are all that stays the same from one swap to the next.

The separation is the one ``domains.replace_background`` uses on whole photos, on the crop alone:
the filter's level is the median of the crop's frame (the crop's margin is filter), a pixel is
particle by its largest channel difference from that level (``domains.LOW`` to ``domains.HIGH``
grey levels: from none to all of it), and only the filter's share of a pixel is replaced, so a
translucent film or a blurred edge shows the new filter through in proportion. The new filter is
a window of a canvas a few times the crop's size, so debris and textures keep the density they
have on a photo. A dark filter stays dark: a dark fibre on black polycarbonate is
hard to see, as it is under a lab's microscope.
"""
from __future__ import annotations

import numpy as np

from microplastics.core.errors import InputError
from microplastics.core.images import border_pixels
from microplastics.data import domains
from microplastics.data.synthetic import random_filter

CANVAS = 256  # px: the side of the filter canvas a crop's new background is cut from (at least)


def filter_level(image: np.ndarray) -> np.ndarray:
    """The filter's colour behind a crop: the median of the crop's frame, per channel."""
    return np.median(border_pixels(image.astype(np.float32)), axis=0)


def particle_share(image: np.ndarray, level: np.ndarray | None = None) -> np.ndarray:
    """How much each pixel of a crop is particle (0..1), against the filter's ``level`` (default: the frame's)."""
    return domains.particle_share(image, filter_level(image) if level is None else level)


def swap_background(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``image`` (RGB uint8 crop) with its filter replaced by a random one; the particle's pixels unchanged."""
    height, width = image.shape[:2]
    if min(height, width) < 5:  # no frame to tell the filter by
        return image
    level = filter_level(image)
    alpha = particle_share(image, level)
    side_h, side_w = max(CANVAS, 2 * height), max(CANVAS, 2 * width)
    canvas = random_filter(rng, side_h, side_w)
    top, left = int(rng.integers(side_h - height + 1)), int(rng.integers(side_w - width + 1))
    backdrop = canvas[top:top + height, left:left + width]
    return domains.swap_filter_share(image, alpha, level, backdrop)


def check_swap_probability(p: float) -> float:
    """``--swap-background P`` must be a probability."""
    if not 0.0 <= p <= 1.0:
        raise InputError(f"--swap-background {p}: must be between 0 (off) and 1 (every training crop)")
    return float(p)
