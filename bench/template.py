"""Copy-on-write VM desktops from a template vs today's ``loadvm`` snapshot vs a restart (issue 20).

One run, one VM shape (rayenv's own VM disk, 2 GB, 2 vCPUs, 1920x1080, TCG here unless KVM boots a
kernel), every way side by side:

* **reset of a used desktop** as a trainer waits for it, ``Desktop.reset()`` with its observation (a
  1920x1080 screenshot through the guest), and the revert alone (``Desktop.revert``): a fresh QEMU from
  the template, ``loadvm`` of the golden snapshot (the template's RAM file removed: the fallback), and a
  restart of the container (``snapshot_reset: false``);
* **a new desktop** to its first screenshot: from the template, from the snapshot, by a cold boot;
* **memory per desktop** with 8 template desktops of the shape running: the PSS of each QEMU (pages it
  shares with the template file and the other clones count once, split among them), against one
  ``loadvm`` desktop's; plus the template's RAM file in tmpfs, paid once per shape and host;
* **fork** of a used desktop into 3 (``save_fork`` + 3 ``load_fork``, what ``EnvPool.fork`` runs).

Results: ``bench/results/template.{md,json,png}``.

    .venv/bin/python bench/template.py [--resets 20] [--restarts 2] [--starts 3] [--clones 8] [--forks 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from measure import seconds_chart, summary, timed

from rayenv.desktop_vm.build import build_vm_desktop
from rayenv.engine.containers import client
from rayenv.engine.kvm import kvm_status
from rayenv.env.desktop import Desktop
from rayenv.providers import DesktopSpec, Ownership
from rayenv.providers.golden import RAM_FILE, GoldenStore

RESULTS = Path(__file__).resolve().parent / "results"
OWNER = "bench-template"


def dirty(desktop: Desktop) -> None:
    """What an episode leaves behind: a file, a window, 64 MiB of written RAM."""
    desktop.step("import os, subprocess; open(os.path.expanduser('~/episode-file'), 'w').close(); "
                 "subprocess.Popen(['xterm']); subprocess.run('head -c 64M /dev/urandom > /dev/shm/episode', shell=True)",
                 pause=0)


def desktop(spec: DesktopSpec, name: str) -> Desktop:
    return Desktop(spec, Ownership(owner=OWNER, env_name=name))


def resets(spec: DesktopSpec, rounds: int, name: str) -> dict[str, Any]:
    """``rounds`` resets of a used desktop: half timed as revert alone, half as ``reset()`` with its observation."""
    used = desktop(spec, name)
    try:
        used.start()
        path = used.provider.describe().get("reset_path", "restart")
        revert, reset = [], []
        for index in range(rounds):
            dirty(used)
            if index % 2:
                reset.append(timed(lambda: used.reset(None)))
            else:
                revert.append(timed(used.revert))
                used.observe()
        return {"path": path, "revert": summary(revert), "reset_observed": summary(reset)}
    finally:
        used.close()


def starts(spec: DesktopSpec, rounds: int, name: str) -> dict[str, Any]:
    times, path = [], None
    for index in range(rounds):
        new = desktop(spec, f"{name}-{index}")
        try:
            times.append(timed(lambda: (new.start(), new.observe())))
            path = new.provider.describe().get("reset_path", "restart")
        finally:
            new.close()
    return {"path": path, **summary(times)}


def qemu_pss_mib(container_name: str) -> float:
    """The PSS of the QEMU in a container (host pid from ``docker top``)."""
    top = client().containers.get(container_name).top(ps_args="-o pid,args")
    pid = next(int(row[0]) for row in top["Processes"] if "qemu-system" in row[1])
    rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    return next(int(line.split()[1]) for line in rollup if line.startswith("Pss:")) / 1024


def memory(spec: DesktopSpec, clones: int, name: str) -> dict[str, Any]:
    """PSS per QEMU with ``clones`` desktops of the shape running, each used once (an episode's writes)."""
    running = [desktop(spec, f"{name}-{index}") for index in range(clones)]
    try:
        for one in running:
            one.start()
            dirty(one)
        names = [one.provider.describe()["container_name"] for one in running]
        pss = [qemu_pss_mib(container) for container in names]
        return {"path": running[0].provider.describe().get("reset_path", "restart"), "desktops": clones,
                "pss_mib": [round(value, 1) for value in pss], "pss_p50_mib": statistics.median(pss)}
    finally:
        for one in running:
            one.close()


def forks(spec: DesktopSpec, rounds: int, name: str) -> dict[str, Any]:
    """A used desktop forked into 3, ``rounds`` times: its save, then the branches' loads one after another."""
    family = [desktop(spec, f"{name}-{index}") for index in range(4)]
    saves, loads, totals = [], [], []
    try:
        for one in family:
            one.start()
        parent, branches = family[0], family[1:]
        for _ in range(rounds):
            dirty(parent)
            began = time.perf_counter()
            saved = parent.save_fork()
            saves.append(time.perf_counter() - began)
            for branch in branches:
                loads.append(timed(lambda: branch.load_fork(saved)))
            totals.append(time.perf_counter() - began)
        return {"save": summary(saves), "load": summary(loads), "fork_into_3_sequential": summary(totals)}
    finally:
        for one in family:
            one.close()


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")

    colors = {"template": "#2e7d32", "loadvm": "#f9a825", "restart": "#c62828"}
    ways = [way for way in colors if way in results["reset"]]
    bars = []
    for way in ways:
        bars.append((f"reset (observed), {way}", results["reset"][way]["reset_observed"]["p50_s"], colors[way]))
    for way in ways:
        bars.append((f"revert alone, {way}", results["reset"][way]["revert"]["p50_s"], colors[way]))
    for way in ways:
        bars.append((f"new desktop, {way}", results["start"][way]["p50_s"], colors[way]))
    if "fork" in results:
        bars.append(("fork into 3 (sequential loads)", results["fork"]["fork_into_3_sequential"]["p50_s"], "#1565c0"))
    seconds_chart(bars, "VM desktop at 1920x1080: template vs loadvm vs restart (TCG, 2 cores)", path)


def report(results: dict[str, Any]) -> str:
    accelerator = "KVM" if results["kvm"]["available"] else "TCG (software emulation)"
    ways = [way for way in ("template", "loadvm", "restart") if way in results["reset"]]
    lines = ["# Copy-on-write VM desktops: template vs loadvm vs restart", "",
             f"`{results['image']}`, 2 GB RAM, 2 vCPUs, 1920x1080, {accelerator}, on a 2-core host shared with other "
             f"work. One run of `bench/template.py`; load average (1, 5, 15 min) at its end: "
             f"{', '.join(f'{x:.1f}' for x in results['load_average'])}.", "",
             f"Making the golden state (boot, settle, `savevm` + device state, then the first start from it): "
             f"{results['golden_make_s']:.1f} s; its RAM file in tmpfs: {results['ram_file_mib']:.0f} MiB "
             "(once per shape and host).", "",
             "| what | " + " | ".join(f"{way} p50 s" for way in ways) + " |", "| --- |" + " ---: |" * len(ways)]
    for label, pick in (("reset as a trainer sees it (revert + 1920x1080 observation)",
                         lambda way: results["reset"][way]["reset_observed"]["p50_s"]),
                        ("revert alone", lambda way: results["reset"][way]["revert"]["p50_s"]),
                        ("new desktop to first screenshot", lambda way: results["start"][way]["p50_s"])):
        lines.append(f"| {label} | " + " | ".join(f"{pick(way):.2f}" for way in ways) + " |")
    mem = results["memory"]
    lines += ["", f"Memory (PSS of QEMU, after one episode's writes): {mem['template']['desktops']} template desktops "
                  f"p50 {mem['template']['pss_p50_mib']:.0f} MiB each ({mem['template']['pss_mib']}); one loadvm "
                  f"desktop {mem['loadvm']['pss_p50_mib']:.0f} MiB."]
    if "fork" in results:
        fork = results["fork"]
        lines += ["", f"Fork into 3: save {fork['save']['p50_s']:.2f} s, each branch's load {fork['load']['p50_s']:.2f} s, "
                      f"fork into 3 with the loads one after another {fork['fork_into_3_sequential']['p50_s']:.2f} s "
                      "(`EnvPool.fork` runs the loads in parallel)."]
    return "\n".join(lines + ["", "![template](template.png)", ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resets", type=int, default=20)
    parser.add_argument("--restarts", type=int, default=2, help="each is a full VM boot (0: skip the restart way)")
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--clones", type=int, default=8)
    parser.add_argument("--forks", type=int, default=3)
    args = parser.parse_args()
    vm = build_vm_desktop()
    kvm = kvm_status(vm.image)
    spec = DesktopSpec(provider="docker", docker_image=vm.image, vm_path=str(vm.qcow2), docker_memory="2G",
                       docker_cpus=2, boot_timeout=900, screen_width=1920, screen_height=1080)
    booting = spec.model_copy(update={"snapshot_reset": False})
    # a golden store of its own: made (and timed) in this run, removed after it, other desktops' states untouched
    os.environ["RAYENV_GOLDEN_DIR"] = str(Path.home() / ".cache" / "rayenv" / "bench-template-golden")
    os.environ["RAYENV_GOLDEN_RAM_DIR"] = "/dev/shm/rayenv-bench-template"
    store = GoldenStore()
    for directory in (store.root, store.ram_root):
        shutil.rmtree(directory, ignore_errors=True)
    results: dict[str, Any] = {"image": vm.image, "kvm": {"available": kvm.available, "message": kvm.message}}
    results["golden_make_s"] = timed(lambda: starts(spec, 1, "golden"))
    digest = next(p.name for p in store.ram_root.iterdir() if p.is_dir() and not p.name.endswith(".making"))
    ram_file = store.ram_directory(digest) / RAM_FILE
    results["ram_file_mib"] = int(subprocess.run(["du", "-k", str(ram_file)], capture_output=True, text=True,
                                                 check=True).stdout.split()[0]) / 1024
    results["reset"], results["start"], results["memory"] = {}, {}, {}
    results["reset"]["template"] = resets(spec, args.resets, "reset-template")
    results["start"]["template"] = starts(spec, args.starts, "start-template")
    results["memory"]["template"] = memory(spec, args.clones, "memory-template")
    if args.forks:
        results["fork"] = forks(spec, args.forks, "fork")
    ram_file.unlink()  # from here on the golden snapshot is the way: today's path
    results["reset"]["loadvm"] = resets(spec, max(args.resets // 2, 2), "reset-loadvm")
    results["start"]["loadvm"] = starts(spec, args.starts, "start-loadvm")
    results["memory"]["loadvm"] = memory(spec, 1, "memory-loadvm")
    if args.restarts:
        results["reset"]["restart"] = resets(booting, args.restarts * 2, "reset-restart")
        results["start"]["restart"] = starts(booting, args.restarts, "start-restart")
    for directory in (store.root, store.ram_root):
        shutil.rmtree(directory, ignore_errors=True)
    results["load_average"] = os.getloadavg()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "template.json").write_text(json.dumps(results, indent=2))
    plot(results, RESULTS / "template.png")
    (RESULTS / "template.md").write_text(report(results))
    print((RESULTS / "template.md").read_text())


if __name__ == "__main__":
    main()
