"""Running things on this desktop: commands to completion, apps in the background, warm actions.

Everything runs as a child process on the server's own X display (``DISPLAY`` is inherited), in its
own process group, with a timeout; results carry OSWorld's keys (``status``, ``output``, ``error``,
``returncode``), so a failing or hanging command is an answer, never a dead server. As on OSWorld's
server, ``status`` says whether the command ran (``success`` also for a non-zero exit, which
``returncode`` reports) and arguments starting with ``~/`` are expanded.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .zygote import Zygote

#: The desktop's home: where commands and apps start, and where ``~/Desktop`` is.
HOME = Path.home()
#: Seconds a command may run when the request names no ``timeout``.
DEFAULT_TIMEOUT = 120.0


def _argv(command: Any, shell: bool) -> list[str] | str:
    """Run ``python``/``python3`` as this server's interpreter, which has pyautogui; expand ``~/`` arguments."""
    if shell:
        return command if isinstance(command, str) else " ".join(command)
    argv = [os.path.expanduser(arg) if arg.startswith("~/") else arg
            for arg in (shlex.split(command) if isinstance(command, str) else map(str, command))]
    if argv and argv[0] in ("python", "python3"):
        argv[0] = sys.executable
    return argv


def _result(returncode: int, timed_out: bool, output: str, error: str, timeout: float) -> dict[str, Any]:
    """OSWorld's result dict; only a timeout is an ``error`` status, its ``error`` ending in ``TimeoutError`` (agents grep it)."""
    if timed_out:
        return {"status": "error", "message": f"timed out after {timeout:g}s", "output": output,
                "error": error + f"\nTimeoutError: the command did not finish within {timeout:g}s", "returncode": -1}
    return {"status": "success", "output": output, "error": error, "returncode": returncode}


def run(command: Any, *, shell: bool = False, timeout: float = DEFAULT_TIMEOUT, cwd: str | None = None,
        stdin: str | None = None, merge_stderr: bool = False) -> dict[str, Any]:
    """Run until the command itself exits (killing its process group on timeout); OSWorld's result keys.

    Output goes to temporary files, not pipes: an app the command starts in the background keeps
    its inherited output open, and waiting for pipe EOF would wait for that app to quit. With
    ``merge_stderr`` both streams go to ``output`` in the order they were written (``error`` is "").
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(_argv(command, shell), shell=shell, cwd=cwd or str(HOME),
                                   stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                                   stdout=out, stderr=out if merge_stderr else err, start_new_session=True)
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
    return _result(process.returncode, timed_out, output, error, timeout)


@dataclass
class Launched:
    """A program started in the background, and the unlinked temporary file its stderr goes to.

    A file, not a pipe: a pipe nobody reads would stall (or, once closed, kill) an app that keeps
    writing to it.
    """

    process: subprocess.Popen
    stderr: IO[bytes]

    def failed_at_once(self, grace: float) -> str | None:
        """Why it ended with an error within ``grace`` seconds, or None: its exit code and the last line it
        wrote to stderr (a shell's "command not found", xdg-open's "no method available")."""
        with self.stderr:
            try:
                code = self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                return None
            self.stderr.seek(0)
            said = self.stderr.read().decode(errors="replace").strip().splitlines()
        return None if code == 0 else f"exited with {code}" + (f": {said[-1][:500]}" if said else "")


def launch(command: Any, shell: bool = False) -> Launched:
    """Start a program in the background (apps keep running after the request); raises OSError if it cannot."""
    err = tempfile.TemporaryFile()
    try:
        process = subprocess.Popen(_argv(command, shell), shell=shell, cwd=str(HOME), stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    except BaseException:
        err.close()
        raise
    return Launched(process, err)


def python_code(command: Any, shell: bool) -> str | None:
    """The code of a ``["python", "-c", code]`` command (desktop-env's action shape), else None."""
    if shell or not isinstance(command, list) or len(command) != 3:
        return None
    return command[2] if command[0] in ("python", "python3") and command[1] == "-c" else None


def run_action(zygote: Zygote, code: str, timeout: float) -> dict[str, Any]:
    """``python -c code`` through the warm zygote: the same result as ``run``, without an interpreter start."""
    returncode, timed_out, output, error = zygote.run(code, timeout)
    return _result(returncode, timed_out, output, error, timeout)
