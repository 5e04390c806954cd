"""Measuring found particles: size and shape in micrometres (or pixels), and a colour name.

A particle is a boolean mask. Pixels are unit squares, so a drawn w x h rectangle has an area
of w*h, Feret diameters min(w, h) and sqrt(w^2 + h^2), whatever its position:

- ``area``: pixel count (times the pixel area);
- ``equivalent_diameter``: the diameter of a disc of that area;
- ``feret_max`` / ``feret_min``: the largest and smallest caliper width, over the convex hull
  of the pixel corners;
- ``length`` / ``width`` (meant for fibres): the skeleton's path length, lengthened by the
  width its thinning took off the two ends, and the area over that length;
- ``aspect_ratio`` = feret_max / feret_min, ``circularity`` = 4 pi area / perimeter^2 (1 for a
  disc, towards 0 for a fibre), ``solidity`` = area / convex area;
- ``colour``: the nearest name of a small palette to the particle's mean colour, in CIELAB.

Column names carry the unit: ``area_um2``, ``feret_max_um`` ... with a scale, ``area_px``,
``feret_max_px`` ... without one.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Mapping, Sequence

import cv2
import numpy as np
import pandas as pd
from skimage.measure import perimeter
from skimage.morphology import skeletonize

from microplastics.core.errors import InputError

PALETTE = {  # sRGB of the names a lab report uses for particle colours
    "white": (235, 235, 230), "grey": (128, 128, 128), "black": (35, 35, 35), "red": (190, 40, 40),
    "orange": (230, 130, 40), "yellow": (220, 200, 70), "green": (60, 150, 70), "blue": (50, 100, 200),
    "purple": (120, 60, 160), "pink": (230, 150, 180), "brown": (125, 85, 50),
}
LENGTH_NAMES = ("equivalent_diameter", "feret_max", "feret_min", "length", "width")


def unit_of(um_per_px: float | None) -> str:
    return "um" if um_per_px else "px"


def size_columns(unit: str) -> dict[str, str]:
    """Measurement name -> column name with its unit (area in um2 or px)."""
    return {"area": "area_um2" if unit == "um" else "area_px", **{n: f"{n}_{unit}" for n in LENGTH_NAMES}}


def feret_diameters(mask: np.ndarray) -> tuple[float, float]:
    """(max, min) caliper widths of the pixel squares of ``mask``, in pixels."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return 0.0, 0.0
    corners = np.concatenate([np.stack([cols + dc, rows + dr], axis=1) for dr in (0, 1) for dc in (0, 1)])
    hull = cv2.convexHull(corners.astype(np.float32)).reshape(-1, 2).astype(np.float64)
    if len(hull) < 3:
        return 1.0, 1.0
    diffs = hull[:, None, :] - hull[None, :, :]
    longest = float(np.sqrt((diffs ** 2).sum(axis=2)).max())
    edges = np.roll(hull, -1, axis=0) - hull
    normals = np.stack([-edges[:, 1], edges[:, 0]], axis=1)
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    widths = (hull @ normals.T)
    return longest, float((widths.max(axis=0) - widths.min(axis=0)).min())


def skeleton_path(mask: np.ndarray) -> float:
    """Path length of ``mask``'s skeleton: orthogonal steps 1, diagonal steps sqrt(2), a diagonal
    that an orthogonal pair already bridges not counted twice."""
    sk = np.pad(skeletonize(mask), 1)
    right, down = sk[:, :-1] & sk[:, 1:], sk[:-1, :] & sk[1:, :]
    a, b = sk[:-1, :-1], sk[1:, 1:]  # down-right pairs, bridged through (r, c+1) or (r+1, c)
    dr = a & b & ~(sk[:-1, 1:] | sk[1:, :-1])
    c, d = sk[:-1, 1:], sk[1:, :-1]  # down-left pairs, bridged through (r, c) or (r+1, c+1)
    dl = c & d & ~(sk[:-1, :-1] | sk[1:, 1:])
    return float(right.sum() + down.sum() + math.sqrt(2) * (dr.sum() + dl.sum()))


