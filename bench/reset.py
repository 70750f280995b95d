"""What does a reset cost: loading a VM snapshot vs restarting the VM, and desktop-lite before/after?

One run, one container image (`rayenv vm build`) and two disks, the same VM shape throughout (2 GB,
2 vCPUs, 1280x720, TCG here unless KVM boots a kernel): rayenv's VM disk (a bare filesystem, booted with
``-kernel``) and the stand-in for OSWorld's image (:mod:`rayenv.desktop_vm.standin`: a whole disk booted
by its own GRUB, systemd, the guest server as ``user``), each measured for

* **reset of a used VM desktop**: ``Desktop.revert()`` by loading the golden snapshot (what
  ``reset()`` does now) vs by restarting the container and booting the VM (what OSWorld's docker
  provider, ARPO and the like do, and what ``snapshot_reset: false`` does), p50/p95;
* **a new VM desktop**: start from the golden state (a copy of the snapshotted overlay, ``-loadvm``)
  vs a cold boot, to the first screenshot; plus the one-off cost of making the golden state;
* **desktop-lite reset**: ``reset(task)`` right after boot and in steady state, with the evaluator
  import joined at boot (now) and not (before: the first reset paid for it).

Results: ``bench/results/reset.{md,json,png}``.

    .venv/bin/python bench/reset.py [--snapshot-resets 20] [--restarts 3] [--starts 3] [--disks vm standin]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from measure import seconds_chart, summary, timed

from rayenv.desktop_vm.build import build_vm_desktop
from rayenv.desktop_vm.standin import build_standin
from rayenv.engine.kvm import kvm_status
from rayenv.env.desktop import Desktop
from rayenv.providers import DesktopSpec, Ownership
from rayenv.providers.golden import GoldenStore

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]
SCREEN = {"screen_width": 1280, "screen_height": 720}
DISK_NAMES = {"vm": "rayenv VM disk (bare ext4, -kernel)", "standin": "OSWorld stand-in (whole disk, GRUB, systemd)"}


def dirty(desktop: Desktop) -> None:
    """What an episode leaves behind: a file and a window."""
    desktop.step("import os, subprocess; open(os.path.expanduser('~/episode-file'), 'w').close(); "
                 "subprocess.Popen(['xterm'])", pause=0)


def vm_resets(spec: DesktopSpec, rounds: int, name: str) -> list[float]:
    desktop = Desktop(spec, Ownership(owner="bench-reset", env_name=name))
    try:
        desktop.start()
        times = []
        for _ in range(rounds):
            dirty(desktop)
            times.append(timed(desktop.revert))
            desktop.observe()
        return times
    finally:
        desktop.close()


def vm_starts(spec: DesktopSpec, rounds: int, name: str) -> list[float]:
    times = []
    for i in range(rounds):
        desktop = Desktop(spec, Ownership(owner="bench-reset", env_name=f"{name}-{i}"))
        try:
            times.append(timed(lambda: (desktop.start(), desktop.observe())))
        finally:
            desktop.close()
    return times


LITE_PROBE = """
import json, sys, time
from rayenv.env.desktop import Desktop
from rayenv.env.evaluation import TaskRunner
from rayenv.env.tasks import load_tasks
from rayenv.providers import DesktopSpec, Ownership
class NotAwaited:
    def join(self):
        pass

if sys.argv[1] == "before":  # the import starts at boot but nobody waits for it, as before
    start_import = TaskRunner.warm_up

    def warm_up_without_waiting():
        start_import()
        return NotAwaited()

    TaskRunner.warm_up = staticmethod(warm_up_without_waiting)
task = next(t for t in load_tasks(sys.argv[2]) if t["id"] == "mousepad-save-hello")
desktop = Desktop(DesktopSpec(provider="lite", screen_width=1280, screen_height=720), Ownership(owner="bench-reset", env_name="lite-" + sys.argv[1]))
began = time.perf_counter(); desktop.start(); boot = time.perf_counter() - began
times = []
for _ in range(6):
    began = time.perf_counter(); desktop.reset(task); times.append(time.perf_counter() - began)
    desktop.step("pyautogui.typewrite('x')", pause=0)
