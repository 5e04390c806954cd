"""Draw a synthetic DeepParticle-style MICRO folder: photos of particles on filter paper.

The folder has the real layout (``raw_img/<photo>``, ``annotation/<photo>.tsv``) and the six
real classes in a similar imbalance, so every stage of the pipeline can run without the
archive. The particles are drawn so that the classes differ the way real ones do (shape,
colour, texture), and the photos carry the nuisances of real ones (uneven light, paper
texture, tint, blur, sensor noise), so a model has to learn shape and colour, not a pixel value.

Everything comes from ``numpy.random.default_rng`` streams keyed by (seed, photo index), so
one seed gives byte-identical files, and photo ``i`` does not depend on how many are drawn.

``randomise=True`` draws the domain-randomised variant (``data-extraction.py --synthetic
--randomise``): every photo gets its own filter (colour, texture, debris, sludge-like clutter),
particle colours, scale, light, focus and field of view; particles are often flatly lit, faint
or in a loose box, and fibres often thin, faint and curly. It is drawn from a stream of its own,
so the plain photos stay exactly as they were.
"""
from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from microplastics.core.errors import InputError
from microplastics.core.fileio import atomic_path, write_text
from microplastics.data.origin import synthetic_origin, write_origin

CLASSES = ("foam", "hard", "line", "noise", "pellet", "reference")
# Chance of each class for a freely drawn particle; with the forced ones below the totals
# come near the real MICRO set (hard ~65-70 %, reference ~1-2 %).
CLASS_WEIGHTS = {"hard": 0.70, "line": 0.11, "pellet": 0.05, "foam": 0.055, "noise": 0.08, "reference": 0.005}
# Forced particles make every class appear in any run of >= 10 photos (reference at photo 0).
FORCED = {0: ("reference",), 5: ("foam", "pellet", "noise", "line")}
# The randomised preset draws the classes a model is trained on with them (fibres, fragments,
# beads) in a nearer balance: its photos are training material, not a copy of MICRO's imbalance.
RANDOM_CLASS_WEIGHTS = {"hard": 0.36, "line": 0.30, "pellet": 0.22, "foam": 0.05, "noise": 0.06, "reference": 0.01}
SS = 4  # supersampling factor: particles are drawn 4x larger and shrunk, for smooth edges
PAD = 6  # empty border of a particle patch, room for its shadow
HEADER = "ID\tminr\tminc\tmaxr\tmaxc\tclass"
JPEG_QUALITY = 92
_BASE_TIME = dt.datetime(2022, 3, 28, 10, 0, 0)


@dataclass(frozen=True)
class Particle:
    """One drawn particle: colour and coverage of a small patch, and its tight box in the patch."""

    label: str
    rgb: np.ndarray  # (h, w, 3) float32, 0..255
    alpha: np.ndarray  # (h, w) float32, 0..1: how much the particle covers each pixel
    box: tuple[int, int, int, int]  # minr, minc, maxr, maxc inside the patch, max exclusive
    shadow: float  # how dark its soft shadow on the paper is (0: none)


def write_synthetic_micro(out_dir: str | Path, n_images: int = 60, seed: int = 42,
                          image_size: tuple[int, int] = (480, 640), randomise: bool = False,
                          progress: bool = False) -> dict:
    """Write ``n_images`` synthetic photos and their annotation TSVs into ``out_dir``.

    ``image_size`` is (height, width); ``randomise`` draws the domain-randomised variant;
    ``progress`` shows a progress bar on stderr.
    Returns a summary: photos, boxes, boxes per class.
    """
    height, width = _check_args(n_images, image_size)
    out = Path(out_dir)
    (out / "raw_img").mkdir(parents=True, exist_ok=True)
    (out / "annotation").mkdir(parents=True, exist_ok=True)
    counts = {name: 0 for name in CLASSES}
    for index in tqdm(range(n_images), desc="synthetic photos", unit="photo", disable=not progress, file=sys.stderr):
        name = f"syn_{index + 1:04d}.jpg"
        image, rows = draw_photo(seed, index, (height, width), randomise=randomise)
        _write_jpeg(out / "raw_img" / name, image)
        write_text(out / "annotation" / f"{name}.tsv", _tsv(rows, index))
        for label, _box in rows:
            counts[label] += 1
    write_text(out / "README.txt", _readme(n_images, seed, (height, width), randomise))
    record = synthetic_origin(n_images, seed, (height, width))
    write_origin(out, {**record, "randomised": True} if randomise else record)
    summary = {"photos": n_images, "boxes": sum(counts.values()), "boxes_per_class": counts,
               "seed": seed, "image_size": [height, width]}
    return {**summary, "randomised": True} if randomise else summary


def _check_args(n_images: int, image_size: tuple[int, int]) -> tuple[int, int]:
    if int(n_images) < 1:
        raise InputError(f"the number of synthetic photos must be at least 1, got {n_images}")
    height, width = (int(v) for v in image_size)
    if height < 160 or width < 160:
        raise InputError(f"synthetic photos must be at least 160x160 pixels, got {height}x{width}")
    return height, width


