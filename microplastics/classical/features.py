"""Handcrafted features of one particle crop, and of a whole data folder (parallel, cached).

Three feature sets:

- ``original``: the study's 13 numbers on a 64x64 grayscale crop: intensity mean, std,
  median, variance, skewness, kurtosis; grey-level co-occurrence contrast, homogeneity and
  correlation (distance 1, angle 0); Canny edge density, number of edge contours and their
  mean area; Shannon entropy.
- ``full``: those, plus what matters for telling particles apart and the study lacked:
  colour statistics (films are often coloured, foams pale), the crop's own size and aspect
  (crops are cut from the box, so a fibre's box is long and thin), shape descriptors of the
  particle segmented with Otsu's threshold (area fraction, eccentricity, solidity, extent,
  aspect ratio, perimeter-to-area, circularity, Hu moments) and a uniform local-binary-pattern
  histogram.
- ``robust``: measures meant to survive another microscope's light, white balance, focus,
  noise and resolution (normalised intensity, colour relative to the crop's background, the
  particle's shape, texture on a fixed scale, the box's size); see ``robust_features``.

Any kind may add the shape cues (``FeatureSettings.shape_cues``; ``shape_cue_features``): the
particle's elongation, skeleton length over width, curl (how far its skeleton bends away from a
straight line) and skeleton end count, measured on a mask of contrast-normalised intensity at a
fixed size, so neither colour, contrast nor magnification changes them.

Every vector has a fixed length per kind and holds no NaN or infinity, whatever the crop
(1x1, flat, all black, very long and thin): undefined quantities are 0.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np
from joblib import Parallel, delayed
from skimage.feature import graycomatrix, graycoprops, local_binary_pattern
from skimage.measure import label, regionprops, shannon_entropy
from tqdm import tqdm

from microplastics.core import fileio
from microplastics.core.errors import InputError
from microplastics.data.dataset import settings_digest
from microplastics.data.shape_cues import (SHAPE_CUE_NAMES, SMOOTH_SIGMA, cue_mask, normalised_intensity,
                                           robust_mask, shape_cue_features)
from microplastics.core.images import ImageReadError, border_pixels, particle_mask, read_rgb, to_uint8

FEATURE_KINDS = ("original", "full", "robust")
# Bump when a feature's definition changes: old caches then miss instead of being reused.
FEATURE_VERSION = 2
CACHE_DIR = ".cache"


@dataclass(frozen=True)
class FeatureSettings:
    """Everything that changes the numbers; saved in model.joblib and part of the cache key."""

    kind: str = "full"
    size: int = 64              # side of the square grayscale crop the study's features use
    canny_low: int = 100
    canny_high: int = 200
    lbp_points: int = 8
    lbp_radius: float = 1.0
    shape_cues: bool = False    # False for models saved before the cues existed
    version: int = FEATURE_VERSION

    def __post_init__(self) -> None:
        if self.kind not in FEATURE_KINDS:
            raise ValueError(f"unknown feature kind {self.kind!r}; expected one of {list(FEATURE_KINDS)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


ORIGINAL_NAMES = ["mean", "std", "median", "variance", "skewness", "kurtosis",
                  "glcm_contrast", "glcm_homogeneity", "glcm_correlation",
                  "edge_density", "edge_contours", "edge_contour_mean_area", "entropy"]
COLOUR_NAMES = ["r_mean", "g_mean", "b_mean", "r_std", "g_std", "b_std",
                "sat_mean", "sat_std", "val_mean", "val_std", "hue_cos", "hue_sin", "colourfulness",
                "lab_a_mean", "lab_b_mean"]
SIZE_NAMES = ["crop_log_area", "crop_log_aspect"]
SHAPE_NAMES = ["area_fraction", "eccentricity", "solidity", "extent", "aspect_ratio", "perimeter_to_area",
               "circularity", "n_regions", "particle_contrast"] + [f"hu_{i}" for i in range(1, 8)]


def feature_names(kind: str = "full", settings: FeatureSettings | None = None) -> list[str]:
    """Names of the vector's entries, in order."""
    settings = settings or FeatureSettings(kind=kind)
    cues = list(SHAPE_CUE_NAMES) if settings.shape_cues else []
    if settings.kind == "original":
        return list(ORIGINAL_NAMES) + cues
    if settings.kind == "robust":
        return list(ROBUST_NAMES) + cues
    lbp = [f"lbp_{i}" for i in range(settings.lbp_points + 2)]
    return ORIGINAL_NAMES + COLOUR_NAMES + SIZE_NAMES + SHAPE_NAMES + lbp + cues


