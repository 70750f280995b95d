"""What the benches share: timing a `rayenv` command as a user runs it, screenshot latency (through the guest
or from outside it), a container's memory."""

from __future__ import annotations

import math
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from rayenv.engine.containers import client
from rayenv.env.guest_client import GuestClient
from rayenv.providers import Provider
from rayenv.providers.screens import encode_png, screenshot_png


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


def summary(values: list[float]) -> dict[str, Any]:
    """p50, p95, count and every sample of ``values`` (seconds), as the results JSON keeps them."""
    return {"p50_s": statistics.median(values), "p95_s": percentile(values, 0.95), "n": len(values),
            "all_s": [round(v, 3) for v in values]}


def timed(call: Callable[[], Any]) -> float:
    """Seconds ``call`` took."""
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def screenshot_latencies(take: Callable[[], bytes], shots: int) -> tuple[list[float], list[int]]:
    """Seconds and PNG bytes of ``shots`` screenshots in a row, each taken by ``take`` (e.g. a guest client's
    ``screenshot``: through the guest API)."""
    seconds, sizes = [], []
    for _ in range(shots):
        begun = time.perf_counter()
        sizes.append(len(take()))
        seconds.append(time.perf_counter() - begun)
    return seconds, sizes


def outside_screenshot(provider: Provider, client: GuestClient, helper: ThreadPoolExecutor,
                       pointer: tuple[int, int] | None = None) -> Callable[[], bytes]:
    """A screenshot as a trainer's observation takes it: from the display outside the guest (QEMU's, Xvfb's
    framebuffer file), the pointer drawn in at ``pointer`` (where a step's action reported it) or else where
    the guest says it is (asked on ``helper`` while the display is read, as a reset's observation does)."""
    display = provider.display()
    assert display is not None, f"{provider.label()} has no display the host can read"
    if pointer is not None:
        return lambda: encode_png(display.grab(), pointer)
    return lambda: screenshot_png(display, client.cursor_position, helper)


def seconds_chart(bars: list[tuple[str, float, str]], title: str, path: Path, *, milliseconds: bool = False) -> None:
    """A horizontal bar per (label, seconds, color), on a log scale with each value written beside its bar (in
    milliseconds with ``milliseconds``, for latencies far below a second)."""
    import matplotlib.pyplot as plt

    scale, unit = (1000, "ms") if milliseconds else (1, "s")
    values = [value * scale for _, value, _ in bars]
    figure, axis = plt.subplots(figsize=(8, 0.4 * len(bars) + 1.2))
    axis.barh([name for name, _, _ in bars], values, color=[color for _, _, color in bars])
    axis.set_xscale("log")
    axis.set_xlabel(f"{'milliseconds' if milliseconds else 'seconds'} (p50, log scale)")
    for index, value in enumerate(values):
        axis.text(value * 1.05, index, f"{value:.0f} {unit}" if milliseconds else f"{value:.2f} {unit}", va="center")
    axis.invert_yaxis()
    axis.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
