"""What the benches share: timing a `rayenv` command as a user runs it, and a container's memory."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from rayenv.providers.containers import client


def timed_rayenv(*args: str) -> float:
    """Wall time of ``rayenv ARGS`` in a fresh process (so no in-memory cache helps it)."""
    started = time.perf_counter()
    subprocess.run([str(Path(sys.executable).with_name("rayenv")), *args], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def container_memory_mib(name: str) -> float:
    """The container's memory as its cgroup counts it, page cache excluded."""
    usage = client().containers.get(name).stats(stream=False)["memory_stats"]
    return (usage["usage"] - usage.get("stats", {}).get("inactive_file", 0)) / 2**20