# ---------------------------------------------------------------- one crop

def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Accept grey, RGB or RGBA; uint8, other integers (as the photo reader scales them:
    ``core.images.to_uint8``), bool or float ([0, 1] or 0..255); return (H, W, 3) uint8."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"expected an (H, W), (H, W, 3) or (H, W, 4) image, got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"empty image of shape {image.shape}")
    image = image[:, :, :3]
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    elif np.issubdtype(image.dtype, np.integer):
        # 16-bit microscope images and the like: the one rule of the photo reader (core.images),
        # so an array handed in scores as the same photo read from its file would
        image = to_uint8(image)
    elif image.dtype != np.uint8:  # floats: [0, 1] as skimage writes them, else taken as 0..255
        scale = 255.0 if np.nanmax(image, initial=0) <= 1.0 else 1.0
        image = np.clip(np.nan_to_num(image.astype(np.float64) * scale), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image)


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    # Area averaging when shrinking keeps thin fibres visible; bilinear when enlarging.
    h, w = image.shape[:2]
    interp = cv2.INTER_AREA if h >= size and w >= size else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interp)


def extract_features(image: np.ndarray, kind: str = "full", settings: FeatureSettings | None = None) -> np.ndarray:
    """The feature vector of one crop (float64, fixed length per kind, finite)."""
    settings = settings or FeatureSettings(kind=kind)
    rgb_native = as_rgb_uint8(image)
    cues = [shape_cue_features(cue_mask(rgb_native))] if settings.shape_cues else []
    if settings.kind == "robust":
        parts = [robust_features(rgb_native)]
    else:
        rgb = resize_square(rgb_native, settings.size)
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        parts = [original_features(gray, settings)]
        if settings.kind == "full":
            parts += [colour_features(rgb), size_features(rgb_native.shape[:2]), shape_features(gray),
                      lbp_histogram(gray, settings)]
    vector = np.concatenate(parts + cues).astype(np.float64)
    return np.nan_to_num(vector, nan=0.0, posinf=0.0, neginf=0.0)


