"""The Flask app of one guest server: every route of OSWorld's guest API, bound to one ``GuestState``."""

from __future__ import annotations

from flask import Flask

from . import actions, files, observe, recording, wallpaper, windows
from .state import EXTENSION, GuestState

#: Every route group; together they are the whole guest API.
BLUEPRINTS = (observe.blueprint, windows.blueprint, files.blueprint, actions.blueprint, wallpaper.blueprint,
              recording.blueprint)


def create_app(state: GuestState) -> Flask:
    """A new app whose routes read and change ``state`` only (see ``state.current_state``)."""
    app = Flask(__name__)
    app.extensions[EXTENSION] = state
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    return app
