"""A fake desktop for fast tests of pool logic (leasing, replacement, reaping), never as proof of a feature.

``FakeProvider`` serves a tiny in-process imitation of the guest API on 127.0.0.1: a 4x4 PNG as the
screenshot, ``/execute`` that "runs" code by checking it compiles and raising when it contains
``raise``. Tests kill a fake desktop by touching ``<RAYENV_FAKE_DIR>/<env_name>.dead``, and make it
unreachable (its liveness check hangs, as across a dropped link) with ``<env_name>.silent``, and hang
its actions (``/execute`` does not answer, as in a frozen desktop) with ``<env_name>.hung``.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from rayenv.errors import ProviderUnavailable
from rayenv.providers.base import GuestEndpoint, Provider

PNG_4X4 = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAQAAAAECAIAAAAmkwkpAAAAEklEQVR4nGP8z4AATAxEcQAAPTUBB1a6ngMAAAAASUVORK5CYII=")


def fake_dir() -> Path:
    path = Path(os.environ.get("RAYENV_FAKE_DIR", "/tmp/rayenv-fake"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def kill_file(env_name: str) -> Path:
    return fake_dir() / f"{env_name}.dead"


def silence_file(env_name: str) -> Path:
    return fake_dir() / f"{env_name}.silent"


def hang_file(env_name: str) -> Path:
    return fake_dir() / f"{env_name}.hung"


class _Handler(BaseHTTPRequestHandler):
    server: "_FakeGuest"

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, body: bytes, content_type: str = "application/json", status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _dead(self) -> bool:
        if self.server.provider.dead():
            self.close_connection = True
            self.connection.close()
            return True
        return False

    def do_GET(self) -> None:
        if self._dead():
            return
        if self.path == "/screenshot":
            self._send(PNG_4X4, "image/png")
        elif self.path == "/cursor_position":
            self._send(b"[0, 0]")
        else:
            self._send(json.dumps({"AT": "<desktop/>", "output": ""}).encode())

    def do_POST(self) -> None:
        if self._dead():
            return
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)) or 0)
        if self.path == "/screen_size":
            self._send(json.dumps({"width": 4, "height": 4}).encode())
        elif self.path == "/execute":
            while hang_file(self.server.provider.ownership.env_name).exists():
                time.sleep(0.1)
            code = json.loads(body)["command"][-1]
            failed = "raise" in code
            self._send(json.dumps({"status": "error" if failed else "success", "output": "",
                                   "error": "Traceback: boom" if failed else "", "returncode": 1 if failed else 0}).encode())
        else:
            self._send(b"{}")


class _FakeGuest(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, provider: "FakeProvider") -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.provider = provider


class FakeProvider(Provider):
    name = "fake"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._server: _FakeGuest | None = None

    def dead(self) -> bool:
        return kill_file(self.ownership.env_name).exists()

    def start(self) -> GuestEndpoint:
        self._server = _FakeGuest(self)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        (fake_dir() / f"{self.ownership.env_name}.running").write_text(self.ownership.actor_id)
        return GuestEndpoint("127.0.0.1", self._server.server_address[1])

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        (fake_dir() / f"{self.ownership.env_name}.running").unlink(missing_ok=True)

    def is_alive(self) -> bool:
        while silence_file(self.ownership.env_name).exists():
            time.sleep(0.1)
        return self._server is not None and not self.dead()

    def describe(self) -> dict[str, Any]:
        return {"fake": True, "url": f"http://127.0.0.1:{self._server.server_address[1]}" if self._server else None}


class UnbootableProvider(FakeProvider):
    """A desktop this host cannot run (as a missing image or Docker engine): every start fails the same way."""

    def start(self) -> GuestEndpoint:
        raise ProviderUnavailable("image rayenv/none:1 is not on this host", env=self.ownership.env_name, phase="boot",
                                  hint="build it with `rayenv vm build`")
