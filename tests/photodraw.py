"""Drawn test photos with known particles: paper with vignetting and noise, an optional round
field of view with a dark surround, a scale bar with text, and particles whose exact masks,
boxes (max exclusive) and, for fibres, drawn lengths are known."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

PAPER = (178, 168, 148)


@dataclass
class Drawn:
    image: np.ndarray
    boxes: list[tuple[int, int, int, int]] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    lengths: list[float] = field(default_factory=list)  # drawn centre-line length (fibres; 0 otherwise)
    overlay_box: tuple[int, int, int, int] | None = None  # the scale bar and its text


def paper(height: int, width: int, seed: int, noise: float = 2.5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width]
    r = np.hypot((rows - height / 2) / height, (cols - width / 2) / width)
    light = 1.0 - 0.35 * r ** 2  # vignetting
    image = np.array(PAPER, np.float32)[None, None, :] * light[..., None]
    return image + rng.normal(0, noise, image.shape).astype(np.float32)


def paste(canvas: np.ndarray, mask: np.ndarray, colour: tuple[float, float, float], opacity: float = 1.0) -> None:
    alpha = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 0.6) * opacity
    canvas[:] = canvas * (1 - alpha[..., None]) + np.array(colour, np.float32) * alpha[..., None]


def box_of(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.nonzero(mask)
    return int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1


def fibre_mask(shape: tuple[int, int], start: tuple[float, float], length: float, amplitude: float,
               waves: float, thickness: int = 2) -> tuple[np.ndarray, float]:
    """A sine-curved fibre: its mask and the exact length of the drawn polyline."""
    t = np.linspace(0, 1, 400)
    x = start[0] + t * length
    y = start[1] + amplitude * np.sin(2 * math.pi * waves * t)
    points = np.stack([x, y], axis=1)
    drawn = float(np.hypot(*np.diff(points, axis=0).T).sum())
    mask = np.zeros(shape, np.uint8)
    cv2.polylines(mask, [np.round(points).astype(np.int32)], False, 1, thickness)
    return mask.astype(bool), drawn


def draw_photo(seed: int = 0, size: tuple[int, int] = (320, 320), round_field: bool = True,
               scale_bar: bool = True) -> Drawn:
    """Eight particles of the kinds labs meet, well apart, on vignetted paper."""
    height, width = size
    canvas = paper(height, width, seed)
    drawn = Drawn(image=np.zeros(0))
    shape = (height, width)

    def add(mask: np.ndarray, colour, kind: str, length: float = 0.0, opacity: float = 1.0) -> None:
        paste(canvas, mask, colour, opacity)
        drawn.boxes.append(box_of(mask))
        drawn.kinds.append(kind)
        drawn.lengths.append(length)

    disc = np.zeros(shape, np.uint8)
    cv2.circle(disc, (110, 100), 5, 1, -1)
    add(disc.astype(bool), (240, 238, 232), "pellet")
    blob = np.zeros(shape, np.uint8)
    cv2.ellipse(blob, (180, 95), (16, 10), 30, 0, 360, 1, -1)
    add(blob.astype(bool), (60, 110, 200), "film")
    frag = np.zeros(shape, np.uint8)
    cv2.fillPoly(frag, [np.array([[215, 150], [245, 145], [250, 170], [225, 182]], np.int32)], 1)
    add(frag.astype(bool), (205, 180, 90), "fragment")
    faint = np.zeros(shape, np.uint8)
    cv2.ellipse(faint, (100, 215), (18, 13), 0, 0, 360, 1, -1)
    add(faint.astype(bool), (196, 186, 200), "faint film", opacity=0.8)  # a tenth lighter, a little bluer
    fibre, length = fibre_mask(shape, (120.0, 255.0), 90.0, 9.0, 1.5)
    add(fibre, (55, 50, 45), "fibre", length)
    red = np.zeros(shape, np.uint8)
    cv2.circle(red, (165, 175), 9, 1, -1)
    add(red.astype(bool), (180, 50, 45), "fragment")
    if scale_bar:
        bar_top, bar_left = 200, 195
        canvas[bar_top:bar_top + 4, bar_left:bar_left + 50] = 255
        text = np.zeros(shape, np.uint8)
        cv2.putText(text, "100 um", (bar_left, bar_top - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.35, 255, 1, cv2.LINE_AA)
        alpha = text.astype(np.float32)[..., None] / 255  # anti-aliased edges blend into the paper
        canvas[:] = canvas * (1 - alpha) + 255 * alpha
        drawn.overlay_box = (bar_top - 16, bar_left - 2, bar_top + 6, bar_left + 54)
    if round_field:
        rows, cols = np.mgrid[0:height, 0:width]
        outside = np.hypot(rows - height / 2, cols - width / 2) > 0.47 * min(height, width)
        canvas[outside] = np.random.default_rng(seed + 1).normal(12, 3, (int(outside.sum()), 3))
    drawn.image = np.clip(canvas, 0, 255).astype(np.uint8)
    return drawn


def touching_discs(seed: int = 0, size: tuple[int, int] = (320, 320)) -> tuple[np.ndarray, list[tuple]]:
    """Two equal discs that touch (their blurred edges merge into one blob), and their boxes."""
    canvas = paper(*size, seed)
    boxes = []
    for centre in ((160, 146), (160, 174)):  # tangent: they touch at one point
        mask = np.zeros(size, np.uint8)
        cv2.circle(mask, (centre[1], centre[0]), 14, 1, -1)
        paste(canvas, mask.astype(bool), (60, 110, 200))
        boxes.append(box_of(mask.astype(bool)))
    return np.clip(canvas, 0, 255).astype(np.uint8), boxes
