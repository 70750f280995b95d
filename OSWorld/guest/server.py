"""The guest API server: runs inside a desktop and speaks the HTTP API of OSWorld's VM guest.

desktop-env's ``PythonController`` and ``SetupController`` drive it unmodified: same paths, same
form/JSON fields, same response keys. Everything it executes (pyautogui actions, scripts, setup
commands) runs as a child process on this desktop's own X display (``DISPLAY`` of the server), with
a timeout; a failing or hanging action returns an error with its traceback and the server keeps
serving.

    python3 server.py --host 0.0.0.0 --port 5000 [--port-file PATH]

``--port 0`` binds a free port and writes it to ``--port-file`` (race-free for process mode).
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from flask import Flask, Response, jsonify, request, send_file
from werkzeug.serving import make_server

sys.path.insert(0, str(Path(__file__).resolve().parent))
import a11y  # noqa: E402
import health  # noqa: E402
import screen  # noqa: E402
from zygote import Zygote  # noqa: E402

app = Flask(__name__)
HOME = Path.home()
DEFAULT_TIMEOUT = 120.0
_recording: dict[str, Any] = {}
_wallpaper: dict[str, str] = {}
_zygote: dict[str, Zygote] = {}


# -- running things on this desktop ------------------------------------------------------------
def _argv(command: Any, shell: bool) -> list[str] | str:
    """Run ``python``/``python3`` as this server's interpreter, which has pyautogui."""
    if shell:
        return command if isinstance(command, str) else " ".join(command)
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    if argv and argv[0] in ("python", "python3"):
        argv[0] = sys.executable
    return argv


