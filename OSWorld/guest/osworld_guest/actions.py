"""Routes that execute things: agent actions, Python and bash scripts, setup commands, app launches.

An agent's pyautogui action arrives as ``["python", "-c", code]`` on ``/execute``; it runs through
the warm zygote when one is alive (no interpreter start per RL step) and as a plain subprocess
otherwise, with the same result either way. Each route answers with the keys and status codes of
OSWorld's server for that route (they differ: ``/run_python`` says ``return_code`` and merges
nothing, ``/run_bash_script`` says ``returncode`` and merges stderr into ``output``).
"""

from __future__ import annotations

import os
import shlex
import sys
import tempfile
import time
from typing import Any

from flask import Blueprint, Response, jsonify

from . import ewmh
from .commands import launch, python_code, run, run_action
from .payload import json_body, timeout_of
from .state import current_state

blueprint = Blueprint("actions", __name__)

#: ``/run_python``'s time limit when the request names none (OSWorld's fixed limit).
PYTHON_TIMEOUT = 30.0
#: ``/run_bash_script``'s time limit when the request names none.
BASH_TIMEOUT = 100.0
#: Seconds a launched program is watched for failing at once: through a shell, which must start and look the
#: command up before it can say "command not found" (slow in a VM without KVM); a program started directly exists
#: (a missing one raised already), so only its own failing at start is watched for. Every task's setup pays it.
SHELL_LAUNCH_GRACE, LAUNCH_GRACE = 0.5, 0.1
#: How long a ``command_success`` check of ``/setup/execute_with_verification`` may run.
CHECK_TIMEOUT = 5.0


def _command(data: dict[str, Any]) -> tuple[Any, bool]:
    shell = bool(data.get("shell"))
    return data.get("command", "" if shell else []), shell


@blueprint.post("/execute")
@blueprint.post("/setup/execute")
def post_execute() -> Response:
    data = json_body()
    if "command" not in data:
        return jsonify({"status": "error", "message": "missing 'command'"}), 400
    command, shell = _command(data)
    code = python_code(command, shell)
    zygote = current_state().zygote
    if code is not None and zygote is not None and zygote.alive():
        return jsonify(run_action(zygote, code, timeout_of(data)))
    try:
        return jsonify(run(command, shell=shell, timeout=timeout_of(data)))
    except OSError as exc:  # the program does not exist or cannot run
        return jsonify({"status": "error", "message": str(exc)}), 500


def _verified(verification: dict[str, Any]) -> bool:
    """Whether every check of ``verification`` holds now (OSWorld's ``window_exists`` and ``command_success``)."""
    if "window_exists" in verification:
        wanted = str(verification["window_exists"]).casefold()
        if not any(wanted in window.title.casefold() for window in ewmh.windows()):
            return False
    if "command_success" in verification:
        check = run(verification["command_success"], shell=True, timeout=CHECK_TIMEOUT)
        if check["returncode"] != 0:
            return False
    return True


@blueprint.post("/execute_with_verification")
@blueprint.post("/setup/execute_with_verification")
def post_execute_with_verification() -> Response:
    """Run a command, then poll its ``verification`` until it holds (200) or ``max_wait_time`` passes (500)."""
    data = json_body()
    command, shell = _command(data)
    if not command:
        return jsonify({"status": "error", "message": "missing 'command'"}), 400
    verification = data.get("verification") or {}
    max_wait, interval = float(data.get("max_wait_time", 10)), float(data.get("check_interval", 1))
    try:
        result = run(command, shell=shell, timeout=timeout_of(data))
    except OSError as exc:
        return jsonify({"status": "error", "message": str(exc)}), 500
    if not verification:
        return jsonify(result)
    started = time.monotonic()
    while True:
        if _verified(verification):
            return jsonify({**result, "verification": "passed", "wait_time": time.monotonic() - started})
        if time.monotonic() - started >= max_wait:
            return jsonify({**result, "status": "verification_failed", "verification": "failed",
                            "wait_time": max_wait}), 500
        time.sleep(interval)


@blueprint.post("/run_python")
def post_run_python() -> Response:
    """Run a Python script from a file; ``message`` is its stdout and stderr together, as OSWorld's agents read it."""
    data = json_body()
    code = data.get("code")
    if not code:
        return jsonify({"status": "error", "message": "Code not supplied!"}), 400
    timeout = float(data.get("timeout") or PYTHON_TIMEOUT)
    with tempfile.NamedTemporaryFile("w", suffix=".py", prefix="run_python_") as script:
        script.write(code)
        script.flush()
        result = run([sys.executable, script.name], timeout=timeout)
    if result["status"] == "error":  # it timed out
        return jsonify({"status": "error", "message": f"Execution timeout: the code ran longer than {timeout:g}s",
                        "error": "TimeoutExpired", "need_more": False, "output": None}), 500
    output, error, code = result["output"], result["error"], result["returncode"]
    if code != 0 and not error:
        error = f"Process exited with code {code}"
    message = "\n".join(part for part in (output, error) if part)
    return jsonify({"status": "success" if code == 0 else "error", "message": message, "need_more": False,
                    "output": output, "error": error, "return_code": code})


@blueprint.post("/run_bash_script")
def post_run_bash_script() -> Response:
    """Run a bash script; stdout and stderr come back together in ``output`` (``error`` stays empty)."""
    data = json_body()
    script = data.get("script")
    if not script:
        return jsonify({"status": "error", "output": "Script not supplied!", "error": "", "returncode": -1}), 400
    working_dir = os.path.expanduser(data["working_dir"]) if data.get("working_dir") else None
    if working_dir and not os.path.isdir(working_dir):
        return jsonify({"status": "error", "output": f"Working directory does not exist: {working_dir}",
                        "error": "", "returncode": -1}), 400
    timeout = float(data.get("timeout") or BASH_TIMEOUT)
    result = run(["bash", "-s"], stdin=script, timeout=timeout, cwd=working_dir, merge_stderr=True)
    if result["status"] == "error":  # it timed out
        return jsonify({"status": "error", "output": f"Script execution timed out after {timeout:g} seconds",
                        "error": "", "returncode": -1}), 500
    return jsonify({"status": "success" if result["returncode"] == 0 else "error", "output": result["output"],
                    "error": "", "returncode": result["returncode"]})


@blueprint.post("/setup/launch")
def post_launch() -> Response:
    """Start a program and return at once; 500 if it cannot start or fails right away (no such command)."""
    command, shell = _command(json_body())
    if not command:
        return jsonify({"status": "error", "message": "empty command"}), 400
    if not shell and isinstance(command, str):
        command = shlex.split(command)
    shown = command if shell or isinstance(command, str) else " ".join(map(str, command))
    try:
        failure = launch(command, shell).failed_at_once(SHELL_LAUNCH_GRACE if shell else LAUNCH_GRACE)
    except OSError as exc:
        return jsonify({"status": "error", "message": f"cannot launch {shown}: {exc}"}), 500
    if failure:
        return jsonify({"status": "error", "message": f"{shown} did not start: {failure}"}), 500
    return Response(f"{shown} launched successfully", 200)