def photo_classes(seed: int, index: int, randomise: bool = False) -> list[str]:
    """The classes of photo ``index``: drawn from their own stream, so placement cannot change them."""
    rng = np.random.default_rng([seed, index, 0])
    n = int(rng.integers(4, 16))
    forced = list(FORCED.get(index % 10, ()))
    weights = RANDOM_CLASS_WEIGHTS if randomise else CLASS_WEIGHTS
    names = list(weights)
    p = np.array([weights[k] for k in names])
    drawn = rng.choice(len(names), size=n - len(forced), p=p / p.sum())
    return forced + [names[k] for k in drawn]


def draw_photo(seed: int, index: int, size: tuple[int, int],
               randomise: bool = False) -> tuple[np.ndarray, list[tuple[str, tuple]]]:
    """Draw photo ``index``: an (H, W, 3) uint8 image and its (class, box) rows.

    With ``randomise`` the photo's look comes from a stream of its own, ``[seed, index, 2]``:
    the particle stream is the plain photo's, so plain photos are untouched by the option."""
    rng = np.random.default_rng([seed, index, 1])
    height, width = size
    look = np.random.default_rng([seed, index, 2]) if randomise else None
    canvas = random_filter(look, height, width) if look is not None else _background(rng, height, width)
    particles = [draw_particle(label, rng) for label in photo_classes(seed, index, randomise)]
    inside = None
    if look is not None:
        scale = float(look.uniform(0.45, 1.1))  # another magnification
        particles = [randomise_particle(p, look, scale) for p in particles]
        field = _field_stop(look, height, width)
        inside = (lambda box: field[(box[0] + box[2]) // 2, (box[1] + box[3]) // 2] > 0.9) if field is not None \
            else None
    # Big particles first: they are the hardest to fit; rows keep the drawing order.
    order = sorted(range(len(particles)), key=lambda k: -particles[k].alpha.size)
    placed: dict[int, tuple[str, tuple]] = {}
    taken: list[tuple[int, int, int, int]] = []
    for k in order:
        spot = _place(rng, particles[k], taken, height, width, inside=inside)
        if spot is None:
            continue  # fits nowhere even shrunk: only in photos near the minimum size
        particle, (top, left) = spot
        _composite(canvas, particle, top, left)
        r0, c0, r1, c1 = particle.box
        box = (top + r0, left + c0, top + r1, left + c1)
        taken.append(box)
        placed[k] = (particle.label, box)
    image = _camera(rng, canvas) if look is None else _random_camera(look, canvas, field)
    return image, [placed[k] for k in sorted(placed)]


# --- particles ---------------------------------------------------------------------------

def draw_particle(label: str, rng: np.random.Generator) -> Particle:
    """Draw one particle of class ``label`` in its own patch."""
    if label not in _DRAWERS:
        raise ValueError(f"unknown class {label!r}; expected one of {', '.join(CLASSES)}")
    return _DRAWERS[label](rng)


def _patch(extent: float) -> tuple[int, np.ndarray]:
    """Side of a square patch (native pixels) holding ``extent`` pixels, and a supersampled mask."""
    side = int(np.ceil(extent)) + 2 * PAD
    return side, np.zeros((side * SS, side * SS), np.uint8)


def _finish(label: str, colour_ss: np.ndarray, mask_ss: np.ndarray, opacity: float = 1.0,
            shadow: float = 0.0, box: tuple[int, int, int, int] | None = None) -> Particle:
    """Shrink a supersampled drawing to native size (premultiplied, so edges keep their colour)."""
    alpha_ss = mask_ss.astype(np.float32) / 255.0
    size = (mask_ss.shape[1] // SS, mask_ss.shape[0] // SS)
    alpha = cv2.resize(alpha_ss, size, interpolation=cv2.INTER_AREA)
    premult = cv2.resize(colour_ss * alpha_ss[..., None], size, interpolation=cv2.INTER_AREA)
    rgb = premult / np.maximum(alpha, 1e-4)[..., None]
    alpha = np.clip(alpha * opacity, 0.0, 1.0).astype(np.float32)
    return Particle(label, np.clip(rgb, 0, 255).astype(np.float32), alpha, box or _tight_box(alpha), shadow)


def _tight_box(alpha: np.ndarray) -> tuple[int, int, int, int]:
    # Relative threshold: faint particles (noise) still get a box around what is visible.
    rows, cols = np.nonzero(alpha > 0.3 * max(float(alpha.max()), 1e-6))
    return int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1


def _colour(rng: np.random.Generator, palette: dict[str, tuple], weights: dict[str, float],
            jitter: float = 8.0) -> tuple[np.ndarray, float]:
    """A palette colour with a random shift, and its opacity."""
    names = list(weights)
    p = np.array([weights[k] for k in names])
    rgb, opacity = palette[names[int(rng.choice(len(names), p=p / p.sum()))]]
    shifted = np.array(rgb, np.float32) * rng.uniform(0.85, 1.1) + rng.normal(0, jitter, 3)
    return np.clip(shifted, 0, 255).astype(np.float32), opacity


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell: float) -> np.ndarray:
    """Zero-mean noise of unit scale that varies over about ``cell`` pixels."""
    small = rng.normal(0, 1, (max(2, int(shape[0] / cell) + 2), max(2, int(shape[1] / cell) + 2)))
    return cv2.resize(small.astype(np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def _grid(side_ss: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates of a supersampled patch, in native pixels from its centre."""
    axis = (np.arange(side_ss, dtype=np.float32) + 0.5) / SS - side_ss / (2 * SS)
    return np.meshgrid(axis, axis, indexing="ij")


FIBRE_COLOURS = {"blue": ((40, 70, 175), 0.95), "red": ((175, 35, 40), 0.95), "black": ((28, 28, 34), 0.95),
                 "green": ((35, 120, 60), 0.95), "purple": ((95, 50, 140), 0.9)}


def _draw_line(rng: np.random.Generator) -> Particle:
    """A fibre: a long thin curve (cubic Bezier with a wiggle), coloured, slightly uneven."""
    length = rng.uniform(35, 120)
    side, mask = _patch(length)
    t = np.linspace(0, 1, 96)[:, None]
    p0 = rng.uniform(-0.5, -0.35, 2) * length
    p3 = -p0 + rng.normal(0, 0.08 * length, 2)
    p1, p2 = rng.uniform(-0.7, 0.7, (2, 2)) * length
    curve = (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t ** 2 * p2 + t ** 3 * p3
    # A small sideways wiggle, as fibres kink along their length.
    normal = np.array([-(p3 - p0)[1], (p3 - p0)[0]]) / (np.linalg.norm(p3 - p0) + 1e-6)
    curve = curve + normal * rng.uniform(0, 0.07) * length * np.sin(2 * np.pi * rng.uniform(1, 3) * t)
    # Centre and scale into the patch (clipping would put corners into the fibre).
    curve = curve - (curve.max(axis=0) + curve.min(axis=0)) / 2
    curve = curve * min(1.0, length / 2 / max(float(np.abs(curve).max()), 1e-6))
    points = np.round((curve + side / 2) * SS).astype(np.int32)
    thickness = max(1, round(rng.uniform(1.4, 3.2) * SS))
    cv2.polylines(mask, [points[:, ::-1].copy()], False, 255, thickness, cv2.LINE_AA)
    colour, opacity = _colour(rng, FIBRE_COLOURS,
                              {"blue": 0.35, "black": 0.3, "red": 0.15, "green": 0.1, "purple": 0.1})
    # Fibres twist: their brightness varies along them.
    shade = 1 + 0.15 * _smooth_noise(rng, mask.shape, 12 * SS)
    return _finish("line", colour * shade[..., None], mask, opacity)


PELLET_COLOURS = {"white": ((232, 230, 222), 0.97), "amber": ((205, 145, 55), 0.9), "clear": ((215, 220, 205), 0.75),
                  "blue": ((60, 110, 200), 0.95), "red": ((190, 60, 55), 0.95), "green": ((70, 150, 90), 0.95),
                  "black": ((45, 45, 50), 0.97)}


def _draw_pellet(rng: np.random.Generator) -> Particle:
    """A bead: a near-circular ellipse lit like a sphere, with a specular highlight."""
    diameter = rng.uniform(14, 55)
    side, mask = _patch(diameter)
    a, b = diameter / 2, diameter / 2 * rng.uniform(0.82, 1.0)
    cv2.ellipse(mask, (side * SS // 2, side * SS // 2), (int(a * SS), int(b * SS)),
                float(rng.uniform(0, 180)), 0, 360, 255, -1, cv2.LINE_AA)
    yy, xx = _grid(mask.shape[0])
    rho2 = np.clip((yy ** 2 + xx ** 2) / (a * a), 0, 1)
    z = np.sqrt(1 - rho2)
    light = np.array([-0.45, -0.45, 0.77])  # from the upper left, as under a ring light off-axis
    lambert = 0.55 + 0.45 * np.clip((yy * light[0] + xx * light[1]) / a + z * light[2], 0, 1)
    spot = np.exp(-((yy + 0.35 * a) ** 2 + (xx + 0.35 * a) ** 2) / (2 * (0.18 * a) ** 2))
    colour, opacity = _colour(rng, PELLET_COLOURS, {"white": 0.3, "amber": 0.25, "clear": 0.1, "blue": 0.1,
                                                    "red": 0.08, "green": 0.07, "black": 0.1})
    rgb = colour * lambert[..., None] + (255 - colour * lambert[..., None]) * (0.75 * spot)[..., None]
    return _finish("pellet", rgb, mask, opacity, shadow=0.3)


def _draw_foam(rng: np.random.Generator) -> Particle:
    """A foam piece: pale, large, lumpy rounded outline, full of small darker pores."""
    radius = rng.uniform(22, 58)
    side, mask = _patch(2 * radius * 1.25)
    theta = np.linspace(0, 2 * np.pi, 120, endpoint=False)
    wobble = sum(rng.uniform(0, 0.22 / k) * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) for k in range(2, 7))
    r = radius * (1 + wobble) * np.array([1.0, rng.uniform(0.65, 1.0)])[:, None]
    outline = np.stack([r[0] * np.sin(theta), r[1] * np.cos(theta)], axis=1)
    points = np.round((outline + side / 2) * SS).astype(np.int32)
    cv2.fillPoly(mask, [points[:, ::-1].copy()], 255, cv2.LINE_AA)
    pores = np.zeros_like(mask)
    n_pores = int(np.pi * radius ** 2 / rng.uniform(25, 45))
    centres = rng.uniform(0, mask.shape[0], (n_pores, 2)).astype(np.int32)
    for (cy, cx), rad in zip(centres, rng.uniform(0.7, 2.8, n_pores) * SS):
        cv2.circle(pores, (int(cx), int(cy)), int(rad), 255, -1, cv2.LINE_AA)
    pore = pores.astype(np.float32) / 255.0
    colour, _ = _colour(rng, {"cream": ((236, 230, 208), 1.0), "white": ((240, 240, 236), 1.0)},
                        {"cream": 0.6, "white": 0.4}, jitter=3.0)
    rim = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), 2.5 * SS)  # darker towards the edge
    texture = 1 + 0.05 * _smooth_noise(rng, mask.shape, 3 * SS)
    shade = texture * (0.8 + 0.2 * rim) * (1 - 0.35 * pore)
    # Pores are partly holes: the paper shows through them.
    mask = (mask.astype(np.float32) * (1 - 0.35 * pore)).astype(np.uint8)
    return _finish("foam", colour * shade[..., None], mask, 0.97, shadow=0.2)


HARD_COLOURS = {"blue": ((55, 95, 185), 1.0), "red": ((185, 55, 50), 1.0), "green": ((60, 140, 80), 1.0),
                "white": ((225, 225, 220), 1.0), "black": ((45, 45, 50), 1.0), "yellow": ((215, 185, 60), 1.0),
                "grey": ((130, 130, 135), 1.0), "brown": ((125, 85, 55), 1.0), "clear": ((190, 205, 215), 0.7)}


def _draw_hard(rng: np.random.Generator) -> Particle:
    """A fragment: an angular polygon with sharp corners, flat facets and a darker broken edge."""
    size = rng.uniform(18, 100)
    side, mask = _patch(size)
    n = int(rng.integers(4, 10))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = size / 2 * rng.uniform(0.45, 1.0, n)  # uneven radii: some corners cut inwards
    stretch = rng.uniform(0.5, 1.0)
    rot = rng.uniform(0, np.pi)
    x, y = radii * np.cos(angles), radii * np.sin(angles) * stretch
    vertices = np.stack([x * np.cos(rot) - y * np.sin(rot), x * np.sin(rot) + y * np.cos(rot)], axis=1)
    points = np.round((vertices + side / 2) * SS).astype(np.int32)
    cv2.fillPoly(mask, [points], 255, cv2.LINE_AA)
    colour, opacity = _colour(rng, HARD_COLOURS, {"blue": 0.2, "red": 0.1, "green": 0.1, "white": 0.15, "black": 0.1,
                                                  "yellow": 0.08, "grey": 0.1, "brown": 0.07, "clear": 0.1})
    shade = _facets(rng, points, mask.shape)
    cv2.polylines(shade, [points], True, 0.65, max(1, int(0.9 * SS)), cv2.LINE_AA)
    texture = 1 + 0.06 * _smooth_noise(rng, mask.shape, 2 * SS)
    return _finish("hard", colour * (shade * texture)[..., None], mask, opacity, shadow=0.3)


def _facets(rng: np.random.Generator, points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Brightness map of flat facets: triangles from an inner point to each edge, each lit differently."""
    shade = np.ones(shape, np.float32)
    centre = points.mean(axis=0) + rng.normal(0, 0.1, 2) * np.ptp(points, axis=0)
    for k in range(len(points)):
        tri = np.array([centre, points[k], points[(k + 1) % len(points)]], np.int32)
        cv2.fillPoly(shade, [tri], float(rng.uniform(0.75, 1.15)))
    return shade


def _draw_noise(rng: np.random.Generator) -> Particle:
    """Not a particle: a faint speck of dust or a plain patch of paper, small and low in contrast."""
    size = rng.uniform(8, 26)
    side, mask = _patch(size)
    colour = np.array([95, 88, 80], np.float32) + rng.normal(0, 10, 3)
    if rng.random() < 0.35:  # a plain patch: the box holds paper and a few barely visible grains
        for _ in range(int(rng.integers(1, 4))):
            centre = rng.uniform(PAD, side - PAD, 2) * SS
            cv2.circle(mask, (int(centre[1]), int(centre[0])), int(rng.uniform(0.5, 1.2) * SS), 255, -1, cv2.LINE_AA)
        lo = PAD + int((side - 2 * PAD - size) / 2)
        box = (lo, lo, lo + round(size), lo + round(size))
        return _finish("noise", np.broadcast_to(colour, (*mask.shape, 3)).copy(), mask, 0.12, box=box)
    for _ in range(int(rng.integers(1, 4))):
        centre = (side / 2 + rng.normal(0, size / 6, 2)) * SS
        axes = (int(rng.uniform(0.15, 0.35) * size * SS), int(rng.uniform(0.1, 0.3) * size * SS))
        cv2.ellipse(mask, (int(centre[1]), int(centre[0])), axes, float(rng.uniform(0, 180)), 0, 360, 255, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), 1.5 * SS)
    return _finish("noise", np.broadcast_to(colour, (*mask.shape, 3)).copy(), mask, float(rng.uniform(0.2, 0.45)))


def _draw_reference(rng: np.random.Generator) -> Particle:
    """The scale reference: always the same dark square target with a white frame and centre dot."""
    side_len = rng.uniform(34, 40)
    side, mask = _patch(side_len * 1.45)
    centre = (side * SS / 2, side * SS / 2)
    angle = float(rng.uniform(-6, 6))
    square = cv2.boxPoints((centre, (side_len * SS, side_len * SS), angle)).astype(np.int32)
    cv2.fillPoly(mask, [square], 255, cv2.LINE_AA)
    colour = np.full((*mask.shape, 3), 30, np.float32)
    marks = np.zeros(mask.shape, np.uint8)
    frame = cv2.boxPoints((centre, (0.6 * side_len * SS, 0.6 * side_len * SS), angle)).astype(np.int32)
    cv2.polylines(marks, [frame], True, 255, int(1.8 * SS), cv2.LINE_AA)
    cv2.circle(marks, (int(centre[0]), int(centre[1])), int(2.2 * SS), 255, -1, cv2.LINE_AA)
    colour += (marks.astype(np.float32) / 255.0 * 200)[..., None]
    return _finish("reference", colour, mask, 1.0, shadow=0.25)


_DRAWERS: dict[str, Callable[[np.random.Generator], Particle]] = {
    "foam": _draw_foam, "hard": _draw_hard, "line": _draw_line, "noise": _draw_noise,
    "pellet": _draw_pellet, "reference": _draw_reference}


# --- placing -----------------------------------------------------------------------------

def _place(rng: np.random.Generator, particle: Particle, taken: list[tuple[int, int, int, int]],
           height: int, width: int, gap: int = 4,
           inside: Callable[[tuple[int, int, int, int]], bool] | None = None,
           ) -> tuple[Particle, tuple[int, int]] | None:
    """A spot where the particle's box keeps ``gap`` pixels from every box so far (and, with
    ``inside``, lies where it says the photo shows the filter); shrink if none."""
    for _attempt in range(4):
        h, w = particle.alpha.shape
        if h < height and w < width:
            for _ in range(60):
                top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
                r0, c0, r1, c1 = particle.box
                box = (top + r0, left + c0, top + r1, left + c1)
                if not any(_near(box, other, gap) for other in taken) and (inside is None or inside(box)):
                    return particle, (top, left)
        particle = _shrink(particle, 0.7)
    return None


def _near(a: tuple[int, int, int, int], b: tuple[int, int, int, int], gap: int) -> bool:
    return a[0] < b[2] + gap and b[0] < a[2] + gap and a[1] < b[3] + gap and b[1] < a[3] + gap


def _shrink(particle: Particle, factor: float) -> Particle:
    h, w = particle.alpha.shape
    size = (max(PAD * 2 + 4, int(w * factor)), max(PAD * 2 + 4, int(h * factor)))
    alpha = cv2.resize(particle.alpha, size, interpolation=cv2.INTER_AREA)
    rgb = cv2.resize(particle.rgb, size, interpolation=cv2.INTER_AREA)
    return Particle(particle.label, rgb, alpha, _tight_box(alpha), particle.shadow)


def _composite(canvas: np.ndarray, particle: Particle, top: int, left: int) -> None:
    """Lay the particle (and its soft shadow, down and right) onto the paper."""
    h, w = particle.alpha.shape
    region = canvas[top:top + h, left:left + w]
    if particle.shadow > 0:
        shadow = cv2.GaussianBlur(np.roll(particle.alpha, (2, 2), axis=(0, 1)), (0, 0), 2.0)
        region *= (1 - particle.shadow * shadow)[..., None]
    a = particle.alpha[..., None]
    region[:] = region * (1 - a) + particle.rgb * a


# --- paper and camera --------------------------------------------------------------------

def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Filter paper: a tinted pale grey-beige with blotches, grain and faint fibres."""
    base = np.array([198, 192, 180], np.float32) + rng.normal(0, 7, 3)  # per-photo tint
    blotch = 5 * _smooth_noise(rng, (height, width), 45)
    grain = 5 * cv2.GaussianBlur(rng.normal(0, 1, (height, width)).astype(np.float32), (0, 0), 1.0)
    fibres = np.zeros((height, width), np.float32)
    for _ in range(int(rng.integers(20, 50))):
        start = rng.uniform(0, 1, 2) * (width, height)
        end = start + rng.normal(0, 25, 2)
        cv2.line(fibres, tuple(int(v) for v in start), tuple(int(v) for v in end), float(rng.choice([-1, 1])), 1)
    fibres = 6 * cv2.GaussianBlur(fibres, (0, 0), 0.8)
    chroma = np.stack([_smooth_noise(rng, (height, width), 120) for _ in range(3)], axis=-1) * 1.2
    return base + (blotch + grain + fibres)[..., None] + chroma


def _uneven_light(rng: np.random.Generator, shape: tuple[int, int], centre: float, vignette: tuple[float, float],
                  gradient: float, exposure: tuple[float, float]) -> np.ndarray:
    """A light map: vignetting around an off-centre point, a linear gradient and an exposure, each
    drawn from the given range."""
    height, width = shape
    yy, xx = np.meshgrid(np.linspace(-1, 1, height, dtype=np.float32),
                         np.linspace(-1, 1, width, dtype=np.float32), indexing="ij")
    cy, cx = rng.uniform(-centre, centre, 2)
    falloff = 1 - rng.uniform(*vignette) * ((yy - cy) ** 2 + (xx - cx) ** 2) / 2
    slope = 1 + rng.uniform(-gradient, gradient) * yy + rng.uniform(-gradient, gradient) * xx
    return (falloff * slope * rng.uniform(*exposure)).astype(np.float32)


def _camera(rng: np.random.Generator, canvas: np.ndarray) -> np.ndarray:
    """Uneven light (vignetting, a gradient, exposure), a little defocus and sensor noise."""
    light = _uneven_light(rng, canvas.shape[:2], centre=0.25, vignette=(0.12, 0.35), gradient=0.08,
                          exposure=(0.82, 1.1))
    image = cv2.GaussianBlur(canvas * light[..., None], (0, 0), rng.uniform(0.4, 1.0))
    image += rng.normal(0, rng.uniform(1.5, 4.0), image.shape).astype(np.float32)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


# --- domain randomisation ----------------------------------------------------------------
# Labs differ in filter, sample matrix, microscope and camera. The randomised preset draws each
# photo's look from wide ranges of all of them, so a model trained on it cannot lean on any one.

FILTERS = {  # base colour of common filter types: cellulose, glass fibre, coloured membranes, black polycarbonate
    "cellulose": (205, 200, 188), "glass-fibre": (226, 226, 220), "beige": (200, 186, 160), "grey": (150, 150, 152),
    "black": (48, 48, 54), "blue": (172, 192, 214), "green": (184, 204, 180), "pink": (214, 186, 190),
    "yellow": (214, 204, 150)}
TEXTURES = ("blotchy", "paper", "membrane", "mesh", "smooth")


def random_filter(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A filter of random colour and texture, with debris and, often, sludge-like clutter."""
    names = list(FILTERS)
    base = np.array(FILTERS[names[int(rng.integers(len(names)))]], np.float32)
    base = base * rng.uniform(0.8, 1.1) + rng.normal(0, 12, 3)
    shape = (height, width)
    field = rng.uniform(2, 14) * _smooth_noise(rng, shape, rng.uniform(15, 120))
    field += rng.uniform(1, 8) * cv2.GaussianBlur(rng.normal(0, 1, shape).astype(np.float32), (0, 0), 1.0)
    field += _texture(rng, str(rng.choice(TEXTURES)), shape)
    chroma = np.stack([_smooth_noise(rng, shape, 120) for _ in range(3)], axis=-1) * rng.uniform(0.5, 4)
    canvas = base + field[..., None] + chroma
    _debris(rng, canvas)
    if rng.random() < 0.6:
        _sludge(rng, canvas)
    return canvas


def _texture(rng: np.random.Generator, kind: str, shape: tuple[int, int]) -> np.ndarray:
    """The filter's own structure: paper fibres, membrane pores, a woven mesh, or nothing."""
    height, width = shape
    out = np.zeros(shape, np.float32)
    if kind == "paper":
        for _ in range(int(rng.integers(50, 400))):
            start = rng.uniform(0, 1, 2) * (width, height)
            end = start + rng.normal(0, 30, 2)
            cv2.line(out, tuple(int(v) for v in start), tuple(int(v) for v in end), float(rng.choice([-1, 1])), 1)
        return rng.uniform(4, 12) * cv2.GaussianBlur(out, (0, 0), 0.8)
    if kind == "membrane":
        n = int(height * width * rng.uniform(0.002, 0.01))
        out[rng.integers(0, height, n), rng.integers(0, width, n)] = -1.0
        return rng.uniform(8, 25) * cv2.GaussianBlur(out, (0, 0), rng.uniform(0.6, 1.2))
    if kind == "mesh":
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        angle, period = rng.uniform(0, np.pi), rng.uniform(5, 18)
        u, v = xx * np.cos(angle) + yy * np.sin(angle), -xx * np.sin(angle) + yy * np.cos(angle)
        return rng.uniform(3, 10) * (np.sin(2 * np.pi * u / period) * np.sin(2 * np.pi * v / period))
    return out  # blotchy and smooth: the field noise alone


def _debris(rng: np.random.Generator, canvas: np.ndarray) -> None:
    """Unannotated specks and flakes of dust, darker or paler than the filter."""
    height, width = canvas.shape[:2]
    mask = np.zeros((height, width), np.float32)
    for _ in range(int(rng.integers(0, 250))):
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        axes = (max(1, int(rng.uniform(0.5, 3))), max(1, int(rng.uniform(0.5, 2))))
        cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, float(rng.uniform(0.2, 0.7)), -1)
    mask = cv2.GaussianBlur(mask, (0, 0), 0.7)
    tone = rng.uniform(-1, 0.3)  # mostly dark grains
    canvas += (mask * tone * 120)[..., None]


def _sludge(rng: np.random.Generator, canvas: np.ndarray) -> None:
    """Sludge-like clutter: soft amorphous brownish organic matter over part of the filter."""
    height, width = canvas.shape[:2]
    blob = _smooth_noise(rng, (height, width), rng.uniform(8, 40))
    cover = np.clip((blob - rng.uniform(0.6, 1.6)) * 2, 0, 1) * rng.uniform(0.15, 0.6)
    colour = np.array([110, 86, 56], np.float32) * rng.uniform(0.6, 1.3) + rng.normal(0, 12, 3)
    canvas[:] = canvas * (1 - cover[..., None]) + colour * cover[..., None]


# Lighting, particle and annotation looks of other labs' photos: diffuse transmitted light shows
# little shading inside a particle; thin or translucent particles barely stand out from the filter;
# hand-drawn boxes often leave a margin around a small particle.
FLAT_LIGHT_ODDS = 0.5
FLAT_LIGHT_KEEP = (0.0, 0.6)  # share of the particle's shading left under flat light
FAINT_ODDS = 0.5
FAINT_OPACITY = (0.25, 1.0)
LOOSE_BOX_ODDS = 0.5
LOOSE_BOX_MARGIN = 0.6  # at most this share of the box's longer side added on each side


def randomise_particle(particle: Particle, rng: np.random.Generator, scale: float) -> Particle:
    """The particle at the photo's scale, often in another colour, under flatter light, fainter
    and in a looser box; fibres often thin and curly.

    Light, faintness and box have the same odds for every class (the reference target keeps
    its look), so none of them becomes a class cue."""
    if particle.label == "line" and rng.random() < 0.6:
        particle = _draw_curly_fibre(rng)
    if abs(scale - 1) > 0.02:
        particle = _shrink(particle, scale)
    rgb, alpha = particle.rgb, particle.alpha
    if particle.label not in ("reference", "noise") and rng.random() < 0.5:
        luminance = rgb.mean(axis=-1)
        shade = luminance / max(float((luminance * alpha).sum() / max(alpha.sum(), 1e-6)), 1.0)
        rgb = np.clip(rng.uniform(20, 240, 3).astype(np.float32) * shade[..., None], 0, 255)
    changeable = particle.label != "reference"
    if changeable and rng.random() < FLAT_LIGHT_ODDS:
        rgb = flatten_shading(rgb, alpha, float(rng.uniform(*FLAT_LIGHT_KEEP)))
    if changeable and rng.random() < FAINT_ODDS:
        alpha = alpha * rng.uniform(*FAINT_OPACITY)
    particle = Particle(particle.label, rgb.astype(np.float32), alpha.astype(np.float32), particle.box,
                        particle.shadow)
    if changeable and rng.random() < LOOSE_BOX_ODDS:
        particle = loosen_box(particle, rng.uniform(0, LOOSE_BOX_MARGIN, 4))
    return particle


def flatten_shading(rgb: np.ndarray, alpha: np.ndarray, keep: float) -> np.ndarray:
    """The particle's colour with only ``keep`` (0..1) of its shading left around its mean colour."""
    weight = alpha[..., None] / max(float(alpha.sum()), 1e-6)
    mean = (rgb * weight).sum(axis=(0, 1))
    return (mean + keep * (rgb - mean)).astype(np.float32)


def loosen_box(particle: Particle, margins: np.ndarray) -> Particle:
    """The particle in a box widened on each side (top, left, bottom, right) by ``margins`` times
    the box's longer side; the patch grows with empty pixels to hold it. (A particle that
    placing has to shrink gets a tight box again.)"""
    r0, c0, r1, c1 = particle.box
    pads = np.ceil(np.asarray(margins, np.float64) * max(r1 - r0, c1 - c0)).astype(int)
    top, left, bottom, right = (int(v) for v in pads)
    rgb = np.pad(particle.rgb, ((top, bottom), (left, right), (0, 0)), mode="edge")
    alpha = np.pad(particle.alpha, ((top, bottom), (left, right)))
    box = (r0, c0, r1 + top + bottom, c1 + left + right)
    return Particle(particle.label, rgb, alpha, box, particle.shadow)


def _draw_curly_fibre(rng: np.random.Generator) -> Particle:
    """A thin, faint, curly fibre: a random walk whose direction drifts smoothly."""
    n = 240
    turn = np.convolve(rng.normal(0, rng.uniform(0.04, 0.3), n + 20), np.ones(20) / 20 * 4, mode="valid")[:n]
    angle = rng.uniform(0, 2 * np.pi) + np.cumsum(turn)
    length = rng.uniform(40, 200)
    steps = np.stack([np.sin(angle), np.cos(angle)], axis=1) * (length / n)
    curve = np.cumsum(steps, axis=0)
    curve -= (curve.max(axis=0) + curve.min(axis=0)) / 2
    side, mask = _patch(float(np.ptp(curve, axis=0).max()))
    points = np.round((curve + side / 2) * SS).astype(np.int32)
    cv2.polylines(mask, [points[:, ::-1].copy()], False, 255, max(1, round(rng.uniform(0.6, 1.8) * SS)),
                  cv2.LINE_AA)
    colour, _ = _colour(rng, FIBRE_COLOURS, {"black": 0.45, "blue": 0.3, "red": 0.1, "green": 0.05, "purple": 0.1})
    shade = 1 + 0.2 * _smooth_noise(rng, mask.shape, 10 * SS)
    return _finish("line", colour * shade[..., None], mask, float(rng.uniform(0.35, 0.9)))


def _field_stop(rng: np.random.Generator, height: int, width: int) -> np.ndarray | None:
    """Often a round field of view, black outside, as through a microscope's eyepiece; else None."""
    if rng.random() >= 0.4:
        return None
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cy, cx = height * rng.uniform(0.35, 0.75), width * rng.uniform(0.35, 0.65)
    radius = max(height, width) * rng.uniform(0.45, 0.75)
    inside = (radius - np.hypot(yy - cy, xx - cx)) / max(radius * 0.01, 1.0)
    return np.clip(inside, 0, 1).astype(np.float32)


def _random_camera(rng: np.random.Generator, canvas: np.ndarray, field: np.ndarray | None) -> np.ndarray:
    """Wide ranges of light (vignetting, gradient, exposure, white balance, gamma), focus and noise."""
    light = _uneven_light(rng, canvas.shape[:2], centre=0.4, vignette=(0.0, 0.6), gradient=0.2, exposure=(0.6, 1.25))
    if field is not None:
        light = light * (0.04 + 0.96 * field)
    image = canvas * light[..., None] * rng.uniform(0.85, 1.15, 3).astype(np.float32)
    image = cv2.GaussianBlur(image.astype(np.float32), (0, 0), rng.uniform(0.3, 2.2))
    image = 255 * (np.clip(image, 0, 255) / 255) ** rng.uniform(0.75, 1.3)
    image += rng.normal(0, rng.uniform(1, 8), image.shape).astype(np.float32)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


# --- files -------------------------------------------------------------------------------

def _write_jpeg(path: Path, image: np.ndarray) -> None:
    # Fixed quality and no metadata: the same pixels always give the same bytes.
    with atomic_path(path) as tmp:
        Image.fromarray(image, "RGB").save(tmp, format="JPEG", quality=JPEG_QUALITY, subsampling=0)


def _tsv(rows: list[tuple[str, tuple]], index: int) -> str:
    """The annotation table; crop names are timestamps like the real ones, unique per box."""
    lines = [HEADER]
    for box_id, (label, (minr, minc, maxr, maxc)) in enumerate(rows):
        stamp = _BASE_TIME + dt.timedelta(minutes=index, seconds=box_id)
        lines.append(f"{box_id}\t{minr}\t{minc}\t{maxr}\t{maxc}\t{label}/{stamp:%Y-%m-%d %H:%M:%S}.jpg")
    return "\n".join(lines) + "\n"


def _readme(n_images: int, seed: int, size: tuple[int, int], randomise: bool = False) -> str:
    return (f"SYNTHETIC DATA: not real microplastic photographs.\n"
            f"{n_images} photos of {size[1]}x{size[0]} pixels drawn by microplastics.data.synthetic "
            f"with seed {seed}{' (domain-randomised)' if randomise else ''}.\n"
            f"Layout as DeepParticle MICRO: raw_img/<photo>, annotation/<photo>.tsv "
            f"(ID minr minc maxr maxc class; max exclusive).\n"
            f"Classes: {', '.join(CLASSES)}. Use it to test the pipeline, never to report results.\n")
