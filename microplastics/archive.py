"""Safe unpacking of .tar.gz/.tgz/.tar/.zip archives: nothing is ever written outside the target.

Every entry is checked before the first byte is written, so a hostile archive is refused
whole rather than half unpacked. An entry is refused when its name is absolute or holds
``..``, or when it is a link whose target lies outside the target folder. Tar members are
then extracted with tarfile's ``data`` filter as a second line of defence.
"""
from __future__ import annotations

import os
import posixpath
import re
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path

from tqdm import tqdm

from microplastics.cli import UserError, one_line

SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")


class UnsafeArchiveError(UserError):
    """An archive entry would land outside the target folder."""


def archive_stem(name: str) -> str:
    """``MICRO.tar.gz`` -> ``MICRO``; a name without an archive suffix comes back unchanged."""
    for suffix in SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def is_archive(name: str | os.PathLike) -> bool:
    return str(name).lower().endswith(SUFFIXES)


def unpack(archive: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Unpack ``archive`` into the folder ``dest`` (created if missing), refusing unsafe entries."""
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise UserError(f"archive {archive} not found; check the path")
    if not is_archive(archive.name):
        raise UserError(f"{archive} is not a supported archive; expected one of {', '.join(SUFFIXES)}")
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if archive.name.lower().endswith(".zip"):
            _unpack_zip(archive, dest)
        else:
            _unpack_tar(archive, dest)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError) as err:
        # A truncated or damaged file, or a full disk: name the file, keep it to one line.
        raise UserError(f"cannot unpack {archive}: {one_line(err)}; if it was downloaded, download it again") from None


def check_entry(name: str, link_target: str | None = None, hard_link: bool = False) -> None:
    """Raise UnsafeArchiveError if the entry ``name`` (or the link it makes) escapes the target.

    A symbolic link's target is relative to the entry's own folder, a hard link's to the
    archive's root. The check is on the names alone, so it runs before anything is written.
    """
    _check_name(name)
    if link_target is None:
        return
    if _is_absolute(link_target):
        raise UnsafeArchiveError(f"archive entry {name!r} links to the absolute path {link_target!r}; refusing to unpack")
    base = "" if hard_link else posixpath.dirname(_posix(name))
    resolved = posixpath.normpath(posixpath.join(base, _posix(link_target)))
    if resolved == ".." or resolved.startswith("../"):
        raise UnsafeArchiveError(f"archive entry {name!r} links outside the target folder ({link_target!r}); refusing to unpack")


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


def _unpack_tar(archive: Path, dest: Path) -> None:
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        for member in members:
            if member.issym() or member.islnk():
                check_entry(member.name, member.linkname, hard_link=member.islnk())
            elif member.isfile() or member.isdir():
                check_entry(member.name)
            else:
                raise UnsafeArchiveError(f"archive entry {member.name!r} is a device or pipe; refusing to unpack")
        for member in tqdm(members, desc=f"unpack {archive.name}", unit="file"):
            tar.extract(member, dest, filter="data")


def _unpack_zip(archive: Path, dest: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        for info in infos:
            is_link = stat.S_ISLNK(info.external_attr >> 16)
            check_entry(info.filename, zf.read(info).decode("utf-8", "replace") if is_link else None)
        # zipfile writes a link entry as a small file holding its target, which cannot escape.
        for info in tqdm(infos, desc=f"unpack {archive.name}", unit="file"):
            zf.extract(info, dest)

