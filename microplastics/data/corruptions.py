"""The imaging-corruption suite: what another lab's microscope, light or camera does to a photo.

Eight corruptions, each at three severities (1 mild, 2 moderate, 3 strong), all shape-preserving
so that the boxes of a photo stay where they were. Every corruption takes an RGB uint8 array and
returns a new one; the random ones (sensor noise, the direction of a colour-temperature shift)
draw from a generator seeded by (seed, corruption, severity, key), so the same seed and key give
the same pixels whatever order the photos are processed in.

The settings here are the evaluation's own and are deliberately not those of any training
augmentation preset (microplastics.deep.transforms): a model should hold up on conditions it was
not trained on. Pixel sizes (blur radius, down-scaling) are meant for photos of about 640 px
with particles of about 30 px, the size of the mp100 photos and boxes.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Callable, Sequence

import cv2
import numpy as np

from microplastics.core.errors import InputError
from microplastics.core.layout import ROBUSTNESS_CLEAN

SEVERITIES = (1, 2, 3)
CLEAN = ROBUSTNESS_CLEAN  # the name of the uncorrupted condition (severity 0), as robustness.csv writes it

Apply = Callable[[np.ndarray, float, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class Corruption:
    """One corruption: its name, one setting per severity (mild to strong) and what it models."""

    name: str
    levels: tuple[float, float, float]
    apply: Apply
    unit: str
    describes: str


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _disk_kernel(radius: float) -> np.ndarray:
    """A normalised disk (the point spread of a defocused lens), anti-aliased by 4x supersampling."""
    half = int(np.ceil(radius))
    fine = 4
    axis = (np.arange((2 * half + 1) * fine) + 0.5) / fine - (half + 0.5)
    yy, xx = np.meshgrid(axis, axis, indexing="ij")
    inside = (yy ** 2 + xx ** 2 <= radius ** 2).astype(np.float32)
    kernel = inside.reshape(2 * half + 1, fine, 2 * half + 1, fine).mean(axis=(1, 3))
    return kernel / kernel.sum()


def defocus_blur(image: np.ndarray, radius: float, rng: np.random.Generator) -> np.ndarray:
    return cv2.filter2D(image, -1, _disk_kernel(radius), borderType=cv2.BORDER_REFLECT_101)


def exposure(image: np.ndarray, gain: float, rng: np.random.Generator) -> np.ndarray:
    """Less or more light, a shorter or longer exposure: every value scaled by ``gain`` (darker
    below 1, brighter above, where the brightest values saturate)."""
    return _to_uint8(image.astype(np.float32) * gain)


def colour_temperature(image: np.ndarray, shift: float, rng: np.random.Generator) -> np.ndarray:
    """A warmer (tungsten) or cooler (daylight/LED) light: red and blue gains move apart.

    The direction is drawn per photo from ``rng``; ``shift`` is the relative change of the red
    and blue gains. The gains keep the mean brightness (green is left alone).
    """
    sign = 1.0 if rng.random() < 0.5 else -1.0
    gains = np.array([1.0 + sign * shift, 1.0, 1.0 - sign * shift], dtype=np.float32)
    return _to_uint8(image.astype(np.float32) * gains)


def sensor_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Read noise plus shot noise: Gaussian with a standard deviation growing with brightness."""
    values = image.astype(np.float32)
    std = sigma * np.sqrt(0.5 + 0.5 * values / 255.0)
    return _to_uint8(values + rng.standard_normal(values.shape, dtype=np.float32) * std)


