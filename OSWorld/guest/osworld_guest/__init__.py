"""The guest API server: runs inside a desktop and speaks the HTTP API of OSWorld's VM guest.

desktop-env's ``PythonController`` and ``SetupController`` drive it unmodified: same paths, same
form/JSON fields, same response keys and status codes as OSWorld's own server, route by route
(``tests/test_guest_parity.py`` holds it to that); ``/health`` is ours. Everything it executes (pyautogui actions, scripts, setup
commands) runs as a child process on this desktop's own X display (``DISPLAY`` of the server), with
a timeout; a failing or hanging action returns an error with its traceback and the server keeps
serving.

    PYTHONPATH=OSWorld/guest python3 -m osworld_guest --host 0.0.0.0 --port 5000 [--port-file PATH]

``--port 0`` binds a free port and writes it to ``--port-file`` (race-free for process mode).
What the server remembers between requests lives in one ``GuestState`` given to ``create_app``.
"""

from .app import create_app
from .state import GuestState

__all__ = ["GuestState", "create_app"]
