"""Routes that execute things: agent actions, Python and bash scripts, setup commands, app launches.

An agent's pyautogui action arrives as ``["python", "-c", code]`` on ``/execute``; it runs through
the warm zygote when one is alive (no interpreter start per RL step) and as a plain subprocess
otherwise, with the same result either way.
"""

from __future__ import annotations

import shlex
import sys

from flask import Blueprint, Response, jsonify

from .commands import launch, python_code, run, run_action
from .payload import json_body, timeout_of
from .state import current_state

blueprint = Blueprint("actions", __name__)


@blueprint.post("/execute")
@blueprint.post("/setup/execute")
def post_execute() -> Response:
    data = json_body()
    if "command" not in data:
        return jsonify({"status": "error", "message": "missing 'command'"}), 400
    shell = bool(data.get("shell"))
    code = python_code(data["command"], shell)
    zygote = current_state().zygote
    if code is not None and zygote is not None and zygote.alive():
        return jsonify(run_action(zygote, code, timeout_of(data)))
    return jsonify(run(data["command"], shell=shell, timeout=timeout_of(data)))


@blueprint.post("/run_python")
def post_run_python() -> Response:
    data = json_body()
    result = run([sys.executable, "-c", data.get("code", "")], timeout=timeout_of(data))
    result["message"] = "executed" if result["status"] == "success" else "the script raised"
    return jsonify(result)


@blueprint.post("/run_bash_script")
def post_run_bash_script() -> Response:
    data = json_body()
    result = run(["bash", "-s"], stdin=data.get("script", ""), timeout=float(data.get("timeout") or 30),
                 cwd=data.get("working_dir") or None)
    return jsonify(result)


@blueprint.post("/setup/launch")
def post_launch() -> Response:
    data = json_body()
    command = data.get("command")
    if not command:
        return jsonify({"status": "error", "message": "empty command"}), 400
    shell = bool(data.get("shell"))
    if not shell and isinstance(command, str):
        command = shlex.split(command)
    return jsonify({"status": "success", "message": f"launched {command}", "pid": launch(command, shell)})
