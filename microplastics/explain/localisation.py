"""Does a heat map point at the particle? Mass inside the particle's box and the pointing game.

A crop of data-preprocessing.py is the particle's box widened by ``margin`` x the box size on
each side (``annotations.crop_box``, clipped at the photo's edges). The manifest keeps the box
in photo pixels and summary.json the margin, so the box inside each crop is known exactly. For
a heat map over the whole crop (any resolution: the eval preset resizes the crop to a square,
and the map covers that square), two figures:

- ``mass_inside``: the share of the map's total (non-negative) mass that falls inside the box,
  each map cell counted by the fraction of it the box covers. A map spread evenly over the crop
  scores the box's share of the crop's area (``box_fraction``), the chance level.
- ``peak_inside``: whether the centre of the map's highest cell (the first in row order if
  several tie) lies inside the box: the pointing game (Zhang et al., 2016). A flat map points
  nowhere and misses.

With margin 0 the box is the whole crop and both figures are 1 by construction, which the
summary line says.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from microplastics.core import fileio
from microplastics.data.annotations import margin_pixels
from microplastics.core.errors import InputError
from microplastics.data.dataset import load_manifest, recorded_input

CSV_NAME = "localisation.csv"
JSON_NAME = "localisation.json"
CSV_COLUMNS = ("path", "true", "pred", "method", "mass_inside", "peak_inside", "box_fraction",
               "box_top", "box_left", "box_bottom", "box_right", "crop_height", "crop_width")


@dataclass(frozen=True)
class Box:
    """The particle's box in crop pixels; bottom and right are exclusive."""

    top: int
    left: int
    bottom: int
    right: int


def particle_box(minr: int, minc: int, maxr: int, maxc: int, crop_shape: tuple[int, int], margin: float) -> Box:
    """Where the photo box (minr, minc, maxr, maxc) lies in its crop of ``crop_shape`` (height, width).

    The crop starts ``margin_pixels`` above and left of the box, or at the photo's edge if that
    comes first, where the box's own offset (minr, minc) is all the room there is.
    """
    height, width = crop_shape
    top = min(margin_pixels(maxr - minr, margin), minr)
    left = min(margin_pixels(maxc - minc, margin), minc)
    return Box(top, left, min(top + maxr - minr, height), min(left + maxc - minc, width))


def coverage(start: float, stop: float, cells: int) -> np.ndarray:
    """How much of each unit cell [i, i+1), i < ``cells``, the interval [start, stop) covers."""
    index = np.arange(cells, dtype=np.float64)
    return np.clip(np.minimum(stop, index + 1) - np.maximum(start, index), 0.0, 1.0)


def localise(heat: np.ndarray, box: Box, crop_shape: tuple[int, int]) -> tuple[float, bool]:
    """(mass_inside, peak_inside) of a map ``heat`` (h, w) laid over a crop of ``crop_shape`` (H, W).

    Map cell (i, j) covers crop rows [i H/h, (i+1) H/h) and columns [j W/w, (j+1) W/w).
    ``mass_inside`` is NaN for a map with no mass (all zero).
    """
    heat = np.clip(np.nan_to_num(np.asarray(heat, dtype=np.float64)), 0.0, None)
    (h, w), (height, width) = heat.shape, crop_shape
    rows = coverage(box.top * h / height, box.bottom * h / height, h)
    cols = coverage(box.left * w / width, box.right * w / width, w)
    total = heat.sum()
    mass = float(rows @ heat @ cols / total) if total > 0 else math.nan
    if heat.max() == heat.min():
        return mass, False
    i, j = np.unravel_index(int(np.argmax(heat)), heat.shape)
    y, x = (i + 0.5) * height / h, (j + 0.5) * width / w
    return mass, bool(box.top <= y < box.bottom and box.left <= x < box.right)


