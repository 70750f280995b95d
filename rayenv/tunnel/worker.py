"""``rayenv worker start|stop``: the env host joins the head (over one ssh, or directly), then hosts a pool.

Order matters: check locally (ports, RAM for the desktops), bring the tunnel up (the supervisor owns it from then on),
ask the head through it what to match (versions, token), join, create the pool (or grow it, when
another env host created it: one pool spans the hosts), serve /health. Any failure undoes what was
started, so a second attempt starts clean.

A direct join (``--address HEAD:PORT``, the LAN or overlay path) has no tunnel and no ssh to read the
head's files: the user brings the head's token file, a TCP probe of the head's GCS stands in for the
tunnel coming up, and Ray's own ``ray start`` refuses another Ray or Python version (the supervisor
then reports its sentence as fatal instead of retrying).
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil

from ..pool.capacity import check_memory
from ..pool.config import PoolConfig
from ..pool.reaper import every_desktop, reap_containers, reap_host, reap_processes
from ..waiting import wait_until
from .preflight import PreflightError, check_head_reachable, check_ports_free, check_same_head_ports, check_versions
from .raynode import HeadInfo, stop_node, versions
from .supervisor import WORKER_DIR, Status, WorkerState, read_status, state_file


def host_id(directory: Path = WORKER_DIR.parent) -> str:
    """This env host's name for the head: hostname plus a random tag made once and kept, so two hosts
    never share one (cloned VMs share a hostname) and a host keeps its own across restarts."""
    path = directory / "host_id"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{socket.gethostname()}-{secrets.token_hex(3)}")
    return path.read_text().strip()


def _supervisor_pid(directory: Path) -> int | None:
    try:
        pid = int((directory / "supervisor.pid").read_text())
    except (OSError, ValueError):
        return None
    return pid if psutil.pid_exists(pid) else None


def _wait_for(directory: Path, ready, what: str, timeout: float) -> Status:
    seen: list[Status] = []

    def reached() -> bool:
        status = read_status(directory)
        if status and ready(status):
            seen.append(status)
            return True
        if status and status.fatal:
            raise PreflightError(status.fatal, phase="worker start",
                                 hint=f"see {directory}/supervisor.log and ssh.log")
        return False

    def last_problem() -> str:
        status = read_status(directory)
        return f"last problem: {status.last_error if status else 'supervisor did not start'}"

    wait_until(reached, timeout, interval=0.5, what=what, explain=last_problem,
               error=lambda message: PreflightError(message, phase="worker start",
                                                    hint=f"see {directory}/supervisor.log and ssh.log"))
    return seen[-1]


def _head_info(state: WorkerState) -> HeadInfo:
    done = state.ssh.run(f"cat {HeadInfo.path().relative_to(Path.home())}")  # relative: the head's ~
    if done.returncode != 0:
        raise PreflightError(f"The head has no running rayenv head ({HeadInfo.path().name} not found in "
                             f"~/.cache/rayenv/head on {state.ssh.destination}): run `rayenv head start` there first "
                             "(as the same user this ssh logs in as), then run `rayenv worker start` again.",
                             phase="preflight", hint="rayenv head start")
    return HeadInfo.model_validate_json(done.stdout)


def start(state: WorkerState, *, pool_config: Path | None, directory: Path = WORKER_DIR,
          timeout: float = 120, token_file: Path | None = None) -> tuple[str, dict]:
    """Join and create the pool; returns the head's address and the new pool's status.

    ``token_file``: the head's Ray token, brought by the user (a direct join; over ssh it is read from the head)."""
    if _supervisor_pid(directory):
        raise PreflightError(f"A worker is already running (supervisor pid {_supervisor_pid(directory)}).",
                             phase="preflight", hint="rayenv worker stop")
    if state.direct:  # the head first: an unreachable one is the commoner mistake, and nothing local explains it
        check_head_reachable(state.plan.head_address)
        token = _read_token(token_file)
    stop_node(Path(state.temp_dir))  # leftover agents of an earlier join hold our pinned ports
    check_ports_free(state.plan, forwards=not state.direct)
    desktop = PoolConfig.load(pool_config, provider=state.provider).desktop
    check_memory(desktop, state.size)  # before joining: Ray would place desktops this host cannot hold
    directory.mkdir(parents=True, exist_ok=True)
    for stale in ("status.json", "supervisor.pid"):
        (directory / stale).unlink(missing_ok=True)
    state_file(directory).write_text(state.model_dump_json(indent=2))
    # the token file is the supervisor's go-ahead to join Ray: written only once the versions match
    Path(state.token_path).unlink(missing_ok=True)
    log = (directory / "supervisor.log").open("a")
    subprocess.Popen([sys.executable, "-m", "rayenv.tunnel.supervisor", str(directory)], stdin=subprocess.DEVNULL,
                     stdout=log, stderr=log, start_new_session=True, env=os.environ.copy())
    try:
        if not state.direct:
            token = _token_through_tunnel(state, directory, timeout)
        Path(state.token_path).touch(mode=0o600)
        Path(state.token_path).write_text(token)
        _wait_for(directory, lambda s: s.ray_joined, "joining Ray", timeout)
        return state.plan.head_address, _create_pool(state, pool_config, directory)
    except BaseException:
        stop(directory, shutdown_pool=False)
        raise


