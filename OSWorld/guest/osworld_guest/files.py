"""Routes that move files between the host and this desktop, and open one in an app.

Paths may start with ``~`` (OSWorld's task configs use it); it means the desktop's home.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, jsonify, request, send_file

from .commands import launch, run
from .payload import json_body

blueprint = Blueprint("files", __name__)

#: Suffixes opened in the text editor; anything else goes to ``xdg-open``.
TEXT_SUFFIXES = ("", ".txt", ".md", ".py", ".json", ".csv")


def _path(value: str) -> Path:
    return Path(os.path.expanduser(value))


def _tree(path: Path) -> dict[str, Any]:
    """OSWorld's ``directory_tree`` shape; symlinks are skipped so a loop cannot recurse forever."""
    if path.is_dir():
        children = [_tree(child) for child in sorted(path.iterdir()) if not child.is_symlink()]
        return {"type": "directory", "name": path.name, "children": children}
    return {"type": "file", "name": path.name}


@blueprint.post("/list_directory")
def post_list_directory() -> Response:
    path = _path(json_body().get("path", ""))
    if not path.is_dir():
        return jsonify({"error": f"{path} is not a directory"}), 404
    return jsonify({"directory_tree": _tree(path)})


@blueprint.post("/file")
def post_file() -> Response:
    path = _path(request.form.get("file_path", ""))
    if not path.is_file():
        return jsonify({"error": f"file not found: {path}"}), 404
    return send_file(path, as_attachment=True)


@blueprint.post("/setup/upload")
def post_upload() -> Response:
    path = _path(request.form.get("file_path", ""))
    upload = request.files.get("file_data")
    if not path.name or upload is None:
        return jsonify({"status": "error", "message": "need file_path and file_data"}), 400
    path.parent.mkdir(parents=True, exist_ok=True)
    upload.save(path)
    return jsonify({"status": "success", "message": f"saved {path}"})


@blueprint.post("/setup/open_file")
def post_open_file() -> Response:
    path = _path(json_body().get("path", ""))
    if not path.exists():
        return jsonify({"status": "error", "message": f"file not found: {path}"}), 404
    opener = "mousepad" if path.suffix in TEXT_SUFFIXES else "xdg-open"
    launch([opener, str(path)])
    waited = run(["xdotool", "search", "--sync", "--onlyvisible", "--name", path.name], timeout=20)
    return jsonify({"status": "success" if waited["returncode"] == 0 else "error", "message": f"opened {path}"})
