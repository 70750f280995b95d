"""Process mode: a desktop-lite desktop as host processes, for machines without a Docker engine.

The same ``desktop-session`` script the container runs is started here as one process group:
Xvfb picks its own display number (``-displayfd``) and the guest server binds port 0 and writes the
port to a file, so any number of desktops can start at once without racing for either. Each desktop
gets a private ``HOME`` and ``TMPDIR`` below its work directory: a task's ``~/hello.txt`` lands there,
never in the host user's home, two desktops on the same task never share files, and the guest's
disk check (``/health``) looks at this desktop's own directories. A record of
each running desktop (owner, actor id, process group and its leader's start time) sits in
``~/.cache/rayenv/run/<owner>/``. A desktop dies with the Ray worker that started it: a watchdog
(:mod:`rayenv.desktop_lite.watchdog`) beside it kills its group when the worker is gone (``ray stop``,
``kill -9``, OOM). Should the watchdog die too, the reaper stops desktops whose actor is gone on its
next round; a record whose process group leader is no longer the one it names (rebooted host, pid
reused) is only removed, never acted on.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import psutil

from ..errors import EnvTimeout, ProviderUnavailable
from ..waiting import WaitTimeout, wait_until
from . import GUEST_DIR, OSWORLD_DIR

SESSION_SCRIPT = OSWORLD_DIR / "image" / "desktop-session"
WATCHDOG = Path(__file__).with_name("watchdog.py")
REQUIRED_PROGRAMS = ("Xvfb", "openbox", "dbus-run-session", "xdotool")


def run_dir(owner: str) -> Path:
    return Path(os.environ.get("RAYENV_RUN_DIR", Path.home() / ".cache" / "rayenv" / "run")) / owner


@dataclass
class ProcessDesktop:
    """A running desktop session: its process group (led by the session script), display and guest port."""

    process: subprocess.Popen
    watchdog: subprocess.Popen
    display: str
    port: int
    record: Path
    workdir: Path

    @property
    def pgid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        _remove(self.process, self.watchdog, self.record, self.workdir)


def check_programs() -> None:
    missing = [name for name in REQUIRED_PROGRAMS if shutil.which(name) is None]
    if missing:
        raise ProviderUnavailable(f"process mode needs {', '.join(missing)} on this host", phase="boot",
                                  hint="apt-get install xvfb openbox dbus-x11 xdotool at-spi2-core (scripts/bootstrap.sh does)")


def start_desktop(*, owner: str, env_id: str, actor_id: str, width: int, height: int, timeout: float) -> ProcessDesktop:
    """Start one desktop session and wait until its guest server is listening."""
    check_programs()
    workdir = Path(tempfile.mkdtemp(prefix=f"rayenv-{env_id}-"))
    port_file, display_file, home, tmp = workdir / "port", workdir / "display", workdir / "home", workdir / "tmp"
    home.mkdir()
    tmp.mkdir()
    environment = {**os.environ, "HOME": str(home), "TMPDIR": str(tmp), "SCREEN_WIDTH": str(width), "SCREEN_HEIGHT": str(height), "GUEST_HOST": "127.0.0.1",
                   "GUEST_PORT": "0", "GUEST_PORT_FILE": str(port_file), "DISPLAY_FILE": str(display_file),
                   "GUEST_PYTHON": sys.executable, "GUEST_DIR": str(GUEST_DIR)}
    environment.pop("DISPLAY", None)
    log = open(workdir / "session.log", "wb")
    process = subprocess.Popen(["bash", str(SESSION_SCRIPT)], env=environment, stdin=subprocess.DEVNULL, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True, cwd=str(home))
    log.close()
    record = run_dir(owner) / f"{env_id}.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"env": env_id, "actor_id": actor_id, "pgid": process.pid,
                                  "started": _started(process.pid), "workdir": str(workdir)}))
    watchdog = subprocess.Popen([sys.executable, str(WATCHDOG), str(os.getpid()), str(process.pid), str(workdir),
                                 str(record)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
    def tail() -> str:
        return (workdir / "session.log").read_text(errors="replace")[-2000:]

    def session_up() -> bool:
        if port_file.exists():
            return True
        if process.poll() is not None:
            raise ProviderUnavailable(f"desktop session for {env_id} exited with {process.returncode}",
                                      env=env_id, phase="boot", hint=f"session log:\n{tail()}")
        return False

    try:  # the errors read the session log before the work directory goes
        wait_until(session_up, timeout, interval=0.05, what=f"the desktop session for {env_id} starting",
                   error=lambda message: EnvTimeout(message, env=env_id, phase="boot",
                                                    hint=f"raise desktop.boot_timeout; session log:\n{tail()}"))
    except BaseException:
        _remove(process, watchdog, record, workdir)
        raise
    return ProcessDesktop(process=process, watchdog=watchdog, display=display_file.read_text().strip(),
                          port=int(port_file.read_text()), record=record, workdir=workdir)


def reap_orphans(owner: str, is_orphan: Callable[[str], bool]) -> list[str]:
    """Stop this owner's process desktops that ``is_orphan`` (given the actor id) names; returns their env names."""
    removed = []
    for record in sorted(run_dir(owner).glob("*.json")):
        try:
            info = json.loads(record.read_text())
        except (OSError, ValueError):
            continue
        if not is_orphan(info.get("actor_id", "")):
            continue
        if info.get("started") in (None, _started(int(info["pgid"]))):  # None: a record from before start times
            _kill_group(int(info["pgid"]))
        record.unlink(missing_ok=True)
        shutil.rmtree(info.get("workdir", ""), ignore_errors=True)
        removed.append(info.get("env", record.stem))
    return removed


def _remove(process: subprocess.Popen, watchdog: subprocess.Popen, record: Path, workdir: Path) -> None:
    """Stop a desktop this worker started: its group, its watchdog, its record and work directory."""
    _kill_group(process.pid)
    process.wait(timeout=10)
    watchdog.kill()
    watchdog.wait(timeout=10)
    record.unlink(missing_ok=True)
    shutil.rmtree(workdir, ignore_errors=True)


def _started(pid: int) -> float | None:
    """When process ``pid`` started (with the pid, it names one process across pid reuse), or None if gone."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def _kill_group(pgid: int) -> None:
    """SIGTERM, and SIGKILL if the group is still there a second later."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        with suppress(WaitTimeout):
            wait_until(lambda: group_gone(pgid), 1.0, interval=0.05)
            return
