"""Atomic file writing: a reader never sees half a file, a crash never leaves one behind."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .cli import UserError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` in one rename.

    The temporary keeps ``path``'s extension (or ``suffix``) so that writers that infer the
    format from the name (matplotlib, PIL) still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix or ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_json_dict(path: str | os.PathLike, remedy: str) -> dict[str, Any]:
    """A JSON object written by an earlier stage: {} when the file is absent or not an object,
    one UserError line (ending in ``remedy``) when it is not valid JSON."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        value = read_json(path)
    except ValueError as err:
        raise UserError(f"{path} is not valid JSON ({err}); {remedy}") from None
    return value if isinstance(value, dict) else {}


def _json_default(obj: Any) -> Any:
    # numpy scalars and arrays, paths: the usual things that reach a metrics dict.
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def replace_dir(staging: str | os.PathLike, final: str | os.PathLike) -> None:
    """Move a fully written ``staging`` folder to ``final``, replacing what was there.

    The old folder is renamed aside first and removed only after the new one is in place,
    so at every moment ``final`` is either the old complete folder or the new complete one
    (apart from the instant between the two renames).
    """
    staging, final = Path(staging), Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old.", dir=final.parent))
        old.rmdir()
        os.replace(final, old)
    os.replace(staging, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def staging_dir(final: str | os.PathLike) -> Path:
    """A fresh temporary folder beside ``final`` (same file system, so the rename is atomic)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{final.name}.partial.", dir=final.parent))


@contextlib.contextmanager
def staged_dir(final: str | os.PathLike) -> Iterator[Path]:
    """A staging folder that replaces ``final`` when the block ends without an error; a failed
    run leaves no half-written folder behind, and the old ``final`` stays as it was."""
    staging = staging_dir(final)
    try:
        yield staging
        replace_dir(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)



def file_in_the_way(folder: str | os.PathLike) -> Path | None:
    """The existing file (not folder) at ``folder`` or among its parents that stops it being a folder."""
    for candidate in (Path(folder), *Path(folder).parents):
        if candidate.exists():
            return None if candidate.is_dir() else candidate
    return None


def check_output_dir(folder: str | os.PathLike, flag: str) -> None:
    """Refuse, before any work, an output folder that cannot be one because a file is in the way."""
    blocker = file_in_the_way(folder)
    if blocker is not None:
        raise UserError(f"{flag} {folder}: {blocker} is a file, not a folder; choose another {flag}")
