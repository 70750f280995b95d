"""Two network namespaces that look like a GPU box and an env host that can only ``ssh`` out to it.

"cluster" runs a stock-configured sshd (``GatewayPorts no``) for a non-root user; "envhost" is
firewalled so that the only connection it can open is TCP to that sshd. They are joined by one
veth pair whose addresses exist only inside the namespaces. Everything runs under names and ports
of this testbed's own, and teardown kills every process that lives in either namespace (whatever
started it, however it daemonized), so nothing outlives a test, even a failed one.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from ..waiting import wait_until

USER = "rayenv-net"
TOOLS = {"ip": "iproute2", "iptables": "iptables", "sshd": "openssh-server", "ssh": "openssh-client",
         "ssh-keygen": "openssh-client", "runuser": "util-linux", "useradd": "passwd"}


def pinned_ports(base: int) -> dict[str, dict[str, int]]:
    """A tunnel plan's ``head``/``env_host`` port sections, all inside ``base`` .. ``base + 523``.

    Each user of the testbed (the e2e tests, the bench) takes its own base so that a run of one never
    collides with leftovers of the other.
    """
    head = {"gcs": 379, "node_manager": 380, "object_manager": 381, "dashboard_agent_grpc": 382,
            "dashboard_agent_http": 383, "metrics_export": 384, "runtime_env_agent": 385, "dashboard": 265,
            "client_server": 1, "min_worker_port": 400}
    env_host = {"node_manager": 390, "object_manager": 391, "dashboard_agent_grpc": 392, "dashboard_agent_http": 393,
                "metrics_export": 394, "runtime_env_agent": 395, "min_worker_port": 500}
    return {"head": {**{k: base + v for k, v in head.items()}, "worker_ports": 64},
            "env_host": {**{k: base + v for k, v in env_host.items()}, "worker_ports": 24}}


def require_tools() -> None:
    """Fail (not skip) with the install command when a prerequisite is missing."""
    missing = sorted({pkg for tool, pkg in TOOLS.items() if not shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin")})
    if os.geteuid() != 0:
        raise RuntimeError("netns tests need root (network namespaces, sshd, iptables)")
    if missing:
        raise RuntimeError(f"netns tests need: apt-get install -y {' '.join(missing)}")


def sh(*argv: str, check: bool = True, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return done


@dataclass
class Testbed:
    cluster: str            # namespace names
    envhost: str
    cluster_ip: str         # veth addresses, only inside the namespaces
    envhost_ip: str
    ssh_port: int
    user: str
    home: Path              # the user's home on the "cluster" side (its ~/.cache/rayenv/head lives there)
    root_home: Path         # HOME of the env host's root processes
    key: Path
    known_hosts: Path
    veth: str
    tmp: Path               # the testbed's own directory (readable by the user; removed at teardown)

    def argv(self, ns: str, argv: Sequence[str], *, as_user: bool = False) -> list[str]:
        prefix = ["ip", "netns", "exec", ns]
        if as_user:
            prefix += ["runuser", "-u", self.user, "--"]
        return prefix + list(argv)

    def run(self, ns: str, argv: Sequence[str], *, as_user: bool = False, env: dict | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(ns, argv, as_user=as_user), capture_output=True, text=True, env=env,
                              timeout=timeout)

    def popen(self, ns: str, argv: Sequence[str], *, as_user: bool = False, env: dict | None = None,
              **kwargs) -> subprocess.Popen:
        return subprocess.Popen(self.argv(ns, argv, as_user=as_user), env=env, **kwargs)

    @property
    def ssh_destination(self) -> str:
        return f"{self.user}@{self.cluster_ip}"

    def ssh_options(self) -> list[str]:
        """What `rayenv worker start` needs besides the destination to reach the testbed's sshd."""
        return ["--ssh-port", str(self.ssh_port), "--identity", str(self.key),
                "--ssh-option", f"UserKnownHostsFile={self.known_hosts}",
                "--ssh-option", "StrictHostKeyChecking=accept-new"]

    def set_link(self, up: bool) -> None:
        """Take the env host's end of the veth down (the laptop's Wi-Fi drops) or back up."""
        sh("ip", "-n", self.envhost, "link", "set", self.veth + "e", "up" if up else "down")
        if up:
            sh("ip", "-n", self.envhost, "route", "replace", self.cluster_ip, "dev", self.veth + "e")

    def forget_connection(self, pid: int) -> None:
        """A NAT that forgets the mapping of process ``pid``'s ssh connection: from now on the cluster drops
        whatever that connection sends (its FIN, its RST), so the head's sshd never learns it ended."""
        listing = sh("ip", "netns", "exec", self.envhost, "ss", "-Htnp", "state", "established",
                     f"( dport = :{self.ssh_port} )").stdout
        ports = [line.split()[2].rsplit(":", 1)[1] for line in listing.splitlines() if f"pid={pid}," in line]
        if not ports:
            raise RuntimeError(f"process {pid} has no ssh connection in {self.envhost}: {listing}")
        for port in ports:
            sh("ip", "netns", "exec", self.cluster, "iptables", "-w", "-I", "INPUT", "-p", "tcp", "-s",
               self.envhost_ip, "--sport", port, "-j", "DROP")

    def pids(self, ns: str) -> list[int]:
        done = sh("ip", "netns", "pids", ns, check=False)
        return [int(p) for p in done.stdout.split()]


