"""Routes that find, size, raise and close windows, with ``wmctrl``'s matching (see ``ewmh``).

As on OSWorld's server, activating or closing a window that is not there is not an error (200):
``wmctrl``'s exit status is ignored there, and tasks rely on it (closing an app "if open"). The text
says what happened. Task setup often activates a window the previous step just launched and that
may still be mapping, so activation first waits a little for it, as a person would.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from . import ewmh
from .payload import json_body

blueprint = Blueprint("windows", __name__)

#: Seconds ``/setup/activate_window`` waits for a matching window to appear.
ACTIVATE_WAIT = 5.0


def wait_for_window(pattern: str, strict: bool, by_class: bool, timeout: float) -> ewmh.Window | None:
    """The first window matching ``pattern``, waiting up to ``timeout`` seconds for one to appear."""
    return ewmh.wait_for(lambda listed: next((window for window in listed if window.matches(pattern, strict, by_class)),
                                             None), timeout)


def _window_request() -> tuple[str, bool, bool] | None:
    """``window_name``, ``strict`` and ``by_class`` of the request; None without a window name."""
    data = json_body()
    name = data.get("window_name")
    if not name:
        return None
    return str(name), bool(data.get("strict")), bool(data.get("by_class"))


@blueprint.post("/window_size")
def post_window_size() -> Response:
    name = request.form.get("app_class_name")
    if not name:
        return jsonify({"error": "app_class_name is required"}), 400
    for window in ewmh.windows():
        if name.casefold() in (part.casefold() for part in window.classes):
            width, height = ewmh.size(window.id)
            return jsonify({"width": width, "height": height})
    return jsonify({"error": f"no window of class {name!r}"}), 404


@blueprint.post("/setup/activate_window")
def post_activate_window() -> Response:
    asked = _window_request()
    if asked is None:
        return Response("window_name required", 400)
    window = wait_for_window(*asked, timeout=ACTIVATE_WAIT)
    if window is None:
        return Response(f"no window matches {asked[0]!r}; nothing activated", 200)
    ewmh.activate(window.id)
    return Response(f"Window activated successfully: {window.title!r} ({window.wm_class})", 200)


@blueprint.post("/setup/close_window")
def post_close_window() -> Response:
    asked = _window_request()
    if asked is None:
        return Response("window_name required", 400)
    window = ewmh.find(*asked)
    if window is None:
        return Response(f"no window matches {asked[0]!r}; nothing to close", 200)
    ewmh.close(window.id)
    return Response(f"Window closed successfully: {window.title!r} ({window.wm_class})", 200)
