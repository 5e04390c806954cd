"""Test helpers for the download stage: a figshare look-alike on 127.0.0.1 and small archives."""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import random
import socket
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

ARTICLE = 26511253


class FakeFigshare:
    """Serves ``/articles/<id>/files`` and ``/files/<name>``, honouring HTTP Range unless told not to.

    ``log`` records (path, Range header or None, bytes sent) for every file request.
    ``overrides`` replaces API fields of a file, e.g. a wrong md5.
    """

    def __init__(self, files: dict[str, bytes], honor_range: bool = True) -> None:
        self.files = files
        self.honor_range = honor_range
        self.overrides: dict[str, dict] = {}
        self.log: list[tuple[str, str | None, int]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def entries(self) -> list[dict]:
        return [{"id": i, "name": name, "size": len(data),
                 "computed_md5": hashlib.md5(data).hexdigest(), "supplied_md5": hashlib.md5(data).hexdigest(),
                 "download_url": f"{self.url}/files/{name}", **self.overrides.get(name, {})}
                for i, (name, data) in enumerate(self.files.items())]


def _handler(fake: FakeFigshare) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            path = self.path.split("?")[0]
            if path == f"/articles/{ARTICLE}/files":
                self._send(200, json.dumps(fake.entries()).encode(), {"Content-Type": "application/json"})
            elif path.startswith("/files/") and path[len("/files/"):] in fake.files:
                self._send_file(path, fake.files[path[len("/files/"):]])
            else:
                self._send(404, b"not found")

        def _send_file(self, path: str, data: bytes) -> None:
            wanted = self.headers.get("Range")
            if wanted and fake.honor_range:
                start = int(wanted.removeprefix("bytes=").split("-")[0])
                if start >= len(data):
                    fake.log.append((path, wanted, 0))
                    return self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"})
                fake.log.append((path, wanted, len(data) - start))
                return self._send(206, data[start:], {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"})
            fake.log.append((path, wanted, len(data)))
            return self._send(200, data)

        def _send(self, code: int, body: bytes, headers: dict | None = None) -> None:
            self.send_response(code)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # keep test output clean
            pass

    return Handler


@contextlib.contextmanager
def serve(files: dict[str, bytes], honor_range: bool = True) -> Iterator[FakeFigshare]:
    fake = FakeFigshare(files, honor_range)
    thread = threading.Thread(target=fake.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.server.shutdown()
        fake.server.server_close()


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def micro_files(n: int = 3, top: str = "MICRO") -> dict[str, bytes]:
    """A tiny DeepParticle-shaped tree: photos, one .tsv each, a to_remove.txt; under ``top``."""
    prefix = f"{top}/" if top else ""
    files = {f"{prefix}to_remove.txt": b""}
    for i in range(n):
        # Incompressible-ish bytes so the archive is big enough to split for a resume test.
        files[f"{prefix}raw_img/photo_{i}.jpg"] = random.Random(i).randbytes(4000)
        files[f"{prefix}annotation/photo_{i}.jpg.tsv"] = (
            b"ID\tminr\tminc\tmaxr\tmaxc\tclass\n" + f"0\t1\t2\t30\t40\thard/{i}.png\n".encode())
    return files


def tar_bytes(files: dict[str, bytes], mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
