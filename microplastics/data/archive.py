"""Safe unpacking of .tar.gz/.tgz/.tar/.zip archives: nothing is ever written outside the target.

Every entry is checked before the first byte is written, so a hostile archive is refused
whole rather than half unpacked. An entry is refused when its name is absolute or holds
``..``, or when it is a link whose target lies outside the target folder. Tar members are
then extracted with tarfile's ``data`` filter as a second line of defence.

The sizes the entries declare are checked first too (they bound what is written: tarfile
and zipfile never write more than an entry's declared size): an archive that would unpack
to more than ``max_bytes``, to more than the free disk space, or that expands more than
MAX_RATIO times (a compression bomb) is refused before anything is written.
"""
from __future__ import annotations

import os
import posixpath
import re
import shutil
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path

from tqdm import tqdm

from microplastics.core.cli import one_line
from microplastics.core.errors import InputError

SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
MAX_UNPACKED_BYTES = 20 * 10**9  # the default cap on the unpacked size; MICRO unpacks to well under 1 GB
MAX_RATIO = 100  # photos hardly compress and TSVs some 10 times; 100 times more is a bomb
RATIO_FLOOR = 64 * 2**20  # below 64 MiB unpacked, a high ratio harms nothing (tiny text archives reach it)
MAX_ENTRIES = 1_000_000


class UnsafeArchiveError(InputError):
    """An archive entry would land outside the target folder."""


def archive_stem(name: str) -> str:
    """``MICRO.tar.gz`` -> ``MICRO``; a name without an archive suffix comes back unchanged."""
    for suffix in SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def is_archive(name: str | os.PathLike) -> bool:
    return str(name).lower().endswith(SUFFIXES)


def check_archive_path(archive: str | os.PathLike) -> Path:
    """``archive`` when it is a file with an archive suffix; otherwise one line saying what it is."""
    archive = Path(archive)
    if archive.is_dir():
        raise InputError(f"archive {archive} is a folder, not an archive file; pass the {'/'.join(SUFFIXES)} "
                        "file itself, or, if the folder already holds raw_img/ and annotation/, give it to "
                        "data-preprocessing.py --input directly")
    if not archive.exists():
        raise InputError(f"archive {archive} does not exist; check the path")
    if not archive.is_file():
        raise InputError(f"archive {archive} is not a regular file; pass a {'/'.join(SUFFIXES)} file")
    if not is_archive(archive.name):
        raise InputError(f"{archive} is not a supported archive; expected one of {', '.join(SUFFIXES)}")
    return archive


def unpack(archive: str | os.PathLike, dest: str | os.PathLike, max_bytes: int = MAX_UNPACKED_BYTES) -> None:
    """Unpack ``archive`` into the folder ``dest`` (created if missing), refusing unsafe entries
    and archives that would unpack to more than ``max_bytes``."""
    archive, dest = check_archive_path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if archive.name.lower().endswith(".zip"):
            _unpack_zip(archive, dest, max_bytes)
        else:
            _unpack_tar(archive, dest, max_bytes)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError) as err:
        # A truncated or damaged file, or a full disk: name the file, keep it to one line.
        raise InputError(f"cannot unpack {archive}: {one_line(err)}; if it was downloaded, download it again") from None


def check_entry(name: str, link_target: str | None = None, hard_link: bool = False) -> None:
    """Raise UnsafeArchiveError if the entry ``name`` (or the link it makes) escapes the target.

    A symbolic link's target is relative to the entry's own folder, a hard link's to the
    archive's root. The check is on the names alone, so it runs before anything is written.
    """
    _check_name(name)
    if link_target is None:
        return
    if _is_absolute(link_target):
        raise UnsafeArchiveError(f"archive entry {name!r} links to the absolute path {link_target!r}; "
                                 "refusing to unpack")
    base = "" if hard_link else posixpath.dirname(_posix(name))
    resolved = posixpath.normpath(posixpath.join(base, _posix(link_target)))
    if resolved == ".." or resolved.startswith("../"):
        raise UnsafeArchiveError(f"archive entry {name!r} links outside the target folder ({link_target!r}); "
                                 "refusing to unpack")


def _check_name(name: str) -> None:
    if _is_absolute(name):
        raise UnsafeArchiveError(f"archive entry {name!r} has an absolute path; refusing to unpack")
    if ".." in _posix(name).split("/"):
        raise UnsafeArchiveError(f"archive entry {name!r} climbs out with '..'; refusing to unpack")


def _posix(name: str) -> str:
    # Archives made on Windows may use backslashes; treat them as separators when checking.
    return name.replace("\\", "/")


def _is_absolute(name: str) -> bool:
    return _posix(name).startswith("/") or re.match(r"^[A-Za-z]:", name) is not None


def check_sizes(archive: Path, dest: Path, sizes: list[int], max_bytes: int) -> None:
    """Refuse an archive whose entries' declared sizes add up to too much (see the module's note)."""
    total, packed = sum(sizes), max(1, archive.stat().st_size)
    if len(sizes) > MAX_ENTRIES:
        raise UnsafeArchiveError(f"{archive} holds {len(sizes):,} entries, more than {MAX_ENTRIES:,}; "
                                 "refusing to unpack")
    if total > max_bytes:
        raise UnsafeArchiveError(f"{archive} would unpack to {_size(total)}, "
                                 f"more than the limit of {_size(max_bytes)}; "
                                 "if that is expected, raise it with --max-unpacked-gb")
    if total > RATIO_FLOOR and total > MAX_RATIO * packed:
        raise UnsafeArchiveError(f"{archive} would unpack {_size(packed)} into {_size(total)} ({total // packed:,} "
                                 f"times its size; photo archives expand less than {MAX_RATIO} times): a "
                                 "compression bomb or a damaged file; refusing to unpack")
    free = shutil.disk_usage(dest).free
    if total > free:
        raise InputError(f"{archive} unpacks to {_size(total)}, but only {_size(free)} is free on the disk of "
                        f"{dest}; free some space or unpack elsewhere with --out")


def _size(n: int) -> str:
    return f"{n / 10**9:.2f} GB" if n >= 10**9 else f"{n / 10**6:.1f} MB"


def _unpack_tar(archive: Path, dest: Path, max_bytes: int) -> None:
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        for member in members:
            if member.issym() or member.islnk():
                check_entry(member.name, member.linkname, hard_link=member.islnk())
            elif member.isfile() or member.isdir():
                check_entry(member.name)
            else:
                raise UnsafeArchiveError(f"archive entry {member.name!r} is a device or pipe; refusing to unpack")
        check_sizes(archive, dest, [m.size for m in members if m.isfile()], max_bytes)
        for member in tqdm(members, desc=f"unpack {archive.name}", unit="file"):
            tar.extract(member, dest, filter="data")


def _unpack_zip(archive: Path, dest: Path, max_bytes: int) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        check_sizes(archive, dest, [info.file_size for info in infos], max_bytes)
        for info in infos:
            is_link = stat.S_ISLNK(info.external_attr >> 16)
            # A link's target is read only after the sizes are known to be sane.
            check_entry(info.filename, zf.read(info).decode("utf-8", "replace") if is_link else None)
        # zipfile writes a link entry as a small file holding its target, which cannot escape.
        for info in tqdm(infos, desc=f"unpack {archive.name}", unit="file"):
            zf.extract(info, dest)

