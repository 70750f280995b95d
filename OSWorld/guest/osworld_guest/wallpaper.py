"""Routes that set the desktop's wallpaper and read it back.

Setting paints the picture on the root window (so screenshots show it) and remembers its path in
the state, because OSWorld's wallpaper evaluator fetches the image back through ``/wallpaper``.
"""

from __future__ import annotations

import os
from pathlib import Path

from flask import Blueprint, Response, jsonify, send_file

from . import screen
from .payload import json_body
from .state import current_state

blueprint = Blueprint("wallpaper", __name__)


@blueprint.post("/wallpaper")
def post_wallpaper() -> Response:
    path = current_state().wallpaper
    if path is None or not path.exists():
        return jsonify({"error": "no wallpaper set"}), 404
    return send_file(path)


@blueprint.post("/setup/change_wallpaper")
def post_change_wallpaper() -> Response:
    path = Path(os.path.expanduser(json_body().get("path", "")))
    if not path.is_file():
        return jsonify({"status": "error", "message": f"file not found: {path}"}), 404
    try:
        screen.paint_wallpaper(str(path))
    except Exception as exc:  # noqa: BLE001 - an unreadable image is the caller's error, said plainly
        return jsonify({"status": "error", "message": f"cannot show {path} as wallpaper: {exc}"}), 400
    current_state().wallpaper = path
    return jsonify({"status": "success", "message": f"wallpaper set to {path}"})
