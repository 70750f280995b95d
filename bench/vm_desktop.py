"""What does the VM desktop cost next to desktop-lite?

One run reports: `rayenv vm build` time (cold with ``--cold``: every part rebuilt from debootstrap;
cached: nothing changed), start → first screenshot, screenshot latency p50/p95 at 1920x1080 both ways
(taken outside the guest as a trainer's observation takes it: QEMU's display for the VM, Xvfb's
framebuffer file for lite; and through the guest's ``GET /screenshot``), step latency p50 (a
pyautogui action + the observation, ``pause=0``) and memory per desktop (the
container's cgroup, page cache excluded), for a ``docker`` desktop on our VM image (2 GB, 2 vCPUs,
TCG here unless KVM boots a kernel) and a ``lite`` one. desktop-env's evaluator imports (paid once
per process) are done before any timing, and the host's load average is recorded beside the numbers
(other work on a 2-core host moves VM boot times by tens of seconds). Results:
``bench/results/vm_desktop.{md,json}``.

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

from measure import container_memory_mib, outside_screenshot, percentile, screenshot_latencies, timed_rayenv

from rayenv.desktop_lite.build import build_image
from rayenv.desktop_vm.build import build_vm_desktop
from rayenv.engine.kvm import kvm_status
from rayenv.env.desktop import Desktop
from rayenv.env.evaluation import TaskRunner
from rayenv.env.guest_client import GuestClient
from rayenv.providers import DesktopSpec, Ownership

RESULTS = Path(__file__).resolve().parent / "results"


def measure(spec: DesktopSpec, shots: int, steps: int) -> dict[str, Any]:
    desktop = Desktop(spec, Ownership(owner="bench", env_name=f"bench-{spec.provider}"))
    started = time.perf_counter()
    try:
        desktop.start()
        desktop.observe()
        first_screenshot = time.perf_counter() - started
        client_ = GuestClient(desktop.status()["url"], env=spec.provider)
        with ThreadPoolExecutor(max_workers=1) as helper:
            outside_times, outside_sizes = screenshot_latencies(outside_screenshot(desktop.provider, client_, helper), shots)
        shot_times, guest_sizes = screenshot_latencies(client_.screenshot, shots)
        desktop.reset(None)
        step_times = []
        for i in range(steps):
            begun = time.perf_counter()
            desktop.step(f"pyautogui.moveTo({100 + 10 * i}, {100 + 5 * i})", pause=0)
            step_times.append(time.perf_counter() - begun)
        memory = container_memory_mib(desktop.provider.describe()["container_name"])
        return {"start_to_first_screenshot_s": first_screenshot,
                "screenshot_p50_ms": 1000 * statistics.median(outside_times),
                "screenshot_p95_ms": 1000 * percentile(outside_times, 0.95),
                "screenshot_kib": statistics.mean(outside_sizes) / 1024,
                "guest_screenshot_p50_ms": 1000 * statistics.median(shot_times),
                "guest_screenshot_p95_ms": 1000 * percentile(shot_times, 0.95),
                "guest_screenshot_kib": statistics.mean(guest_sizes) / 1024,
                "step_p50_ms": 1000 * statistics.median(step_times), "memory_mib": memory}
    finally:
        desktop.close()


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
              "Screenshots: *outside* = taken outside the guest, as the trainer's observation is (QEMU's display by "
              "QMP screendump for the VM, Xvfb's framebuffer file for lite; the pointer the guest reports drawn in, "
              "PNG by ISA-L); *guest* = the guest's `GET /screenshot` (X grab + PNG in the guest). Steps observe "
              "outside the guest.", "",
              "| desktop | start → first screenshot s | outside p50 ms | p95 ms | PNG KiB | guest p50 ms | p95 ms "
              "| PNG KiB | step p50 ms | memory MiB |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name in ("vm", "lite"):
        r = results[name]
        lines.append(f"| {name} | {r['start_to_first_screenshot_s']:.2f} | {r['screenshot_p50_ms']:.1f} | "
                     f"{r['screenshot_p95_ms']:.1f} | {r['screenshot_kib']:.0f} | {r['guest_screenshot_p50_ms']:.1f} | "
                     f"{r['guest_screenshot_p95_ms']:.1f} | {r['guest_screenshot_kib']:.0f} | {r['step_p50_ms']:.1f} | "
                     f"{r['memory_mib']:.0f} |")
    (RESULTS / "vm_desktop.md").write_text("\n".join(lines) + "\n")
    print((RESULTS / "vm_desktop.md").read_text())


if __name__ == "__main__":
    main()
