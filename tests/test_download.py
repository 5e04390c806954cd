"""Resumable, checked downloads and the figshare file list, against a server on 127.0.0.1."""
import hashlib

import pytest

from fake_figshare import closed_port, micro_files, serve, tar_bytes
from microplastics.data import download
from microplastics.core.cli import UserError

DATA = tar_bytes(micro_files())
NAME = "MICRO.tar.gz"
MD5 = hashlib.md5(DATA).hexdigest()


def _file_requests(fake):
    return [entry for entry in fake.log if entry[0] == f"/files/{NAME}"]


def test_download_fresh_then_cached(tmp_path):
    dest = tmp_path / NAME
    with serve({NAME: DATA}) as fake:
        url = f"{fake.url}/files/{NAME}"
        assert download.download(url, dest, size=len(DATA), md5=MD5) == dest
        assert dest.read_bytes() == DATA
        assert not (tmp_path / f"{NAME}.part").exists()
        download.download(url, dest, size=len(DATA), md5=MD5)  # verified cache: no second request
        assert _file_requests(fake) == [(f"/files/{NAME}", None, len(DATA))]


def test_resume_requests_only_the_missing_bytes(tmp_path):
    dest = tmp_path / NAME
    have = len(DATA) // 3
    (tmp_path / f"{NAME}.part").write_bytes(DATA[:have])
    with serve({NAME: DATA}) as fake:
        download.download(f"{fake.url}/files/{NAME}", dest, size=len(DATA), md5=MD5)
    assert _file_requests(fake) == [(f"/files/{NAME}", f"bytes={have}-", len(DATA) - have)]
    assert dest.read_bytes() == DATA


def test_server_ignoring_range_restarts_from_zero(tmp_path):
    dest = tmp_path / NAME
    (tmp_path / f"{NAME}.part").write_bytes(b"garbage that must not be kept")
    with serve({NAME: DATA}, honor_range=False) as fake:
        download.download(f"{fake.url}/files/{NAME}", dest, size=len(DATA), md5=MD5)
    assert _file_requests(fake)[0][1] == "bytes=29-"  # it asked to resume, got the whole file
    assert dest.read_bytes() == DATA


def test_range_not_satisfiable_restarts(tmp_path):
    # Without a known size, a .part longer than the file gets HTTP 416; start over.
    dest = tmp_path / NAME
    (tmp_path / f"{NAME}.part").write_bytes(DATA + b"tail")
    with serve({NAME: DATA}) as fake:
        download.download(f"{fake.url}/files/{NAME}", dest, md5=MD5)
    assert [r[1] for r in _file_requests(fake)] == [f"bytes={len(DATA) + 4}-", None]
    assert dest.read_bytes() == DATA


@pytest.mark.parametrize("size, md5, expect", [(None, "0" * 32, "md5"), (len(DATA) + 10, MD5, "bytes")])
def test_bad_download_is_deleted(tmp_path, size, md5, expect):
    dest = tmp_path / NAME
    with serve({NAME: DATA}) as fake, pytest.raises(UserError, match=expect) as err:
        download.download(f"{fake.url}/files/{NAME}", dest, size=size, md5=md5)
    assert "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_figshare_file_list_and_choice():
    with serve({NAME: DATA, "MESO.tar.gz": b"x", "README.txt": b"r"}) as fake:
        files = download.figshare_files(api_url=fake.url)
    assert {f["name"] for f in files} == {NAME, "MESO.tar.gz", "README.txt"}
    assert download.choose_file(files, "micro")["name"] == NAME
    assert download.expected_md5(download.choose_file(files, "MICRO")) == MD5
    with pytest.raises(UserError, match="MESO.tar.gz, MICRO.tar.gz, README.txt"):
        download.choose_file(files, "MACRO")


def test_http_error_and_offline_are_network_errors(tmp_path):
    with serve({}) as fake, pytest.raises(download.NetworkError, match="HTTP 404"):
        download.download(f"{fake.url}/files/missing.tar.gz", tmp_path / "x.tar.gz")
    with pytest.raises(download.NetworkError, match="Connection refused"):
        download.figshare_files(api_url=f"http://127.0.0.1:{closed_port()}", timeout=5)


def test_gdrive_failure_is_one_line(tmp_path, monkeypatch):
    import gdown

    def broken(**kwargs):
        raise RuntimeError("Cannot retrieve the folder information\nfrom the link")

    monkeypatch.setattr(gdown, "download_folder", broken)
    with pytest.raises(download.NetworkError, match="Google Drive folder") as err:
        download.gdrive_folder(download.GDRIVE_FOLDER, tmp_path)
    assert "\n" not in str(err.value)
