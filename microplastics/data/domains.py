"""Shifted copies of an annotated photo folder: other magnifications, other filter backgrounds, other class names.

Each builder reads a MICRO-style folder (or a YOLO export) and writes a new DeepParticle folder
(``raw_img/<photo>.png``, ``annotation/<photo>.png.tsv``) that a model can be scored on with
``prediction.py --photos``, like any other lab's photos. The source folder is never modified.

- ``rescale_photo``: the photo resized by a factor (a 0.5x or 2x magnification change), its
  boxes scaled with it and kept inside the photo;
- ``replace_background``: the filter behind the particles replaced by another colour or texture,
  keeping the particle pixels and the photo's illumination (field stop, vignetting);
- ``unchanged`` with a class map: the photos under other class names (e.g. the synthetic
  generator's ``line``/``hard``/``pellet`` as ``fiber``/``fragment``/``pallet``), unmapped boxes dropped.

Everything random comes from ``numpy.random.default_rng([seed, photo index])``: a seed gives
the same folder, photo by photo.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from microplastics.core.fileio import atomic_path, write_text
from microplastics.core.images import read_rgb
from microplastics.data.annotations import BoxRecord, read_annotations, records_by_photo
from microplastics.data.synthetic import HEADER, _smooth_noise

Box = tuple[int, int, int, int]  # minr, minc, maxr, maxc; max exclusive
BACKGROUNDS = ("colour", "texture")
# Filter colours unlike mp100's beige: white membrane, grey and dark filters, blue, green and rust tints
PALETTE = np.array([[232, 232, 226], [128, 128, 124], [62, 62, 68], [150, 170, 205], [120, 142, 100],
                    [175, 120, 95]], np.float32)
# A pixel that differs from the estimated filter by under LOW grey levels is filter, over HIGH particle; in
# between a mix (a blurred edge, a translucent film), which a new filter shows through in proportion
LOW, HIGH = 10.0, 60.0


# ----------------------------------------------------------------------------- magnification

def rescale_box(box: Box, factor_r: float, factor_c: float, shape: tuple[int, int]) -> Box:
    """``box`` scaled by the row and column factors, widened to whole pixels and kept inside ``shape``."""
    minr, minc, maxr, maxc = box
    height, width = shape
    r0, c0 = min(height - 1, math.floor(minr * factor_r)), min(width - 1, math.floor(minc * factor_c))
    r1, c1 = min(height, max(r0 + 1, math.ceil(maxr * factor_r))), min(width, max(c0 + 1, math.ceil(maxc * factor_c)))
    return r0, c0, r1, c1


def rescale_photo(image: np.ndarray, boxes: Sequence[Box], factor: float) -> tuple[np.ndarray, list[Box]]:
    """The photo as a camera ``factor`` times the magnification would see it, and its boxes.

    Shrinking averages pixels (INTER_AREA, as a sensor does); enlarging interpolates (bicubic),
    so a 2x photo carries no detail the original did not.
    """
    if not factor > 0:
        raise ValueError(f"factor must be > 0, got {factor}")
    height, width = image.shape[:2]
    new_h, new_w = max(1, round(height * factor)), max(1, round(width * factor))
    method = cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC
    resized = cv2.resize(image, (new_w, new_h), interpolation=method)
    fr, fc = new_h / height, new_w / width
    return resized, [rescale_box(b, fr, fc, (new_h, new_w)) for b in boxes]


# ----------------------------------------------------------------------------- background

def box_mask(shape: tuple[int, int], boxes: Iterable[Box], grow: int = 0) -> np.ndarray:
    """A bool mask of the boxes, each widened by ``grow`` pixels."""
    mask = np.zeros(shape, bool)
    for minr, minc, maxr, maxc in boxes:
        mask[max(0, minr - grow):maxr + grow, max(0, minc - grow):maxc + grow] = True
    return mask


def estimate_filter(image: np.ndarray) -> np.ndarray:
    """The photo without its particles: a median over about 60 px (on a 4x smaller copy, for speed).

    Particles, thin or up to about 40 px across, fill less than half of such a window, so the
    median is the filter around them, blotches included; it keeps the edge of the field stop
    sharp, so the dark ring around the filter stays where it is.
    """
    height, width = image.shape[:2]
    small = cv2.resize(image, (max(1, width // 4), max(1, height // 4)), interpolation=cv2.INTER_AREA)
    median = cv2.medianBlur(small, 15)
    return cv2.resize(median, (width, height), interpolation=cv2.INTER_LINEAR).astype(np.float32)


def particle_share(image: np.ndarray, filter_estimate: np.ndarray) -> np.ndarray:
    """How much each pixel is particle (0..1): its largest channel difference from the filter
    (an image, or one colour), LOW grey levels none of it, HIGH all of it."""
    smooth = cv2.GaussianBlur(image, (0, 0), 1.0).astype(np.float32)  # the filter's grain is not a particle
    diff = np.abs(smooth - filter_estimate).max(axis=2)
    return np.clip((diff - LOW) / (HIGH - LOW), 0.0, 1.0).astype(np.float32)


def particle_alpha(image: np.ndarray, filter_estimate: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
    """``particle_share`` inside the boxes, 0 elsewhere."""
    alpha = particle_share(image, filter_estimate)
    return np.where(box_mask(image.shape[:2], boxes), alpha, 0.0).astype(np.float32)


def swap_filter_share(image: np.ndarray, alpha: np.ndarray, old_filter: np.ndarray,
                      new_filter: np.ndarray) -> np.ndarray:
    """Each pixel's filter share (1 - alpha) moved from ``old_filter`` to ``new_filter``; uint8.

    A pixel is the sum of particle and filter in the shares alpha and 1 - alpha, so where alpha is
    1 the pixel stays the original particle pixel, and a blurred edge keeps no halo of the old filter."""
    out = image.astype(np.float32) + (1 - alpha[..., None]) * (new_filter - old_filter)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def background_pattern(rng: np.random.Generator, shape: tuple[int, int], kind: str) -> np.ndarray:
    """A new filter, RGB float: one palette colour with grain ("colour"), plus blotches and a grid ("texture")."""
    if kind not in BACKGROUNDS:
        raise ValueError(f"kind must be one of {BACKGROUNDS}, got {kind!r}")
    height, width = shape
    base = PALETTE[rng.integers(len(PALETTE))] + rng.normal(0, 6, 3).astype(np.float32)
    grain = 3 * rng.normal(0, 1, shape).astype(np.float32)
    pattern = np.broadcast_to(base, (height, width, 3)) + grain[..., None]
    if kind == "texture":
        blotch = 14 * _smooth_noise(rng, shape, float(rng.uniform(25, 70)))
        fibres = cv2.GaussianBlur(rng.normal(0, 1, shape).astype(np.float32), (0, 0), 2.0) * 18
        grid = np.zeros(shape, np.float32)
        step = int(rng.integers(50, 110))
        r0, c0 = int(rng.integers(step)), int(rng.integers(step))
        grid[r0::step, :] = grid[:, c0::step] = 1.0
        grid = cv2.GaussianBlur(grid, (0, 0), 0.8) * float(rng.uniform(-60, -25))
        pattern = pattern + (blotch + fibres + grid)[..., None]
    return pattern.astype(np.float32)


def replace_background(image: np.ndarray, boxes: Sequence[Box], pattern: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The photo with its filter replaced by ``pattern`` under the same light; returns (photo, particle alpha).

    The photo's illumination (the filter estimate's brightness over its typical level) scales
    the new filter, so the field stop stays dark and vignetting stays. A pixel is the sum of
    particle and filter in the shares alpha and 1 - alpha, and only the filter's share is
    swapped: where alpha is 1 the pixel is the original particle pixel, unchanged.
    """
    estimate = estimate_filter(image)
    alpha = particle_alpha(image, estimate, boxes)
    brightness = estimate.mean(axis=2)
    lit = brightness[brightness > 0.5 * brightness.max()]
    light = brightness / max(float(np.median(lit)) if lit.size else 1.0, 1.0)
    backdrop = np.clip(pattern * light[..., None], 0, 255)
    return swap_filter_share(image, alpha, estimate, backdrop), alpha


