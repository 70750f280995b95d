"""Routes that move files between the host and this desktop, download one, and open one in its app.

Paths may start with ``~`` or hold ``$VARS`` (OSWorld's task configs use both); ``~`` is the desktop's home.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, jsonify, request, send_file

from . import ewmh
from .commands import launch
from .payload import json_body

blueprint = Blueprint("files", __name__)

#: Seconds ``/setup/open_file`` waits for the file's window, as OSWorld's server does (a cold
#: LibreOffice on a busy machine takes minutes); a request may ask for less with ``timeout``.
OPEN_TIMEOUT = 1800.0
#: Tries and per-try time limit of ``/setup/download_file``.
DOWNLOAD_TRIES, DOWNLOAD_TIMEOUT = 3, 300.0


def _path(value: str) -> Path:
    return Path(os.path.expandvars(os.path.expanduser(value)))


def _tree(path: Path) -> dict[str, Any]:
    """OSWorld's ``directory_tree`` shape; a symlink is listed, never followed, so a loop cannot recurse forever."""
    if path.is_dir() and not path.is_symlink():
        return {"type": "directory", "name": path.name, "children": [_tree(child) for child in sorted(path.iterdir())]}
    return {"type": "file", "name": path.name}


@blueprint.post("/list_directory")
def post_list_directory() -> Response:
    data = json_body()
    if "path" not in data:
        return jsonify({"error": "Missing 'path' parameter"}), 400
    path = _path(data["path"])
    if not path.is_dir():
        return jsonify({"error": f"{path} is not a directory"}), 404
    return jsonify({"directory_tree": _tree(path)})


@blueprint.post("/file")
def post_file() -> Response:
    if "file_path" not in request.form:
        return jsonify({"error": "file_path is required"}), 400
    path = _path(request.form["file_path"])
    if not path.is_file():
        return jsonify({"error": f"File not found: {path}"}), 404
    return send_file(path, as_attachment=True)


@blueprint.post("/setup/upload")
def post_upload() -> Response:
    upload = request.files.get("file_data")
    if not request.form.get("file_path") or upload is None:
        return jsonify({"error": "file_path and file_data are required"}), 400
    path = _path(request.form["file_path"])
    path.parent.mkdir(parents=True, exist_ok=True)
    upload.save(path)
    return Response(f"File Uploaded: {path.stat().st_size} bytes", 200)


def _download(url: str, target: Path) -> int:
    """Fetch ``url`` into ``target`` whole or not at all (a partial file never appears under its name)."""
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response:
        expected = int(response.headers.get("Content-Length") or 0)
        with tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", delete=False) as partial:
            try:
                shutil.copyfileobj(response, partial)
                partial.flush()
                received = partial.tell()
                if expected and received != expected:
                    raise OSError(f"download incomplete: expected {expected} bytes, got {received}")
            except BaseException:
                os.unlink(partial.name)
                raise
    os.replace(partial.name, target)
    return received


@blueprint.post("/setup/download_file")
def post_download_file() -> Response:
    data = json_body()
    url, path = data.get("url"), data.get("path")
    if not url or not path:
        return Response("Path or URL not supplied!", 400)
    target = _path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    problem: Exception | None = None
    for _ in range(DOWNLOAD_TRIES):
        try:
            return Response(f"File downloaded successfully: {_download(url, target)} bytes", 200)
        except Exception as exc:  # noqa: BLE001 - every failure is retried, the last one is reported
            problem = exc
    return Response(f"Failed to download {url} after {DOWNLOAD_TRIES} tries: {problem}", 500)


def _names(path: Path, is_file: bool) -> tuple[str, ...]:
    """What the opened window's title may contain: the file name with or without its extension (or the command)."""
    return (path.name, path.stem) if is_file else (str(path),)


@blueprint.post("/setup/open_file")
def post_open_file() -> Response:
    """Open a file with the desktop's default app for its type (``xdg-open``; or run a command of that name),
    wait for a window whose title names it, and raise that window, as OSWorld's server does."""
    data = json_body()
    if not data.get("path"):
        return Response("Path not supplied!", 400)
    path = _path(data["path"])
    is_file = path.exists()
    if not is_file and shutil.which(data["path"]) is None:
        return Response(f"Application/file not found: {path}", 404)
    opener = launch(["xdg-open", str(path)] if is_file else [data["path"]])
    try:
        names, timeout = _names(path, is_file), float(data.get("timeout") or OPEN_TIMEOUT)
        checked = False

        def look(listed: list[ewmh.Window]) -> ewmh.Window | str | None:
            """The file's window, or why the opener failed at once (xdg-open exits once the app runs)."""
            nonlocal checked
            window = next((window for window in listed if any(name in window.title for name in names)), None)
            if window is None and not checked and opener.process.poll() is not None:
                checked = True
                return opener.failed_at_once(0)
            return window

        found = ewmh.wait_for(look, timeout)
        if isinstance(found, ewmh.Window):
            ewmh.activate(found.id)
            return Response("File opened and window activated successfully", 200)
        if found:
            return Response(f"Failed to open {path}: {'xdg-open' if is_file else data['path']} {found}", 500)
        return Response(f"Failed to find window for {path.name} within {timeout:g} seconds.", 500)
    finally:
        opener.stderr.close()  # its stderr is only read when it failed
