"""The ``robust`` training augmentation: other light, white balance, focus, noise, compression, resolution.

One photometric/optical albumentations pipeline, used by the classical models (augmented copies
of the training crops, ``ml-baselines.py --augment robust``) and added on top of the study's
preset by the deep models (``--augment robust``). Geometry and normalisation stay with the
callers.

Its settings are chosen apart from the evaluation suite (``microplastics.data.corruptions``): other
blur kernels (Gaussian, not a defocus disk), noise that does not grow with brightness, colour
changed by jitter (brightness, contrast, saturation, hue) rather than by red/blue gains, and
ranges that stop short of the suite's moderate and strong severities (JPEG quality >= 40,
down-scaling to no less than half size, blur sigma <= 1.2 px). A model trained with it is
therefore still scored on conditions it has not seen.
"""
from __future__ import annotations

from dataclasses import dataclass

import albumentations as A
import cv2
import numpy as np

from microplastics.core.seeds import item_seed

AUGMENT_CHOICES = ("none", "robust")


@dataclass(frozen=True)
class Ranges:
    """The ranges of one strength of the photometric augmentation."""

    blur_sigma: tuple[float, float]
    noise_std: tuple[float, float]      # fraction of 255, the same for dark and bright pixels
    brightness: tuple[float, float]
    contrast: tuple[float, float]
    saturation: tuple[float, float]
    hue: tuple[float, float]
    jpeg_quality: tuple[int, int]
    downscale: tuple[float, float]


# "robust" stops short of the suite's moderate and strong severities (module docstring)
ROBUST = Ranges(blur_sigma=(0.3, 1.2), noise_std=(0.01, 0.035), brightness=(0.7, 1.3), contrast=(0.7, 1.3),
                saturation=(0.75, 1.25), hue=(-0.03, 0.03), jpeg_quality=(40, 95), downscale=(0.5, 0.9))
# "strong" reaches as far as the suite's strong severities (light gain 0.25-2 with saturation,
# noise up to about 30 grey levels, JPEG quality down to 5, a quarter of the resolution), in the
# same other forms, so the suite no longer holds a condition stronger than training saw
STRONG = Ranges(blur_sigma=(0.3, 2.5), noise_std=(0.01, 0.12), brightness=(0.25, 2.0), contrast=(0.25, 1.3),
                saturation=(0.6, 1.4), hue=(-0.05, 0.05), jpeg_quality=(5, 95), downscale=(0.25, 0.9))
STRENGTHS = {"robust": ROBUST, "strong": STRONG}


def robust_steps(p: float = 0.5, strength: str = "robust") -> list[A.BasicTransform]:
    """The photometric augmentation's steps at ``strength`` (robust or strong), each applied with probability ``p``."""
    r = STRENGTHS[strength]
    return [
        A.ColorJitter(brightness=r.brightness, contrast=r.contrast, saturation=r.saturation, hue=r.hue, p=p),
        A.GaussianBlur(blur_limit=0, sigma_limit=r.blur_sigma, p=p),
        A.Downscale(scale_range=r.downscale,
                    interpolation_pair={"downscale": cv2.INTER_AREA, "upscale": cv2.INTER_LINEAR}, p=p),
        A.GaussNoise(std_range=r.noise_std, per_channel=True, p=p),
        A.ImageCompression(quality_range=r.jpeg_quality, p=p),
    ]


class RobustAugmenter:
    """Augmented copies of RGB uint8 crops, reproducible per (seed, view, crop index)."""

    def __init__(self, seed: int = 42, p: float = 0.5) -> None:
        self.seed = int(seed)
        self.transform = A.Compose(robust_steps(p))

    def __call__(self, image: np.ndarray, view: int, index: int) -> np.ndarray:
        self.transform.set_random_seed(item_seed(self.seed, view, index))
        return self.transform(image=np.ascontiguousarray(image))["image"]
