"""The one ssh connection: the tunnel (a ControlMaster carrying every forward) and commands through it.

Everything the env host asks of the head (its versions, the Ray token, a stale-listener cleanup)
rides the tunnel's own connection through the control socket, so a user's ``ssh`` setup
(ProxyJump, keys, known_hosts) is exercised once and the firewall sees one TCP connection.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import subprocess
import tempfile
from pathlib import Path

from pydantic import BaseModel, Field

from .plan import PortPlan

FORWARD_FAILED = re.compile(r"remote port forwarding failed for listen port (\d+)")
#: What ssh says when no retry can help, and the one sentence that does ({destination} is filled in).
PERMANENT_FAILURES = {
    "Host key verification failed": "The head's host key is not in known_hosts (or it changed): run "
                                    "`ssh {destination}` once by hand, check and accept the key, then start again.",
    "Permission denied (": "The head's sshd refused this env host's key: add its public key to "
                           "~/.ssh/authorized_keys of that user on the head (or pass --identity), then start again.",
}
#: On the head, relative to the user's home: one directory per env host (keyed by its ``host_id``, so a
#: host's cleanup only ever ends its own sessions), a file per tunnel session named by its sshd pid.
SESSIONS = ".cache/rayenv/tunnels"


class SshTarget(BaseModel):
    """Where the head's sshd is and how to log in; ``options`` are extra ``-o KEY=VALUE`` strings."""

    destination: str
    port: int | None = None
    identity: str | None = None
    jump: str | None = None
    options: list[str] = Field(default_factory=list)
    connect_timeout: int = 10

    def base(self) -> list[str]:
        command = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout}"]
        if self.port:
            command += ["-p", str(self.port)]
        if self.identity:
            command += ["-i", self.identity]
        if self.jump:
            command += ["-J", self.jump]
        for option in self.options:
            command += ["-o", option]
        return command

    def control_path(self) -> str:
        """Short (unix sockets take ~100 bytes) and private to this target and this user's home (two env
        hosts sharing a /tmp, as in tests, must not share a master)."""
        digest = hashlib.sha1((self.model_dump_json() + str(Path.home())).encode()).hexdigest()[:12]
        return str(Path(tempfile.gettempdir()) / f"rayenv-ssh-{digest}.sock")

    def tunnel_command(self, plan: PortPlan) -> list[str]:
        """The tunnel: every forward, exit (rather than half-work) when one is refused, keepalives."""
        return [*self.base(), "-o", "ExitOnForwardFailure=yes", *plan.keepalive_args(),
                "-o", "ControlMaster=yes", "-o", f"ControlPath={self.control_path()}", "-o", "ControlPersist=no",
                *plan.forward_args(), self.destination, session_marker(plan)]

    def run(self, remote: str, *, through_tunnel: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run a shell command on the head (through the tunnel's connection when it is up)."""
        control = ["-o", "ControlMaster=no", "-o", f"ControlPath={self.control_path()}"] if through_tunnel else \
            ["-o", "ControlPath=none"]
        return subprocess.run([*self.base(), *control, self.destination, remote], capture_output=True, text=True,
                              timeout=timeout)

    def tunnel_alive(self) -> bool:
        done = subprocess.run([*self.base(), "-o", f"ControlPath={self.control_path()}", "-O", "check",
                               self.destination], capture_output=True, text=True, timeout=10)
        return done.returncode == 0


def permanent_failure(stderr: str, destination: str) -> str | None:
    """The fix for an ssh failure that retrying cannot cure (unknown host key, key refused), else None."""
    for words, fix in PERMANENT_FAILURES.items():
        if words in stderr:
            return fix.format(destination=destination)
    return None


def refused_remote_ports(stderr: str) -> list[int]:
    """Ports whose ``-R`` the head's sshd refused: almost always an old session still holding them."""
    return sorted({int(port) for port in FORWARD_FAILED.findall(stderr)})


def _sessions(plan: PortPlan) -> str:
    return f"{SESSIONS}/{shlex.quote(plan.host_id or str(plan.env_host.node_manager))}"


def session_marker(plan: PortPlan) -> str:
    """The tunnel's remote command: record this session's sshd (pid and start time), then hold the
    session open until the supervisor's end of ssh's stdin closes.

    The head's sshd hides its sessions' sockets even from their own user (its processes are not
    dumpable, so ``ss -p`` names no pid), so each session says who it is. ``cat`` ends with the
    session, leaving nothing behind on the head.
    """
    where = _sessions(plan)
    return f"mkdir -p {where} && cut -d' ' -f22 /proc/$PPID/stat > {where}/$PPID && exec cat >/dev/null"


def stale_listener_cleanup(plan: PortPlan) -> str:
    """Shell for the head: end this env host's earlier tunnel sessions, which still hold its ``-R`` ports.

    After a NAT rebind or a dropped link the head's sshd keeps the old session (and its listeners)
    until TCP gives up, often hours. Those sessions run as the user, so the user may end them. The
    cleanup connection is not a tunnel session (it records nothing), and it skips its own sshd anyway;
    a recorded pid counts only while its start time matches, so a reused pid is never killed.
    """
    return (f"cd {_sessions(plan)} 2>/dev/null || exit 0; for pid in *; do [ -f \"$pid\" ] || continue; "
            "[ \"$pid\" = \"$PPID\" ] && continue; "
            "if [ \"$(cut -d' ' -f22 /proc/$pid/stat 2>/dev/null)\" = \"$(cat \"$pid\")\" ] && kill \"$pid\"; "
            "then echo \"$pid\"; fi; rm -f \"./$pid\"; done; true")


def describe(command: list[str]) -> str:
    return shlex.join(command)
