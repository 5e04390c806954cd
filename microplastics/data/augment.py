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

import albumentations as A
import cv2
import numpy as np

from microplastics.core.seeds import item_seed

AUGMENT_CHOICES = ("none", "robust")

BLUR_SIGMA = (0.3, 1.2)
NOISE_STD = (0.01, 0.035)          # fraction of 255, the same for dark and bright pixels
BRIGHTNESS = (0.7, 1.3)
CONTRAST = (0.7, 1.3)
SATURATION = (0.75, 1.25)
HUE = (-0.03, 0.03)
JPEG_QUALITY = (40, 95)
DOWNSCALE = (0.5, 0.9)


def robust_steps(p: float = 0.5) -> list[A.BasicTransform]:
    """The robust augmentation's steps, each applied with probability ``p``."""
    return [
        A.ColorJitter(brightness=BRIGHTNESS, contrast=CONTRAST, saturation=SATURATION, hue=HUE, p=p),
        A.GaussianBlur(blur_limit=0, sigma_limit=BLUR_SIGMA, p=p),
        A.Downscale(scale_range=DOWNSCALE,
                    interpolation_pair={"downscale": cv2.INTER_AREA, "upscale": cv2.INTER_LINEAR}, p=p),
        A.GaussNoise(std_range=NOISE_STD, per_channel=True, p=p),
        A.ImageCompression(quality_range=JPEG_QUALITY, p=p),
    ]


class RobustAugmenter:
    """Augmented copies of RGB uint8 crops, reproducible per (seed, view, crop index)."""

    def __init__(self, seed: int = 42, p: float = 0.5) -> None:
        self.seed = int(seed)
        self.transform = A.Compose(robust_steps(p))

    def __call__(self, image: np.ndarray, view: int, index: int) -> np.ndarray:
        self.transform.set_random_seed(item_seed(self.seed, view, index))
        return self.transform(image=np.ascontiguousarray(image))["image"]
