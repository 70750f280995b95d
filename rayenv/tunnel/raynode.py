"""Starting and stopping *our* Ray node on either side, and what the head tells the env host.

Ray's ``ray stop`` ends every Ray process of the machine, including other users' clusters. Each
node here gets its own ``--temp-dir``, and stopping means ending the processes whose command line
names that directory (and their children): exactly what we started, nothing else.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import psutil
from pydantic import BaseModel

from .plan import PortPlan

HEAD_DIR = Path.home() / ".cache" / "rayenv" / "head"


class HeadInfo(BaseModel):
    """Written by ``rayenv head start``; the env host reads it through the tunnel before joining."""

    address: str
    python: str
    ray: str
    token_path: str
    temp_dir: str
    plan: PortPlan

    @staticmethod
    def path() -> Path:
        return HEAD_DIR / "head.json"


def versions() -> tuple[str, str]:
    """(python major.minor, ray version) of this interpreter: what Ray requires to match across nodes."""
    import ray

    return ".".join(platform.python_version_tuple()[:2]), ray.__version__


def ray_cli() -> str:
    """The ``ray`` next to this interpreter, so head and workers use the Ray rayenv runs with."""
    return str(Path(sys.executable).with_name("ray"))


def ray_start(flags: list[str], temp_dir: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    temp_dir.mkdir(parents=True, exist_ok=True)
    return subprocess.run([ray_cli(), "start", f"--temp-dir={temp_dir}", *flags], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)


def node_processes(temp_dir: Path) -> list[psutil.Process]:
    """Ray daemons and workers of the node using ``temp_dir``, with their descendants (desktops too)."""
    needle = f"{temp_dir}/session"  # Ray daemons name their session dir; our own CLI (--temp-dir X) does not
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if proc.pid != os.getpid() and any(needle in arg for arg in proc.info["cmdline"] or ()):
                found[proc.pid] = proc
                found.update({child.pid: child for child in proc.children(recursive=True)})
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    found.pop(os.getpid(), None)
    return list(found.values())


def raylet_running(temp_dir: Path) -> bool:
    return any(_name(proc) == "raylet" for proc in node_processes(temp_dir))


def stop_node(temp_dir: Path, timeout: float = 10) -> int:
    """Terminate this node's processes (kill what lingers); returns how many there were."""
    victims = node_processes(temp_dir)
    for proc in victims:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(victims, timeout=timeout)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=timeout)
    return len(victims)


def _name(proc: psutil.Process) -> str:
    try:
        return proc.name()
    except psutil.Error:
        return ""


def ray_env(token_path: Path, extra: dict[str, str]) -> dict[str, str]:
    """Token auth (Ray 2.60 turns it on by default) with this node's token file, plus tuning."""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_path), "RAY_USAGE_STATS_ENABLED": "0", **extra}


def write_json(path: Path, data: dict) -> None:
    """Atomic: readers (the CLI, the sidecar) never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)
