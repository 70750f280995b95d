"""What does the VM desktop cost next to desktop-lite, and are screenshots and steps at the goal?

One run reports, for a ``docker`` desktop on our VM image (2 GB, 2 vCPUs, TCG here unless KVM boots a
kernel) and a ``lite`` one, both at 1920x1080, side by side: screenshot latency p50/p95 three ways,
step latency p50/p95 (a pyautogui action + the observation, ``pause=0``) and the issue's goals
(issue 20: VM screenshot ≤ 50 ms, VM step ≤ 300 ms, lite screenshot ≤ 20 ms, p50) met or missed.
Screenshots: *outside, pointer reported* is a step's observation (the display read outside the guest,
the pointer drawn where the step's action reported it); *outside, pointer asked* is any other
observation's (the guest asked where the pointer is, while the display is read); *guest* is the
guest's own ``GET /screenshot``. Also: the parts of an outside screenshot (reading the display, asking
the pointer), ``rayenv vm build`` time (cold with ``--cold``), start → first screenshot and memory per
desktop (the container's cgroup, page cache excluded). desktop-env's evaluator imports (paid once per
process) are done before any timing, and the host's load average is recorded beside the numbers.
Results: ``bench/results/vm_desktop.{md,json,png}``.

    .venv/bin/python bench/vm_desktop.py [--cold] [--shots 30] [--steps 20]
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

from measure import (container_memory_mib, outside_screenshot, percentile, screenshot_latencies, seconds_chart, timed,
                     timed_rayenv)

from rayenv.desktop_lite.build import build_image
from rayenv.desktop_vm.build import build_vm_desktop
from rayenv.engine.kvm import kvm_status
from rayenv.env.desktop import Desktop
from rayenv.env.evaluation import TaskRunner
from rayenv.env.guest_client import GuestClient
from rayenv.providers import DesktopSpec, Ownership

RESULTS = Path(__file__).resolve().parent / "results"


#: (desktop, measure, goal p50 in ms): issue 20's acceptance on this machine (TCG).
GOALS = {("vm", "outside_reported"): 50.0, ("vm", "outside_asked"): 50.0, ("vm", "step"): 300.0,
         ("lite", "outside_reported"): 20.0, ("lite", "outside_asked"): 20.0}
MEASURES = {"outside_reported": "screenshot outside, pointer reported (a step's)",
            "outside_asked": "screenshot outside, pointer asked (a reset's)",
            "guest": "screenshot by the guest (`GET /screenshot`)",
            "step": "step (action + observation, pause 0)",
            "display_read": "part: reading the display (+ QMP screendump for the VM)",
            "pointer_asked": "part: asking the guest for the pointer",
            "step_unpaused": "part: step whose action skips pyautogui's `PAUSE` (`_pause=False`)"}


def latency(times: list[float]) -> dict[str, float]:
    return {"p50_ms": 1000 * statistics.median(times), "p95_ms": 1000 * percentile(times, 0.95)}


def measure(spec: DesktopSpec, shots: int, steps: int) -> dict[str, Any]:
    desktop = Desktop(spec, Ownership(owner="bench", env_name=f"bench-{spec.provider}"))
    started = time.perf_counter()
    try:
        desktop.start()
        desktop.observe()
        first_screenshot = time.perf_counter() - started
        client_ = GuestClient(desktop.status()["url"], env=spec.provider)
        display = desktop.provider.display()
        assert display is not None, f"{desktop.provider.label()} has no display the host can read"
        where = client_.cursor_position()
        with ThreadPoolExecutor(max_workers=1) as helper:
            reported, sizes = screenshot_latencies(outside_screenshot(desktop.provider, client_, helper, where), shots)
            asked, _ = screenshot_latencies(outside_screenshot(desktop.provider, client_, helper), shots)
        guest, guest_sizes = screenshot_latencies(client_.screenshot, shots)
        parts = {"display_read": [timed(display.grab) for _ in range(shots)],
                 "pointer_asked": [timed(client_.cursor_position) for _ in range(shots)]}
        desktop.reset(None)
        step_times = [timed(lambda: desktop.step(f"pyautogui.moveTo({100 + 10 * i}, {100 + 5 * i})", pause=0))
                      for i in range(steps)]
        parts["step_unpaused"] = [timed(lambda: desktop.step(f"pyautogui.moveTo({300 + 10 * i}, {100 + 5 * i}, "
                                                              "_pause=False)", pause=0)) for i in range(steps)]
        memory = container_memory_mib(desktop.provider.describe()["container_name"])
        return {"start_to_first_screenshot_s": first_screenshot, "screenshot_kib": statistics.mean(sizes) / 1024,
                "guest_screenshot_kib": statistics.mean(guest_sizes) / 1024, "memory_mib": memory,
                "outside_reported": latency(reported), "outside_asked": latency(asked), "guest": latency(guest),
                "step": latency(step_times), **{name: latency(times) for name, times in parts.items()}}
    finally:
        desktop.close()


def chart(results: dict[str, Any], path: Path) -> None:
    """p50 of every measure, both desktops; green where a goal is met, red where missed, grey without a goal."""
    bars = []
    for name in ("vm", "lite"):
        for measure_ in ("outside_reported", "outside_asked", "guest", "step"):
            goal = GOALS.get((name, measure_))
            p50 = results[name][measure_]["p50_ms"]
            color = "#9e9e9e" if goal is None else ("#2e7d32" if p50 <= goal else "#c62828")
            bars.append((f"{name}: {MEASURES[measure_].split(' (')[0]}", p50 / 1000, color))
    seconds_chart(bars, "p50 at 1920x1080 (green: goal met, red: missed)", path,
                  milliseconds=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cold", action="store_true", help="also time a forced rebuild of every part (minutes)")
    parser.add_argument("--shots", type=int, default=30)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    results: dict[str, Any] = {}
    if args.cold:
        results["cold_build_s"] = timed_rayenv("vm", "build", "--force")
    results["cached_build_s"] = timed_rayenv("vm", "build")
    TaskRunner.warm_up().join()
    results["load_average_before"] = os.getloadavg()[0]
    vm = build_vm_desktop()
    kvm = kvm_status(vm.image)
    results["kvm"] = {"available": kvm.available, "message": kvm.message}
    screen = {"screen_width": 1920, "screen_height": 1080}
    results["vm"] = measure(DesktopSpec(provider="docker", docker_image=vm.image, vm_path=str(vm.qcow2),
                                        docker_memory="2G", docker_cpus=2, **screen), args.shots, args.steps)
    results["lite"] = measure(DesktopSpec(provider="lite", lite_image=build_image(), **screen), args.shots, args.steps)
    results["load_average_after"] = os.getloadavg()[0]
    qcow2_mib = vm.qcow2.stat().st_size / 2**20
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "vm_desktop.json").write_text(json.dumps({**results, "qcow2_mib": qcow2_mib}, indent=2))
    accelerator = "KVM" if kvm.available else "TCG (software emulation)"
    lines = ["# VM desktop vs desktop-lite (1920x1080)", "",
             f"VM: `{vm.image}`, guest kernel {vm.kernel}, qcow2 {qcow2_mib:.0f} MiB, 2 GB RAM, 2 vCPUs, "
             f"{accelerator}. KVM check: {kvm.message}", "",
             f"Host load average (2 cores): {results['load_average_before']:.1f} before, "
             f"{results['load_average_after']:.1f} after.", ""]
    if "cold_build_s" in results:
        lines.append(f"- cold `rayenv vm build --force` (QEMU base + guest debootstrap + disk + layer): "
                     f"**{results['cold_build_s']:.0f} s**")
    lines += [f"- cached `rayenv vm build` (nothing changed): **{results['cached_build_s']:.2f} s**", "",
              "*Outside* = read outside the guest (QEMU's display by QMP screendump for the VM, Xvfb's framebuffer "
              "file for lite), the pointer drawn in, PNG by ISA-L: *pointer reported* is a step's observation (its "
              "action said where it left the pointer), *pointer asked* any other observation's (a reset's: the "
              "guest is asked while the display is read). *Guest* = the guest's `GET /screenshot` (X grab + PNG "
              "in the guest). Steps: a `pyautogui.moveTo` + the observation, pause 0; pyautogui's own `PAUSE` "
              "(0.1 s after each call, as in OSWorld) is part of every action.", "",
              "| measure | VM p50 ms | VM p95 ms | VM goal | lite p50 ms | lite p95 ms | lite goal |",
              "| --- | ---: | ---: | --- | ---: | ---: | --- |"]
    for measure_, label in MEASURES.items():
        cells = []
        for name in ("vm", "lite"):
            r, goal = results[name][measure_], GOALS.get((name, measure_))
            verdict = "–" if goal is None else f"≤ {goal:.0f}: {'**met**' if r['p50_ms'] <= goal else '**missed**'}"
            cells.append(f"{r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {verdict}")
        lines.append(f"| {label} | {' | '.join(cells)} |")
    lines += ["", "| desktop | start → first screenshot s | outside PNG KiB | guest PNG KiB | memory MiB |",
              "| --- | ---: | ---: | ---: | ---: |"]
    for name in ("vm", "lite"):
        r = results[name]
        lines.append(f"| {name} | {r['start_to_first_screenshot_s']:.2f} | {r['screenshot_kib']:.0f} | "
                     f"{r['guest_screenshot_kib']:.0f} | {r['memory_mib']:.0f} |")
    lines += ["", "![p50 latencies](vm_desktop.png)"]
    chart(results, RESULTS / "vm_desktop.png")
    (RESULTS / "vm_desktop.md").write_text("\n".join(lines) + "\n")
    print((RESULTS / "vm_desktop.md").read_text())


if __name__ == "__main__":
    main()