def original_features(gray: np.ndarray, settings: FeatureSettings) -> np.ndarray:
    values = gray.astype(np.float64).ravel()
    skew, kurt = moments(values)
    std = values.std()
    glcm = cooccurrence(gray)
    edges = cv2.Canny(gray, settings.canny_low, settings.canny_high)
    contours, _ = cv2.findContours(edges, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    areas = [cv2.contourArea(c) for c in contours]
    return np.array([values.mean(), std, np.median(values), values.var(), skew, kurt,
                     graycoprops(glcm, "contrast")[0, 0], graycoprops(glcm, "homogeneity")[0, 0],
                     graycoprops(glcm, "correlation")[0, 0],
                     np.count_nonzero(edges) / edges.size, len(contours), np.mean(areas) if areas else 0.0,
                     shannon_entropy(gray)])


def cooccurrence(gray: np.ndarray) -> np.ndarray:
    """The study's GLCM (distance 1, angle 0, symmetric, normalised) over the grey levels in use.

    Contrast, homogeneity and correlation depend only on level differences and deviations
    from the mean, so shifting the levels down to start at 0 and leaving out the empty levels
    above changes none of them (a test checks this against levels=256), while the matrix
    shrinks from 256x256 to the crop's range: several times faster.
    """
    low = int(gray.min())
    shifted = gray - np.uint8(low)
    return graycomatrix(shifted, distances=[1], angles=[0], levels=int(shifted.max()) + 1, symmetric=True,
                        normed=True)


def moments(values: np.ndarray) -> tuple[float, float]:
    """Skewness and excess kurtosis, as scipy.stats.skew/kurtosis with their defaults.

    Written out because scipy's input checks cost more than the sums on 4,096 pixels; a
    flat crop, where scipy gives NaN, has neither: 0.
    """
    centred = values - values.mean()
    var = np.mean(centred ** 2)
    if var <= 0:
        return 0.0, 0.0
    return float(np.mean(centred ** 3) / var ** 1.5), float(np.mean(centred ** 4) / var ** 2 - 3.0)


def colour_features(rgb: np.ndarray) -> np.ndarray:
    pixels = rgb.reshape(-1, 3).astype(np.float64)
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV).reshape(-1, 3).astype(np.float64)
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float64)
    sat, val = hsv[:, 1] / 255.0, hsv[:, 2] / 255.0
    # Hue is an angle (OpenCV: 0..179 for 0..360 degrees); average it as a saturation-weighted
    # vector so grey pixels, whose hue means nothing, do not pull it about.
    angle = hsv[:, 0] * (2 * np.pi / 180.0)
    weight = sat.sum()
    hue_cos = float((sat * np.cos(angle)).sum() / weight) if weight > 0 else 0.0
    hue_sin = float((sat * np.sin(angle)).sum() / weight) if weight > 0 else 0.0
    # Hasler and Suesstrunk's colourfulness: opponent-colour spread and offset.
    rg = pixels[:, 0] - pixels[:, 1]
    yb = 0.5 * (pixels[:, 0] + pixels[:, 1]) - pixels[:, 2]
    colourfulness = np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())
    return np.array([*pixels.mean(axis=0) / 255.0, *pixels.std(axis=0) / 255.0,
                     sat.mean(), sat.std(), val.mean(), val.std(), hue_cos, hue_sin, colourfulness / 255.0,
                     lab[:, 1].mean() - 128.0, lab[:, 2].mean() - 128.0])


def size_features(shape: tuple[int, int]) -> np.ndarray:
    """The crop's own size and elongation, lost when it is resized to a square."""
    h, w = shape
    return np.array([np.log(h * w), abs(np.log(h / w))])


def shape_features(gray: np.ndarray) -> np.ndarray:
    mask = particle_mask(gray)
    labels = label(mask, connectivity=2)
    regions = regionprops(labels)
    n_shape = len(SHAPE_NAMES)
    if not regions:
        return np.zeros(n_shape)
    region = max(regions, key=lambda r: r.area)  # the particle: its largest connected piece
    particle = labels == region.label
    inside, outside = gray[particle], gray[~particle]
    contrast = (inside.mean() - outside.mean()) / 255.0 if outside.size else 0.0
    area_fraction, eccentricity, solidity, extent, aspect, circularity = region_shape(region, mask.size)
    return np.array([area_fraction, eccentricity, solidity, extent, aspect, region.perimeter / region.area,
                     circularity, len(regions), contrast, *signed_log_hu(particle, 7)])


def region_shape(region, n_pixels: int) -> tuple[float, ...]:
    """Area fraction, eccentricity, solidity, extent, aspect ratio and circularity of one region."""
    area, perimeter = float(region.area), region.perimeter
    major, minor = region.axis_major_length, region.axis_minor_length
    return (area / n_pixels, region.eccentricity, region.solidity, region.extent,
            major / minor if minor > 0 else major, 4 * np.pi * area / perimeter ** 2 if perimeter > 0 else 0.0)


