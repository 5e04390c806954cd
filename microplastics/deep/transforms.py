"""The train and eval image presets (albumentations), shared by training, embedding and prediction.

One ``TrainPreset`` and one ``EvalPreset`` build every pipeline in the project, and both end
in the same ``_to_tensor`` tail, so the normalisation used at training time cannot drift
from the one used when a checkpoint is loaded for prediction or Grad-CAM.

Two input normalisations (``--input-norm``, stored in the checkpoint):

- ``imagenet``: the fixed ImageNet mean and std, what the pretrained weights expect (the study's).
- ``crop``: each crop measured against its own background (``background_relative``), so the
  network never sees the absolute light level, white balance or contrast of the microscope.

With ``shape_cues`` (``--shape-cues on``, also stored in the checkpoint) both presets append the
particle's shape cues (``cue_vector``) to the image as constant channels: (3 + SHAPE_CUE_CHANNELS, S, S).
They are measured on the crop as photographed, before the square resize distorts its shape, and a
constant channel stays the same under any flip, rotation or crop of the tensor. The classifier
splits them off again (``models.Classifier``), so every path that feeds a preset's tensor to a
model (training, embedding, prediction, Grad-CAM) carries them without knowing.
"""
from __future__ import annotations

from typing import Sequence

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2

from microplastics.data.shape_cues import SHAPE_CUE_NAMES, cue_mask, shape_cue_features
from microplastics.data.augment import robust_steps
from microplastics.data.background_swap import swap_background as swap_filter
from microplastics.core.images import border_pixels
from microplastics.deep.models import IMAGENET_MEAN, IMAGENET_STD

MIN_DOWNSCALE_SIDE = 16  # px: smaller crops are not down-scaled by the strong augmentation
TRAIN_AUGMENTS = ("study", "robust", "strong")  # --augment of the deep scripts; "study" is the original preset
INPUT_NORMS = ("imagenet", "crop")    # --input-norm of the deep scripts; "imagenet" is the study's

SHAPE_CUE_CHANNELS = len(SHAPE_CUE_NAMES)  # elongation, slenderness, curl, skeleton ends
CROP_NORM_FLOOR = 0.02  # a crop whose relative spread is below 2 % is flat: do not blow its noise up
CROP_NORM_CLIP = 8.0


def background_relative(image: np.ndarray) -> np.ndarray:
    """An RGB uint8 crop as float32 contrast against its own background, in units of its own spread.

    Each channel is divided by its background level (the median of the crop's 2-pixel frame)
    and centred there, so any per-channel gain (dimmer or brighter light, a white-balance
    shift) cancels exactly and the particle keeps its colour relative to the background. The
    result is divided by its standard deviation, which cancels a change of contrast. The
    background maps to 0 and a typical crop has unit spread, the range of ImageNet-normalised input.
    """
    values = image.astype(np.float32)
    background = np.maximum(np.median(border_pixels(values), axis=0), 1.0)
    relative = values / background - 1.0
    spread = max(float(relative.std()), CROP_NORM_FLOOR)
    return np.clip(relative / spread, -CROP_NORM_CLIP, CROP_NORM_CLIP)


class BackgroundRelative(A.ImageOnlyTransform):
    """``background_relative`` as the last albumentations step before the tensor."""

    def __init__(self, p: float = 1.0) -> None:
        super().__init__(p=p)

    def apply(self, img: np.ndarray, **params) -> np.ndarray:
        return background_relative(img)


def cue_vector(image: np.ndarray) -> np.ndarray:
    """The shape cues of the particle in an RGB uint8 crop at its own resolution, on scales a network
    takes as they are: elongation and curl in [0, 1], slenderness and skeleton ends as log(1 + x).
    Ratios of lengths on a contrast-normalised mask: no colour, light, contrast or magnification in them."""
    elongation, slenderness, curl, ends = shape_cue_features(cue_mask(image))
    return np.array([elongation, np.log1p(slenderness), curl, np.log1p(ends)], dtype=np.float32)


def with_cue_channels(tensor: torch.Tensor, image: np.ndarray) -> torch.Tensor:
    """``tensor`` (3, S, S) with ``cue_vector(image)`` appended as SHAPE_CUE_CHANNELS constant channels."""
    cues = torch.from_numpy(cue_vector(image)).to(tensor.dtype)
    return torch.cat([tensor, cues[:, None, None].expand(-1, *tensor.shape[1:])])


def input_channels(shape_cues: bool) -> int:
    """Channels of a preset's tensor: RGB, plus the cue channels with ``shape_cues``."""
    return 3 + (SHAPE_CUE_CHANNELS if shape_cues else 0)


def check_input_norm(input_norm: str) -> str:
    if input_norm not in INPUT_NORMS:
        raise ValueError(f"unknown input normalisation {input_norm!r}; expected one of {list(INPUT_NORMS)}")
    return input_norm


def _to_tensor(mean: Sequence[float], std: Sequence[float], input_norm: str) -> list[A.BasicTransform]:
    if check_input_norm(input_norm) == "crop":
        return [BackgroundRelative(), ToTensorV2()]
    return [A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0), ToTensorV2()]


