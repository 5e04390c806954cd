"""Read annotated photos (DeepParticle TSV or a YOLO export) into one record type.

Both layouts become a list of :class:`BoxRecord`: the photo, a box in pixel rows and
columns (max exclusive, clamped to the image) and the class. Anything that cannot be
used (an unreadable photo, a TSV without its photo, a row with a bad number...) is
listed in ``AnnotationSet.skipped`` with the reason, and reading goes on.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
import yaml
from PIL import Image, UnidentifiedImageError

from microplastics.core.errors import InputError
from microplastics.data.dataset import name_problem, short_digest
from microplastics.core.images import is_image_file

FORMATS = ("auto", "deepparticle", "yolo")
BOX_COLUMNS = ("minr", "minc", "maxr", "maxc")
TO_REMOVE_NAME = "to_remove.txt"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_CROP_STEM = 80  # characters of a crop file name before '.png'; longer names end in a hash instead


@dataclass(frozen=True)
class BoxRecord:
    """One annotated box of one photo; ``crop_name`` is the file name its crop gets."""

    photo: Path
    box_id: str
    minr: int
    minc: int
    maxr: int
    maxc: int
    label: str | None
    crop_name: str


@dataclass
class AnnotationSet:
    """Everything read from an input folder: usable boxes and what was left out, with why."""

    records: list[BoxRecord]
    skipped: list[tuple[str, str]]
    format: str
    clamped: list[str] = field(default_factory=list)  # boxes that reached past the image edge


@dataclass
class _Collector:
    """Accumulates records and skips while one layout is read."""

    root: Path
    records: list[BoxRecord] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    clamped: list[str] = field(default_factory=list)
    # Per record, the crop name the source gave it (after the '/' of a TSV class), for to_remove.txt.
    originals: list[str] = field(default_factory=list)

    def skip(self, item: Path | str, reason: str) -> None:
        self.skipped.append((self.rel(item), reason))

    def rel(self, item: Path | str) -> str:
        return relative_name(item, self.root) if isinstance(item, Path) else item


def detect_format(input_dir: str | Path) -> str:
    """``deepparticle`` for raw_img/ + annotation/, ``yolo`` for images/ + labels/."""
    root = Path(input_dir)
    if not root.is_dir():
        raise InputError(f"input folder {root} does not exist; pass --input with a MICRO folder "
                        "(raw_img/ + annotation/) or a YOLO export (images/ + labels/)")
    found = _layout_of(root)
    if found:
        return found
    inner = sorted(str(sub) for sub in root.iterdir() if sub.is_dir() and _layout_of(sub))
    hint = f"; did you mean --input {inner[0]}?" if inner else ""
    raise InputError(f"{root} is neither a DeepParticle folder (raw_img/ and annotation/) "
                    f"nor a YOLO export (images/, labels/ and data.yaml){hint}")


def _layout_of(folder: Path) -> str | None:
    if (folder / "raw_img").is_dir() and (folder / "annotation").is_dir():
        return "deepparticle"
    if (folder / "images").is_dir() and (folder / "labels").is_dir():
        return "yolo"
    return None


def read_annotations(input_dir: str | Path, fmt: str = "auto", *, require_label: bool = True) -> AnnotationSet:
    """Read every usable box of ``input_dir``; ``fmt`` is auto, deepparticle or yolo.

    With ``require_label=False`` a file without classes still gives boxes (label None),
    which is what classifying new, unlabelled photos needs.
    """
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    root = Path(input_dir)
    detected = detect_format(root)
    if fmt != "auto" and fmt != detected:
        _check_layout(root, fmt)
        detected = fmt
    col = _Collector(root)
    if detected == "deepparticle":
        _read_deepparticle(col, require_label)
    else:
        _read_yolo(col, require_label)
    records = _apply_to_remove(col, _unique_crop_names(col.records))
    return AnnotationSet(records=records, skipped=col.skipped, format=detected, clamped=col.clamped)


def photo_root(root: Path, fmt: str) -> Path:
    """The folder that holds the photos of a ``deepparticle`` or ``yolo`` input folder."""
    return Path(root) / ("raw_img" if fmt == "deepparticle" else "images")


def relative_name(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` with forward slashes, or whole when it lies elsewhere."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def records_by_photo(records: Iterable[BoxRecord]) -> dict[Path, list[BoxRecord]]:
    """The records grouped by their photo, photos in order of first appearance."""
    by_photo: dict[Path, list[BoxRecord]] = {}
    for record in records:
        by_photo.setdefault(record.photo, []).append(record)
    return by_photo


def margin_pixels(size: int, margin: float) -> int:
    """The pixels ``crop_box`` adds on each side of a box ``size`` pixels long (before the photo's edge)."""
    return int(round(margin * size))


def crop_box(image: np.ndarray, record: BoxRecord, margin: float = 0.0) -> np.ndarray:
    """Cut ``record``'s box out of ``image``, widened by ``margin`` x box size on each side."""
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    dr, dc = margin_pixels(record.maxr - record.minr, margin), margin_pixels(record.maxc - record.minc, margin)
    height, width = image.shape[:2]
    r0, r1 = max(0, record.minr - dr), min(height, record.maxr + dr)
    c0, c1 = max(0, record.minc - dc), min(width, record.maxc + dc)
    # A copy, so a kept crop does not hold the whole photo in memory.
    return np.ascontiguousarray(image[r0:r1, c0:c1])


def safe_name(text: str) -> str:
    """A file-name-safe version of ``text``: spaces, colons, slashes and the like become '_'."""
    return _UNSAFE.sub("_", text).strip("._") or "x"


# --- shared helpers -------------------------------------------------------------------------

def _check_layout(root: Path, fmt: str) -> None:
    need = ("raw_img", "annotation") if fmt == "deepparticle" else ("images", "labels")
    missing = [n for n in need if not (root / n).is_dir()]
    if missing:
        raise InputError(f"--format {fmt} needs {' and '.join(n + '/' for n in need)} in {root}; "
                        f"missing {', '.join(missing)}")


def _image_size(col: _Collector, photo: Path) -> tuple[int, int] | None:
    """(height, width) from the image header without decoding the pixels; None if unreadable."""
    try:
        with Image.open(photo) as img:
            width, height = img.size
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as err:
        col.skip(photo, f"unreadable image: {type(err).__name__}")
        return None
    return height, width


def _list_photos(col: _Collector, folder: Path) -> list[Path]:
    photos = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue  # hidden files (.DS_Store) and sub-folders are not photos
        if is_image_file(path):
            photos.append(path)
        else:
            col.skip(path, "not an image file")
    return photos


def _make_record(col: _Collector, photo: Path, size: tuple[int, int], box_id: str,
                 box: tuple[int, int, int, int], label: str | None, item: str, original: str = "") -> None:
    """Check the class name, clamp ``box`` to the image and keep it; or skip it, with the reason.

    Every record of every layout passes here, so a class name (which becomes a folder name
    under each split) is checked in this one place: '../x', '/abs', 'a/b' or a 300-character
    name never reaches a path.
    """
    if label is not None:
        problem = name_problem(label)
        if problem:
            col.skip(item, f"bad class: {label[:60]!r} ({problem})")
            return
    height, width = size
    minr, minc, maxr, maxc = box
    clamped = (max(0, minr), max(0, minc), min(height, maxr), min(width, maxc))
    if clamped[2] <= clamped[0] or clamped[3] <= clamped[1]:
        col.skip(item, f"empty box: {box} in a {height}x{width} image")
        return
    if clamped != box:
        col.clamped.append(item)
    col.records.append(BoxRecord(photo, box_id, *clamped, label, crop_file_name(photo.name, box_id)))
    col.originals.append(original)


def crop_file_name(photo_name: str, box_id: str) -> str:
    """``<photo stem>__<box ID>.png`` with unsafe characters replaced; a name that would be too long
    for a file system keeps its start and ends in a hash of the whole (the manifest keeps the
    photo name and box ID as they were)."""
    stem = f"{safe_name(Path(photo_name).stem)}__{safe_name(box_id)}"
    if len(stem) > _MAX_CROP_STEM:
        stem = f"{stem[: _MAX_CROP_STEM - 17]}-{short_digest(photo_name + chr(0) + box_id)}"
    return f"{stem}.png"


def _clean_label(raw: str) -> str:
    """The class part of a DeepParticle ``class`` value (before the first '/'); checked in _make_record."""
    return raw.split("/", 1)[0].strip()


def _unique_crop_names(records: list[BoxRecord]) -> list[BoxRecord]:
    """Give clashing crop names (same stem, other extension; repeated IDs) a -2, -3 suffix."""
    seen: dict[str, int] = {}
    out = []
    for rec in records:
        key = rec.crop_name.lower()  # case-insensitive file systems see X.png and x.png as one
        if key in seen:
            seen[key] += 1
            stem = rec.crop_name[: -len(".png")]
            name = f"{stem}-{seen[key]}.png"
            while name.lower() in seen:
                seen[key] += 1
                name = f"{stem}-{seen[key]}.png"
            seen[name.lower()] = 1
            rec = replace(rec, crop_name=name)
        else:
            seen[key] = 1
        out.append(rec)
    return out


# --- to_remove.txt --------------------------------------------------------------------------

def _read_to_remove(root: Path) -> set[str]:
    path = root / TO_REMOVE_NAME
    if not path.is_file():
        return set()
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return {line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")}


def _apply_to_remove(col: _Collector, records: list[BoxRecord]) -> list[BoxRecord]:
    """Leave out the crops that to_remove.txt names (see docs/data-preprocessing.md for the forms)."""
    names = _read_to_remove(col.root)
    if not names:
        return records
    keep = []
    for rec, original in zip(records, col.originals):
        keys = _removal_keys(rec, original)
        if keys & names:
            col.skip(f"{rec.photo.name} box {rec.box_id}", "listed in to_remove.txt")
        else:
            keep.append(rec)
    return keep


def _removal_keys(rec: BoxRecord, original: str) -> set[str]:
    keys = {rec.crop_name, rec.crop_name[: -len(".png")]}
    if original:
        keys.add(original)
        if rec.label:
            keys.add(f"{rec.label}/{original}")
    if rec.label:
        keys.add(f"{rec.label}/{rec.crop_name}")
    return keys


# --- DeepParticle: raw_img/ + annotation/<photo name>.tsv -----------------------------------

def _read_deepparticle(col: _Collector, require_label: bool) -> None:
    photos = _list_photos(col, col.root / "raw_img")
    pairs = _pair_tsvs(col, photos, sorted(p for p in (col.root / "annotation").iterdir()
                                           if p.is_file() and not p.name.startswith(".")))
    for photo in photos:
        tsv = pairs.get(photo)
        if tsv is None:
            col.skip(photo, "no annotation file")
            continue
        size = _image_size(col, photo)
        if size is not None:
            _read_tsv(col, photo, tsv, size, require_label)


def _pair_tsvs(col: _Collector, photos: list[Path], tsvs: list[Path]) -> dict[Path, Path]:
    """Match each TSV to its photo: exact name, then case-insensitive, then by stem."""
    by_name: dict[str, list[Path]] = {}
    by_stem: dict[str, list[Path]] = {}
    for photo in photos:
        by_name.setdefault(photo.name.lower(), []).append(photo)
        by_stem.setdefault(photo.stem.lower(), []).append(photo)
    pairs: dict[Path, Path] = {}
    for tsv in tsvs:
        if tsv.suffix.lower() != ".tsv":
            col.skip(tsv, "not a .tsv file")
            continue
        key = tsv.name[: -len(".tsv")]
        candidates = _candidates(key, by_name, by_stem)
        if not candidates:
            col.skip(tsv, "no photo for this annotation file")
        elif len(candidates) > 1:
            col.skip(tsv, f"ambiguous: matches {', '.join(p.name for p in candidates)}")
        elif candidates[0] in pairs:
            col.skip(tsv, f"second annotation file for {candidates[0].name}")
        else:
            pairs[candidates[0]] = tsv
    return pairs


def _candidates(key: str, by_name: dict[str, list[Path]], by_stem: dict[str, list[Path]]) -> list[Path]:
    exact = [p for p in by_name.get(key.lower(), []) if p.name == key]
    if exact:
        return exact
    if key.lower() in by_name:
        return by_name[key.lower()]
    if key.lower() in by_stem:  # x.tsv for x.png
        return by_stem[key.lower()]
    if is_image_file(key):  # x.jpg.tsv for x.png
        return by_stem.get(Path(key).stem.lower(), [])
    return []


def _read_tsv(col: _Collector, photo: Path, tsv: Path, size: tuple[int, int], require_label: bool) -> None:
    try:
        frame = pd.read_csv(tsv, sep="\t", dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        col.skip(tsv, "empty file")
        return
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        col.skip(tsv, f"not a readable TSV: {str(err).splitlines()[0]}")
        return
    frame.columns = [str(c).strip().lstrip("\ufeff").lower() for c in frame.columns]
    needed = BOX_COLUMNS + (("class",) if require_label else ())
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        # A single column usually means spaces or commas where tabs were expected.
        hint = " (is it tab-separated?)" if len(frame.columns) == 1 else ""
        col.skip(tsv, f"missing column(s): {', '.join(missing)}{hint}")
        return
    if frame.empty:
        col.skip(tsv, "no boxes")
        return
    for index, row in enumerate(frame.to_dict("records")):
        _tsv_row(col, photo, tsv, size, index, row)


def _tsv_row(col: _Collector, photo: Path, tsv: Path, size: tuple[int, int], index: int, row: dict) -> None:
    item = f"{col.rel(tsv)} row {index + 1}"
    box = []
    for name in BOX_COLUMNS:
        value = _to_int(row[name])
        if value is None:
            col.skip(item, f"bad number: {name}={row[name]!r}")
            return
        box.append(value)
    label = None
    original = ""
    if "class" in row:
        raw = str(row["class"])
        label = _clean_label(raw)
        original = raw.split("/", 1)[1].strip() if "/" in raw else ""
    box_id = str(row.get("id", "")).strip() or str(index)
    _make_record(col, photo, size, box_id, tuple(box), label, item, original)


def _to_int(value: object) -> int | None:
    """An integer pixel coordinate from text; whole floats ('12.0') pass, anything else is None."""
    try:
        number = float(str(value).strip())
    except ValueError:
        return None
    if not np.isfinite(number) or number != int(number):
        return None
    return int(number)


# --- YOLO: images/ + labels/<stem>.txt + data.yaml ------------------------------------------

def _read_yolo(col: _Collector, require_label: bool) -> None:
    names = _yolo_names(col.root, require_label)
    photos = _list_photos(col, col.root / "images")
    labels = {p.stem.lower(): p for p in sorted((col.root / "labels").glob("*.txt"))}
    used: set[str] = set()
    for photo in photos:
        label_file = labels.get(photo.stem.lower())
        if label_file is None:
            col.skip(photo, "no label file")
            continue
        used.add(photo.stem.lower())
        size = _image_size(col, photo)
        if size is not None:
            _read_label_file(col, photo, label_file, size, names)
    for stem, label_file in labels.items():
        if stem not in used:
            col.skip(label_file, "no photo for this label file")


def _yolo_names(root: Path, require_label: bool) -> dict[int, str] | None:
    """Class names by index from data.yaml: a list, or a mapping index -> name (gaps allowed).

    The names are checked with every box, in _make_record, like the classes of a TSV.
    """
    path = next((root / n for n in ("data.yaml", "data.yml") if (root / n).is_file()), None)
    if path is None:
        if require_label:
            raise InputError(f"YOLO export {root} has no data.yaml; it must list the class names "
                            "(names: [...])")
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8-sig")) or {}
    except UnicodeDecodeError:
        raise InputError(f"{path} is not a text file (not UTF-8); it must be YAML listing the class "
                        "names (names: [...])") from None
    except yaml.YAMLError as err:
        raise InputError(f"{path} is not valid YAML: {str(err).splitlines()[0]}") from None
    names = data.get("names") if isinstance(data, dict) else None
    if isinstance(names, list):
        names = dict(enumerate(names))
    if not isinstance(names, dict) or not names:
        if require_label:
            raise InputError(f"{path} has no 'names' list of class names")
        return None
    return {_class_index(path, key): _class_text(path, key, name) for key, name in names.items()}


def _class_index(path: Path, key: object) -> int:
    """A names key of data.yaml as a class index: a whole number >= 0 (YAML may give it as text)."""
    text = str(key).strip()
    if isinstance(key, bool) or not (isinstance(key, int) or (text.isascii() and text.isdigit())) or int(text) < 0:
        raise InputError(f"{path}: the names mapping has the key {text[:40]!r}; its keys must be the class "
                        "indices 0, 1, 2, ... of the label files")
    return int(text)


def _class_text(path: Path, key: object, name: object) -> str:
    if isinstance(name, bool) or not isinstance(name, (str, int, float)):
        raise InputError(f"{path}: class {key} is {str(name)[:40]!r}, not a name; write names: [fiber, film, ...]")
    return str(name).strip()


def _read_label_file(col: _Collector, photo: Path, label_file: Path, size: tuple[int, int],
                     names: dict[int, str] | None) -> None:
    # utf-8-sig: a byte-order mark (some Windows editors write one) is not part of the first class index.
    lines = [ln for ln in label_file.read_text(encoding="utf-8-sig", errors="replace").splitlines() if ln.strip()]
    if not lines:
        col.skip(label_file, "no boxes")
        return
    for index, line in enumerate(lines):
        item = f"{col.rel(label_file)} line {index + 1}"
        parsed = _parse_yolo_line(line, size, names)
        if isinstance(parsed, str):
            col.skip(item, parsed)
        else:
            label, box = parsed
            _make_record(col, photo, size, str(index), box, label, item)


def _parse_yolo_line(line: str, size: tuple[int, int],
                     names: dict[int, str] | None) -> tuple[str | None, tuple[int, int, int, int]] | str:
    """(label, box) from ``class xc yc w h`` (or a polygon ``class x1 y1 x2 y2 ...``); a reason on failure."""
    parts = line.split()
    try:
        # Fractions keep the decimal text exact, so x.5 pixel edges round the same way every time.
        values = [Fraction(p) for p in parts[1:]]
        class_id = int(parts[0])
    except (ValueError, ZeroDivisionError, IndexError):
        return f"bad number: {line.strip()!r}"
    if names is not None and class_id not in names:
        return f"bad class: index {class_id} not in data.yaml names"
    label = names[class_id] if names is not None else None
    height, width = size
    if len(values) == 4:
        xc, yc, w, h = values
        edges = (yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2)
    elif len(values) >= 6 and len(values) % 2 == 0:
        xs, ys = values[0::2], values[1::2]
        edges = (min(ys), min(xs), max(ys), max(xs))
    else:
        return f"bad number: expected 5 values, got {len(parts)}"
    scale = (height, width, height, width)
    # round() of a Fraction rounds half to even: the rule that reproduces DeepParticle's pixel boxes.
    box = tuple(int(round(e * s)) for e, s in zip(edges, scale))
    return label, box  # type: ignore[return-value]


def count_reasons(skipped: Iterable[tuple[str, str]]) -> dict[str, int]:
    """Skips counted by reason kind: the text before the first ':' of each reason."""
    counts: dict[str, int] = {}
    for _, reason in skipped:
        kind = reason.split(":", 1)[0]
        counts[kind] = counts.get(kind, 0) + 1
    return dict(sorted(counts.items()))