def _ensure_user(home: Path) -> None:
    try:
        pwd.getpwnam(USER)
    except KeyError:
        sh("useradd", "--no-create-home", "--shell", "/bin/sh", USER)
    sh("usermod", "-d", str(home), USER)
    sh("usermod", "-p", "*", USER)  # no password, but not "locked": sshd refuses locked accounts even with a key
    home.mkdir(parents=True, exist_ok=True)
    shutil.chown(home, USER, USER)


def _grant_traverse(paths: Sequence[Path]) -> dict[Path, int]:
    """Let the non-root user reach the interpreter and the checkout (o+x on each parent; restored at teardown)."""
    changed: dict[Path, int] = {}
    for path in paths:
        for parent in [path, *path.parents]:
            mode = parent.stat().st_mode
            if parent.is_dir() and not mode & 0o001 and parent not in changed:
                changed[parent] = mode
                os.chmod(parent, mode | 0o001)
    return changed


def _firewall_envhost(ns: str, cluster_ip: str, ssh_port: int) -> None:
    """The env host may open exactly one kind of connection: TCP to the cluster's sshd."""
    rules = [["-P", "OUTPUT", "DROP"], ["-P", "INPUT", "DROP"], ["-P", "FORWARD", "DROP"],
             ["-A", "OUTPUT", "-o", "lo", "-j", "ACCEPT"], ["-A", "INPUT", "-i", "lo", "-j", "ACCEPT"],
             ["-A", "OUTPUT", "-p", "tcp", "-d", cluster_ip, "--dport", str(ssh_port), "-j", "ACCEPT"],
             ["-A", "INPUT", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"],
             ["-A", "OUTPUT", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"]]
    for rule in rules:
        sh("ip", "netns", "exec", ns, "iptables", "-w", *rule)


def _kill_namespace(tb_ns: str) -> None:
    for _ in range(3):
        pids = [int(p) for p in sh("ip", "netns", "pids", tb_ns, check=False).stdout.split()]
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.5)


@contextmanager
def testbed(*, ssh_port: int = 22022, traverse: Sequence[Path] = (), routed: bool = False) -> Iterator[Testbed]:
    """Build both namespaces, the veth, the firewall and sshd; tear all of it down on exit.

    ``routed``: no firewall, the two sides reach each other on every port (a LAN or an overlay network).

    Its files live in a directory of its own under /tmp (mode 711): pytest resets its own tmp root
    to 700 whenever any pytest session starts, which would lock the non-root user out mid-test.
    """
    require_tools()
    tag = secrets.token_hex(3)
    tmp = Path(tempfile.mkdtemp(prefix=f"rayenv-netns-{tag}-"))
    tmp.chmod(0o711)
    net = 100 + secrets.randbelow(150)
    tb = Testbed(cluster=f"rayenv-cluster-{tag}", envhost=f"rayenv-envhost-{tag}", cluster_ip=f"10.213.{net}.1",
                 envhost_ip=f"10.213.{net}.2", ssh_port=ssh_port, user=USER, home=tmp / "cluster-home",
                 root_home=tmp / "envhost-home", key=tmp / "id_ed25519", known_hosts=tmp / "known_hosts",
                 veth=f"rv{tag}", tmp=tmp)
    modes: dict[Path, int] = {}
    try:
        for ns in (tb.cluster, tb.envhost):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "link", "add", tb.veth + "c", "netns", tb.cluster, "type", "veth", "peer", "name", tb.veth + "e",
           "netns", tb.envhost)
        for ns, dev, ip in ((tb.cluster, tb.veth + "c", tb.cluster_ip), (tb.envhost, tb.veth + "e", tb.envhost_ip)):
            sh("ip", "-n", ns, "addr", "add", f"{ip}/30", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
        if not routed:
            _firewall_envhost(tb.envhost, tb.cluster_ip, ssh_port)
        _ensure_user(tb.home)
        tb.root_home.mkdir(parents=True, exist_ok=True)
        modes = _grant_traverse(traverse)
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tb.key))
        sshd_dir = tmp / "sshd"
        sshd_dir.mkdir()
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(sshd_dir / "host_key"))
        authorized = sshd_dir / "authorized_keys"
        authorized.write_text(tb.key.with_suffix(".pub").read_text())
        authorized.chmod(0o644)
        config = sshd_dir / "sshd_config"
        config.write_text("\n".join([
            f"Port {ssh_port}", f"ListenAddress {tb.cluster_ip}", f"HostKey {sshd_dir / 'host_key'}",
            f"AuthorizedKeysFile {authorized}", f"PidFile {sshd_dir / 'sshd.pid'}", f"AllowUsers {USER}",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
            "GatewayPorts no", "AllowTcpForwarding yes", "LogLevel VERBOSE", ""]))
        Path("/run/sshd").mkdir(exist_ok=True)
        tb.popen(tb.cluster, ["/usr/sbin/sshd", "-D", "-e", "-f", str(config)],
                 stdout=subprocess.DEVNULL, stderr=open(tmp / "sshd.log", "w"))
        probes: list[subprocess.CompletedProcess] = []

        def sshd_answers() -> bool:
            probes.append(tb.run(tb.envhost, ["ssh", "-i", str(tb.key), "-p", str(ssh_port), "-o", "BatchMode=yes",
                                              "-o", f"UserKnownHostsFile={tb.known_hosts}",
                                              "-o", "StrictHostKeyChecking=accept-new", tb.ssh_destination, "true"],
                                 timeout=30))
            return probes[-1].returncode == 0

        wait_until(sshd_answers, 20, interval=0.3, what=f"sshd in {tb.cluster} reachable from {tb.envhost}",
                   explain=lambda: f"{probes[-1].stderr}\n{(tmp / 'sshd.log').read_text()[-2000:]}",
                   error=RuntimeError)
        yield tb
    finally:
        for ns in (tb.envhost, tb.cluster):
            _kill_namespace(ns)
            sh("ip", "netns", "del", ns, check=False)
        for path, mode in modes.items():
            os.chmod(path, mode)
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass
class EnvHost:
    """One more env host on a testbed: its own namespace, veth to the cluster, firewall and root home."""

    ns: str
    ip: str
    veth: str
    root_home: Path