def signed_log_hu(mask: np.ndarray, count: int) -> np.ndarray:
    """The first ``count`` Hu moments of a mask; they span many orders of magnitude, the signed log
    brings them to one scale."""
    hu = cv2.HuMoments(cv2.moments(mask.astype(np.uint8), binaryImage=True)).ravel()[:count]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(hu != 0, -np.sign(hu) * np.log10(np.abs(hu)), 0.0)


def lbp_histogram(gray: np.ndarray, settings: FeatureSettings) -> np.ndarray:
    """Uniform LBP codes (P + 2 of them) as a normalised histogram: local texture."""
    codes = local_binary_pattern(gray, settings.lbp_points, settings.lbp_radius, method="uniform")
    n_bins = settings.lbp_points + 2
    hist = np.bincount(codes.astype(np.int64).ravel(), minlength=n_bins)[:n_bins]
    return hist / hist.sum()


# ---------------------------------------------------------------- robust: stable under imaging changes

# The ``robust`` kind: measures that survive another microscope's light, white balance, focus,
# noise and resolution. Every crop is first brought to one scale (ROBUST_SIZE px, area-averaged,
# then lightly smoothed), so texture is measured on a fixed scale whatever the camera's
# resolution or noise; intensities are then normalised per crop (background level subtracted,
# divided by the crop's own spread), which cancels gain, offset and contrast changes; colour is
# only ever compared with the crop's own background, channel by channel, which cancels a
# white-balance shift. The box's size and elongation, untouched by any imaging change, are kept.
ROBUST_SIZE = 32
ROBUST_SMOOTH_SIGMA = SMOOTH_SIGMA  # the shape cues' smoothing too
ROBUST_NAMES = (SIZE_NAMES
                + ["z_mean", "z_std", "z_skew", "z_p10", "z_p50", "z_p90", "z_polarity"]
                + ["rel_chroma_r", "rel_chroma_g", "rel_chroma_b", "rel_saturation"]
                + ["mask_area", "mask_eccentricity", "mask_solidity", "mask_extent", "mask_aspect",
                   "mask_circularity", "mask_pieces", "hu_1", "hu_2", "hu_3"]
                + ["grad_mean", "grad_inside", "grad_edge_ratio", "glcm_contrast_c", "glcm_homogeneity_c",
                   "glcm_correlation_c", "lap_var"])


def robust_features(rgb_native: np.ndarray) -> np.ndarray:
    """The ``robust`` vector of one RGB uint8 crop (see ROBUST_NAMES)."""
    rgb = cv2.resize(rgb_native, (ROBUST_SIZE, ROBUST_SIZE), interpolation=cv2.INTER_AREA).astype(np.float32)
    rgb = cv2.GaussianBlur(rgb, (0, 0), ROBUST_SMOOTH_SIGMA)
    gray = rgb.mean(axis=2)
    z = normalised_intensity(gray)
    mask = robust_mask(z)
    parts = [size_features(rgb_native.shape[:2]), intensity_shape_stats(z, mask), relative_colour(rgb, mask),
             mask_shape(mask), fixed_scale_texture(z, mask)]
    vector = np.concatenate(parts).astype(np.float64)
    return np.nan_to_num(vector, nan=0.0, posinf=0.0, neginf=0.0)


def intensity_shape_stats(z: np.ndarray, mask: np.ndarray) -> np.ndarray:
    values = z.ravel().astype(np.float64)
    skew, _ = moments(values)
    inside = z[mask] if mask.any() else values
    return np.array([values.mean(), values.std(), skew, *np.percentile(values, [10, 50, 90]),
                     float(np.sign(np.median(inside))) * min(1.0, abs(float(np.median(inside))))])


