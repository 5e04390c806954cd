"""Reading pictures as RGB uint8 arrays, the one in-memory image format of the project."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class ImageReadError(ValueError):
    """A file that is missing, not an image, or truncated; ``reason`` says which, without the path."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"cannot read image {path}: {reason}")
        self.path, self.reason = path, reason

    def __reduce__(self):  # rebuilt from (path, reason) when it crosses to another process
        return type(self), (self.path, self.reason)


def read_rgb(path: str | Path) -> np.ndarray:
    """Load an image as an (H, W, 3) uint8 RGB array; grey, RGBA, 16-bit and float images are converted.

    Raises ImageReadError for a file that is not an image, and for pixel values that have no
    8-bit meaning (a float image outside 0..1, a 32-bit one beyond 16 bits).
    """
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode.startswith(("I", "F")):  # I;16*, I (32-bit int) and F (32-bit float) are one channel
                grey = to_uint8(np.asarray(img))
                return np.repeat(grey[:, :, None], 3, axis=2)
            return np.asarray(img.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise ImageReadError(path, str(err)) from err


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """High-bit-depth pixels scaled to 0..255 by their type's range, never by clipping (ValueError
    when the values have no 8-bit meaning).

    PIL's convert("RGB") clips a 16-bit grey image to 255, so almost every pixel turns white.
    16-bit values keep their top 8 bits (as PIL reads 16-bit RGB files); 32-bit integers are
    taken as 16-bit when they fit in 0..65535; floats must lie in 0..1. The scale is fixed, not
    stretched per image, so a darker photo stays darker than a brighter one.
    """
    if pixels.dtype == np.uint8:
        return pixels
    if np.issubdtype(pixels.dtype, np.floating):
        if not np.isfinite(pixels).all():
            raise ValueError("float image with NaN or infinite pixels")
        low, high = float(pixels.min()), float(pixels.max())
        if low < 0 or high > 1:
            raise ValueError(f"float image with values {low:g}..{high:g}, outside 0..1; "
                                     "save it as an 8- or 16-bit image")
        return np.round(pixels * 255).astype(np.uint8)
    low, high = int(pixels.min()), int(pixels.max())
    if low < 0 or high > 65535:
        raise ValueError(f"{pixels.dtype.itemsize * 8}-bit image with values {low}..{high}, outside "
                                 "0..65535; save it as an 8- or 16-bit image")
    return (pixels.astype(np.uint32) >> 8).astype(np.uint8)


def is_image_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def border_pixels(image: np.ndarray, width: int = 2) -> np.ndarray:
    """The pixels of the crop's outer frame: mostly background, since boxes hug their particle."""
    frame = np.ones(image.shape[:2], dtype=bool)
    frame[width:-width, width:-width] = False
    return image[frame]


def particle_mask(gray: np.ndarray) -> np.ndarray:
    """Otsu segmentation; the particle is the side that touches the crop border least."""
    if gray.min() == gray.max():
        return np.zeros(gray.shape, dtype=bool)
    import cv2
    from skimage.filters import threshold_otsu

    blurred = cv2.GaussianBlur(gray, (3, 3), 0)
    mask = blurred > threshold_otsu(blurred)
    border = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
    if border.mean() > 0.5:  # the bright side is the background: the particle is dark
        mask = ~mask
    return mask
