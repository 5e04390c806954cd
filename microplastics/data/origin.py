"""Where a raw-data folder came from: ``MICRO/origin.json``.

The synthetic generator and data-extraction.py write it; data-preprocessing.py copies it
into processed_MICRO/summary.json (key ``origin``), so every later stage can tell generated
photos from real ones without guessing from file names. A folder without the file (photos
put there by hand, such as mp100) has an unknown origin, and nothing is claimed about it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from microplastics.core import fileio

ORIGIN_NAME = "origin.json"
SYNTHETIC = "synthetic"
GENERATOR = "data-extraction.py --synthetic"


def synthetic_origin(n_photos: int, seed: int, image_size: tuple[int, int]) -> dict[str, Any]:
    """The record of a folder drawn by the synthetic generator."""
    return {"kind": SYNTHETIC, "generator": GENERATOR, "photos": int(n_photos), "seed": int(seed),
            "image_size": [int(v) for v in image_size]}


def write_origin(folder: str | Path, record: dict[str, Any]) -> None:
    fileio.write_json(Path(folder) / ORIGIN_NAME, record)


def read_origin(folder: str | Path) -> dict[str, Any] | None:
    """The folder's origin record, or None when it has none (or an unreadable one)."""
    path = Path(folder) / ORIGIN_NAME
    if not path.is_file():
        return None
    try:
        record = fileio.read_json(path)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("kind"), str) else None


def is_synthetic(record: Any) -> bool:
    return isinstance(record, dict) and record.get("kind") == SYNTHETIC
