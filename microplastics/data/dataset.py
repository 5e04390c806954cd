"""The processed_MICRO/ contract: manifest.csv, class names, splits, the split fingerprint and
what summary.json recorded of the input.

Every model stage reads its data through here, so all of them agree on class order
(sorted names, as torchvision's ImageFolder does) and on which crops form each split.
"""
from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from microplastics.core import fileio
from microplastics.core.errors import InputError

MANIFEST_NAME = "manifest.csv"
SUMMARY_NAME = "summary.json"
SPLITS = ("train", "val", "test")
MANIFEST_COLUMNS = ("path", "label", "split", "source_image", "minr", "minc", "maxr", "maxc")
BOX_COLUMNS = ("minr", "minc", "maxr", "maxc")
# Optional: 1 marks a synthetic crop (data-preprocessing.py --mix-synthetic-photos). Such rows sit in
# train/ as a pool the training stages may draw from (--mix-synthetic); split_frame leaves them out, so
# no stage scores them, and a manifest with one in val or test is refused.
SYNTHETIC_COLUMN = "synthetic"
MAX_NAME_BYTES = 100  # class and crop names become folder and file names: far below the usual 255-byte limit
_REBUILD = "rebuild the folder with data-preprocessing.py"


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be one folder or file name inside the data folder (a class name becomes
    a folder under each split), or None when it can."""
    if not name:
        return "empty name"
    if name in (".", ".."):
        return f"{name!r} is not a name"
    if "/" in name or "\\" in name:
        return "holds '/' or '\\'"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        return "holds control characters"
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        return f"longer than {MAX_NAME_BYTES} bytes"
    return None


def crop_path(split: str, label: str, file_name: str) -> str:
    """The manifest path of a crop, ``<split>/<label>/<file_name>``; each part must be one plain
    folder or file name, so the path can never point outside the data folder."""
    for part in (label, file_name):
        problem = name_problem(part)
        if problem:
            raise ValueError(f"unsafe path part {part[:60]!r}: {problem}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}")
    return f"{split}/{label}/{file_name}"


def check_data_dir(data_dir: str | Path, what: str = "data folder") -> Path:
    """``data_dir`` when it is a folder holding manifest.csv; otherwise one line saying what it is.
    ``what`` names it in the message (``--data`` where the user typed it)."""
    data_dir = Path(data_dir)
    if not data_dir.exists():
        raise InputError(f"{what} {data_dir} does not exist; run data-preprocessing.py first")
    if not data_dir.is_dir():
        hint = (f"; did you mean {data_dir.parent}?" if data_dir.name == MANIFEST_NAME
                else "; pass the folder data-preprocessing.py wrote (it holds manifest.csv and summary.json)")
        raise InputError(f"{what} {data_dir} is a file, not a folder{hint}")
    if not (data_dir / MANIFEST_NAME).is_file():
        raise InputError(f"{data_dir / MANIFEST_NAME} not found; is {data_dir} the output of data-preprocessing.py?")
    return data_dir


def load_manifest(data_dir: str | Path) -> pd.DataFrame:
    """Read ``<data_dir>/manifest.csv`` and check it; paths stay relative to ``data_dir``.

    Every stage reads the manifest here, so every stage refuses the same things: a file that
    is not a manifest, blank or unusable values, a crop listed twice, a path that is not
    ``<split>/<label>/<file>`` (so a crop cannot be listed in a second split) or that leads
    outside the folder (by name or through a link), a photo in two splits of a photo-grouped split, and a
    manifest that is not the one data-preprocessing.py wrote (its digest in summary.json).
    """
    data_dir = check_data_dir(data_dir)
    path = data_dir / MANIFEST_NAME
    raw = path.read_bytes()
    if not raw.strip():
        raise InputError(f"{path} is empty; {_REBUILD}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path} is not a text file (not UTF-8); {_REBUILD}") from None
    summary = _check_digest(data_dir, path, raw)
    frame = _parse_manifest(path, text)
    _check_rows(frame, data_dir, path, summary)
    return frame


def _parse_manifest(path: Path, text: str) -> pd.DataFrame:
    try:
        frame = pd.read_csv(io.StringIO(text), keep_default_na=False,
                            dtype={"path": str, "label": str, "split": str, "source_image": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise InputError(f"{path} is not a readable CSV ({' '.join(str(err).split())}); {_REBUILD}") from None
    missing = [c for c in MANIFEST_COLUMNS if c not in frame.columns]
    if missing:
        raise InputError(f"{path} lacks column(s) {', '.join(missing)}; {_REBUILD}")
    if frame.empty:
        raise InputError(f"{path} lists no crops; {_REBUILD}")
    for column in ("path", "label", "split", "source_image"):
        frame[column] = frame[column].str.strip()
    boxes = frame[list(BOX_COLUMNS)].apply(pd.to_numeric, errors="coerce")
    for column in ("path", "label", "split", "source_image") + BOX_COLUMNS:
        blank = frame[column] == ""
        if column in BOX_COLUMNS:
            blank |= boxes[column].isna() | (boxes[column] % 1 != 0)
        if blank.any():
            row = int(blank.to_numpy().argmax())
            value = str(frame[column].iloc[row])
            what = "blank" if value == "" else f"not a whole number ({value[:40]!r})"
            raise InputError(f"{path} row {row + 2}: {column} is {what}; {_REBUILD}")
    frame[list(BOX_COLUMNS)] = boxes.astype("int64")
    return frame


def _check_digest(data_dir: Path, path: Path, raw: bytes) -> dict[str, Any]:
    """Refuse a manifest edited after data-preprocessing.py recorded its digest in summary.json;
    returns summary.json ({} when there is none: a folder not built by data-preprocessing.py)."""
    try:
        summary = fileio.read_json(data_dir / SUMMARY_NAME)
    except (OSError, ValueError):
        return {}
    summary = summary if isinstance(summary, dict) else {}
    recorded = summary.get("manifest_digest")
    if isinstance(recorded, str) and recorded != short_digest(raw):
        raise InputError(f"{path} was changed after data-preprocessing.py wrote it (its digest is not the one "
                        f"in {SUMMARY_NAME}); {_REBUILD}")
    return summary


def _check_rows(frame: pd.DataFrame, data_dir: Path, path: Path, summary: dict[str, Any]) -> None:
    bad = sorted(set(frame["split"]) - set(SPLITS))
    if bad:
        raise InputError(f"{path} has unknown split name(s) {bad}; expected {list(SPLITS)}")
    for label in frame["label"].unique():
        problem = name_problem(label)
        if problem:
            row = int((frame["label"] == label).to_numpy().argmax()) + 2
            raise InputError(f"{path} row {row}: label {label[:60]!r} is unusable ({problem}); {_REBUILD}")
    parts = frame["path"].str.replace("\\", "/").str.split("/")
    outside = frame["path"].str.startswith("/") | parts.map(lambda p: ".." in p)
    file_names = parts.str[-1]
    bad_name = file_names.map(lambda n: name_problem(n) is not None)
    misplaced = frame["path"] != frame["split"] + "/" + frame["label"] + "/" + file_names
    for mask, what in ((outside, "leads outside {data_dir}"),
                       (bad_name | misplaced, "is not {split}/{label}/<crop file> inside {data_dir}")):
        if mask.any():
            row = int(mask.to_numpy().argmax())
            detail = what.format(data_dir=data_dir, split=frame["split"].iloc[row], label=frame["label"].iloc[row])
            raise InputError(f"{path} row {row + 2}: path {frame['path'].iloc[row][:80]!r} {detail}; {_REBUILD}")
    dup = frame["path"].duplicated(keep=False)
    if dup.any():  # counted twice in its split's scores
        rows = [i + 2 for i in frame.index[dup & (frame["path"] == frame.loc[dup.idxmax(), "path"])][:4]]
        raise InputError(f"{path}: crop {frame.loc[dup.idxmax(), 'path']} is listed more than once (rows "
                        f"{', '.join(map(str, rows))}); {_REBUILD}")
    _check_synthetic(frame, path)
    _check_groups(frame, path, summary)
    _check_links(frame, data_dir, path)


def _check_synthetic(frame: pd.DataFrame, path: Path) -> None:
    """The synthetic mark, where there is one, is 0 or 1, and 1 only in the train split."""
    if SYNTHETIC_COLUMN not in frame.columns:
        return
    mark = pd.to_numeric(frame[SYNTHETIC_COLUMN], errors="coerce")
    bad = ~mark.isin([0, 1])
    if bad.any():
        row = int(bad.to_numpy().argmax())
        raise InputError(f"{path} row {row + 2}: {SYNTHETIC_COLUMN} is {str(frame[SYNTHETIC_COLUMN].iloc[row])[:40]!r},"
                        f" not 0 or 1; {_REBUILD}")
    frame[SYNTHETIC_COLUMN] = mark.astype("int64")
    scored = (mark == 1) & (frame["split"] != "train")
    if scored.any():
        row = int(scored.to_numpy().argmax())
        raise InputError(f"{path} row {row + 2}: synthetic crop {frame['path'].iloc[row][:80]!r} is in the "
                        f"{frame['split'].iloc[row]} split; synthetic crops are for training only; {_REBUILD}")


def _check_groups(frame: pd.DataFrame, path: Path, summary: dict[str, Any]) -> None:
    """With a grouped split (by photo or series, as summary.json records) a group lies in one
    split: a photo whose crops are in two splits leaks between them."""
    settings = summary.get("settings") if isinstance(summary.get("settings"), dict) else {}
    if settings.get("group_by") in (None, "none") or "group" not in frame.columns:
        return
    splits = frame.groupby("group")["split"].unique()
    mixed = splits[splits.map(len) > 1]
    if len(mixed):
        raise InputError(f"{path}: the crops of {settings['group_by']} {mixed.index[0]!r} are in "
                        f"{' and '.join(sorted(mixed.iloc[0]))}, but the split was grouped by "
                        f"{settings['group_by']}; {_REBUILD}")


def _check_links(frame: pd.DataFrame, data_dir: Path, path: Path) -> None:
    """No crop path leads outside ``data_dir`` through a link (the names were checked before).
    A missing crop is left to the stage that reads it: report.py, for one, needs no pixels."""
    root = data_dir.resolve()
    # One resolve per <split>/<label> folder and one lstat per crop, not a resolve per crop.
    folders = {rel.rsplit("/", 1)[0] for rel in frame["path"]}
    escaping = [f for f in folders if not (data_dir / f).resolve().is_relative_to(root)]
    escaping += [rel for rel in frame["path"] if (data_dir / rel).is_symlink()
                 and not (data_dir / rel).resolve().is_relative_to(root)]
    if escaping:
        raise InputError(f"{path}: {escaping[0]} leads outside {data_dir} through a link; {_REBUILD}")


def class_names(manifest: pd.DataFrame) -> list[str]:
    """All class names of the real crops, sorted: the index order of every model."""
    return sorted(manifest.loc[~synthetic_mask(manifest), "label"].unique().tolist())


def split_frame(manifest: pd.DataFrame, split: str) -> pd.DataFrame:
    """The real rows of one split, in manifest order, with a fresh index (synthetic crops are not
    part of any split: ``synthetic_frame`` has them)."""
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
    return manifest[(manifest["split"] == split) & ~synthetic_mask(manifest)].reset_index(drop=True)


def synthetic_mask(manifest: pd.DataFrame) -> pd.Series:
    """True for the synthetic crops of the manifest (none in a manifest without the column)."""
    if SYNTHETIC_COLUMN not in manifest.columns:
        return pd.Series(False, index=manifest.index)
    return manifest[SYNTHETIC_COLUMN].astype("int64") == 1


def synthetic_frame(manifest: pd.DataFrame) -> pd.DataFrame:
    """The pool of synthetic training crops, in manifest order, with a fresh index."""
    return manifest[synthetic_mask(manifest)].reset_index(drop=True)


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


def recorded_crop_scale(data_dir: str | Path) -> float | None:
    """The micrometres per pixel data-preprocessing.py resampled every crop to (None: not resampled)."""
    try:
        summary = fileio.read_json(Path(data_dir) / SUMMARY_NAME)
    except (OSError, ValueError):
        return None
    calibration = summary.get("calibration") if isinstance(summary, dict) else None
    value = calibration.get("crop_um_per_px") if isinstance(calibration, dict) else None
    return float(value) if isinstance(value, (int, float)) and value > 0 else None
