"""The route that sets the guest's clock: a rayenv extension to OSWorld's guest API.

A VM desktop that resumes a saved state (a snapshot, its template, a warm spare) runs on from the moment
the state was saved, so the host sets the guest's wall clock right after every reset. OSWorld's server has
no route for it, and there the host runs ``date -s`` through ``/setup/execute``: a shell and a process,
~0.3 s of every reset under emulation. Here it is one system call in the server itself (rayenv's VM runs
it as root); a server that may not set the clock says so (403), and the host falls back to ``date``.
"""

from __future__ import annotations

import time

from flask import Blueprint, Response, jsonify

from .payload import json_body

blueprint = Blueprint("clock", __name__)


@blueprint.post("/setup/set_clock")
def post_set_clock() -> Response:
    seconds = json_body().get("seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        return jsonify({"status": "error", "message": "'seconds' (since the epoch) must be a number"}), 400
    try:
        time.clock_settime(time.CLOCK_REALTIME, float(seconds))
    except PermissionError as exc:
        return jsonify({"status": "error", "message": f"this server may not set the clock: {exc}"}), 403
    return jsonify({"status": "success"})
