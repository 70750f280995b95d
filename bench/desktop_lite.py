"""How fast and how big is a desktop-lite desktop?

Reports, in one run: image build time (cold with ``--cold``: a forced rebuild from debootstrap;
cached: nothing changed), start → first screenshot for a container and a process-mode desktop,
screenshot latency p50/p95 at 1920x1080 through the guest (``GET /screenshot``) and, for the container,
outside it as a trainer's observation takes it (Xvfb's framebuffer file, the pointer drawn in), and memory
per desktop. Results:
``bench/results/desktop_lite.{md,json}``.

    .venv/bin/python bench/desktop_lite.py [--cold] [--shots 50]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
from measure import container_memory_mib, outside_screenshot, percentile, screenshot_latencies, timed_rayenv

from rayenv.env.guest_client import GuestClient
from rayenv.providers import DesktopSpec, Ownership, make_provider

RESULTS = Path(__file__).resolve().parent / "results"


def process_group_memory_mib(pgid: int) -> float:
    total = 0
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.pid) == pgid:
                total += proc.memory_info().rss
        except (psutil.NoSuchProcess, ProcessLookupError):
            continue
    return total / 2**20


def measure_desktop(provider_name: str, shots: int) -> dict[str, Any]:
    provider = make_provider(DesktopSpec(provider=provider_name, screen_width=1920, screen_height=1080),
                             Ownership(owner="bench", env_name=f"bench-{provider_name}"))
    started = time.perf_counter()
    endpoint = provider.start()
    client_ = GuestClient(endpoint.url, env=provider_name)
    client_.screenshot()
    first_screenshot = time.perf_counter() - started
    try:
        latencies, sizes = screenshot_latencies(client_.screenshot, shots)
        facts = provider.describe()
        memory = (container_memory_mib(facts["container_name"]) if provider_name == "lite"
                  else process_group_memory_mib(facts["pgid"]))
        result = {"start_to_first_screenshot_s": first_screenshot,
                  "screenshot_p50_ms": 1000 * statistics.median(latencies),
                  "screenshot_p95_ms": 1000 * percentile(latencies, 0.95),
                  "screenshot_kib": statistics.mean(sizes) / 1024, "memory_mib": memory}
        if provider.display() is not None:
            with ThreadPoolExecutor(max_workers=1) as helper:
                latencies, sizes = screenshot_latencies(outside_screenshot(provider, client_, helper), shots)
            result.update(outside_screenshot_p50_ms=1000 * statistics.median(latencies),
                          outside_screenshot_p95_ms=1000 * percentile(latencies, 0.95),
                          outside_screenshot_kib=statistics.mean(sizes) / 1024)
        return result
    finally:
        provider.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cold", action="store_true", help="also time a forced rebuild from debootstrap (~2 min)")
    parser.add_argument("--shots", type=int, default=50)
    args = parser.parse_args()
    results: dict[str, Any] = {}
    if args.cold:
        results["cold_build_s"] = timed_rayenv("desktop", "build", "--force")
    results["cached_build_s"] = timed_rayenv("desktop", "build")
    results["load_average_before"] = os.getloadavg()[0]
    results["lite"] = measure_desktop("lite", args.shots)
    results["process"] = measure_desktop("process", args.shots)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "desktop_lite.json").write_text(json.dumps(results, indent=2))
    lines = ["# desktop-lite (1920x1080)", "",
             f"Host load average (2 cores) before: {results['load_average_before']:.1f}.", ""]
    if "cold_build_s" in results:
        lines.append(f"- cold build (debootstrap + import + guest layer): **{results['cold_build_s']:.0f} s**")
    lines += [f"- cached build (nothing changed): **{results['cached_build_s']:.2f} s**", "",
              "Screenshots: *guest* = `GET /screenshot` (X grab + PNG in the guest); *outside* = Xvfb's framebuffer "
              "file read on the host, the pointer the guest reports drawn in, PNG by ISA-L (what a trainer's "
              "observation of a lite desktop takes; process desktops observe through the guest).", "",
              "| desktop | start → first screenshot s | guest p50 ms | p95 ms | PNG KiB | outside p50 ms | p95 ms "
              "| PNG KiB | memory MiB |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name in ("lite", "process"):
        r = results[name]
        outside = (f"{r['outside_screenshot_p50_ms']:.1f} | {r['outside_screenshot_p95_ms']:.1f} | "
                   f"{r['outside_screenshot_kib']:.0f}" if "outside_screenshot_p50_ms" in r else "– | – | –")
        lines.append(f"| {name} | {r['start_to_first_screenshot_s']:.2f} | {r['screenshot_p50_ms']:.1f} | "
                     f"{r['screenshot_p95_ms']:.1f} | {r['screenshot_kib']:.0f} | {outside} | {r['memory_mib']:.0f} |")
    (RESULTS / "desktop_lite.md").write_text("\n".join(lines) + "\n")
    print((RESULTS / "desktop_lite.md").read_text())


if __name__ == "__main__":
    main()