def fibre_length(mask: np.ndarray) -> tuple[float, float]:
    """(length, mean width) in pixels: L = path + w with w = area / L, the thinning having
    shortened each end by about half the width."""
    area = float(mask.sum())
    path = skeleton_path(mask)
    length = (path + math.sqrt(path ** 2 + 4 * area)) / 2
    return length, area / length if length else 0.0


def colour_name(rgb: Sequence[float]) -> str:
    """The palette name nearest to an sRGB colour, by CIELAB distance."""
    names = list(PALETTE)
    swatches = np.array([PALETTE[n] for n in names] + [tuple(rgb)], np.float32).reshape(1, -1, 3) / 255.0
    lab = cv2.cvtColor(swatches, cv2.COLOR_RGB2Lab)[0]
    return names[int(np.argmin(((lab[:-1] - lab[-1]) ** 2).sum(axis=1)))]


def shape_measures(mask: np.ndarray) -> dict[str, float]:
    """Every measure of one particle in pixels (area in px)."""
    area = float(mask.sum())
    feret_max, feret_min = feret_diameters(mask)
    length, width = fibre_length(mask)
    hull = cv2.convexHull(np.argwhere(mask)[:, ::-1].astype(np.int32))
    hull_area = max(area, float(cv2.contourArea(hull)) + 0.5 * cv2.arcLength(hull, True) + 1)  # pixel squares
    edge = perimeter(mask) if area > 1 else 4.0
    return {"area": area, "equivalent_diameter": math.sqrt(4 * area / math.pi), "feret_max": feret_max,
            "feret_min": feret_min, "length": length, "width": width,
            "aspect_ratio": feret_max / feret_min if feret_min else 1.0,
            "circularity": float(min(1.0, 4 * math.pi * area / edge ** 2)) if edge else 1.0,
            "solidity": min(1.0, area / hull_area)}


def measure_particles(labels: np.ndarray, image: np.ndarray, boxes: Sequence[tuple[int, int, int, int, int]],
                      um_per_px: float | None) -> pd.DataFrame:
    """One row per (label, minr, minc, maxr, maxc): the measures, unit in the column names, and the colour."""
    columns = size_columns(unit_of(um_per_px))
    rows = []
    for label, minr, minc, maxr, maxc in boxes:
        mask = labels[minr:maxr, minc:maxc] == label
        raw = shape_measures(mask)
        row = {columns[k]: _scaled(k, v, um_per_px) for k, v in raw.items() if k in columns}
        row.update({k: raw[k] for k in ("aspect_ratio", "circularity", "solidity")})
        row["colour"] = colour_name(image[minr:maxr, minc:maxc][mask].mean(axis=0))
        rows.append(row)
    return pd.DataFrame(rows, columns=[*columns.values(), "aspect_ratio", "circularity", "solidity", "colour"])


def _scaled(name: str, value: float, um_per_px: float | None) -> float:
    if not um_per_px:
        return value
    return value * um_per_px ** 2 if name == "area" else value * um_per_px


# ----------------------------------------------------------------------------- calibration

def parse_scale(value: str | None) -> float | dict[str, float] | None:
    """``--um-per-px``: a number for every photo, or a CSV ``photo,um_per_px`` (one value per photo)."""
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return read_scale_csv(Path(value))
    if not math.isfinite(number) or number <= 0:
        raise InputError(f"--um-per-px must be a positive number of micrometres per pixel, or a CSV file; got {value}")
    return number


def read_scale_csv(path: Path) -> dict[str, float]:
    if not path.is_file():
        raise InputError(f"--um-per-px {path}: neither a number nor a CSV file")
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise InputError(f"--um-per-px {path} is not a readable CSV ({err}); "
                         "expected columns photo,um_per_px") from None
    if not {"photo", "um_per_px"} <= set(table.columns):
        raise InputError(f"--um-per-px {path} needs the columns photo,um_per_px; "
                        f"it has {', '.join(map(str, table.columns))}")
    values = pd.to_numeric(table["um_per_px"], errors="coerce")
    bad = table["photo"][~(values > 0)].astype(str).tolist()
    if bad:
        raise InputError(f"--um-per-px {path}: um_per_px must be a positive number; not for {', '.join(bad[:5])}")
    return {str(p): float(v) for p, v in zip(table["photo"], values)}