def crop_boxes(data_dir: Path, paths: Sequence[str], shapes: Sequence[tuple[int, int]]
               ) -> tuple[list[Box | None], float]:
    """The particle box of each crop (None where the manifest has no row for it) and the margin."""
    manifest = load_manifest(data_dir).drop_duplicates("path").set_index("path")
    margin = recorded_input(data_dir)[1]
    boxes = []
    for path, shape in zip(paths, shapes):
        if path not in manifest.index:
            boxes.append(None)
            continue
        row = manifest.loc[path]
        boxes.append(particle_box(int(row["minr"]), int(row["minc"]), int(row["maxr"]), int(row["maxc"]),
                                  shape, margin))
    return boxes, margin


def measure(paths: Sequence[str], true: Sequence[str], pred: Sequence[str], shapes: Sequence[tuple[int, int]],
            boxes: Sequence[Box | None], maps: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """One row per crop and method (CSV_COLUMNS); crops without a box are left out."""
    rows = []
    for method, stack in maps.items():
        for k, (path, box, shape) in enumerate(zip(paths, boxes, shapes)):
            if box is None:
                continue
            mass, hit = localise(stack[k], box, shape)
            area = (box.bottom - box.top) * (box.right - box.left) / (shape[0] * shape[1])
            rows.append((path, true[k], pred[k], method, mass, hit, area, box.top, box.left, box.bottom,
                         box.right, shape[0], shape[1]))
    return pd.DataFrame(rows, columns=list(CSV_COLUMNS))


def summarise(table: pd.DataFrame, margin: float, target: str, aug_smooth: bool = False) -> dict[str, Any]:
    """localisation.json: the first method's figures at the top, every method's under ``by_method``."""
    by_method = {}
    for method, part in table.groupby("method", sort=False):
        by_method[str(method)] = {"n": int(len(part)), "mean_mass_inside": float(part["mass_inside"].mean()),
                                  "pointing_hit_rate": float(part["peak_inside"].mean()),
                                  "mean_box_fraction": float(part["box_fraction"].mean())}
    first = next(iter(by_method), None)
    top = by_method[first] if first else {"n": 0, "mean_mass_inside": None, "pointing_hit_rate": None,
                                           "mean_box_fraction": None}
    return {"method": first, **top, "margin": margin, "target": target, "aug_smooth": aug_smooth,
            "by_method": by_method}


def summary_line(summary: dict[str, Any]) -> str:
    """The console line: per method, the mean mass inside the box and the pointing-game hit rate."""
    parts = [f"{m}: mass inside box {s['mean_mass_inside']:.3f} (box {s['mean_box_fraction']:.0%} of the crop), "
             f"pointing game {round(s['pointing_hit_rate'] * s['n'])}/{s['n']} = {s['pointing_hit_rate']:.3f}"
             for m, s in summary["by_method"].items()]
    line = "localisation " + "; ".join(parts) if parts else "localisation: no crop has a box in the manifest"
    if summary["margin"] == 0:
        line += (" (margin 0: the box is the whole crop, so these are 1 by construction; "
                 "rebuild the crops with data-preprocessing.py --margin 0.5 to measure)")
    return line


def write(out_dir: Path, table: pd.DataFrame, summary: dict[str, Any]) -> None:
    with fileio.atomic_path(out_dir / CSV_NAME) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6f")
    fileio.write_json(out_dir / JSON_NAME, summary)


def measure_crops(data_dir: Path, paths: Sequence[str], true: Sequence[str], pred: Sequence[str],
                  images: Sequence[np.ndarray], maps: Mapping[str, np.ndarray], target: str,
                  aug_smooth: bool = False) -> tuple[pd.DataFrame, dict[str, Any]] | None:
    """Grad-CAM's localisation step: (localisation.csv's table, localisation.json); None without a manifest."""
    shapes = [tuple(int(v) for v in image.shape[:2]) for image in images]
    try:
        boxes, margin = crop_boxes(data_dir, paths, shapes)
    except InputError as err:
        print(f"warning: localisation not measured: {err}", file=sys.stderr)
        return None
    table = measure(paths, true, pred, shapes, boxes, maps)
    return table, summarise(table, margin, target, aug_smooth)


def read_summary(folder: Path) -> dict[str, Any] | None:
    """The localisation.json of a Grad-CAM output folder, or None when absent or unreadable."""
    try:
        summary = fileio.read_json(Path(folder) / JSON_NAME)
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None
