"""The OSWorld qcow2 download: resumable, checked, extracted atomically (served from 127.0.0.1)."""

from __future__ import annotations

import hashlib
import io
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rayenv.errors import ConfigError
from rayenv.providers.vm_image import ensure_vm_image

IMAGE = bytes(range(256)) * 8192  # 2 MiB stand-in for a qcow2


def zipped(payload: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as bundle:
        bundle.writestr("Ubuntu.qcow2", payload)
    return buffer.getvalue()


class RangeServer(ThreadingHTTPServer):
    """Serves one file with Range support; the first GET breaks off after ``cut`` bytes."""

    daemon_threads = True

    def __init__(self, body: bytes, cut: int | None) -> None:
        super().__init__(("127.0.0.1", 0), RangeHandler)
        self.body, self.cut, self.ranges = body, cut, []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/Ubuntu.qcow2.zip"


class RangeHandler(BaseHTTPRequestHandler):
    server: RangeServer

    def log_message(self, *args) -> None:
        pass

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.server.body)))
        self.end_headers()

    def do_GET(self) -> None:
        start = int(self.headers["Range"].split("=")[1].rstrip("-")) if "Range" in self.headers else 0
        self.server.ranges.append(start)
        body = self.server.body[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.server.cut is not None:
            body, self.server.cut = body[: self.server.cut], None
            self.wfile.write(body)
            self.wfile.flush()
            self.connection.close()
            return
        self.wfile.write(body)


@pytest.fixture
def serve():
    servers = []

    def start(body: bytes, cut: int | None = None) -> RangeServer:
        server = RangeServer(body, cut)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_an_interrupted_download_resumes_where_it_stopped_and_is_extracted(serve, tmp_path):
    archive = zipped(IMAGE)
    server = serve(archive, cut=len(archive) // 3)
    image = ensure_vm_image(server.url, tmp_path, sha256=hashlib.sha256(archive).hexdigest(), show_progress=False)
    assert image.read_bytes() == IMAGE
    assert server.ranges[0] == 0 and 0 < server.ranges[-1] <= len(archive) // 3  # resumed, not restarted
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Ubuntu.qcow2"]


def test_a_present_image_is_not_downloaded_again(serve, tmp_path):
    server = serve(zipped(IMAGE))
    ensure_vm_image(server.url, tmp_path, show_progress=False)
    ensure_vm_image(server.url, tmp_path, show_progress=False)
    assert len(server.ranges) == 1


def test_a_checksum_mismatch_deletes_the_download_and_says_so(serve, tmp_path):
    server = serve(zipped(IMAGE))
    with pytest.raises(ConfigError, match="SHA-256"):
        ensure_vm_image(server.url, tmp_path, sha256="0" * 64, show_progress=False)
    assert list(tmp_path.iterdir()) == []
