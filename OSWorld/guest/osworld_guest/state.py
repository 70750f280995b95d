"""What one guest server remembers between requests, in one object.

The server is threaded (requests run concurrently), and the only things that outlive a request are
the screen recording in progress, the wallpaper last painted and the warm action zygote. Keeping them
in a ``GuestState`` handed to ``create_app`` (instead of module globals) lets two apps in one
process, as in tests, never see each other's recording or wallpaper.
"""

from __future__ import annotations

import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

from flask import current_app

from .zygote import Zygote

#: The key of the state in ``app.extensions``.
EXTENSION = "osworld_guest"


@dataclass
class Recording:
    """An ffmpeg screen grab in progress and the file it writes."""

    process: subprocess.Popen
    path: Path


@dataclass(frozen=True)
class Wallpaper:
    """The picture ``/setup/change_wallpaper`` painted and the X pixmap it painted it into.

    ``pixmap`` tells whether the background still shows this picture; None where there was no X
    server to paint on.
    """

    path: Path
    pixmap: int | None = None


@dataclass
class GuestState:
    """The mutable state of one guest server.

    ``zygote`` is None when the action zygote could not start (actions then run as plain
    subprocesses). ``recording_lock`` makes "is a recording running? then start one" a single
    step, so two concurrent ``/start_recording`` calls never start two ffmpegs.
    """

    zygote: Zygote | None = None
    wallpaper: Wallpaper | None = None
    recording: Recording | None = None
    recording_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)


def current_state() -> GuestState:
    """The state of the app serving the current request."""
    return current_app.extensions[EXTENSION]
