"""The Flask app of one guest server: every route of OSWorld's guest API (and rayenv's ``/setup/set_clock``),
bound to one ``GuestState``."""

from __future__ import annotations

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import InternalServerError

from . import actions, clock, files, observe, recording, wallpaper, windows
from .state import EXTENSION, GuestState

#: Every route group; together they are the whole guest API.
BLUEPRINTS = (observe.blueprint, windows.blueprint, files.blueprint, actions.blueprint, wallpaper.blueprint,
              recording.blueprint, clock.blueprint)


def create_app(state: GuestState) -> Flask:
    """A new app whose routes read and change ``state`` only (see ``state.current_state``)."""
    app = Flask(__name__)
    app.extensions[EXTENSION] = state
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    app.register_error_handler(InternalServerError, _unexpected)
    return app


def _unexpected(failure: InternalServerError) -> tuple[Response, int]:
    """A route that raised answers with what went wrong (Flask has already logged the traceback), so the host's
    error names the cause instead of quoting Flask's generic HTML page."""
    cause = failure.original_exception or failure
    return jsonify({"status": "error", "message": f"{request.path} failed: {cause!r}"}), 500