# ----------------------------------------------------------------------------- folders

PhotoShift = Callable[[np.ndarray, list[Box], np.random.Generator], tuple[np.ndarray, list[Box]]]


def magnification(factor: float) -> PhotoShift:
    """A photo shift for ``write_shifted``: the photo at ``factor`` times the magnification."""
    return lambda image, boxes, rng: rescale_photo(image, boxes, factor)


def background(kind: str) -> PhotoShift:
    """A photo shift for ``write_shifted``: the filter replaced by a seeded ``kind`` background."""
    if kind not in BACKGROUNDS:
        raise ValueError(f"kind must be one of {BACKGROUNDS}, got {kind!r}")
    return lambda image, boxes, rng: (replace_background(image, boxes, background_pattern(rng, image.shape[:2],
                                                                                          kind))[0], boxes)


def write_shifted(source: str | Path, out_dir: str | Path, shift: PhotoShift, *, seed: int = 42,
                  photos: Iterable[str] | None = None, class_map: Mapping[str, str] | None = None) -> dict:
    """Write every annotated photo of ``source`` (or only those whose file names ``photos`` lists) shifted.

    ``class_map`` renames labels; with one, boxes of labels it does not name are dropped.
    Returns a summary: photos, boxes, boxes per class.
    """
    source, out = Path(source), Path(out_dir)
    wanted = None if photos is None else set(photos)
    found = read_annotations(source, require_label=True)
    counts: dict[str, int] = {}
    n_photos = 0
    for index, (photo, records) in enumerate(sorted(records_by_photo(found.records).items())):
        if wanted is not None and photo.name not in wanted:
            continue
        records = _relabelled(records, class_map)
        if not records:
            continue
        image, boxes = shift(read_rgb(photo), [(r.minr, r.minc, r.maxr, r.maxc) for r in records],
                             np.random.default_rng([seed, index]))
        write_photo(out, f"{photo.stem}.png", image, [(r.box_id, box, r.label) for r, box in zip(records, boxes)])
        n_photos += 1
        for r in records:
            counts[str(r.label)] = counts.get(str(r.label), 0) + 1
    return {"photos": n_photos, "boxes": sum(counts.values()), "boxes_per_class": dict(sorted(counts.items())),
            "source": str(source), "seed": seed}


def unchanged(image: np.ndarray, boxes: list[Box], rng: np.random.Generator) -> tuple[np.ndarray, list[Box]]:
    """A photo shift for ``write_shifted`` that shifts nothing (to select photos or rename classes)."""
    return image, boxes


def write_photo(out_dir: Path, name: str, image: np.ndarray, boxes: Sequence[tuple[str, Box, str | None]]) -> None:
    """One photo (lossless PNG) and its DeepParticle TSV; each file written atomically."""
    with atomic_path(out_dir / "raw_img" / name) as tmp:
        Image.fromarray(image, "RGB").save(tmp, format="PNG", compress_level=1)
    lines = [HEADER] + [f"{box_id}\t{minr}\t{minc}\t{maxr}\t{maxc}\t{label}/{Path(name).stem}_{box_id}"
                        for box_id, (minr, minc, maxr, maxc), label in boxes]
    write_text(out_dir / "annotation" / f"{name}.tsv", "\n".join(lines) + "\n")


def _relabelled(records: list[BoxRecord], class_map: Mapping[str, str] | None) -> list[BoxRecord]:
    if class_map is None:
        return records
    return [replace(r, label=class_map[r.label]) for r in records if r.label in class_map]
