"""Routes that set the desktop's wallpaper and read back the one it really shows.

Setting paints the picture on the root window (so screenshots show it), records it in GNOME's
``picture-uri`` where the profile has that schema (so ``gsettings`` and apps agree), and remembers
the file with the pixmap it painted. Reading (OSWorld's wallpaper evaluator fetches the image
through ``/wallpaper``) answers what the screen shows now, whoever set it:

1. the file this server painted, while the background is still that pixmap;
2. else the background pixmap another program painted (``feh``, ``xwallpaper``...), as PNG;
3. else the file GNOME's ``picture-uri`` names, as OSWorld's server reads it;
4. else 404.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlparse

from flask import Blueprint, Response, jsonify, send_file

from . import screen
from .payload import json_body
from .state import Wallpaper, current_state

blueprint = Blueprint("wallpaper", __name__)

GNOME_BACKGROUND = "org.gnome.desktop.background"


def _gsettings(*args: str) -> subprocess.CompletedProcess | None:
    """``gsettings`` on the background schema, or None where the profile has no gsettings or no such schema."""
    if shutil.which("gsettings") is None:
        return None
    try:
        done = subprocess.run(["gsettings", *args], capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:  # a session bus that does not answer
        return None
    return done if done.returncode == 0 else None


def gnome_wallpaper() -> Path | None:
    """The existing file GNOME's ``picture-uri`` names, or None."""
    done = _gsettings("get", GNOME_BACKGROUND, "picture-uri")
    if done is None:
        return None
    uri = done.stdout.strip().strip("'\"")
    path = Path(unquote(urlparse(uri).path) if uri.startswith("file://") else uri)
    return path if uri and path.is_file() else None


def _root_pixmap() -> int | None:
    try:
        return screen.root_pixmap()
    except Exception:  # noqa: BLE001 - no X display to ask (a test app): nothing else can have painted
        return None


@blueprint.post("/wallpaper")
def post_wallpaper() -> Response:
    painted, shown = current_state().wallpaper, _root_pixmap()
    if painted is not None and painted.pixmap == shown and painted.path.is_file():
        return send_file(painted.path)
    if shown is not None:
        try:
            return Response(screen.pixmap_png(shown), mimetype="image/png")
        except Exception:  # noqa: BLE001 - a pixmap freed meanwhile: fall back to what GNOME says
            pass
    gnome = gnome_wallpaper()
    if gnome is not None:
        return send_file(gnome)
    return jsonify({"error": "Wallpaper file not found"}), 404


@blueprint.post("/setup/change_wallpaper")
def post_change_wallpaper() -> Response:
    given = json_body().get("path")
    if not given:
        return Response("Path not supplied!", 400)
    path = Path(os.path.expandvars(os.path.expanduser(given)))
    if not path.is_file():
        return Response(f"File not found: {path}", 404)
    try:
        pixmap = screen.paint_wallpaper(str(path))
    except Exception as exc:  # noqa: BLE001 - an unreadable image is the caller's error, said plainly
        return Response(f"Failed to change wallpaper: cannot show {path}: {exc}", 500)
    _gsettings("set", GNOME_BACKGROUND, "picture-uri", path.resolve().as_uri())
    current_state().wallpaper = Wallpaper(path=path, pixmap=pixmap)
    return Response("Wallpaper changed successfully", 200)
