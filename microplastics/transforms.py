"""The train and eval image presets (albumentations), shared by training, embedding and prediction.

One ``TrainPreset`` and one ``EvalPreset`` build every pipeline in the project, and both end
in the same ``_to_tensor`` tail, so the normalisation used at training time cannot drift
from the one used when a checkpoint is loaded for prediction or Grad-CAM.
"""
from __future__ import annotations

from typing import Sequence

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2

from .augment import robust_steps
from .models import IMAGENET_MEAN, IMAGENET_STD

TRAIN_AUGMENTS = ("study", "robust")  # --augment of the deep scripts; "study" is the original preset


def _to_tensor(mean: Sequence[float], std: Sequence[float]) -> list[A.BasicTransform]:
    return [A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0), ToTensorV2()]


class EvalPreset:
    """Resize to a square of ``image_size`` and normalise: the one view of val, test and new crops."""

    def __init__(self, image_size: int, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD) -> None:
        self.image_size, self.mean, self.std = int(image_size), tuple(mean), tuple(std)
        self.transform = A.Compose([A.Resize(self.image_size, self.image_size, interpolation=cv2.INTER_LINEAR),
                                    *_to_tensor(self.mean, self.std)])

    def __call__(self, image: np.ndarray, seed: int | None = None) -> torch.Tensor:
        return self.transform(image=image)["image"]


class TrainPreset:
    """The study's augmentation: random resized crop (scale 0.8-1), flips, rotation up to 25 degrees,
    brightness/contrast and light noise, then the eval preset's normalisation.

    ``seed`` makes one call reproducible whatever process or worker runs it: the engine
    passes a seed derived from (run seed, view or epoch, crop index).

    ``augment="robust"`` adds, after the study's steps and before the normalisation, the robust
    augmentation of ``microplastics.augment`` (colour jitter, Gaussian blur, down-scaling,
    noise, JPEG), so the model also sees other imaging conditions.
    """

    def __init__(self, image_size: int, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, augment: str = "study") -> None:
        if augment not in TRAIN_AUGMENTS:
            raise ValueError(f"unknown augmentation {augment!r}; expected one of {list(TRAIN_AUGMENTS)}")
        self.image_size, self.mean, self.std, self.augment = int(image_size), tuple(mean), tuple(std), augment
        s = self.image_size
        self.transform = A.Compose([
            A.RandomResizedCrop(size=(s, s), scale=(0.8, 1.0)),
            A.HorizontalFlip(p=0.5),
            A.VerticalFlip(p=0.5),
            A.Rotate(limit=25, border_mode=cv2.BORDER_REFLECT_101, p=0.5),
            A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
            A.GaussNoise(std_range=(0.01, 0.04), p=0.3),
            *(robust_steps() if augment == "robust" else []),
            *_to_tensor(self.mean, self.std),
        ])

    def __call__(self, image: np.ndarray, seed: int | None = None) -> torch.Tensor:
        if seed is not None:
            self.transform.set_random_seed(int(seed) % (2**32))
        return self.transform(image=image)["image"]


def batch_tensor(images: Sequence[np.ndarray], preset: EvalPreset | TrainPreset) -> torch.Tensor:
    """Stack RGB uint8 arrays through ``preset`` into one (B, 3, S, S) float tensor."""
    if len(images) == 0:
        return torch.empty(0, 3, preset.image_size, preset.image_size)
    return torch.stack([preset(np.ascontiguousarray(img)) for img in images])