desktop.close()
print(json.dumps({"boot_s": boot, "first_reset_s": times[0], "later_resets_s": times[1:]}))
"""


def lite(mode: str) -> dict[str, Any]:
    """In a fresh process, so the evaluator stack is not imported yet (as on a new env actor)."""
    done = subprocess.run([sys.executable, "-c", LITE_PROBE, mode, str(REPO / "OSWorld" / "tasks")],
                          capture_output=True, text=True, check=True, cwd=REPO)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["later_reset_p50_s"] = statistics.median(result["later_resets_s"])
    return result


def vm_disk(image: str, qcow2: Path, args: argparse.Namespace, name: str) -> dict[str, Any]:
    """Both ways to reset and both ways to start one disk, its golden state made (and timed) in this run."""
    spec = DesktopSpec(provider="docker", docker_image=image, vm_path=str(qcow2), docker_memory="2G", docker_cpus=2,
                       boot_timeout=900, **SCREEN)
    booting = spec.model_copy(update={"snapshot_reset": False})
    store = GoldenStore()
    store.remove_unused(in_use=[])  # the golden state is made in this run, and timed
    result: dict[str, Any] = {"qcow2": str(qcow2)}
    result["golden_make_s"] = timed(lambda: vm_starts(spec, 1, f"{name}-golden"))  # makes it, starts from it once
    result["reset_snapshot"] = summary(vm_resets(spec, args.snapshot_resets, f"{name}-snap"))
    result["reset_restart"] = summary(vm_resets(booting, args.restarts, f"{name}-restart"))
    result["start_golden"] = summary(vm_starts(spec, args.starts, f"{name}-from-golden"))
    result["start_cold"] = summary(vm_starts(booting, args.starts, f"{name}-cold"))
    store.remove_unused(in_use=[])
    result["ratios"] = {"reset_restart_over_snapshot": result["reset_restart"]["p50_s"] / result["reset_snapshot"]["p50_s"],
                        "start_cold_over_golden": result["start_cold"]["p50_s"] / result["start_golden"]["p50_s"]}
    return result


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")

    bars = []
    for key, disk in results["disks"].items():
        bars += [(f"{key}: reset by snapshot", disk["reset_snapshot"]["p50_s"], "#2e7d32"),
                 (f"{key}: reset by restart", disk["reset_restart"]["p50_s"], "#c62828"),
                 (f"{key}: new from golden", disk["start_golden"]["p50_s"], "#2e7d32"),
                 (f"{key}: new by cold boot", disk["start_cold"]["p50_s"], "#c62828")]
    if "lite_now" in results:
        bars += [("lite 1st reset before", results["lite_before"]["first_reset_s"], "#c62828"),
                 ("lite 1st reset now", results["lite_now"]["first_reset_s"], "#2e7d32")]
    seconds_chart(bars, "VM desktop reset and start per disk (TCG, 2 cores) and desktop-lite reset", path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--snapshot-resets", type=int, default=20)
    parser.add_argument("--restarts", type=int, default=3, help="each is a full VM boot")
    parser.add_argument("--starts", type=int, default=3, help="new desktops per way of starting")
    parser.add_argument("--disks", nargs="+", choices=sorted(DISK_NAMES), default=["vm", "standin"])
    parser.add_argument("--no-lite", action="store_true", help="skip the desktop-lite part")
    args = parser.parse_args()
    vm = build_vm_desktop()
    kvm = kvm_status(vm.image)
    disks = {"vm": lambda: vm.qcow2, "standin": build_standin}
    results: dict[str, Any] = {"image": vm.image, "kvm": {"available": kvm.available, "message": kvm.message}}
    if not args.no_lite:  # first: minutes, where the VM disks take half an hour
        results["lite_before"], results["lite_now"] = lite("before"), lite("now")
        results["lite_first_reset_before_over_now"] = (results["lite_before"]["first_reset_s"]
                                                       / results["lite_now"]["first_reset_s"])
    results["disks"] = {key: vm_disk(vm.image, disks[key](), args, key) for key in args.disks}
    results["load_average"] = os.getloadavg()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "reset.json").write_text(json.dumps(results, indent=2))
    plot(results, RESULTS / "reset.png")
    accelerator = "KVM" if kvm.available else "TCG (software emulation)"
    lines = ["# Reset: VM snapshot vs restart, new desktop: golden state vs cold boot", "",
             f"`{vm.image}`, 2 GB RAM, 2 vCPUs, 1280x720, {accelerator}, on a 2-core host. One run of "
             f"`bench/reset.py`; load average (1, 5, 15 min) at its end: "
             f"{', '.join(f'{x:.1f}' for x in results['load_average'])}.", ""]
    for key, r in results["disks"].items():
        ratio = r["ratios"]
        lines += [f"## {DISK_NAMES[key]}", "", "| what | p50 s | p95 s | n |", "| --- | ---: | ---: | ---: |"]
        for label, part in (("reset a used VM desktop: load its snapshot", "reset_snapshot"),
                            ("reset a used VM desktop: restart container, boot VM", "reset_restart"),
                            ("new VM desktop to first screenshot: from the golden state", "start_golden"),
                            ("new VM desktop to first screenshot: cold boot", "start_cold")):
            lines.append(f"| {label} | {r[part]['p50_s']:.2f} | {r[part]['p95_s']:.2f} | {r[part]['n']} |")
        lines += ["", f"- snapshot reset is **{ratio['reset_restart_over_snapshot']:.0f}x** faster than a restart "
                      f"(p50 {r['reset_snapshot']['p50_s']:.2f} s vs {r['reset_restart']['p50_s']:.1f} s)",
                  f"- a new desktop starts **{ratio['start_cold_over_golden']:.1f}x** faster from the golden state",
                  f"- making the golden state (one boot + settle + `savevm`, then the first start from it), once per "
                  f"VM shape per host: {r['golden_make_s']:.1f} s", ""]
    if "lite_now" in results:
        lines += ["## desktop-lite", "", "`reset(task)` of `mousepad-save-hello`, which restarts the container and "
                  "runs the task's setup:", "", "| | boot s | first reset s | later resets p50 s |",
                  "| --- | ---: | ---: | ---: |"]
        for label, key in (("before: evaluator import not awaited at boot", "lite_before"),
                           ("now: import runs beside the boot, joined there", "lite_now")):
            r = results[key]
            lines.append(f"| {label} | {r['boot_s']:.2f} | {r['first_reset_s']:.2f} | {r['later_reset_p50_s']:.2f} |")
        lines.append("")
    lines += ["![reset](reset.png)"]
    (RESULTS / "reset.md").write_text("\n".join(lines) + "\n")
    print((RESULTS / "reset.md").read_text())


if __name__ == "__main__":
    main()