def jpeg_compression(image: np.ndarray, quality: float, rng: np.random.Generator) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - OpenCV always encodes a uint8 RGB array
        raise RuntimeError("JPEG encoding failed")
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def low_resolution(image: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    """A coarser sensor: area-averaged down by ``factor``, then bilinearly back to the old size."""
    h, w = image.shape[:2]
    small = cv2.resize(image, (max(1, round(w / factor)), max(1, round(h / factor))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def contrast_loss(image: np.ndarray, keep: float, rng: np.random.Generator) -> np.ndarray:
    """Haze, glare or a flat exposure: values pulled towards the photo's mean grey, ``keep`` of the contrast left."""
    values = image.astype(np.float32)
    mean = values.mean()
    return _to_uint8(mean + (values - mean) * keep)


CORRUPTIONS: dict[str, Corruption] = {c.name: c for c in (
    Corruption("defocus_blur", (1.5, 2.5, 4.0), defocus_blur, "disk radius (px)", "a lens out of focus"),
    Corruption("darker", (0.6, 0.42, 0.28), exposure, "gain", "dimmer light, shorter exposure"),
    Corruption("brighter", (1.3, 1.6, 2.0), exposure, "gain", "stronger light, longer exposure (saturates)"),
    Corruption("colour_temperature", (0.12, 0.24, 0.36), colour_temperature, "red/blue gain change",
               "warmer or cooler light (white balance off)"),
    Corruption("sensor_noise", (8.0, 16.0, 28.0), sensor_noise, "noise std at full scale (0-255)",
               "a noisier camera or higher ISO"),
    Corruption("jpeg_compression", (25.0, 12.0, 5.0), jpeg_compression, "JPEG quality", "heavy compression"),
    Corruption("low_resolution", (2.0, 3.0, 4.0), low_resolution, "down-scaling factor", "a coarser sensor"),
    Corruption("contrast_loss", (0.6, 0.4, 0.25), contrast_loss, "fraction of contrast kept", "haze, glare"),
)}


def corruption_names() -> list[str]:
    """All corruption names, in suite order."""
    return list(CORRUPTIONS)


def resolve_names(names: Sequence[str] | None) -> list[str]:
    """Check corruption names given by a user; None or empty means the whole suite."""
    if not names:
        return corruption_names()
    unknown = [n for n in names if n not in CORRUPTIONS]
    if unknown:
        raise InputError(f"unknown corruption(s) {', '.join(unknown)}; choose from {', '.join(CORRUPTIONS)}")
    return list(dict.fromkeys(names))


def resolve_severities(severities: Sequence[int] | None) -> list[int]:
    if not severities:
        return list(SEVERITIES)
    bad = [s for s in severities if s not in SEVERITIES]
    if bad:
        raise InputError(f"unknown severity {bad[0]}; choose from {', '.join(map(str, SEVERITIES))}")
    return sorted(set(severities))


def rng_for(seed: int, name: str, severity: int, key: str = "") -> np.random.Generator:
    """The generator of one (corruption, severity, picture): independent of processing order."""
    return np.random.default_rng([int(seed), zlib.crc32(name.encode()), int(severity), zlib.crc32(key.encode())])


def corrupt(image: np.ndarray, name: str, severity: int, seed: int = 42, key: str = "") -> np.ndarray:
    """Return a corrupted copy of an RGB uint8 ``image``; severity 0 (or CLEAN) returns an unchanged copy.

    ``key`` names the picture (e.g. the photo file name) so that each picture gets its own,
    reproducible random draw.
    """
    image = np.ascontiguousarray(image, dtype=np.uint8)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
    if severity == 0 or name == CLEAN:
        return image.copy()
    resolve_names([name])
    resolve_severities([severity])
    spec = CORRUPTIONS[name]
    out = spec.apply(image, spec.levels[severity - 1], rng_for(seed, name, severity, key))
    assert out.shape == image.shape and out.dtype == np.uint8
    return out


def describe_suite() -> list[dict[str, object]]:
    """The suite's settings as plain rows, for config files and documentation."""
    return [{"corruption": c.name, "unit": c.unit, "severity_1": c.levels[0], "severity_2": c.levels[1],
             "severity_3": c.levels[2], "models": c.describes} for c in CORRUPTIONS.values()]
