"""Routes that look at the desktop without changing it: screenshot, accessibility tree, sizes, health.

These run on every RL step (the screenshot, often the tree), so they read the X server directly
(``screen``) or AT-SPI (``a11y``) rather than starting a process.
"""

from __future__ import annotations

import os
import platform

from flask import Blueprint, Response, jsonify, request

from . import a11y, health, screen
from .commands import HOME

blueprint = Blueprint("observe", __name__)


@blueprint.get("/screenshot")
def get_screenshot() -> Response:
    return Response(screen.screenshot_png(), mimetype="image/png")


@blueprint.get("/accessibility")
def get_accessibility() -> Response:
    try:
        return jsonify({"AT": a11y.accessibility_tree()})
    except Exception as exc:  # AT-SPI bus missing or an app misbehaving
        return jsonify({"status": "error", "message": f"cannot read the accessibility tree: {exc!r}"}), 500


@blueprint.get("/terminal")
def get_terminal() -> Response:
    """The text of the focused terminal of the active terminal window; ``output`` is null when none is active."""
    try:
        return jsonify({"output": a11y.terminal_text(), "status": "success"})
    except Exception as exc:
        return jsonify({"status": "error", "message": f"cannot read the terminal: {exc!r}"}), 500


@blueprint.get("/platform")
def get_platform() -> str:
    return platform.system()


@blueprint.post("/screen_size")
def post_screen_size() -> Response:
    width, height = screen.screen_size()
    return jsonify({"width": width, "height": height})


@blueprint.get("/cursor_position")
@blueprint.post("/cursor_position")
def get_cursor_position() -> Response:
    """``[x, y]`` of the pointer (GET as on OSWorld's server; POST kept for older clients)."""
    return jsonify(list(screen.pointer_position()))


@blueprint.post("/desktop_path")
def post_desktop_path() -> Response:
    path = HOME / "Desktop"
    path.mkdir(exist_ok=True)
    return jsonify({"desktop_path": str(path)})


@blueprint.get("/health")
def get_health() -> Response:
    """Whether this desktop can run a task (free, writable home and tmp); 503 with ``problems`` if not.

    ``?min_free=<bytes>`` sets the free space each must have (default 16 MiB).
    """
    report = health.health(int(request.args.get("min_free", health.DEFAULT_MIN_FREE)))
    report["display"] = os.environ.get("DISPLAY")
    return jsonify(report), 200 if report["status"] == "ok" else 503