def run(command: Any, *, shell: bool = False, timeout: float = DEFAULT_TIMEOUT, cwd: str | None = None,
        stdin: str | None = None) -> dict[str, Any]:
    """Run until the command itself exits (killing its process group on timeout); OSWorld's result keys.

    Output goes to temporary files, not pipes: an app the command starts in the background keeps
    its inherited output open, and waiting for pipe EOF would wait for that app to quit.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(_argv(command, shell), shell=shell, cwd=cwd or str(HOME),
                                   stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                                   stdout=out, stderr=err, start_new_session=True)
        timed_out = False
        try:
            if stdin is not None:
                process.communicate(stdin.encode(), timeout=timeout)
            else:
                process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        out.seek(0), err.seek(0)
        output, error = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if timed_out:
        return {"status": "error", "message": f"timed out after {timeout:g}s", "output": output,
                "error": error + f"\nTimeoutError: the command did not finish within {timeout:g}s", "returncode": -1}
    status = "success" if process.returncode == 0 else "error"
    return {"status": status, "output": output, "error": error, "returncode": process.returncode}


def launch(command: Any, shell: bool = False) -> int:
    """Start a program and return at once (apps keep running after the request)."""
    process = subprocess.Popen(_argv(command, shell), shell=shell, cwd=str(HOME), stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    return process.pid


def _json() -> dict[str, Any]:
    return request.get_json(force=True, silent=True) or {}


def _timeout(data: dict[str, Any]) -> float:
    return float(data.get("timeout") or DEFAULT_TIMEOUT)


# -- observation ------------------------------------------------------------------------------
@app.get("/screenshot")
def get_screenshot() -> Response:
    return Response(screen.screenshot_png(), mimetype="image/png")


@app.get("/accessibility")
def get_accessibility() -> Response:
    try:
        return jsonify({"AT": a11y.accessibility_tree()})
    except Exception as exc:  # AT-SPI bus missing or an app misbehaving
        return jsonify({"AT": None, "error": repr(exc)}), 500


@app.get("/terminal")
def get_terminal() -> Response:
    try:
        return jsonify({"output": a11y.terminal_text()})
    except Exception as exc:
        return jsonify({"output": None, "error": repr(exc)}), 500


@app.get("/platform")
def get_platform() -> str:
    return platform.system()


@app.post("/screen_size")
def post_screen_size() -> Response:
    width, height = screen.screen_size()
    return jsonify({"width": width, "height": height})


@app.post("/cursor_position")
def post_cursor_position() -> Response:
    return jsonify(list(screen.pointer_position()))


@app.post("/window_size")
def post_window_size() -> Response:
    name = request.form.get("app_class_name", "")
    found = run(["xdotool", "search", "--onlyvisible", "--class", name], timeout=10)
    windows = found["output"].split()
    if not windows:
        return jsonify({"error": f"no window of class {name!r}"}), 404
    geometry = run(["xdotool", "getwindowgeometry", "--shell", windows[0]], timeout=10)["output"]
    values = dict(line.split("=", 1) for line in geometry.split() if "=" in line)
    return jsonify({"width": int(values["WIDTH"]), "height": int(values["HEIGHT"])})


@app.post("/desktop_path")
def post_desktop_path() -> Response:
    path = HOME / "Desktop"
    path.mkdir(exist_ok=True)
    return jsonify({"desktop_path": str(path)})


@app.post("/wallpaper")
def post_wallpaper() -> Response:
    path = _wallpaper.get("path")
    if not path or not Path(path).exists():
        return jsonify({"error": "no wallpaper set"}), 404
    return send_file(path)


def _tree(path: Path) -> dict[str, Any]:
    if path.is_dir():
        children = [_tree(child) for child in sorted(path.iterdir()) if not child.is_symlink()]
        return {"type": "directory", "name": path.name, "children": children}
    return {"type": "file", "name": path.name}


@app.post("/list_directory")
def post_list_directory() -> Response:
    path = Path(os.path.expanduser(_json().get("path", "")))
    if not path.is_dir():
        return jsonify({"error": f"{path} is not a directory"}), 404
    return jsonify({"directory_tree": _tree(path)})


@app.post("/file")
def post_file() -> Response:
    path = Path(os.path.expanduser(request.form.get("file_path", "")))
    if not path.is_file():
        return jsonify({"error": f"file not found: {path}"}), 404
    return send_file(path, as_attachment=True)


# -- actions ----------------------------------------------------------------------------------
def _python_code(command: Any, shell: bool) -> str | None:
    """The code of a ``["python", "-c", code]`` command (desktop-env's action shape), else None."""
    if shell or not isinstance(command, list) or len(command) != 3:
        return None
    return command[2] if command[0] in ("python", "python3") and command[1] == "-c" else None


def run_action(code: str, timeout: float) -> dict[str, Any]:
    """``python -c code`` through the warm zygote (same results, no interpreter start)."""
    returncode, timed_out, output, error = _zygote["zygote"].run(code, timeout)
    if timed_out:
        return {"status": "error", "message": f"timed out after {timeout:g}s", "output": output,
                "error": error + f"\nTimeoutError: the command did not finish within {timeout:g}s", "returncode": -1}
    return {"status": "success" if returncode == 0 else "error", "output": output, "error": error,
            "returncode": returncode}


@app.post("/execute")
@app.post("/setup/execute")
def post_execute() -> Response:
    data = _json()
    if "command" not in data:
        return jsonify({"status": "error", "message": "missing 'command'"}), 400
    shell = bool(data.get("shell"))
    code = _python_code(data["command"], shell)
    if code is not None and "zygote" in _zygote and _zygote["zygote"].alive():
        return jsonify(run_action(code, _timeout(data)))
    return jsonify(run(data["command"], shell=shell, timeout=_timeout(data)))


@app.post("/run_python")
def post_run_python() -> Response:
    data = _json()
    result = run([sys.executable, "-c", data.get("code", "")], timeout=_timeout(data))
    result["message"] = "executed" if result["status"] == "success" else "the script raised"
    return jsonify(result)


@app.post("/run_bash_script")
def post_run_bash_script() -> Response:
    data = _json()
    result = run(["bash", "-s"], stdin=data.get("script", ""), timeout=float(data.get("timeout") or 30),
                 cwd=data.get("working_dir") or None)
    return jsonify(result)


@app.post("/setup/launch")
def post_launch() -> Response:
    data = _json()
    command = data.get("command")
    if not command:
        return jsonify({"status": "error", "message": "empty command"}), 400
    shell = bool(data.get("shell"))
    if not shell and isinstance(command, str):
        command = shlex.split(command)
    return jsonify({"status": "success", "message": f"launched {command}", "pid": launch(command, shell)})


@app.post("/setup/upload")
def post_upload() -> Response:
    path = Path(os.path.expanduser(request.form.get("file_path", "")))
    upload = request.files.get("file_data")
    if not path.name or upload is None:
        return jsonify({"status": "error", "message": "need file_path and file_data"}), 400
    path.parent.mkdir(parents=True, exist_ok=True)
    upload.save(path)
    return jsonify({"status": "success", "message": f"saved {path}"})


@app.post("/setup/open_file")
def post_open_file() -> Response:
    path = Path(os.path.expanduser(_json().get("path", "")))
    if not path.exists():
        return jsonify({"status": "error", "message": f"file not found: {path}"}), 404
    opener = "mousepad" if path.suffix in ("", ".txt", ".md", ".py", ".json", ".csv") else "xdg-open"
    launch([opener, str(path)])
    waited = run(["xdotool", "search", "--sync", "--onlyvisible", "--name", path.name], timeout=20)
    return jsonify({"status": "success" if waited["returncode"] == 0 else "error", "message": f"opened {path}"})


def _window_ids(name: str, strict: bool, by_class: bool, wait: float = 0) -> list[str]:
    """Visible windows matching ``name``; with ``wait``, first wait up to that long for one to appear."""
    flag = "--class" if by_class else "--name"
    pattern = f"^{name}$" if strict else name
    if wait:
        run(["xdotool", "search", "--sync", "--onlyvisible", flag, pattern], timeout=wait)
    return run(["xdotool", "search", "--onlyvisible", flag, pattern], timeout=10)["output"].split()


@app.post("/setup/activate_window")
def post_activate_window() -> Response:
    data = _json()
    # a window launched by the previous setup step may still be mapping: wait for it, as a person would
    windows = _window_ids(data.get("window_name", ""), bool(data.get("strict")), bool(data.get("by_class")), wait=20)
    if not windows:
        return jsonify({"status": "error", "message": "window not found"}), 404
    run(["xdotool", "windowactivate", "--sync", windows[0]], timeout=10)
    return jsonify({"status": "success", "message": "activated"})


@app.post("/setup/close_window")
def post_close_window() -> Response:
    data = _json()
    windows = _window_ids(data.get("window_name", ""), bool(data.get("strict")), bool(data.get("by_class")))
    if not windows:
        return jsonify({"status": "error", "message": "window not found"}), 404
    for window in windows:
        run(["xdotool", "windowclose", window], timeout=10)
    return jsonify({"status": "success", "message": f"closed {len(windows)} window(s)"})


@app.post("/setup/change_wallpaper")
def post_change_wallpaper() -> Response:
    path = Path(os.path.expanduser(_json().get("path", "")))
    if not path.is_file():
        return jsonify({"status": "error", "message": f"file not found: {path}"}), 404
    try:
        screen.paint_wallpaper(str(path))
    except Exception as exc:  # noqa: BLE001 - an unreadable image is the caller's error, said plainly
        return jsonify({"status": "error", "message": f"cannot show {path} as wallpaper: {exc}"}), 400
    _wallpaper["path"] = str(path)
    return jsonify({"status": "success", "message": f"wallpaper set to {path}"})


@app.post("/start_recording")
def post_start_recording() -> Response:
    if _recording.get("process") and _recording["process"].poll() is None:
        return jsonify({"status": "error", "message": "already recording"}), 400
    width, height = screen.screen_size()
    target = Path(tempfile.mkdtemp(prefix="recording-")) / "recording.mp4"
    _recording["path"] = target
    _recording["process"] = subprocess.Popen(
        [shutil.which("ffmpeg") or "ffmpeg", "-y", "-f", "x11grab", "-video_size", f"{width}x{height}", "-framerate", "10",
         "-i", os.environ.get("DISPLAY", ":0"), "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
         str(target)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return jsonify({"status": "success", "message": "recording started"})


@app.post("/end_recording")
def post_end_recording() -> Response:
    process = _recording.pop("process", None)
    if process is None:
        return jsonify({"status": "error", "message": "not recording"}), 400
    process.communicate(b"q", timeout=30)
    return send_file(_recording.pop("path"), mimetype="video/mp4", as_attachment=True)


@app.get("/health")
def get_health() -> Response:
    """Whether this desktop can run a task (free, writable home and tmp); 503 with ``problems`` if not.

    ``?min_free=<bytes>`` sets the free space each must have (default 16 MiB).
    """
    report = health.health(int(request.args.get("min_free", health.DEFAULT_MIN_FREE)))
    report["display"] = os.environ.get("DISPLAY")
    return jsonify(report), 200 if report["status"] == "ok" else 503


def main() -> None:
    parser = argparse.ArgumentParser(description="OSWorld guest API server for desktop-lite")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--port-file", help="write the bound port here (for --port 0)")
    args = parser.parse_args()
    if "DISPLAY" not in os.environ:
        sys.exit("guest server: DISPLAY is not set; start it on the desktop's X display")
    try:  # before any server thread exists: the zygote is forked from a single-threaded process
        _zygote["zygote"] = Zygote()
    except Exception as exc:
        print(f"guest server: actions run as plain subprocesses ({exc})", file=sys.stderr)
    server = make_server(args.host, args.port, app, threaded=True)
    if args.port_file:
        staging = Path(args.port_file + ".tmp")
        staging.write_text(str(server.server_port))
        staging.rename(args.port_file)
    threading.current_thread().name = "guest-server"
    server.serve_forever()


if __name__ == "__main__":
    main()
