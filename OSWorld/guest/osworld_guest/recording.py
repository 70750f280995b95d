"""Routes that record the screen to an MP4 between ``/start_recording`` and ``/end_recording``.

ffmpeg grabs the server's X display; ending sends it ``q`` on stdin so it finishes the file (a
killed ffmpeg leaves an MP4 without its index) and returns the file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from flask import Blueprint, Response, jsonify, send_file

from . import screen
from .state import Recording, current_state

blueprint = Blueprint("recording", __name__)


def _ffmpeg(width: int, height: int, target: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [shutil.which("ffmpeg") or "ffmpeg", "-y", "-f", "x11grab", "-video_size", f"{width}x{height}", "-framerate", "10",
         "-i", os.environ.get("DISPLAY", ":0"), "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
         str(target)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@blueprint.post("/start_recording")
def post_start_recording() -> Response:
    state = current_state()
    with state.recording_lock:
        if state.recording is not None and state.recording.process.poll() is None:
            return jsonify({"status": "error", "message": "already recording"}), 400
        width, height = screen.screen_size()
        target = Path(tempfile.mkdtemp(prefix="recording-")) / "recording.mp4"
        state.recording = Recording(process=_ffmpeg(width, height, target), path=target)
    return jsonify({"status": "success", "message": "recording started"})


@blueprint.post("/end_recording")
def post_end_recording() -> Response:
    state = current_state()
    with state.recording_lock:
        recording, state.recording = state.recording, None
    if recording is None:
        return jsonify({"status": "error", "message": "not recording"}), 400
    recording.process.communicate(b"q", timeout=30)
    return send_file(recording.path, mimetype="video/mp4", as_attachment=True)
