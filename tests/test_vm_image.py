"""The OSWorld qcow2 on an env host: fetched once beforehand (resumable, locked, checked, extracted
atomically; served from 127.0.0.1), found without downloading when a desktop boots."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from typer.testing import CliRunner

from rayenv.cli.main import app
from rayenv.errors import ConfigError, ProviderUnavailable
from rayenv.providers import DesktopSpec, Ownership, make_provider
from rayenv.providers.vm_image import QCOW2_MAGIC, fetch_vm_image, locate_vm_image

IMAGE = QCOW2_MAGIC + bytes(range(256)) * 8192  # a 2 MiB file with a qcow2 header


def zipped(payload: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as bundle:
        bundle.writestr("Ubuntu.qcow2", payload)
    return buffer.getvalue()


class RangeServer(ThreadingHTTPServer):
    """Serves one file with Range support; the first GET breaks off after ``cut`` bytes."""

    daemon_threads = True

    def __init__(self, body: bytes, cut: int | None, pace: float = 0.0) -> None:
        super().__init__(("127.0.0.1", 0), RangeHandler)
        self.body, self.cut, self.pace, self.ranges = body, cut, pace, []

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
        for offset in range(0, len(body), 1 << 18):  # paced: a slow link lets concurrent fetches overlap
            self.wfile.write(body[offset:offset + (1 << 18)])
            time.sleep(self.server.pace)


@pytest.fixture
def serve():
    servers = []

    def start(body: bytes, cut: int | None = None, pace: float = 0.0) -> RangeServer:
        server = RangeServer(body, cut, pace)
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
    image = fetch_vm_image(server.url, tmp_path, sha256=hashlib.sha256(archive).hexdigest(), show_progress=False)
    assert image.read_bytes() == IMAGE
    assert server.ranges[0] == 0 and 0 < server.ranges[-1] <= len(archive) // 3  # resumed, not restarted
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Ubuntu.qcow2", "Ubuntu.qcow2.lock"]


def test_rayenv_vm_fetch_resumes_after_a_dropped_connection_and_prints_the_path(serve, tmp_path):
    archive = zipped(IMAGE)
    server = serve(archive, cut=len(archive) // 2)
    result = CliRunner().invoke(app, ["vm", "fetch", "--url", server.url, "--dir", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().endswith(f'{{"path": "{tmp_path / "Ubuntu.qcow2"}", "bytes": {len(IMAGE)}}}')
    assert len(server.ranges) == 2 and 0 < server.ranges[1] <= len(archive) // 2  # resumed, not restarted


def test_a_present_image_is_not_downloaded_again(serve, tmp_path):
    server = serve(zipped(IMAGE))
    fetch_vm_image(server.url, tmp_path, show_progress=False)
    fetch_vm_image(server.url, tmp_path, show_progress=False)
    assert len(server.ranges) == 1


def test_two_processes_fetching_at_once_cause_one_download(serve, tmp_path):
    server = serve(zipped(IMAGE), pace=0.05)  # ~0.5 s per download: the second fetch starts during the first
    script = ("import sys; from pathlib import Path; from rayenv.providers.vm_image import fetch_vm_image; "
              "print(fetch_vm_image(sys.argv[1], Path(sys.argv[2]), show_progress=False))")
    fetchers = [subprocess.Popen([sys.executable, "-c", script, server.url, str(tmp_path)], stdout=subprocess.PIPE,
                                 text=True, env={**os.environ, "PYTHONPATH": os.getcwd()}) for _ in range(2)]
    paths = {fetcher.communicate(timeout=60)[0].strip() for fetcher in fetchers}
    assert [fetcher.returncode for fetcher in fetchers] == [0, 0]
    assert paths == {str(tmp_path / "Ubuntu.qcow2")} and len(server.ranges) == 1


def test_a_checksum_mismatch_deletes_the_download_and_says_so(serve, tmp_path):
    server = serve(zipped(IMAGE))
    with pytest.raises(ConfigError, match="SHA-256"):
        fetch_vm_image(server.url, tmp_path, sha256="0" * 64, show_progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["Ubuntu.qcow2.lock"]


@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_a_damaged_archive_is_rejected_and_removed_so_the_next_fetch_starts_clean(serve, tmp_path, damage):
    archive = zipped(IMAGE)
    middle = len(archive) // 2
    broken = archive[:middle] if damage == "truncated" else archive[:middle] + b"\0" * 4096 + archive[middle + 4096:]
    with pytest.raises(ProviderUnavailable, match="damaged") as error:
        fetch_vm_image(serve(broken).url, tmp_path, show_progress=False)
    assert "rayenv vm fetch" in error.value.hint
    assert [p.name for p in tmp_path.iterdir()] == ["Ubuntu.qcow2.lock"]


def test_a_download_that_is_not_a_qcow2_is_deleted(serve, tmp_path):
    with pytest.raises(ProviderUnavailable, match="did not hold a qcow2"):
        fetch_vm_image(serve(zipped(b"<html>sign in</html>")).url, tmp_path, show_progress=False)
    assert not (tmp_path / "Ubuntu.qcow2").exists()


def test_a_desktop_never_downloads_it_names_the_command_that_does(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYENV_VM_DIR", str(tmp_path))
    with pytest.raises(ProviderUnavailable, match="has not been fetched") as error:
        locate_vm_image(None, env="env-0")
    assert "rayenv vm fetch" in error.value.hint and error.value.env == "env-0"
    (tmp_path / "Ubuntu.qcow2").write_bytes(IMAGE)
    assert locate_vm_image(None) == tmp_path / "Ubuntu.qcow2"


def test_the_docker_provider_fails_at_once_when_the_image_was_not_fetched(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYENV_VM_DIR", str(tmp_path))
    provider = make_provider(DesktopSpec(provider="docker", boot_timeout=600), Ownership(owner="vm-test", env_name="vm-0"))
    with pytest.raises(ProviderUnavailable, match="has not been fetched"):
        provider.start()
    assert not provider.is_alive()


def test_the_runbooks_relative_docker_vm_data_path_is_usable_as_is(tmp_path, monkeypatch):
    (tmp_path / "docker_vm_data").mkdir()
    (tmp_path / "docker_vm_data" / "Ubuntu.qcow2").write_bytes(IMAGE)
    monkeypatch.chdir(tmp_path)
    spec = DesktopSpec(provider="docker", vm_path="docker_vm_data/Ubuntu.qcow2")
    assert spec.vm_path == str(tmp_path / "docker_vm_data" / "Ubuntu.qcow2")  # resolved where the pool is made
    assert locate_vm_image(spec.vm_path) == tmp_path / "docker_vm_data" / "Ubuntu.qcow2"


def test_a_vm_path_that_is_not_a_qcow2_is_refused_before_any_container_starts(tmp_path):
    stand_in = tmp_path / "Ubuntu.qcow2"
    stand_in.write_bytes(b"stand-in")
    with pytest.raises(ProviderUnavailable, match="not a qcow2"):
        locate_vm_image(str(stand_in))
    with pytest.raises(ProviderUnavailable, match="does not exist"):
        locate_vm_image(str(tmp_path / "missing.qcow2"))
