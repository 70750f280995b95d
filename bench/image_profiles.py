"""What each image profile weighs, how long it builds, and what it costs per step.

Per profile (``small``, ``osworld``): the image's size (base and guest layer), the build time cached
(nothing changed: ``rayenv desktop build --profile P`` in a fresh process) and cold (``--cold P``: a
forced rebuild from debootstrap, or ``--cold-seconds P=S`` for a cold build timed outside this run,
e.g. the first build on a machine with no image), then one 1920x1080 lite desktop of the profile: start
→ first screenshot, and a step (a pyautogui action through the guest API, then a screenshot) p50/p95.
With ``--vm P``: the VM desktop's disk of profile P too (``System.qcow2`` size, ``rayenv vm build --profile P``
cached, and a cold build timed outside this run with ``--vm-cold-seconds P=S``).
Results: ``bench/results/image_profiles.{md,json}``.

    .venv/bin/python bench/image_profiles.py [--cold small] [--cold-seconds osworld=900] [--steps 50] \
        [--vm osworld] [--vm-cold-seconds osworld=421]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from measure import container_memory_mib, percentile, timed_rayenv

from rayenv.desktop_lite.build import base_tag, default_image_tag
from rayenv.desktop_lite.profiles import PROFILES
from rayenv.desktop_vm.build import built as vm_built
from rayenv.engine.containers import client
from rayenv.env.guest_client import GuestClient
from rayenv.providers import DesktopSpec, Ownership, make_provider

RESULTS = Path(__file__).resolve().parent / "results"


def image_mib(tag: str) -> float:
    return client().images.get(tag).attrs["Size"] / 2**20


def measure_desktop(profile: str, steps: int) -> dict[str, Any]:
    """Start one lite desktop of ``profile``; time its first screenshot and ``steps`` action + screenshot steps."""
    provider = make_provider(DesktopSpec(provider="lite", profile=profile, screen_width=1920, screen_height=1080),
                             Ownership(owner="bench", env_name=f"bench-profile-{profile}"))
    started = time.perf_counter()
    endpoint = provider.start()
    guest = GuestClient(endpoint.url, env=profile)
    try:
        guest.screenshot()
        first_screenshot = time.perf_counter() - started
        seconds = []
        for step in range(steps):
            begun = time.perf_counter()
            guest.run_action(f"pyautogui.moveTo({100 + 10 * step}, {100 + 5 * step})", timeout=30)
            guest.screenshot()
            seconds.append(time.perf_counter() - begun)
        return {"start_to_first_screenshot_s": first_screenshot, "step_p50_ms": 1000 * statistics.median(seconds),
                "step_p95_ms": 1000 * percentile(seconds, 0.95),
                "memory_mib": container_memory_mib(provider.describe()["container_name"])}
    finally:
        provider.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cold", nargs="*", default=[], choices=list(PROFILES), help="force a rebuild of these")
    parser.add_argument("--cold-seconds", nargs="*", default=[], metavar="PROFILE=SECONDS",
                        help="a cold build of PROFILE timed outside this run")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--vm", nargs="*", default=[], choices=list(PROFILES), help="measure these VM disks too")
    parser.add_argument("--vm-cold-seconds", nargs="*", default=[], metavar="PROFILE=SECONDS",
                        help="a cold VM desktop build of PROFILE timed outside this run")
    args = parser.parse_args()
    measured_outside = _seconds(args.cold_seconds)
    vm_cold = _seconds(args.vm_cold_seconds)
    results: dict[str, Any] = {"load_average_at_start": os.getloadavg()[0]}
    for profile in PROFILES:
        result: dict[str, Any] = {}
        if profile in args.cold:
            result["cold_build_s"] = timed_rayenv("desktop", "build", "--force", "--profile", profile)
        elif profile in measured_outside:
            result["cold_build_s"] = measured_outside[profile]
        result["cached_build_s"] = timed_rayenv("desktop", "build", "--profile", profile)
        result["image"] = default_image_tag(profile)
        result["image_mib"] = image_mib(result["image"])
        result["base_mib"] = image_mib(base_tag(profile))
        result.update(measure_desktop(profile, args.steps))
        results[profile] = result
    for profile in args.vm:
        cached = timed_rayenv("vm", "build", "--profile", profile)
        desktop = vm_built(profile)
        assert desktop is not None, "rayenv vm build just built it"
        results[f"vm-{profile}"] = {"cached_build_s": cached, "qcow2_mib": desktop.qcow2.stat().st_size / 2**20,
                                    "image": desktop.image, "image_mib": image_mib(desktop.image),
                                    **({"cold_build_s": vm_cold[profile]} if profile in vm_cold else {})}
    results["load_average_at_end"] = os.getloadavg()[0]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "image_profiles.json").write_text(json.dumps(results, indent=2))
    lines = ["# Image profiles (desktop-lite, 1920x1080)", "",
             "| profile | image MiB | cold build s | cached build s | start → first screenshot s | step p50 ms | "
             "step p95 ms | idle memory MiB |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for profile in PROFILES:
        r = results[profile]
        cold = f"{r['cold_build_s']:.0f}" if "cold_build_s" in r else "—"
        lines.append(f"| {profile} | {r['image_mib']:.0f} | {cold} | {r['cached_build_s']:.2f} | "
                     f"{r['start_to_first_screenshot_s']:.2f} | {r['step_p50_ms']:.0f} | {r['step_p95_ms']:.0f} | "
                     f"{r['memory_mib']:.0f} |")
    if args.vm:
        lines += ["", "## VM desktop disks", "", "| profile | System.qcow2 MiB | QEMU container image MiB | cold build s | "
                  "cached build s |", "| --- | ---: | ---: | ---: | ---: |"]
        for profile in args.vm:
            r = results[f"vm-{profile}"]
            cold = f"{r['cold_build_s']:.0f}" if "cold_build_s" in r else "—"
            lines.append(f"| {profile} | {r['qcow2_mib']:.0f} | {r['image_mib']:.0f} | {cold} | {r['cached_build_s']:.2f} |")
    lines += ["", "A step: one pyautogui action through the guest API's `/execute`, then a screenshot.",
              "Cold: a build from debootstrap with no cached layer; cached: nothing changed (a content-hash lookup).",
              f"Host load average (1 min) at start and end of this run: {results['load_average_at_start']:.1f}, "
              f"{results['load_average_at_end']:.1f} on {os.cpu_count()} CPUs (cold builds: timed separately)."]
    (RESULTS / "image_profiles.md").write_text("\n".join(lines) + "\n")
    print((RESULTS / "image_profiles.md").read_text())


def _seconds(items: list[str]) -> dict[str, float]:
    """``PROFILE=SECONDS`` arguments as a dict."""
    return {name: float(seconds) for name, seconds in (item.split("=") for item in items)}


if __name__ == "__main__":
    main()
