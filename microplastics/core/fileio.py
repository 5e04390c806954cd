"""Atomic file writing: a reader never sees half a file, a crash never leaves one behind."""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from microplastics.core.errors import InputError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` in one rename.

    The temporary keeps ``path``'s extension (or ``suffix``) so that writers that infer the
    format from the name (matplotlib, PIL) still work.
    """
    path = Path(path)
    check_output_file(path, "output file")  # a clear line rather than an OSError after the work
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
    one InputError line (ending in ``remedy``) when it is not valid JSON."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        value = read_json(path)
    except ValueError as err:
        raise InputError(f"{path} is not valid JSON ({err}); {remedy}") from None
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
    release_staging(staging)
    final.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old.", dir=final.parent))
        old.rmdir()
        os.replace(final, old)
    os.replace(staging, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# A staging folder holds a lock file, locked (flock) by the process that writes into it. The
# kernel drops the lock when that process ends, however it ends (SIGKILL too), so a later run
# can tell the staging folders of dead runs from those of live ones, and remove the former.
LOCK_NAME = ".staging.lock"
UNLOCKED_STALE_SECONDS = 600  # a staging folder without a lock file: written before there were locks
_held: dict[Path, int] = {}


def staging_prefix(final: str | os.PathLike) -> str:
    return f".{Path(final).name}.partial."


def staging_dir(final: str | os.PathLike, adopt: str | os.PathLike | None = None) -> Path:
    """A fresh temporary folder beside ``final`` (same file system, so the rename is atomic),
    or ``adopt``, the staging folder of an earlier run to continue; locked by this process.

    The stale staging folders of ``final`` (runs that were killed) are removed first, each
    with a line on stderr.
    """
    final = Path(final)
    check_output_dir(final, "output folder")
    final.parent.mkdir(parents=True, exist_ok=True)
    adopted = Path(adopt) if adopt is not None else None
    for stale in stale_staging_dirs(final):
        if adopted is None or stale.resolve() != adopted.resolve():
            shutil.rmtree(stale, ignore_errors=True)
            print(f"note: removed {stale}, the unfinished output of an earlier run that was stopped", file=sys.stderr)
    staging = adopted or Path(tempfile.mkdtemp(prefix=staging_prefix(final), dir=final.parent))
    if not _lock(staging):
        raise InputError(f"{staging} is in use by another run; wait for it to end")
    return staging


def stale_staging_dirs(final: str | os.PathLike) -> list[Path]:
    """The staging folders of ``final`` that no live process holds, newest first."""
    final = Path(final)
    if not final.parent.is_dir():
        return []
    found = []
    for folder in final.parent.glob(staging_prefix(final) + "*"):
        if not folder.is_dir() or folder.resolve() in _held:
            continue
        if (folder / LOCK_NAME).is_file():
            if _lock(folder):
                release_staging(folder, remove_lock=False)
                found.append(folder)
        elif time.time() - folder.stat().st_mtime > UNLOCKED_STALE_SECONDS:
            found.append(folder)
    return sorted(found, key=lambda f: f.stat().st_mtime, reverse=True)


def _lock(staging: Path) -> bool:
    """Lock ``staging`` for this process; False when another process holds it.

    A new lock file is locked under a temporary name and then renamed into place, so that
    no other process ever sees an unlocked lock file of a live run.
    """
    path = staging / LOCK_NAME
    fresh = not path.exists()
    target = staging / f"{LOCK_NAME}.{os.getpid()}" if fresh else path
    fd = os.open(target, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    if fresh:
        os.replace(target, path)
    _held[staging.resolve()] = fd
    return True


def release_staging(staging: str | os.PathLike, remove_lock: bool = True) -> None:
    """Give up this process's lock on ``staging`` (the folder stays; a later run may adopt it)."""
    staging = Path(staging)
    fd = _held.pop(staging.resolve(), None)
    if fd is None:
        return
    if remove_lock:
        (staging / LOCK_NAME).unlink(missing_ok=True)
    os.close(fd)


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
        raise InputError(f"{flag} {folder}: {blocker} is a file, not a folder; choose another {flag}")


def check_output_file(path: str | os.PathLike, flag: str) -> None:
    """Refuse, before any work, an output file path that is a folder or lies under a file."""
    if Path(path).is_dir():
        raise InputError(f"{flag} {path} is a folder; name a file, e.g. {Path(path) / 'out.csv'}")
    check_output_dir(Path(path).parent, flag)


@contextlib.contextmanager
def staged_dir(final: str | os.PathLike) -> Iterator[Path]:
    """A staging folder that replaces ``final`` when the block ends without an error; a failed
    run leaves no half-written folder behind, and the old ``final`` stays as it was."""
    staging = staging_dir(final)
    try:
        yield staging
        replace_dir(staging, final)
    finally:
        release_staging(staging)
        shutil.rmtree(staging, ignore_errors=True)
