"""The env host's supervisor: keeps the tunnel (if any), the Ray node and the sidecar up until told to stop.

Runs as a background process (``python -m rayenv.tunnel.supervisor STATE_DIR``) started by
``rayenv worker start``; ``rayenv worker stop`` sends it SIGTERM. It holds no Ray connection of its
own, so it outlives everything it restarts. One loop, three duties (two on a direct join, ``worker start
--address``, where the head is routable over a LAN or an overlay and there is no tunnel to keep):

* the ssh tunnel: reconnect with capped exponential backoff (reset after a connection that held);
  a refused ``-R`` (an old session on the head still holds the port after a link drop or NAT
  rebind) is cleaned up through a plain ssh session, then retried; a failure no retry can cure
  (unknown host key, key refused) before the tunnel was ever up ends the supervisor with the fix in
  ``fatal``, so ``worker start`` fails at once instead of retrying until its timeout;
* the Ray node: if the raylet is gone (the head declared the node dead after a long outage, and the
  raylet exited), it re-joins with the same flags, and the pool's manager on the head refills the slots;
* the sidecar: restarted when it exits (its Ray driver dies with the raylet).

Its view is written to ``status.json`` for the CLI, the sidecar's ``/health`` and tests.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Literal

from pydantic import BaseModel, Field

from ..waiting import WaitTimeout, wait_until
from .plan import PortPlan
from .raynode import ray_env, ray_start, raylet_running, stop_node, write_json
from .ssh import SshTarget, permanent_failure, refused_remote_ports, stale_listener_cleanup

WORKER_DIR = Path.home() / ".cache" / "rayenv" / "worker"
#: "direct": no tunnel, the head is reached over a routed link (LAN, WireGuard/Tailscale overlay)
TunnelState = Literal["connecting", "up", "down", "stopped", "direct"]


class WorkerState(BaseModel):
    """What ``rayenv worker start`` decided; the supervisor and ``worker stop`` act on it."""

    ssh: SshTarget | None = Field(None, description="the head's sshd; None: a direct join (no tunnel)")
    plan: PortPlan
    size: int
    provider: str
    pool: str
    namespace: str
    temp_dir: str
    token_path: str
    sidecar_host: str
    sidecar_port: int
    max_backoff: float = 10.0  # a reconnect attempt is one TCP SYN; waiting longer only delays recovery

    def worker_flags(self) -> list[str]:
        return self.plan.worker_start_flags(self.size)

    def env(self) -> dict[str, str]:
        return ray_env(Path(self.token_path), self.plan.worker_env())

    @property
    def direct(self) -> bool:
        return self.ssh is None


class Status(BaseModel):
    tunnel: TunnelState = "connecting"
    since: float = Field(default_factory=time.time)
    ssh_pid: int | None = None
    reconnects: int = 0
    rejoins: int = 0
    stale_cleanups: int = 0
    last_error: str = ""
    last_outage_s: float | None = Field(None, description="seconds from losing the tunnel to having it back")
    ray_joined: bool = False
    fatal: str = Field("", description="why the supervisor gave up (with the fix); empty while it keeps trying")
    supervisor_pid: int = Field(default_factory=os.getpid)


def state_file(directory: Path) -> Path:
    return directory / "state.json"


def status_file(directory: Path) -> Path:
    return directory / "status.json"


def read_status(directory: Path = WORKER_DIR) -> Status | None:
    try:
        return Status.model_validate_json(status_file(directory).read_text())
    except (OSError, ValueError):
        return None


class Supervisor:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.state = WorkerState.model_validate_json(state_file(directory).read_text())
        self.status = Status()
        self.ssh: subprocess.Popen | None = None
        self.sidecar: subprocess.Popen | None = None
        self.stopping = False
        self.down_since: float | None = None
        self.ever_up = False

    # -- bookkeeping ----------------------------------------------------------------------------------
    def _publish(self, **changes) -> None:
        if "tunnel" in changes and changes["tunnel"] != self.status.tunnel:
            changes.setdefault("since", time.time())
        self.status = self.status.model_copy(update=changes)
        write_json(status_file(self.dir), self.status.model_dump())

    def _log(self, message: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)

    # -- the tunnel --------------------------------------------------------------------------------------
    def _open_tunnel(self, timeout: float = 30) -> str:
        """Start ssh and wait for its control socket; returns '' when up, else ssh's complaint."""
        log = self.dir / "ssh.log"
        self._kill_ssh()  # the previous one has exited; this closes its stdin pipe
        Path(self.state.ssh.control_path()).unlink(missing_ok=True)  # left by a killed ssh; ours by its name
        with log.open("w") as err:
            # stdin stays open and unwritten: the head side of the session lives as long as this pipe
            self.ssh = subprocess.Popen(self.state.ssh.tunnel_command(self.state.plan), stdin=subprocess.PIPE,
                                        stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        self._publish(tunnel="connecting", ssh_pid=self.ssh.pid)

        def up_or_exited() -> bool:
            # a command through the master proves the session works; -R replies precede its channel
            return self.ssh.poll() is not None or (self.state.ssh.tunnel_alive()
                                                   and self.state.ssh.run("true").returncode == 0
                                                   and self.ssh.poll() is None)

        try:
            wait_until(up_or_exited, timeout, interval=0.5, what="the tunnel")
        except WaitTimeout:
            self._kill_ssh()
            return f"no tunnel after {timeout:.0f}s: {log.read_text().strip()}"
        if self.ssh.poll() is not None:
            return log.read_text().strip() or f"ssh exited with {self.ssh.returncode}"
        return ""

    def _kill_ssh(self) -> None:
        if self.ssh is None:
            return
        if self.ssh.poll() is None:
            self.ssh.kill()
            self.ssh.wait(10)
        self.ssh.stdin.close()

    def _clean_stale(self, ports: list[int]) -> None:
        """An old session on the head holds our -R ports: end it through a session without forwards."""
        self._log(f"head refused -R for ports {ports}: a stale ssh session still holds them; cleaning up")
        done = self.state.ssh.run(stale_listener_cleanup(self.state.plan), through_tunnel=False)
        killed = done.stdout.split()
        self._publish(stale_cleanups=self.status.stale_cleanups + 1,
                      last_error=f"-R refused for {ports[:5]}; ended stale head sessions {killed or '(none found)'}")
        if not killed:
            self._log(f"no earlier tunnel session found to end: another program on the head holds {ports[:5]} "
                      "(`ss -ltn` there shows them), e.g. another env host with the same --host-index; free those ports, "
                      "give each env host its own --host-index, or change the ports in the tunnel config")

    # -- Ray and the sidecar --------------------------------------------------------------------------------
    def _ensure_ray(self) -> None:
        temp = Path(self.state.temp_dir)
        if not Path(self.state.token_path).exists() or raylet_running(temp):
            return  # no token yet: `worker start` has not finished checking the head's versions
        rejoin = self.status.ray_joined
        stop_node(temp)
        done = ray_start(self.state.worker_flags(), temp, self.state.env())
        if done.returncode != 0:
            said = (done.stderr or done.stdout)[-500:]
            self._publish(last_error=f"ray start failed: {said}")
            self._log(f"ray start failed:\n{done.stdout}\n{done.stderr}")
            if self.state.direct and not rejoin:
                # the head answered `worker start`'s probe, so a first join that fails is a version or token
                # mismatch no retry cures: `worker start` reports Ray's own sentence at once
                self._publish(fatal=f"`ray start` could not join {self.state.plan.head_address}: {said}")
                self.stopping = True
            return
        self._log("re-joined Ray as a new node (the old raylet was gone)" if rejoin else "joined Ray")
        self._publish(ray_joined=True, rejoins=self.status.rejoins + int(rejoin))

    def _ensure_sidecar(self) -> None:
        if self.sidecar and self.sidecar.poll() is None:
            return
        state = self.state
        log = (self.dir / "sidecar.log").open("a")
        self.sidecar = subprocess.Popen(
            [sys.executable, "-m", "rayenv.cli.main", "sidecar", "--host", state.sidecar_host, "--port",
             str(state.sidecar_port), "--pool", state.pool, "--namespace", state.namespace,
             "--address", state.plan.head_address, "--temp-dir", state.temp_dir, "--worker-dir", str(self.dir)],
            env={**os.environ, **state.env()}, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True)

    # -- the loop ----------------------------------------------------------------------------------------------
    def run(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stopping", True))
        (self.dir / "supervisor.pid").write_text(str(os.getpid()))
        if self.state.direct:
            self._publish(tunnel="direct")
            self._log(f"direct join of {self.state.plan.head_address} (no tunnel)")
            self._keep_node()
        else:
            self._keep_tunnel()
        self._shutdown()

    def _keep_tunnel(self) -> None:
        backoff = 1.0
        while not self.stopping:
            problem = self._open_tunnel()
            if not problem:
                self._tunnel_up()
                held_for = time.time() - self.status.since
                problem = (self.dir / "ssh.log").read_text().strip() or f"ssh exited ({self.ssh.returncode})"
                backoff = 1.0 if held_for > 30 else backoff
            if self.stopping:
                break
            self.down_since = self.down_since or time.time()
            self._publish(tunnel="down", last_error=problem[-500:], reconnects=self.status.reconnects + 1)
            self._log(f"tunnel down: {problem[-300:]}")
            fix = permanent_failure(problem, self.state.ssh.destination)
            if fix and not self.ever_up:  # once it has worked, the user may be fixing it: keep trying
                self._publish(fatal=f"ssh to {self.state.ssh.destination} failed: {problem.splitlines()[-1]}. {fix}")
                self._log(f"giving up: {fix}")
                break
            refused = refused_remote_ports(problem)
            if refused:
                self._clean_stale(refused)
            self._sleep(backoff)
            backoff = min(backoff * 2, self.state.max_backoff)

    def _tunnel_up(self) -> None:
        outage = None if self.down_since is None else round(time.time() - self.down_since, 2)
        self.down_since, self.ever_up = None, True
        self._publish(tunnel="up", last_outage_s=outage if outage is not None else self.status.last_outage_s)
        self._log(f"tunnel up (pid {self.ssh.pid})" + (f" after {outage}s down" if outage else ""))
        self._keep_node(lambda: self.ssh.poll() is None)

    def _keep_node(self, link_up: Callable[[], bool] = lambda: True) -> None:
        """Re-join Ray when the raylet is gone and restart the sidecar, while the link (the tunnel) holds."""
        while not self.stopping and link_up():
            self._ensure_ray()
            if self.status.ray_joined:
                self._ensure_sidecar()
            self._sleep(1.0)

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(0.2)

    def _shutdown(self) -> None:
        if self.sidecar and self.sidecar.poll() is None:
            self.sidecar.terminate()
            self.sidecar.wait(10)
        stop_node(Path(self.state.temp_dir))
        self._kill_ssh()
        self._publish(tunnel="stopped", ray_joined=False)
        (self.dir / "supervisor.pid").unlink(missing_ok=True)
        self._log("stopped")


def main() -> None:
    Supervisor(Path(sys.argv[1])).run()


if __name__ == "__main__":
    main()