def relative_colour(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The particle's colour relative to its own background, channel by channel (white balance cancels)."""
    if not mask.any() or mask.all():
        return np.zeros(4)
    eps = 8.0
    particle = rgb[mask].mean(axis=0) + eps
    background = np.median(border_pixels(rgb), axis=0) + eps
    log_ratio = np.log(particle / background)
    chroma = log_ratio - log_ratio.mean()  # a common gain of all channels cancels too
    return np.array([*chroma, float(np.abs(chroma).sum())])


def mask_shape(mask: np.ndarray) -> np.ndarray:
    regions = regionprops(mask.astype(np.uint8))
    if not regions:
        return np.zeros(10)
    # robust_mask keeps one connected piece, so "mask_pieces" is 1 whenever there is a particle
    # (the column stays, so that cached feature files keep their layout)
    return np.array([*region_shape(regions[0], mask.size), 1.0, *signed_log_hu(mask, 3)])


def fixed_scale_texture(z: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Gradients, co-occurrence (16 levels) and Laplacian energy of the normalised crop, at one scale."""
    gy, gx = np.gradient(z)
    grad = np.hypot(gx, gy)
    edge = mask ^ cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    grad_inside = float(grad[mask].mean()) if mask.any() else 0.0
    grad_edge = float(grad[edge].mean()) if edge.any() else 0.0
    levels = np.clip(np.rint((np.clip(z, -1.5, 1.5) + 1.5) / 3.0 * 15), 0, 15).astype(np.uint8)
    glcm = graycomatrix(levels, distances=[2], angles=[0, np.pi / 2], levels=16, symmetric=True, normed=True)
    lap = cv2.Laplacian(z.astype(np.float32), cv2.CV_32F)
    return np.array([grad.mean(), grad_inside, grad_inside / grad_edge if grad_edge > 0 else 0.0,
                     graycoprops(glcm, "contrast").mean(), graycoprops(glcm, "homogeneity").mean(),
                     graycoprops(glcm, "correlation").mean(), float(lap.var())])


# ---------------------------------------------------------------- many crops

def _features_of_files(paths: Sequence[str], start: int, settings: FeatureSettings) -> np.ndarray:
    return np.stack([extract_features(read_rgb(p), settings=settings) for p in paths])


def _augmented_features_of_files(paths: Sequence[str], start: int, settings: FeatureSettings,
                                 seed: int, copies: int, robust: bool, scale_augment: float,
                                 swap_background: float = 0.0) -> np.ndarray:
    from microplastics.data.augment import RobustAugmenter, item_seed
    from microplastics.data.background_swap import swap_background as swap_filter
    from microplastics.data.scale import random_rescale

    augment = RobustAugmenter(seed)
    rows = []
    for index, path in enumerate(paths, start=start):
        image = read_rgb(path)
        for view in range(copies):
            # the magnification drawn first, from its own seed, so it does not shift the robust draws
            copy = random_rescale(image, scale_augment, np.random.default_rng(item_seed(seed + 1, view, index)))
            if swap_background > 0:  # another filter under the particle, from a seed of its own too
                rng = np.random.default_rng(item_seed(seed + 2, view, index))
                copy = swap_filter(copy, rng) if rng.random() < swap_background else copy
            rows.append(extract_features(augment(copy, view, index) if robust else copy, settings=settings))
    return np.stack(rows)


def _in_chunks(task: Callable[..., np.ndarray], paths: list[str], *args, workers: int, desc: str,
               progress: bool) -> np.ndarray:
    """``task(chunk, index of its first path, *args)`` over chunks of ``paths`` in ``workers`` processes,
    results stacked in order, with a progress bar."""
    # Chunks of a few dozen crops: enough work per task that process overhead stays small,
    # few enough crops that the progress bar moves.
    chunk = max(8, min(64, len(paths) // (4 * max(1, workers)) or 8))
    starts = range(0, len(paths), chunk)
    bar = tqdm(total=len(paths), desc=desc, unit="crop", disable=not progress)
    out: list[np.ndarray] = []
    try:
        jobs = Parallel(n_jobs=max(1, workers), return_as="generator")(
            delayed(task)(paths[s:s + chunk], s, *args) for s in starts)
        for s, result in zip(starts, jobs):
            out.append(result)
            bar.update(min(chunk, len(paths) - s))
    except ImageReadError as err:
        raise InputError(f"{err}; rebuild the data folder with data-preprocessing.py") from err
    finally:
        bar.close()
    return np.concatenate(out)


def extract_from_files(paths: Sequence[str | Path], settings: FeatureSettings, workers: int = 1,
                       desc: str = "features", progress: bool = True) -> np.ndarray:
    """Feature matrix (n, d) of image files, computed in ``workers`` processes with a progress bar."""
    paths = [os.fspath(p) for p in paths]
    if not paths:
        return np.zeros((0, len(feature_names(settings=settings))))
    return _in_chunks(_features_of_files, paths, settings, workers=workers, desc=desc, progress=progress)


def augmented_features(paths: Sequence[str | Path], settings: FeatureSettings, copies: int, seed: int,
                       workers: int = 1, progress: bool = True, robust: bool = True,
                       scale_augment: float = 1.0, swap_background: float = 0.0) -> np.ndarray:
    """Features of ``copies`` augmented versions of each image, (len(paths) * copies, d): robust-augmented
    (``robust``) and, with ``scale_augment`` F > 1, first rescaled by a random factor in [1/F, F]; with
    ``swap_background`` P > 0 then put on another filter with probability P (``data.background_swap``).

    Rows are ordered crop by crop (all copies of crop 0, then of crop 1, ...); copy ``v`` of
    crop ``i`` is drawn with a seed made of (seed, v, i), so the matrix does not depend on
    ``workers``.
    """
    paths = [os.fspath(p) for p in paths]
    if not paths or copies < 1:
        return np.zeros((0, len(feature_names(settings=settings))))
    return _in_chunks(_augmented_features_of_files, paths, settings, seed, copies, robust, scale_augment,
                      swap_background, workers=workers, desc=f"augmented {settings.kind} features", progress=progress)


def cache_key(manifest_digest: str, settings: FeatureSettings) -> str:
    """The manifest's hash and the feature settings, hashed: a changed crop list or setting misses."""
    return settings_digest({"manifest": manifest_digest, **settings.to_dict()})


def cache_path(data_dir: str | Path, manifest_digest: str, settings: FeatureSettings) -> Path:
    return Path(data_dir) / CACHE_DIR / f"features-{settings.kind}-{cache_key(manifest_digest, settings)}.npz"


def load_cached(path: Path, paths: Sequence[str]) -> np.ndarray | None:
    """The cached matrix when it exists and lists exactly these crops; else None."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            if list(npz["paths"]) != list(paths):
                return None
            return npz["features"]
    except (OSError, ValueError, KeyError):
        return None  # a damaged cache is recomputed, not trusted


def save_cache(path: Path, paths: Sequence[str], matrix: np.ndarray) -> bool:
    """Write the cache atomically; a read-only data folder only costs a recomputation next time."""
    try:
        with fileio.atomic_path(path) as tmp:
            np.savez_compressed(tmp, features=matrix, paths=np.asarray(list(paths), dtype=str))
        return True
    except OSError:
        return False


def dataset_features(data_dir: str | Path, rel_paths: Sequence[str], manifest_digest: str,
                     settings: FeatureSettings, workers: int = 1, use_cache: bool = True) -> tuple[np.ndarray, bool]:
    """Features of the crops ``rel_paths`` (relative to ``data_dir``); returns (matrix, from_cache)."""
    data_dir = Path(data_dir)
    path = cache_path(data_dir, manifest_digest, settings)
    if use_cache:
        cached = load_cached(path, rel_paths)
        if cached is not None:
            return cached, True
    matrix = extract_from_files([data_dir / p for p in rel_paths], settings, workers=workers,
                                desc=f"{settings.kind} features")
    if use_cache:
        save_cache(path, rel_paths, matrix)
    return matrix, False
