"""Real multi-node Ray clusters on one machine, started with `ray start` like users do (the e2e tests
and the benches use it: ``from rayenv.tools.localcluster import ray_cluster``).

Each node is a separate `ray start` with its own ports; only the env node advertises
``osworld_env``. Stopped by killing exactly the processes this cluster started (found by a marker in
their environment), so concurrent clusters on the machine are never touched.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import psutil

MARKER = "RAYENV_TEST_CLUSTER"


@dataclass
class Cluster:
    address: str
    temp_dir: Path
    env_node_id: str | None = None

    def env(self) -> dict[str, str]:
        """Environment for a process that joins this cluster (driver or node); auth comes from the caller's environment
        (the tests' conftest, a bench's own token)."""
        return {**os.environ, "RAY_ADDRESS": self.address}


def _ray(python: str, *args: str, env: dict[str, str]) -> str:
    ray_cli = str(Path(python).with_name("ray"))
    done = subprocess.run([ray_cli, "start", *args], capture_output=True, text=True, env=env, timeout=180)
    if done.returncode != 0:
        raise RuntimeError(f"ray start {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def _kill_marked(marker: str) -> None:
    """Kill every process carrying this cluster's marker in its environment (Ray's daemons and workers
    inherit it from `ray start`, even after they are re-parented to init), and their descendants."""
    needle = f"{MARKER}={marker}".encode()
    victims = []
    for proc in psutil.process_iter(["pid"]):
        try:  # raw bytes: Ray's setproctitle overwrites the start of the environment block
            if needle in Path(f"/proc/{proc.pid}/environ").read_bytes():
                victims.append(proc)
        except OSError:
            continue
    for proc in list(victims):  # agents started by a raylet do not all inherit its environment
        try:
            victims.extend(proc.children(recursive=True))
        except psutil.NoSuchProcess:
            continue
    for proc in victims:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(victims, timeout=10)


@contextmanager
def ray_cluster(tmp_root: Path, *, base_port: int, head_python: str, env_python: str, env_units: int,
                head_cpus: int = 1, env_nodes: int = 1) -> Iterator[Cluster]:
    """A head (``head_python``'s Ray) plus ``env_nodes`` env nodes (``env_python``'s Ray, at most 8) each
    advertising ``env_units`` of ``osworld_env``; node K takes ports ``base_port + 10 K ..`` and workers
    ``base_port + 100 (K + 1) ..``."""
    if not 1 <= env_nodes <= 8:
        raise ValueError(f"env_nodes={env_nodes}: a local cluster has 1 to 8 env nodes (their ports are 10 apart)")
    temp_dir = tmp_root / "ray"
    temp_dir.mkdir(parents=True, exist_ok=True)
    address = f"127.0.0.1:{base_port}"
    common = ["--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    marker = secrets.token_hex(8)
    env = {**os.environ, MARKER: marker}
    try:
        _ray(head_python, "--head", f"--port={base_port}", f"--num-cpus={head_cpus}", f"--temp-dir={temp_dir}",
             f"--node-manager-port={base_port + 1}", f"--object-manager-port={base_port + 2}",
             f"--min-worker-port={base_port + 100}", f"--max-worker-port={base_port + 199}",
             f"--ray-client-server-port={base_port + 3}", f"--dashboard-port={base_port + 4}",
             f"--dashboard-agent-grpc-port={base_port + 5}", f"--dashboard-agent-listen-port={base_port + 6}",
             f"--metrics-export-port={base_port + 7}", f"--runtime-env-agent-port={base_port + 8}",
             "--dashboard-host=127.0.0.1", *common, env=env)
        for k in range(1, env_nodes + 1):
            fixed, workers = base_port + 10 * k, base_port + 100 * (k + 1)
            _ray(env_python, f"--address={address}", "--num-cpus=0",
                 f"--resources={json.dumps({'osworld_env': env_units})}",
                 f"--node-manager-port={fixed + 1}", f"--object-manager-port={fixed + 2}",
                 f"--min-worker-port={workers}", f"--max-worker-port={workers + 99}",
                 f"--dashboard-agent-grpc-port={fixed + 5}", f"--dashboard-agent-listen-port={fixed + 6}",
                 f"--metrics-export-port={fixed + 7}", f"--runtime-env-agent-port={fixed + 8}", *common, env=env)
        yield Cluster(address=address, temp_dir=temp_dir)
    finally:
        _kill_marked(marker)