@contextmanager
def extra_envhost(tb: Testbed, index: int, routed: bool = False) -> Iterator[EnvHost]:
    """Env host number ``index`` (1, 2, ...) beside the testbed's own: another namespace whose only way out is
    TCP to the same sshd (``routed``: any traffic to and from the cluster), over a veth of its own
    (10.214.<n>.0/30); removed, with all its processes, on exit."""
    net = (int(tb.cluster_ip.split(".")[2]) + index) % 250
    host = EnvHost(ns=f"{tb.envhost}-{index}", ip=f"10.214.{net}.2", veth=f"{tb.veth}{index}",
                   root_home=tb.tmp / f"envhost-{index}-home")
    cluster_ip = f"10.214.{net}.1"
    try:
        sh("ip", "netns", "add", host.ns)
        sh("ip", "-n", host.ns, "link", "set", "lo", "up")
        sh("ip", "link", "add", host.veth + "c", "netns", tb.cluster, "type", "veth", "peer", "name",
           host.veth + "e", "netns", host.ns)
        sh("ip", "-n", tb.cluster, "addr", "add", f"{cluster_ip}/30", "dev", host.veth + "c")
        sh("ip", "-n", tb.cluster, "link", "set", host.veth + "c", "up")
        sh("ip", "-n", host.ns, "addr", "add", f"{host.ip}/30", "dev", host.veth + "e")
        sh("ip", "-n", host.ns, "link", "set", host.veth + "e", "up")
        sh("ip", "-n", host.ns, "route", "add", tb.cluster_ip, "via", cluster_ip)  # sshd listens on cluster_ip
        if not routed:
            _firewall_envhost(host.ns, tb.cluster_ip, tb.ssh_port)
        host.root_home.mkdir(parents=True, exist_ok=True)
        yield host
    finally:
        _kill_namespace(host.ns)
        sh("ip", "netns", "del", host.ns, check=False)
