"""What the benches share: timing a `rayenv` command as a user runs it, screenshot latency, a container's memory."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from pathlib import Path

from rayenv.engine.containers import client
from rayenv.env.guest_client import GuestClient


def timed_rayenv(*args: str) -> float:
    """Wall time of ``rayenv ARGS`` in a fresh process (so no in-memory cache helps it)."""
    started = time.perf_counter()
    subprocess.run([str(Path(sys.executable).with_name("rayenv")), *args], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def container_memory_mib(name: str) -> float:
    """The container's memory as its cgroup counts it, page cache excluded."""
    usage = client().containers.get(name).stats(stream=False)["memory_stats"]
    return (usage["usage"] - usage.get("stats", {}).get("inactive_file", 0)) / 2**20


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile: the smallest value with at least ``fraction`` of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(math.ceil(fraction * len(ordered)) - 1, 0)]


def screenshot_latencies(client: GuestClient, shots: int) -> tuple[list[float], list[int]]:
    """Seconds and PNG bytes of ``shots`` screenshots in a row through the guest API."""
    seconds, sizes = [], []
    for _ in range(shots):
        begun = time.perf_counter()
        sizes.append(len(client.screenshot()))
        seconds.append(time.perf_counter() - begun)
    return seconds, sizes
