"""Run ``python -c <action>`` without paying for a new interpreter on every RL step.

desktop-env sends each pyautogui action as ``["python", "-c", code]``. Starting Python and importing
pyautogui (Xlib, PIL, pyscreeze, ...) costs ~0.3 s per step, far more than the action itself. The
zygote is a single-threaded process that imports all of that once; for each action it forks a
child that opens its own X connection, runs the code exactly as ``python -c`` would (same
``__main__`` namespace, tracebacks and exit codes, output captured from file descriptors 1 and 2)
and exits. The zygote kills a child that outlives its timeout, together with what it started.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import tempfile
import threading
import time
import traceback
from typing import Any


def _run_child(code: str, out_fd: int, err_fd: int) -> None:
    """In the forked child: redirect output, reconnect to X, execute, exit with python's exit code."""
    os.setsid()  # its own process group, so a timeout also kills what the action launched
    os.dup2(out_fd, 1)
    os.dup2(err_fd, 2)
    import sys

    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    status = 0
    try:
        from Xlib.display import Display
        import pyautogui._pyautogui_x11 as x11  # noqa: PLC0415 - already imported by the zygote

        x11._display = Display(os.environ["DISPLAY"])  # never share the zygote's X connection
        exec(compile(code, "<string>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not isinstance(exc.code, (int, type(None))):
            print(exc.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
        status = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _serve(connection: Any) -> None:
    """The zygote's loop: one request (code, timeout) at a time → (returncode, timed_out, out, err)."""
    import pyautogui  # noqa: F401 - the point of the zygote: imported once
    import pyautogui._pyautogui_x11  # noqa: F401

    connection.send("ready")
    while True:
        try:
            code, timeout = connection.recv()
        except EOFError:
            return
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            pid = os.fork()
            if pid == 0:
                _run_child(code, out.fileno(), err.fileno())
            deadline, timed_out, status = time.monotonic() + timeout, False, 0
            while True:
                done, raw = os.waitpid(pid, os.WNOHANG)
                if done:
                    status = os.waitstatus_to_exitcode(raw)
                    break
                if time.monotonic() > deadline:
                    timed_out = True
                    try:
                        os.killpg(pid, signal.SIGKILL)
                    except ProcessLookupError:  # not yet its own group leader
                        os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    status = -1
                    break
                time.sleep(0.002)
            out.seek(0), err.seek(0)
            connection.send((status, timed_out, out.read().decode(errors="replace"), err.read().decode(errors="replace")))


class Zygote:
    """The server's handle on the zygote; thread-safe (one action at a time, as on a real desktop)."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("fork")
        self._connection, child_end = context.Pipe()
        self._process = context.Process(target=_serve, args=(child_end,), daemon=True, name="action-zygote")
        self._process.start()
        self._lock = threading.Lock()
        if not self._connection.poll(30) or self._connection.recv() != "ready":
            raise RuntimeError("the action zygote did not start (is pyautogui importable?)")

    def run(self, code: str, timeout: float) -> tuple[int, bool, str, str]:
        with self._lock:
            self._connection.send((code, timeout))
            return self._connection.recv()

    def alive(self) -> bool:
        return self._process.is_alive()
