"""Routes that find, size, raise and close windows, all through ``xdotool``.

Task setup often activates a window that the previous step just launched and that may still be
mapping, so activation waits for it as a person would; the others look once.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from .commands import run
from .payload import json_body

blueprint = Blueprint("windows", __name__)


def window_ids(name: str, strict: bool, by_class: bool, wait: float = 0) -> list[str]:
    """Visible windows matching ``name``; with ``wait``, first wait up to that long for one to appear."""
    flag = "--class" if by_class else "--name"
    pattern = f"^{name}$" if strict else name
    if wait:
        run(["xdotool", "search", "--sync", "--onlyvisible", flag, pattern], timeout=wait)
    return run(["xdotool", "search", "--onlyvisible", flag, pattern], timeout=10)["output"].split()


@blueprint.post("/window_size")
def post_window_size() -> Response:
    name = request.form.get("app_class_name", "")
    found = run(["xdotool", "search", "--onlyvisible", "--class", name], timeout=10)
    windows = found["output"].split()
    if not windows:
        return jsonify({"error": f"no window of class {name!r}"}), 404
    geometry = run(["xdotool", "getwindowgeometry", "--shell", windows[0]], timeout=10)["output"]
    values = dict(line.split("=", 1) for line in geometry.split() if "=" in line)
    return jsonify({"width": int(values["WIDTH"]), "height": int(values["HEIGHT"])})


@blueprint.post("/setup/activate_window")
def post_activate_window() -> Response:
    data = json_body()
    windows = window_ids(data.get("window_name", ""), bool(data.get("strict")), bool(data.get("by_class")), wait=20)
    if not windows:
        return jsonify({"status": "error", "message": "window not found"}), 404
    run(["xdotool", "windowactivate", "--sync", windows[0]], timeout=10)
    return jsonify({"status": "success", "message": "activated"})


@blueprint.post("/setup/close_window")
def post_close_window() -> Response:
    data = json_body()
    windows = window_ids(data.get("window_name", ""), bool(data.get("strict")), bool(data.get("by_class")))
    if not windows:
        return jsonify({"status": "error", "message": "window not found"}), 404
    for window in windows:
        run(["xdotool", "windowclose", window], timeout=10)
    return jsonify({"status": "success", "message": f"closed {len(windows)} window(s)"})