def _token_through_tunnel(state: WorkerState, directory: Path, timeout: float) -> str:
    """Once the tunnel is up: check the head's versions and ports, and read its Ray token."""
    _wait_for(directory, lambda s: s.tunnel == "up", "the ssh tunnel", timeout)
    info = _head_info(state)
    check_versions(info.python, info.ray, *versions())
    check_same_head_ports(info.plan, state.plan)
    token = state.ssh.run(f"cat {shlex.quote(info.token_path)}")
    if token.returncode != 0:
        raise PreflightError(f"cannot read the head's Ray token {info.token_path}: {token.stderr.strip()}",
                             phase="preflight", hint="rayenv head start creates it")
    return token.stdout.strip()


def _read_token(path: Path | None) -> str:
    token = path.read_text().strip() if path and path.is_file() else ""
    if not token:
        raise PreflightError(f"A direct join needs the head's Ray token, and {path or 'no --token-file'} holds none: "
                             "copy the head's token file (`rayenv head start` prints its path) to this host over a "
                             "channel you trust and pass it as --token-file.", phase="preflight",
                             hint="rayenv worker start --address HEAD:PORT --token-file FILE")
    return token


def _create_pool(state: WorkerState, pool_config: Path | None, directory: Path) -> dict:
    """A driver on this node creates the pool (its manager lives on the head; desktops land here)."""
    command = [sys.executable, "-m", "rayenv.tunnel.envhost_driver", "create", str(state_file(directory))]
    if pool_config:
        command.append(str(pool_config))
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **state.env()}, timeout=900)
    if done.returncode != 0:
        raise PreflightError(f"creating pool {state.pool!r} failed: {done.stderr.strip()[-1500:]}",
                             phase="pool create", hint="rayenv status shows each slot's last error")
    return json.loads(done.stdout.strip().splitlines()[-1])


def stop(directory: Path = WORKER_DIR, *, shutdown_pool: bool = True, timeout: float = 60) -> bool:
    """Take this host's desktops out of the pool (the whole pool when they were its last) while Ray is still
    reachable, then end the supervisor and all it started."""
    try:
        state = WorkerState.model_validate_json(state_file(directory).read_text())
    except OSError:
        return False
    status = read_status(directory)
    if shutdown_pool and status and status.tunnel in ("up", "direct") and status.ray_joined:
        try:  # the desktops die with the node anyway; this only makes the pool's manager forget them cleanly
            subprocess.run([sys.executable, "-m", "rayenv.tunnel.envhost_driver", "leave",
                            str(state_file(directory))], capture_output=True, text=True,
                           env={**os.environ, **state.env()}, timeout=timeout)
        except subprocess.TimeoutExpired:
            print(f"pool {state.pool!r} not shut down: Ray unreachable for {timeout:.0f}s", file=sys.stderr)
    pid = _supervisor_pid(directory)
    if pid:
        os.kill(pid, signal.SIGTERM)
        try:
            psutil.Process(pid).wait(timeout)
        except psutil.TimeoutExpired:
            os.kill(pid, signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    stop_node(Path(state.temp_dir))
    # This node's actors are gone with Ray: any desktop of the pool still here (its close never ran,
    # the pool's shutdown timed out) is an orphan, so remove it with the same reaper the pool uses.
    leftovers = (reap_containers(state.pool, every_desktop, spares_wait=False)
                 + reap_processes(state.pool, every_desktop))
    reap_host(state.pool)
    if leftovers:
        print(f"removed desktops the pool did not close: {', '.join(leftovers)}", file=sys.stderr)
    state_file(directory).unlink(missing_ok=True)
    return True
