"""Process mode: a desktop-lite desktop as host processes, for machines without a Docker engine.

The same ``desktop-session`` script the container runs is started here as one process group:
Xvfb takes the lowest display number free in its network namespace and makes only its abstract
socket (no file in the host-wide ``/tmp/.X11-unix`` that a desktop in another namespace could replace),
and the guest server binds port 0 and writes the port to a file, so any number of desktops can start
at once without racing for either. Each desktop
gets a private ``HOME`` and ``TMPDIR`` below its work directory: a task's ``~/hello.txt`` lands there,
never in the host user's home, two desktops on the same task never share files, and the guest's
disk check (``/health``) looks at this desktop's own directories. A record of
each running desktop (owner, actor id, process group and its leader's start time) sits in
``~/.cache/rayenv/run/<owner>/``. A desktop dies with the Ray worker that started it: a watchdog
(:mod:`rayenv.desktop_lite.watchdog`) beside it kills its group when the worker is gone (``ray stop``,
``kill -9``, OOM). Should the watchdog die too, the reaper stops desktops whose actor is gone on its
next round; a record whose process group leader is no longer the one it names (rebooted host, pid
reused) is only removed, never acted on.

The session runs unprivileged: when the Ray worker is root, as the system user ``rayenv-desktop``
(``RAYENV_DESKTOP_USER``; created on first use), which owns only the desktop's work directory, so an
agent's action cannot write to root's home or the host's system files. Process mode still does not
isolate what a container does: the session shares the host's network (it can reach every port of
the host, ``127.0.0.1`` included), its process table and its world-readable files, and that user
must be able to run the worker's Python interpreter (``check_session_user`` names the directories
to open with ``chmod o+x`` otherwise; scripts/bootstrap.sh does it). Use ``lite`` for isolation.
"""

from __future__ import annotations

import functools
import json
import os
import pwd
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
#: The unprivileged user a root worker runs process desktops as.
DESKTOP_USER = "rayenv-desktop"
#: Where X servers put their sockets; a non-root Xvfb cannot create it.
X11_SOCKETS = Path("/tmp/.X11-unix")


@dataclass(frozen=True)
class SessionUser:
    """Who a process desktop's session (X server, apps, guest server, the agent's actions) runs as."""

    name: str
    uid: int
    gid: int


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


def session_user() -> SessionUser | None:
    """The user process desktops run as: None (the worker's own) unless the worker is root, then
    :data:`DESKTOP_USER` (or ``RAYENV_DESKTOP_USER``), created as a system user if it does not exist."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get("RAYENV_DESKTOP_USER", DESKTOP_USER)
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        made = subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                               "--shell", "/usr/sbin/nologin", name], capture_output=True, text=True)
        try:  # a concurrent start may have made it first
            entry = pwd.getpwnam(name)
        except KeyError:
            raise ProviderUnavailable(f"could not create the user {name!r} process desktops run as: "
                                      f"{made.stderr.strip()}", phase="boot",
                                      hint=f"create it: useradd --system --user-group {name}") from None
    return SessionUser(name, entry.pw_uid, entry.pw_gid)


@functools.lru_cache(maxsize=None)
def check_session_user(user: SessionUser) -> None:
    """Refuse, naming the fix, when ``user`` cannot run this interpreter or read the session's files
    (a Python under root's home is the usual case); checked once per worker."""
    needed = [Path(sys.executable), Path(os.path.realpath(sys.executable)), SESSION_SCRIPT, GUEST_DIR]
    try:
        reads = f"import os; open({str(SESSION_SCRIPT)!r}); os.listdir({str(GUEST_DIR)!r})"
        tried = subprocess.run([sys.executable, "-c", reads],
                               user=user.uid, group=user.gid, extra_groups=[], capture_output=True, text=True,
                               cwd="/", env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
        problem = tried.stderr.strip()[-300:] if tried.returncode != 0 else ""
    except OSError as exc:  # the interpreter itself could not be executed
        problem = str(exc)
    if problem:
        closed = sorted({str(parent) for path in needed for parent in path.parents
                         if parent.is_dir() and not parent.stat().st_mode & 0o001})
        raise ProviderUnavailable(f"process desktops run as {user.name!r}, who cannot run {sys.executable} or read "
                                  f"{SESSION_SCRIPT.parent}: {problem}", phase="boot",
                                  hint=f"let others traverse: chmod o+x {' '.join(closed) or '<its directories>'} "
                                       "(scripts/bootstrap.sh does), or install Python outside root's home")


def _hand_over(user: SessionUser | None, *paths: Path) -> None:
    """Give the session's user its work directory (the rest of the host stays root's)."""
    if user is None:
        return
    X11_SOCKETS.mkdir(mode=0o1777, exist_ok=True)
    for path in paths:
        os.chown(path, user.uid, user.gid)


def start_desktop(*, owner: str, env_name: str, actor_id: str, width: int, height: int, timeout: float) -> ProcessDesktop:
    """Start one desktop session (as :func:`session_user`) and wait until its guest server is listening."""
    check_programs()
    user = session_user()
    if user is not None:
        check_session_user(user)
    workdir = Path(tempfile.mkdtemp(prefix=f"rayenv-{env_name}-"))
    port_file, display_file, home, tmp = workdir / "port", workdir / "display", workdir / "home", workdir / "tmp"
    home.mkdir()
    tmp.mkdir()
    _hand_over(user, workdir, home, tmp)
    environment = {**os.environ, "HOME": str(home), "TMPDIR": str(tmp), "SCREEN_WIDTH": str(width), "SCREEN_HEIGHT": str(height), "GUEST_HOST": "127.0.0.1",
                   "GUEST_PORT": "0", "GUEST_PORT_FILE": str(port_file), "DISPLAY_FILE": str(display_file),
                   "GUEST_PYTHON": sys.executable, "GUEST_DIR": str(GUEST_DIR)}
    environment.pop("DISPLAY", None)
    environment.pop("XDG_RUNTIME_DIR", None)  # root's; the session's D-Bus makes its own
    if user is not None:
        environment.update(USER=user.name, LOGNAME=user.name)
    as_user = {"user": user.uid, "group": user.gid, "extra_groups": []} if user is not None else {}
    log = open(workdir / "session.log", "wb")
    process = subprocess.Popen(["bash", str(SESSION_SCRIPT)], env=environment, stdin=subprocess.DEVNULL, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True, cwd=str(home), **as_user)
    log.close()
    record = run_dir(owner) / f"{env_name}.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"env": env_name, "actor_id": actor_id, "pgid": process.pid,
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
            raise ProviderUnavailable(f"desktop session for {env_name} exited with {process.returncode}",
                                      env=env_name, phase="boot", hint=f"session log:\n{tail()}")
        return False

    try:  # the errors read the session log before the work directory goes
        wait_until(session_up, timeout, interval=0.05, what=f"the desktop session for {env_name} starting",
                   error=lambda message: EnvTimeout(message, env=env_name, phase="boot",
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
