"""Getting the DeepParticle archives: the figshare file list, a resumable checked HTTP
download, and the Google Drive mirror folder."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import requests
from tqdm import tqdm

from microplastics.data.archive import archive_stem
from microplastics.core.cli import one_line
from microplastics.core.errors import InputError

FIGSHARE_API = "https://api.figshare.com/v2"
DEEPPARTICLE_ARTICLE = 26511253
GDRIVE_FOLDER = "1mUYKI0e6F91HSqf0iS4ktQzxHH_Pf_u4"
CHUNK = 1 << 20

# Fragments of the low-level error text worth showing: they tell offline from refused from DNS.
_CONNECTION_HINTS = (
    "Connection refused",
    "Name or service not known",
    "Temporary failure in name resolution",
    "nodename nor servname provided",
    "Network is unreachable",
    "No route to host",
    "Connection reset",
)


class NetworkError(InputError):
    """The network or a server failed (offline, DNS, timeout, HTTP error), not the user's input."""


def figshare_files(article_id: int = DEEPPARTICLE_ARTICLE, api_url: str = FIGSHARE_API,
                   timeout: float = 60) -> list[dict[str, Any]]:
    """The file list of a public figshare article: dicts with name, size, md5 and download_url."""
    url = f"{api_url.rstrip('/')}/articles/{article_id}/files"
    # The API pages this list (10 by default); ask for one page big enough for any article.
    with _get(url, timeout, params={"page_size": 1000}) as resp:
        try:
            data = resp.json()
        except ValueError:
            raise NetworkError(f"the figshare API at {url} did not answer with JSON") from None
    files = data.get("files", data.get("items")) if isinstance(data, dict) else data
    if not isinstance(files, list):
        raise NetworkError(f"the figshare API at {url} answered without a file list")
    return files


def choose_file(files: list[dict[str, Any]], subset: str) -> dict[str, Any]:
    """The archive whose name without suffix is ``subset`` (any case), e.g. MICRO -> MICRO.tar.gz."""
    for entry in files:
        if archive_stem(str(entry.get("name", ""))).lower() == subset.lower():
            return entry
    names = ", ".join(sorted(str(entry.get("name", "?")) for entry in files)) or "none"
    raise InputError(f"the figshare article has no archive for subset {subset!r}; its files are: {names}; "
                    "pick one with --subset")


def expected_md5(entry: dict[str, Any]) -> str | None:
    return entry.get("computed_md5") or entry.get("supplied_md5") or None


def md5sum(path: str | os.PathLike) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, dest: str | os.PathLike, size: int | None = None, md5: str | None = None,
             timeout: float = 60) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming a partial ``.part`` file.

    A ``dest`` that already exists and passes the size/md5 check is kept without any request.
    A finished download that fails the check is deleted and reported; ``dest`` only ever
    appears complete and verified.
    """
    dest = Path(dest)
    if dest.exists():
        if _problem(dest, size, md5) is None:
            return dest
        dest.unlink()  # a damaged cache entry: fetch it again
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    start = part.stat().st_size if part.exists() else 0
    if size is not None and start > size:
        part.unlink()
        start = 0
    if size is None or start < size:
        _fetch(url, part, start, size, timeout)
    problem = _problem(part, size, md5)
    if problem is not None:
        part.unlink()
        raise InputError(f"the download of {dest.name} is damaged ({problem}); it was deleted, "
                        "run again to download it anew")
    os.replace(part, dest)
    return dest


def gdrive_folder(folder_id: str, dest: str | os.PathLike) -> list[Path]:
    """Download a public Google Drive folder into ``dest`` with gdown; the local paths it wrote."""
    import gdown  # only this source needs it, and it is slow to import

    try:
        paths = gdown.download_folder(id=folder_id, output=str(dest), quiet=False, resume=True)
    except Exception as err:  # noqa: BLE001 - gdown raises requests, parsing and its own errors alike
        raise NetworkError(f"could not download the Google Drive folder {folder_id}: {one_line(err)}") from None
    if not paths:
        raise NetworkError(f"the Google Drive folder {folder_id} gave no files")
    return [Path(p) for p in paths]


def _fetch(url: str, part: Path, start: int, size: int | None, timeout: float) -> None:
    headers = {"Range": f"bytes={start}-"} if start else {}
    with _get(url, timeout, headers=headers, stream=True, allow_416=bool(start)) as resp:
        if resp.status_code == 416:  # the server does not know our partial file: start over
            part.unlink()
            return _fetch(url, part, 0, size, timeout)
        if start and not (resp.status_code == 206 and
                          resp.headers.get("Content-Range", "").startswith(f"bytes {start}-")):
            start = 0  # the server ignored Range and sends the whole file: overwrite, do not append
        total = size or (start + int(resp.headers.get("Content-Length", 0))) or None
        with open(part, "ab" if start else "wb") as fh, \
                tqdm(total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
                     desc=part.name.removesuffix(".part")) as bar:
            try:
                for chunk in resp.iter_content(CHUNK):
                    fh.write(chunk)
                    bar.update(len(chunk))
            except requests.RequestException as err:
                raise NetworkError(f"the download from {url} broke off ({_reason(err)}); "
                                   "run again to resume it") from None
    return None


def _get(url: str, timeout: float, allow_416: bool = False, **kwargs: Any) -> requests.Response:
    """requests.get that turns every network or HTTP failure into one NetworkError line."""
    try:
        resp = requests.get(url, timeout=timeout, **kwargs)
    except requests.RequestException as err:
        raise NetworkError(f"could not reach {url} ({_reason(err)})") from None
    if resp.status_code >= 400 and not (allow_416 and resp.status_code == 416):
        resp.close()
        raise NetworkError(f"{url} answered HTTP {resp.status_code} {resp.reason or ''}".rstrip())
    return resp


def _problem(path: Path, size: int | None, md5: str | None) -> str | None:
    """What is wrong with a downloaded file, or None when it matches the expected size and md5."""
    actual = path.stat().st_size
    if size is not None and actual != size:
        return f"{actual} bytes, expected {size}"
    if md5 and md5sum(path) != md5.lower():
        return "md5 checksum mismatch"
    return None


def _reason(err: requests.RequestException) -> str:
    if isinstance(err, requests.Timeout):
        return "the connection timed out"
    if isinstance(err, requests.ConnectionError):
        text = str(err)
        hint = next((h for h in _CONNECTION_HINTS if h in text), None)
        return f"connection failed: {hint}" if hint else "connection failed"
    return one_line(err)