def scale_for(photo: str, scale: float | Mapping[str, float] | None) -> float | None:
    """The um/px of ``photo`` (a relative name; a CSV may also name the file alone)."""
    if scale is None or isinstance(scale, (int, float)):
        return scale
    return scale.get(photo, scale.get(Path(photo).name))


def reference_scales(feret_max_px: Mapping[str, Sequence[float]], size_um: float) -> dict[str, float]:
    """um/px per photo from its reference objects (median over them): known size / Feret max."""
    return {photo: size_um / float(np.median(v)) for photo, v in feret_max_px.items() if len(v)}


SCALE_SOURCE_NUMBER, SCALE_SOURCE_CSV = "--um-per-px", "--um-per-px CSV"
SCALE_SOURCE_REFERENCE, SCALE_SOURCE_MEDIAN = "reference", "reference (median of other photos)"


def add_scale_arguments(group: argparse._ActionsContainer) -> None:
    """``--um-per-px``, ``--reference-size-um`` and ``--reference-class``: the one calibration of every stage."""
    a = group.add_argument
    a("--um-per-px", metavar="X|CSV", help="scale: micrometres per pixel for every photo, or a CSV photo,um_per_px; "
                                           "without a scale (or --reference-size-um) sizes stay in pixels")
    a("--reference-size-um", type=float, metavar="UM", help="scale from the particles of --reference-class: "
                                                            "their Feret max is this many um")
    a("--reference-class", default="reference", help="the class of the reference object")


def check_scale_args(um_per_px: str | None, reference_size_um: float | None) -> None:
    if reference_size_um is not None and not reference_size_um > 0:
        raise InputError(f"--reference-size-um must be a positive size in micrometres, got {reference_size_um}")
    if reference_size_um is not None and um_per_px is not None:
        raise InputError("give one scale: --um-per-px or --reference-size-um, not both")


def photo_scales(photos: Sequence[str], scale: float | Mapping[str, float] | None, *,
                 reference_feret: Mapping[str, Sequence[float]] | None = None, reference_size_um: float | None = None,
                 reference_class: str = "reference", seen_as: str = "classified as"
                 ) -> tuple[dict[str, float], dict[str, str]] | None:
    """(um/px, where it came from) of every photo; None without a scale.

    With ``reference_size_um`` each photo's scale is its reference objects' (``reference_feret``:
    their Feret max in px, by photo), and a photo without one gets the median of the others;
    else ``scale`` (``parse_scale``), which must cover every photo."""
    if reference_size_um is not None:
        per_photo = reference_scales(reference_feret or {}, reference_size_um)
        if not per_photo:
            raise InputError(f"--reference-size-um: no particle was {seen_as} {reference_class!r}, so there "
                            "is no scale; pass --um-per-px instead")
        fallback = float(np.median(list(per_photo.values())))
        lacking = [p for p in photos if p not in per_photo]
        if lacking:
            print(f"warning: {len(lacking)} photo(s) show no {reference_class}; they get the median scale of the "
                  f"others, {fallback:.4g} um/px", file=sys.stderr)
        values = {p: per_photo.get(p, fallback) for p in photos}
        return values, {p: (SCALE_SOURCE_REFERENCE if p in per_photo else SCALE_SOURCE_MEDIAN) for p in values}
    if scale is None:
        return None
    values = {p: scale_for(p, scale) for p in photos}
    missing = [p for p, v in values.items() if v is None]
    if missing:
        raise InputError(f"--um-per-px has no value for {len(missing)} photo(s), e.g. {missing[0]}")
    source = SCALE_SOURCE_NUMBER if isinstance(scale, (int, float)) else SCALE_SOURCE_CSV
    return values, {p: source for p in values}


def to_micrometres(frame: pd.DataFrame, um_per_px: np.ndarray) -> pd.DataFrame:
    """``frame``'s pixel measures (``*_px`` columns) turned into micrometres, one scale per row."""
    px, um = size_columns("px"), size_columns("um")
    frame = frame.copy()
    for name in px:
        factor = um_per_px ** 2 if name == "area" else um_per_px
        frame[px[name]] = frame[px[name]].to_numpy(float) * factor
    return frame.rename(columns={px[n]: um[n] for n in px})
