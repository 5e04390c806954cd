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
    """Load an image as an (H, W, 3) uint8 RGB array; grey and RGBA are converted."""
    try:
        with Image.open(path) as img:
            img.load()
            return np.asarray(img.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise ImageReadError(path, str(err)) from err


def is_image_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS
