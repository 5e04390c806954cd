"""Find particles in a photo without training: background, colour difference, components.

``find_particles(image, settings, um_per_px)`` returns a label image (0 = background) and one
``Found`` per particle with its box in DeepParticle's convention (max exclusive). The steps:

1. the lit field of view (``field_of_view``): a round field seen through the eyepiece leaves a
   dark surround, which is masked out together with a thin, shadowed rim;
2. the background (``estimate_background``): a normalised Gaussian of the lit pixels on a
   small copy of the photo, twice, the second time without what the first found, so vignetting
   and uneven light are removed and particles do not raise their own background;
3. the difference: CIELAB colour distance to the background (dark fibres, white pellets, blue
   or faint yellow films all differ from the paper in some of L, a, b), in units of the photo's
   own noise (median absolute deviation), so one threshold suits bright and dim photos;
4. hysteresis: a particle needs a core above ``high`` and grows over pixels above ``low``,
   which keeps faint films and thin fibres whole without picking up paper texture;
5. morphology and components: a small closing, holes filled, tiny pieces dropped; thin
   pieces close to each other joined (a fibre crossing a darker patch stays one particle);
   compact blobs with two or more cores split by a watershed on the distance transform;
6. overlays dropped: scale bars and text are drawn in flat, saturated colours, which a
   photographed particle never is.

Sizes are in pixels unless ``um_per_px`` is given, then the ``*_um`` settings win.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage.filters import apply_hysteresis_threshold
from skimage.morphology import h_maxima
from skimage.segmentation import relabel_sequential, watershed

WORK_SIDE = 160  # the background and the field of view are estimated on a copy this size


@dataclass(frozen=True)
class FinderSettings:
    """What counts as a particle. ``*_um`` values apply when the scale is known."""

    high: float = 9.0            # core threshold, in noise units of the colour difference
    low: float = 3.5             # growth threshold, same units
    min_area_px: int = 20        # smaller components are noise (used without a scale)
    min_diameter_um: float | None = None  # with a scale: smallest equivalent diameter kept
    background_fraction: float = 0.05     # Gaussian sigma of the background, as a share of the shorter side
    background_um: float | None = None    # with a scale: that sigma in micrometres instead
    join_gap_px: int = 3         # thin pieces closer than this are one particle
    split_depth: float = 0.5     # watershed split when a core stands this share of its radius above the neck
    core_share: float = 0.3      # touching particles are told apart on their pixels above this share of the peak
    box_pad_px: int = 3          # boxes widened by this (a particle's blurred edge lies outside the threshold)
    rim_fraction: float = 0.02  # shadowed rim of a round field dropped, as a share of the shorter side
    rim_band_fraction: float = 0.04  # components mostly this close to a round field's edge are rim shadow
    overlay_share: float = 0.5   # a component with a larger share on or beside drawn strokes is an overlay


@dataclass(frozen=True)
class Found:
    """One found particle: its label in the label image and its box (max exclusive)."""

    label: int
    minr: int
    minc: int
    maxr: int
    maxc: int
    area_px: int


def find_particles(image: np.ndarray, settings: FinderSettings = FinderSettings(),
                   um_per_px: float | None = None) -> tuple[np.ndarray, list[Found]]:
    """Label image (int32, 0 = background) and the particles of an RGB uint8 photo."""
    lit = field_of_view(image, settings.rim_fraction)
    difference = colour_difference(image, lit, background_sigma(image.shape, settings, um_per_px))
    overlay = overlay_pixels(image)
    # saturated pixels never belong to a particle, so a scale bar touching one comes off it;
    # the holes that leaves inside a particle (a clipped highlight) are filled again
    mask = fill_holes(segment(difference, lit, settings) & ~overlay)
    labels = components(mask, difference, min_area(settings, um_per_px), settings)
    labels = drop_overlays(labels, overlay_strokes(overlay), settings.overlay_share)
    labels = drop_rim_shadows(labels, lit, round(settings.rim_band_fraction * min(image.shape[:2])))
    return labels, boxes_of(labels, settings.box_pad_px)


# ----------------------------------------------------------------------------- field and background

def _small(image: np.ndarray) -> tuple[np.ndarray, float]:
    """A copy whose longer side is WORK_SIDE px, and the factor back to full size."""
    scale = WORK_SIDE / max(image.shape[:2])
    if scale >= 1:
        return image.astype(np.float32), 1.0
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image.astype(np.float32), size, interpolation=cv2.INTER_AREA), scale


def field_of_view(image: np.ndarray, rim_fraction: float = 0.02) -> np.ndarray:
    """Boolean mask of the lit field; the whole photo when there is no dark surround."""
    grey, scale = _small(image.mean(axis=2) if image.ndim == 3 else image)
    bright = float(np.percentile(grey, 99))
    dark = grey < 0.35 * bright  # the surround of a round field is near black, the paper is not
    if bright <= 0 or dark.mean() < 0.03:
        return np.ones(image.shape[:2], dtype=bool)
    lit = ~ndi.binary_opening(dark, iterations=1)  # thin dark particles are not surround
    labels, n = ndi.label(lit)
    if n == 0:
        return np.ones(image.shape[:2], dtype=bool)
    sizes = ndi.sum(lit, labels, index=range(1, n + 1))
    lit = ndi.binary_fill_holes(labels == 1 + int(np.argmax(sizes)))
    rim = max(1, round(rim_fraction * min(grey.shape)))
    lit = ndi.binary_erosion(lit, iterations=rim, border_value=1)
    full = cv2.resize(lit.astype(np.uint8), (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)
    return full.astype(bool)


def background_sigma(shape: tuple[int, ...], settings: FinderSettings, um_per_px: float | None) -> float:
    """Gaussian sigma of the background estimate in full-size pixels."""
    if settings.background_um and um_per_px:
        return settings.background_um / um_per_px
    return settings.background_fraction * min(shape[:2])


def estimate_background(lab: np.ndarray, lit: np.ndarray, sigma_px: float) -> np.ndarray:
    """Smooth background of a Lab image at full size, from the lit pixels minus what stands out.

    Computed on a small copy: a median over about four sigmas (which particles smaller than
    half of it cannot move) says what stands out; a normalised Gaussian of the lit pixels
    without those is the background, so particles do not raise their own background.
    """
    small_lab, scale = _small(lab)
    small_lit = _small(lit.astype(np.float32))[0] > 0.5
    sigma = max(0.5, sigma_px * scale)
    filled = np.where(small_lit[..., None], small_lab, np.median(small_lab[small_lit], axis=0)) \
        if small_lit.any() else small_lab
    rough = _median(filled, int(4 * sigma))
    standing_out = cv2.dilate((_scores(small_lab, rough, small_lit) > 3).astype(np.uint8), np.ones((3, 3), np.uint8))
    background = _normalised_blur(small_lab, small_lit & ~standing_out.astype(bool), sigma)
    return cv2.resize(background, (lab.shape[1], lab.shape[0]), interpolation=cv2.INTER_LINEAR)


def _normalised_blur(values: np.ndarray, weight: np.ndarray, sigma: float) -> np.ndarray:
    w = weight.astype(np.float32)
    num = cv2.GaussianBlur(values * w[..., None], (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    den = cv2.GaussianBlur(w, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    return num / np.maximum(den, 1e-3)[..., None]


def to_lab(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)


def colour_difference(image: np.ndarray, lit: np.ndarray, sigma_px: float, local_px: int = 15) -> np.ndarray:
    """How far each pixel stands out from the paper, in noise units; 0 outside the lit field.

    Two backgrounds: a smooth one (lighting, vignetting) for large particles, and a local
    median (``local_px`` wide) that also removes the paper's mottling, for small pellets and
    thin fibres. Against each, lighter, darker and more coloured pixels are scored apart,
    each in units of its own spread, since paper texture is mostly darker mottling and would
    otherwise drown small bright particles. The score is the largest of the six.
    """
    lab = to_lab(image)
    background = estimate_background(lab, lit, sigma_px)
    smooth = _scores(lab, background, lit)
    local = _scores(lab, local_median(lab, np.where(lit[..., None], lab, background), local_px), lit)
    score = cv2.GaussianBlur(np.maximum(smooth, local), (0, 0), 0.7)  # JPEG blocks and sensor noise
    score[~lit] = 0
    return score


def local_median(lab: np.ndarray, filled: np.ndarray, size: int) -> np.ndarray:
    """Median of ``filled`` (Lab, the surround replaced by the smooth background, so the dark
    surround does not make the field's edge look bright) over ``size`` px, at half size."""
    height, width = lab.shape[:2]
    half = cv2.resize(filled, (max(1, width // 2), max(1, height // 2)), interpolation=cv2.INTER_AREA)
    return cv2.resize(_median(half, size // 2), (width, height), interpolation=cv2.INTER_LINEAR)


def _median(lab: np.ndarray, size: int) -> np.ndarray:
    """A ``size``-wide median of a Lab image, through uint8 (what OpenCV's large medians take)."""
    scale = np.array([2.55, 1.0, 1.0], np.float32)
    offset = np.array([0.0, 128.0, 128.0], np.float32)
    as_bytes = np.clip(lab * scale + offset, 0, 255).astype(np.uint8)
    return (cv2.medianBlur(as_bytes, max(3, size | 1)).astype(np.float32) - offset) / scale


def _scores(lab: np.ndarray, background: np.ndarray, lit: np.ndarray) -> np.ndarray:
    """max(lighter, darker, more coloured) than ``background``, each over its spread in the lit field."""
    d_light = lab[..., 0] - background[..., 0]
    d_colour = np.hypot(lab[..., 1] - background[..., 1], lab[..., 2] - background[..., 2])
    step = max(1, int(np.sqrt(lit.size / 40_000)))  # a sparse grid of pixels is enough for the spread
    grid = lit[::step, ::step]
    sample_l, sample_c = d_light[::step, ::step][grid], d_colour[::step, ::step][grid]
    if sample_l.size == 0:
        return np.zeros(lab.shape[:2], np.float32)
    p10, p50, p90 = np.percentile(sample_l, (10, 50, 90))
    up, down = max(0.3, (p90 - p50) / 1.2816), max(0.3, (p50 - p10) / 1.2816)  # one-sided sigmas
    colour = max(0.3, float(np.percentile(sample_c, 90)) / 2.146)  # Rayleigh sigma from its 90th percentile
    d_light = d_light - p50
    return np.maximum(np.maximum(d_light / up, -d_light / down), d_colour / colour).astype(np.float32)


# ----------------------------------------------------------------------------- segmentation

def min_area(settings: FinderSettings, um_per_px: float | None) -> int:
    if settings.min_diameter_um and um_per_px:
        return max(4, round(math.pi / 4 * (settings.min_diameter_um / um_per_px) ** 2))
    return settings.min_area_px


def segment(difference: np.ndarray, lit: np.ndarray, settings: FinderSettings) -> np.ndarray:
    """Hysteresis threshold and a small closing."""
    mask = apply_hysteresis_threshold(difference, settings.low, settings.high) & lit
    return cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE,
                            cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))).astype(bool)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """``mask`` with every region not reachable from the border filled (a flood fill)."""
    padded = np.pad(mask.astype(np.uint8), 1)
    outside = padded.copy()
    cv2.floodFill(outside, None, (0, 0), 1)
    return (padded | (1 - outside)).astype(bool)[1:-1, 1:-1]


def overlay_pixels(image: np.ndarray) -> np.ndarray:
    """Saturated pixels: white or black in all channels, as overlays are drawn and photos rarely are."""
    lo, hi = image.min(axis=2), image.max(axis=2)
    return (lo >= 250) | (hi <= 5)


def components(mask: np.ndarray, difference: np.ndarray, min_area_px: int, settings: FinderSettings) -> np.ndarray:
    """Connected components, thin close pieces joined, touching blobs split, small ones dropped."""
    labels, n = ndi.label(mask, structure=np.ones((3, 3)))
    if n == 0:
        return labels.astype(np.int32)
    labels = join_thin(labels, settings.join_gap_px)
    labels = split_touching(labels, difference, settings.split_depth, settings.core_share)
    return drop_small(labels, min_area_px)


def _thin_labels(labels: np.ndarray) -> np.ndarray:
    """Labels whose components are thin: the distance to the edge never exceeds 2.5 px."""
    dist = cv2.distanceTransform((labels > 0).astype(np.uint8), cv2.DIST_L2, 3)
    n = int(labels.max())
    peak = ndi.maximum(dist, labels, index=np.arange(1, n + 1))
    area = ndi.sum(labels > 0, labels, index=np.arange(1, n + 1))
    thin = (peak <= 2.5) & (area >= 6)
    return np.flatnonzero(thin) + 1


def join_thin(labels: np.ndarray, gap_px: int) -> np.ndarray:
    """Thin components (fibre pieces) within ``gap_px`` of each other get one label."""
    thin = _thin_labels(labels)
    if gap_px <= 0 or len(thin) < 2:
        return labels
    is_thin = np.zeros(int(labels.max()) + 1, bool)
    is_thin[thin] = True
    thin_mask = is_thin[labels]
    grown = cv2.dilate(thin_mask.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE,
                                                                             (2 * gap_px + 1,) * 2))
    groups, _ = ndi.label(grown, structure=np.ones((3, 3)))
    out = labels.copy()
    offset = int(labels.max())
    out[thin_mask] = offset + groups[thin_mask]
    return _relabel(out)


def split_touching(labels: np.ndarray, difference: np.ndarray, depth: float, core_share: float) -> np.ndarray:
    """Watershed of compact components with several cores, on the distance transform of their
    strong part (difference >= ``core_share`` of the component's peak): a strong particle's
    blurred edge fills the neck between touching neighbours, its strong part does not, and a
    film's faint rim around one core does not make two particles."""
    out = labels.copy()
    next_label = int(labels.max()) + 1
    for index, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        region = labels[box] == index
        values = difference[box]
        strong = region & (values >= core_share * float(values[region].max()))
        dist = cv2.distanceTransform(np.pad(strong, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
        radius = float(dist.max())
        if radius < 4 or strong.sum() > 12 * radius ** 2:  # too small to split, or long and thin
            continue
        cores, n = ndi.label(h_maxima(dist, max(1.5, depth * radius)), structure=np.ones((3, 3)))
        if n < 2:
            continue
        parts = watershed(-dist, cores, mask=region)
        view = out[box]
        for part in range(2, n + 1):
            view[parts == part] = next_label
            next_label += 1
    return _relabel(out)


def drop_small(labels: np.ndarray, min_area_px: int) -> np.ndarray:
    return _keep(labels, np.bincount(labels.ravel()) >= min_area_px)


def overlay_strokes(saturated: np.ndarray) -> np.ndarray:
    """The saturated regions drawn onto a photo: thin strokes (text, at most 3 px wide) or long
    filled rectangles (scale bars). A clipped highlight inside a particle is a compact blob, neither."""
    labels, n = ndi.label(saturated, structure=np.ones((3, 3)))
    if n == 0:
        return np.zeros_like(saturated)
    keep = np.zeros(n + 1, bool)
    dist = cv2.distanceTransform(saturated.astype(np.uint8), cv2.DIST_L2, 3)
    for index, box in enumerate(ndi.find_objects(labels), start=1):
        region = labels[box] == index
        area = int(region.sum())
        height, width = region.shape
        thin = float(dist[box][region].max()) <= 2.0
        bar = area >= 0.9 * height * width and max(height, width) >= 3 * min(height, width)
        keep[index] = area >= 6 and (thin or bar)
    return keep[labels]


def drop_overlays(labels: np.ndarray, strokes: np.ndarray, share: float) -> np.ndarray:
    """Remove components that lie mostly on or beside drawn strokes (their anti-aliased edges)."""
    n = int(labels.max())
    if n == 0 or not strokes.any():
        return labels
    near = cv2.dilate(strokes.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    frac = np.asarray(ndi.mean(near, labels, index=np.arange(1, n + 1)))
    return _keep(labels, np.concatenate([[False], frac <= share]))


def drop_rim_shadows(labels: np.ndarray, lit: np.ndarray, band_px: int) -> np.ndarray:
    """Remove components that lie mostly in the band of ``band_px`` along the field's edge: the
    shadowed, fast-darkening rim of a round field, which no background follows. A particle that
    merely reaches the edge has most of its body inside and stays."""
    if lit.all() or band_px < 1:
        return labels
    size = 2 * band_px + 1
    inner = cv2.erode(np.pad(lit, band_px).astype(np.uint8), np.ones((size, size), np.uint8))
    band = lit & ~inner[band_px:-band_px, band_px:-band_px].astype(bool)
    n = int(labels.max())
    if n == 0:
        return labels
    share = np.asarray(ndi.mean(band, labels, index=np.arange(1, n + 1)))
    return _keep(labels, np.concatenate([[False], share <= 0.5]))


def _keep(labels: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Only the labels where ``keep[label]`` (background stays 0), renumbered 1..n."""
    keep = keep.copy()
    keep[0] = False
    lut = np.zeros(len(keep), np.int32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1)
    return lut[labels]


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Labels 1..n without gaps, in the order of the old labels."""
    return relabel_sequential(labels.astype(np.int32))[0]


def boxes_of(labels: np.ndarray, pad: int = 0) -> list[Found]:
    """One Found per label, its box widened by ``pad`` and clipped to the photo."""
    height, width = labels.shape
    areas = np.bincount(labels.ravel())
    found = []
    for index, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        rows, cols = box
        found.append(Found(index, max(0, rows.start - pad), max(0, cols.start - pad), min(height, rows.stop + pad),
                           min(width, cols.stop + pad), int(areas[index])))
    return found
