"""The processed_MICRO/ contract: manifest.csv, class names, splits, the split fingerprint and
what summary.json recorded of the input.

Every model stage reads its data through here, so all of them agree on class order
(sorted names, as torchvision's ImageFolder does) and on which crops form each split.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from . import fileio
from .cli import UserError

MANIFEST_NAME = "manifest.csv"
SUMMARY_NAME = "summary.json"
SPLITS = ("train", "val", "test")
MANIFEST_COLUMNS = ("path", "label", "split", "source_image", "minr", "minc", "maxr", "maxc")


def load_manifest(data_dir: str | Path) -> pd.DataFrame:
    """Read ``<data_dir>/manifest.csv`` and check it; paths stay relative to ``data_dir``."""
    data_dir = Path(data_dir)
    path = data_dir / MANIFEST_NAME
    if not data_dir.is_dir():
        raise UserError(f"data folder {data_dir} does not exist; run data-preprocessing.py first")
    if not path.is_file():
        raise UserError(f"{path} not found; is {data_dir} the output of data-preprocessing.py?")
    frame = pd.read_csv(path, dtype={"path": str, "label": str, "split": str, "source_image": str})
    missing = [c for c in MANIFEST_COLUMNS if c not in frame.columns]
    if missing:
        raise UserError(f"{path} lacks column(s) {', '.join(missing)}; rebuild it with data-preprocessing.py")
    bad = sorted(set(frame["split"]) - set(SPLITS))
    if bad:
        raise UserError(f"{path} has unknown split name(s) {bad}; expected {list(SPLITS)}")
    return frame


def class_names(manifest: pd.DataFrame) -> list[str]:
    """All class names of the data set, sorted: the index order of every model."""
    return sorted(manifest["label"].unique().tolist())


def split_frame(manifest: pd.DataFrame, split: str) -> pd.DataFrame:
    """The rows of one split, in manifest order, with a fresh index."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
    return manifest[manifest["split"] == split].reset_index(drop=True)


def split_fingerprint(manifest: pd.DataFrame, split: str = "test") -> str:
    """A short hash of a split's crop list and labels.

    Two models can share a table only when their test splits have the same fingerprint.
    The order of rows does not matter; a renamed, added or relabelled crop does.
    """
    rows = split_frame(manifest, split)
    return lines_digest(f"{p}\t{label}" for p, label in zip(rows["path"], rows["label"]))


def manifest_digest(data_dir: str | Path) -> str:
    """Hash of the manifest file's bytes: a cache key for anything computed from the crops."""
    return short_digest((Path(data_dir) / MANIFEST_NAME).read_bytes())


def short_digest(data: str | bytes) -> str:
    """The first 16 hex digits of SHA-256: the project's fingerprints and cache keys."""
    return hashlib.sha256(data.encode("utf-8") if isinstance(data, str) else data).hexdigest()[:16]


def lines_digest(lines: Iterable[str]) -> str:
    """A digest of a set of lines, whatever their order (a split's or an external set's fingerprint)."""
    return short_digest("\n".join(sorted(lines)))


def settings_digest(settings: dict[str, Any]) -> str:
    """A digest of a settings dict (keys sorted): a cache key that changes with any setting."""
    return short_digest(json.dumps(settings, sort_keys=True, default=str))


def recorded_input(data_dir: Path) -> tuple[Path | None, float]:
    """The raw-data folder and crop margin data-preprocessing.py recorded in summary.json, if any."""
    try:
        summary = fileio.read_json(data_dir / SUMMARY_NAME)
    except (OSError, ValueError):
        return None, 0.0
    if not isinstance(summary, dict):
        return None, 0.0
    settings = summary.get("settings") if isinstance(summary.get("settings"), dict) else {}
    raw = summary.get("input") if isinstance(summary.get("input"), str) else None
    margin = settings.get("margin", summary.get("margin", 0.0))
    if raw is not None and not Path(raw).is_absolute():
        raw = str(data_dir / raw)
    return (Path(raw) if raw else None), float(margin or 0.0)
