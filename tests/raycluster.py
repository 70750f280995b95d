"""Real multi-node Ray clusters on one machine, started with `ray start` like users do.

Each node is a separate `ray start` with its own ports; only the env node advertises
``osworld_env``. Stopped by killing exactly the processes this cluster started (found through its
own session directory), so concurrent clusters on the machine are never touched.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import psutil


@dataclass
class Cluster:
    address: str
    temp_dir: Path
    env_node_id: str | None = None

    def env(self) -> dict[str, str]:
        return {**os.environ, "RAY_ADDRESS": self.address}


def _ray(python: str, *args: str, env: dict[str, str] | None = None) -> str:
    ray_cli = str(Path(python).with_name("ray"))
    done = subprocess.run([ray_cli, "start", *args], capture_output=True, text=True, env=env, timeout=180)
    if done.returncode != 0:
        raise RuntimeError(f"ray start {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def _kill_tree_under(temp_dir: Path) -> None:
    """Kill every process whose command line mentions this cluster's temp dir (raylets, GCS, workers)."""
    mine = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(temp_dir) in cmdline:
            mine.append(proc)
    for proc in mine:
        for child in proc.children(recursive=True):
            mine.append(child)
    for proc in mine:
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass


@contextmanager
def ray_cluster(tmp_root: Path, *, base_port: int, head_python: str, env_python: str, env_units: int,
                head_cpus: int = 1) -> Iterator[Cluster]:
    """A head (``head_python``'s Ray) plus one env node (``env_python``'s Ray) advertising ``osworld_env``."""
    temp_dir = tmp_root / "ray"
    temp_dir.mkdir(parents=True, exist_ok=True)
    address = f"127.0.0.1:{base_port}"
    common = ["--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    try:
        _ray(head_python, "--head", f"--port={base_port}", f"--num-cpus={head_cpus}", f"--temp-dir={temp_dir}",
             f"--node-manager-port={base_port + 1}", f"--object-manager-port={base_port + 2}",
             f"--min-worker-port={base_port + 100}", f"--max-worker-port={base_port + 199}",
             f"--ray-client-server-port={base_port + 3}", f"--dashboard-port={base_port + 4}",
             f"--dashboard-agent-grpc-port={base_port + 5}", f"--dashboard-agent-listen-port={base_port + 6}",
             f"--metrics-export-port={base_port + 7}", f"--runtime-env-agent-port={base_port + 8}",
             "--dashboard-host=127.0.0.1", *common, env=env)
        _ray(env_python, f"--address={address}", "--num-cpus=0", f"--resources={json.dumps({'osworld_env': env_units})}",
             f"--node-manager-port={base_port + 11}", f"--object-manager-port={base_port + 12}",
             f"--min-worker-port={base_port + 200}", f"--max-worker-port={base_port + 299}",
             f"--dashboard-agent-grpc-port={base_port + 15}", f"--dashboard-agent-listen-port={base_port + 16}",
             f"--metrics-export-port={base_port + 17}", f"--runtime-env-agent-port={base_port + 18}", *common, env=env)
        yield Cluster(address=address, temp_dir=temp_dir)
    finally:
        _kill_tree_under(temp_dir)
        time.sleep(0.5)