class EvalPreset:
    """Resize to a square of ``image_size`` and normalise: the one view of val, test and new crops."""

    def __init__(self, image_size: int, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, input_norm: str = "imagenet", shape_cues: bool = False) -> None:
        self.image_size, self.mean, self.std = int(image_size), tuple(mean), tuple(std)
        self.input_norm, self.shape_cues = check_input_norm(input_norm), bool(shape_cues)
        self.transform = A.Compose([A.Resize(self.image_size, self.image_size, interpolation=cv2.INTER_LINEAR),
                                    *_to_tensor(self.mean, self.std, self.input_norm)])

    def __call__(self, image: np.ndarray, seed: int | None = None) -> torch.Tensor:
        tensor = self.transform(image=image)["image"]
        return with_cue_channels(tensor, image) if self.shape_cues else tensor


class TrainPreset:
    """The study's augmentation: random resized crop (scale 0.8-1), flips, rotation up to 25 degrees,
    brightness/contrast and light noise, then the eval preset's normalisation.

    ``seed`` makes one call reproducible whatever process or worker runs it: the engine
    passes a seed derived from (run seed, view or epoch, crop index).

    ``augment="robust"`` adds, after the study's steps and before the normalisation, the robust
    augmentation of ``microplastics.data.augment`` (colour jitter, Gaussian blur, down-scaling,
    noise, JPEG), so the model also sees other imaging conditions. ``augment="strong"`` applies
    the same steps instead with ranges as wide as the evaluation suite's strong severities, and to
    the crop at its own resolution, before the random resized crop, where a camera's noise, blur
    and compression arise. (Both at once, the strong steps first and the robust ones after the
    resize, was measured and did worse: 0.932 under corruption against 0.942.)

    ``swap_background`` P > 0: with probability P the crop's filter is first replaced by a random
    one (``microplastics.data.background_swap``), the particle kept: other labs' filters.
    """

    def __init__(self, image_size: int, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, augment: str = "study", input_norm: str = "imagenet",
                 scale_augment: float = 1.0, shape_cues: bool = False, swap_background: float = 0.0) -> None:
        if augment not in TRAIN_AUGMENTS:
            raise ValueError(f"unknown augmentation {augment!r}; expected one of {list(TRAIN_AUGMENTS)}")
        self.image_size, self.mean, self.std, self.augment = int(image_size), tuple(mean), tuple(std), augment
        self.input_norm, self.shape_cues = check_input_norm(input_norm), bool(shape_cues)
        self.swap_background = float(swap_background)
        s = self.image_size
        # scale_augment F > 1: the crop first rescaled by a random factor in [1/F, F] (another magnification)
        rescale = [A.RandomScale(scale_limit=(1 / scale_augment - 1, scale_augment - 1), p=1.0)] \
            if scale_augment > 1 else []
        # "strong" corrupts the crop at the resolution it was photographed at, before it is enlarged
        # to the input size, as a camera's noise, blur and compression are: applied after the resize,
        # the same noise would be finer-grained than any camera's and averaged away by the network
        self.native = self.tiny_native = None
        if augment == "strong":
            self.native = A.Compose(robust_steps(strength="strong"))
            # a crop a few pixels across cannot be down-scaled further: it gets the other steps
            self.tiny_native = A.Compose([t for t in robust_steps(strength="strong") if not isinstance(t, A.Downscale)])
        self.transform = A.Compose([
            *rescale,
            A.RandomResizedCrop(size=(s, s), scale=(0.8, 1.0)),
            A.HorizontalFlip(p=0.5),
            A.VerticalFlip(p=0.5),
            A.Rotate(limit=25, border_mode=cv2.BORDER_REFLECT_101, p=0.5),
            A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
            A.GaussNoise(std_range=(0.01, 0.04), p=0.3),
            *(robust_steps() if augment == "robust" else []),
            *_to_tensor(self.mean, self.std, self.input_norm),
        ])

    def __call__(self, image: np.ndarray, seed: int | None = None) -> torch.Tensor:
        if self.swap_background > 0:  # another filter under the particle: part of the scene, before the camera
            rng = np.random.default_rng(None if seed is None else [int(seed) % (2**32), 2])
            if rng.random() < self.swap_background:
                image = swap_filter(image, rng)
        if self.native is not None:
            native = self.native if min(image.shape[:2]) >= MIN_DOWNSCALE_SIDE else self.tiny_native
            if seed is not None:
                native.set_random_seed((int(seed) + 1) % (2**32))
            image = native(image=image)["image"]
        if seed is not None:
            self.transform.set_random_seed(int(seed) % (2**32))
        tensor = self.transform(image=image)["image"]
        # the cues of the crop as the camera (and the strong steps) left it, before the square resize
        return with_cue_channels(tensor, image) if self.shape_cues else tensor


def batch_tensor(images: Sequence[np.ndarray], preset: EvalPreset | TrainPreset) -> torch.Tensor:
    """Stack RGB uint8 arrays through ``preset`` into one (B, C, S, S) float tensor (C: ``input_channels``)."""
    if len(images) == 0:
        return torch.empty(0, input_channels(preset.shape_cues), preset.image_size, preset.image_size)
    return torch.stack([preset(np.ascontiguousarray(img)) for img in images])
