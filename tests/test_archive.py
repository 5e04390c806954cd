"""Safe unpacking: good archives unpack; escaping entries are refused before anything is written."""
import io
import stat
import tarfile
import zipfile

import pytest

from fake_figshare import micro_files, tar_bytes
from microplastics.data import archive
from microplastics.core.cli import UserError


def _tar_with(path, entries):
    """entries: (name, kind, payload) with kind 'file' (payload bytes), 'sym' or 'hard' (payload target)."""
    with tarfile.open(path, "w:gz") as tar:
        for name, kind, payload in entries:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
            else:
                info.type = tarfile.SYMTYPE if kind == "sym" else tarfile.LNKTYPE
                info.linkname = payload
                tar.addfile(info)
    return path


def _zip_with(path, entries):
    with zipfile.ZipFile(path, "w") as zf:
        for name, kind, payload in entries:
            info = zipfile.ZipInfo(name)
            if kind == "sym":
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, payload)
    return path


@pytest.mark.parametrize("suffix", [".tar.gz", ".tgz", ".tar", ".zip"])
def test_unpacks_every_format(tmp_path, suffix):
    files = micro_files(2)
    src = tmp_path / f"MICRO{suffix}"
    if suffix == ".zip":
        _zip_with(src, [(name, "file", data) for name, data in files.items()])
    else:
        src.write_bytes(tar_bytes(files, "w" if suffix == ".tar" else "w:gz"))
    archive.unpack(src, tmp_path / "out")
    for name, data in files.items():
        assert (tmp_path / "out" / name).read_bytes() == data


def _escaping_entries(tmp_path):
    outside = tmp_path / "outside.txt"
    return outside, {
        "dotdot": [("ok.txt", "file", b"ok"), ("../outside.txt", "file", b"evil")],
        "absolute": [("ok.txt", "file", b"ok"), (str(outside), "file", b"evil")],
        "symlink": [("link", "sym", "../"), ("link/outside.txt", "file", b"evil")],
        "deep symlink": [("a/b/link", "sym", "../../../outside.txt")],
        "absolute symlink": [("link", "sym", str(outside))],
        "hardlink": [("hl", "hard", "../outside.txt")],
    }


@pytest.mark.parametrize("case", ["dotdot", "absolute", "symlink", "deep symlink", "absolute symlink", "hardlink"])
def test_tar_escapes_are_refused(tmp_path, case):
    outside, cases = _escaping_entries(tmp_path)
    outside.write_text("original")
    src = _tar_with(tmp_path / "evil.tar.gz", cases[case])
    dest = tmp_path / "dest"
    with pytest.raises(archive.UnsafeArchiveError, match="refusing"):
        archive.unpack(src, dest)
    assert outside.read_text() == "original"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest", "evil.tar.gz", "outside.txt"]
    assert list(dest.iterdir()) == []  # checked before the first byte was written


@pytest.mark.parametrize("case", ["dotdot", "absolute", "symlink", "deep symlink", "absolute symlink"])
def test_zip_escapes_are_refused(tmp_path, case):
    outside, cases = _escaping_entries(tmp_path)
    src = _zip_with(tmp_path / "evil.zip", cases[case])
    dest = tmp_path / "dest"
    with pytest.raises(archive.UnsafeArchiveError, match="refusing"):
        archive.unpack(src, dest)
    assert not outside.exists()
    assert list(dest.iterdir()) == []


def test_links_inside_the_target_are_allowed(tmp_path):
    src = _tar_with(tmp_path / "ok.tar.gz", [("a/f.txt", "file", b"x"), ("a/b/link", "sym", "../f.txt")])
    archive.unpack(src, tmp_path / "out")
    assert (tmp_path / "out" / "a" / "b" / "link").read_bytes() == b"x"


def test_damaged_and_unknown_archives_are_user_errors(tmp_path):
    truncated = tmp_path / "MICRO.tar.gz"
    truncated.write_bytes(tar_bytes(micro_files())[:500])
    with pytest.raises(UserError, match="cannot unpack .*MICRO.tar.gz"):
        archive.unpack(truncated, tmp_path / "out")
    (tmp_path / "MICRO.rar").write_bytes(b"x")
    with pytest.raises(UserError, match="not a supported archive"):
        archive.unpack(tmp_path / "MICRO.rar", tmp_path / "out")
    with pytest.raises(UserError, match="does not exist"):
        archive.unpack(tmp_path / "missing.zip", tmp_path / "out")


def test_archive_stem():
    assert archive.archive_stem("MICRO.tar.gz") == "MICRO"
    assert archive.archive_stem("meso.TGZ") == "meso"
    assert archive.archive_stem("notes.txt") == "notes.txt"
