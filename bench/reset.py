"""What a reset costs a trainer: every way a VM desktop resets and starts side by side, and desktop-lite's reset.

One run, one VM shape (rayenv's own VM disk, 2 GB, 2 vCPUs, 1920x1080, TCG here unless KVM boots a kernel):

* **reset of a used desktop** as a trainer waits for it, ``Desktop.reset()`` with its 1920x1080 observation, and
  the revert alone (``Desktop.revert``), for: a clone of the template with its warm spare (the spare swapped in),
  a clone without (``warm_spare: false``: a fresh QEMU loads the template), ``loadvm`` of the golden snapshot (the
  template's RAM file removed: the fallback), and a restart of the container (``snapshot_reset: false``). Between
  resets the bench waits for the spare as a longer episode would (``spare_wait``: how long it took to load), and
  after each reset the wait a step sent at once would have for the guest's clock, set in the background (``settle``);
* **a new desktop** to its first screenshot: adopting a host spare (``host_spare``: one started, warmed, paused
  desktop of the shape kept per host), from the template, from the snapshot, by a cold boot;
* **memory per desktop** with 8 template desktops of the shape running: the PSS of every QEMU in each container
  (its warm spare included; pages shared with the template file and the other clones count once, split among
  them), against one ``loadvm`` desktop's; plus the template's RAM file in tmpfs, paid once per shape and host;
* **fork** of a used desktop into 3 (``save_fork``, then 3 ``load_fork`` at once: what ``EnvPool.fork`` runs);
* **desktop-lite reset**: ``reset(task)`` of a used desktop, restarted per reset vs swapped to its warm spare
  (``warm_spare: true``); ``--lite-only`` measures just this part and puts it beside the VM results already there.

Results: ``bench/results/reset.{md,json,png}``.

    .venv/bin/python bench/reset.py [--resets 20] [--restarts 3] [--starts 3] [--clones 8] [--forks 3] [--no-lite | --lite-only | --fork-only]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from measure import seconds_chart, summary, timed

from rayenv.desktop_lite.build import build_image
from rayenv.desktop_vm.build import build_vm_desktop
from rayenv.engine.containers import client, owned, remove
from rayenv.engine.kvm import kvm_status
from rayenv.env.desktop import Desktop
from rayenv.providers import DesktopSpec, Ownership
from rayenv.providers.docker import FORK_STATE
from rayenv.providers.golden import RAM_FILE, GoldenStore
from rayenv.providers.host_spare import LABEL_SPARE
from rayenv.waiting import WaitTimeout, wait_until

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]
OWNER = "bench-reset"
#: How long a spare may take to load before the bench gives up waiting (the reset then falls back, and says so).
SPARE_TIMEOUT = 60.0


def dirty(desktop: Desktop) -> None:
    """What an episode leaves behind: a file, a window, 64 MiB of written RAM."""
    desktop.step("import os, subprocess; open(os.path.expanduser('~/episode-file'), 'w').close(); "
                 "subprocess.Popen(['xterm']); subprocess.run('head -c 64M /dev/urandom > /dev/shm/episode', shell=True)",
                 pause=0)


def desktop(spec: DesktopSpec, name: str) -> Desktop:
    return Desktop(spec, Ownership(owner=OWNER, env_name=name))


def wait_for_spare(one: Desktop) -> float:
    """Seconds until the desktop's warm spare is loaded (episode time: a reset without it falls back, slower)."""
    try:
        return wait_until(one.provider.spare_ready, SPARE_TIMEOUT, interval=0.05, what="the warm spare")
    except WaitTimeout:
        return SPARE_TIMEOUT


def resets(spec: DesktopSpec, rounds: int, name: str) -> dict[str, Any]:
    """``rounds`` resets of a used desktop: half timed as revert alone, half as ``reset()`` with its observation;
    before each, the wait for the desktop's warm spare (where it keeps one) and whether it was there."""
    used = desktop(spec, name)
    try:
        used.start()
        path = used.provider.describe().get("reset_path", "restart")
        revert, reset, spare_waits, settles, swapped = [], [], [], [], 0
        for index in range(rounds):
            dirty(used)
            if spec.warm_spare is not False and path == "template":
                spare_waits.append(wait_for_spare(used))
                swapped += used.provider.spare_ready()
            if index % 2:
                reset.append(timed(lambda: used.reset(None)))
            else:
                revert.append(timed(used.revert))
                used.observe()
            settles.append(timed(used.provider.settle))  # what a step sent at once would wait for first
        result = {"path": path, "revert": summary(revert), "reset_observed": summary(reset), "settle": summary(settles)}
        if spare_waits:
            result.update(spare_wait=summary(spare_waits), spare_ready_at_reset=f"{swapped}/{rounds}")
        return result
    finally:
        used.close()


def starts(spec: DesktopSpec, rounds: int, name: str) -> dict[str, Any]:
    times, path, adopted = [], None, 0
    for index in range(rounds):
        new = desktop(spec, f"{name}-{index}")
        try:
            times.append(timed(lambda: (new.start(), new.observe())))
            path = new.provider.describe().get("reset_path", "restart")
            adopted += new.provider.describe().get("started_as") == "host spare"
        finally:
            new.close()
    return {"path": path, "adopted": adopted, **summary(times)}


def adopted_starts(spec: DesktopSpec, rounds: int, name: str) -> dict[str, Any]:
    """New desktops of a pool with ``host_spare``: each adopts the host spare the one before it made (a desktop
    closing waits for the spare it is making); an untimed first desktop makes the first. The last spare is
    removed after, as the pool's shutdown would."""
    first = desktop(spec, f"{name}-maker")
    try:
        first.start()
    finally:
        first.close()
    try:
        return starts(spec, rounds, name)
    finally:
        for container in owned(OWNER):  # with its work and screen directories
            if LABEL_SPARE in container.labels:
                remove(container)


def qemu_pss_mib(container_name: str) -> float:
    """The PSS of every QEMU in a container (the episode's and its warm spare; host pids from ``docker top``)."""
    top = client().containers.get(container_name).top(ps_args="-o pid,args")
    total = 0.0
    for pid in (int(row[0]) for row in top["Processes"] if row[1].startswith("qemu-system")):
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
        total += next(int(line.split()[1]) for line in rollup if line.startswith("Pss:")) / 1024
    return total


def memory(spec: DesktopSpec, clones: int, name: str) -> dict[str, Any]:
    """PSS per QEMU with ``clones`` desktops of the shape running, each used once (an episode's writes)."""
    running = [desktop(spec, f"{name}-{index}") for index in range(clones)]
    try:
        for one in running:
            one.start()
            dirty(one)
        for one in running:  # each container's warm spare counts too, once it is there
            if spec.warm_spare is not False and one.provider.describe().get("reset_path") == "template":
                wait_for_spare(one)
        names = [one.provider.describe()["container_name"] for one in running]
        pss = [qemu_pss_mib(container) for container in names]
        return {"path": running[0].provider.describe().get("reset_path", "restart"), "desktops": clones,
                "pss_mib": [round(value, 1) for value in pss], "pss_p50_mib": statistics.median(pss)}
    finally:
        for one in running:
            one.close()


def forks(spec: DesktopSpec, rounds: int, name: str) -> dict[str, Any]:
    """A used desktop forked into 3, ``rounds`` times, as ``EnvPool.fork`` does it: its save, then the three
    branches' loads at once (threads). Each load returns once its branch runs; ``ready`` adds the wait for every
    branch's guest to answer (its clock set), what the first step sent to a branch waits for."""
    family = [desktop(spec, f"{name}-{index}") for index in range(4)]
    saves, loads, totals, ready, state_mib = [], [], [], [], []
    try:
        for one in family:
            one.start()
        parent, branches = family[0], family[1:]
        with ThreadPoolExecutor(max_workers=len(branches)) as loading:
            for _ in range(rounds):
                dirty(parent)
                for one in family:  # the warm spares of the last round's branches: an episode's time
                    wait_for_spare(one)
                began = time.perf_counter()
                saved = parent.save_fork()
                saves.append(time.perf_counter() - began)
                loads += list(loading.map(lambda branch: timed(lambda: branch.load_fork(saved)), branches))
                totals.append(time.perf_counter() - began)
                for branch in branches:
                    branch.provider.settle()
                ready.append(time.perf_counter() - began)
                state_mib.append((Path(saved.directory) / FORK_STATE).stat().st_size / 2**20)
        return {"save": summary(saves), "load": summary(loads), "fork_into_3": summary(totals),
                "fork_into_3_ready": summary(ready), "state_mib_p50": statistics.median(state_mib)}
    finally:
        for one in family:
            one.close()


LITE_PROBE = """
import json, sys, time
from rayenv.env.desktop import Desktop
from rayenv.env.tasks import load_tasks
from rayenv.providers import DesktopSpec, Ownership
from rayenv.waiting import wait_until
spare = sys.argv[1] == "spare"
task = next(t for t in load_tasks(sys.argv[2]) if t["id"] == "mousepad-save-hello")
desktop = Desktop(DesktopSpec(provider="lite", warm_spare=spare), Ownership(owner="bench-reset", env_name="lite-" + sys.argv[1]))
began = time.perf_counter(); desktop.start(); boot = time.perf_counter() - began
reverts, resets, ready = [], [], 0
for _ in range(int(sys.argv[3])):
    desktop.step("pyautogui.typewrite('x')", pause=0)
    if spare:  # an episode takes seconds: the spare is up by its end
        ready += desktop.provider.describe().get("warm_spare") == "ready"
        wait_until(lambda: desktop.provider.describe().get("warm_spare") == "ready", 120, interval=0.05, what="the spare")
    began = time.perf_counter(); desktop.revert(); reverted = time.perf_counter()
    desktop.reset(task); done = time.perf_counter()
    reverts.append(reverted - began); resets.append(done - began)
desktop.close()
print(json.dumps({"boot_s": boot, "revert_s": reverts, "reset_task_s": resets, "spare_ready_at_step": ready}))
"""


def lite(mode: str, cycles: int) -> dict[str, Any]:
    """One lite desktop (1920x1080) in a fresh process: ``reset(task)`` of a used desktop, ``cycles`` times."""
    done = subprocess.run([sys.executable, "-c", LITE_PROBE, mode, str(REPO / "OSWorld" / "tasks"), str(cycles)],
                          capture_output=True, text=True, check=True, cwd=REPO)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["revert"], result["reset_task"] = summary(result.pop("revert_s")), summary(result.pop("reset_task_s"))
    return result


def lite_part(cycles: int) -> dict[str, Any]:
    build_image()  # this checkout's desktop-lite image (cached when it is there)
    return {"restart": lite("restart", cycles), "spare": lite("spare", cycles), "load_average": os.getloadavg()}


WAYS = {"host_spare": ("host spare adopted", "#004d40"), "spare": ("template + warm spare", "#1b5e20"),
        "template": ("template, no spare", "#66bb6a"), "loadvm": ("loadvm", "#f9a825"), "restart": ("restart", "#c62828")}


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")

    bars = []
    for what, pick in (("reset (observed)", lambda way: results["reset"][way]["reset_observed"]["p50_s"]),
                       ("revert alone", lambda way: results["reset"][way]["revert"]["p50_s"]),
                       ("new desktop", lambda way: results["start"][way]["p50_s"])):
        part = "start" if what == "new desktop" else "reset"
        bars += [(f"{what}, {WAYS[way][0]}", pick(way), WAYS[way][1]) for way in WAYS if way in results[part]]
    if "fork" in results:
        bars.append(("fork into 3", results["fork"]["fork_into_3"]["p50_s"], "#1565c0"))
    if "lite" in results:
        bars += [("lite: reset(task), restart", results["lite"]["restart"]["reset_task"]["p50_s"], "#c62828"),
                 ("lite: reset(task), warm spare", results["lite"]["spare"]["reset_task"]["p50_s"], "#2e7d32")]
    seconds_chart(bars, "VM desktop at 1920x1080 (TCG, 2 cores): every reset and start way; desktop-lite", path)


def report(results: dict[str, Any]) -> str:
    accelerator = "KVM" if results["kvm"]["available"] else "TCG (software emulation)"
    lines = ["# Reset: every way side by side", "",
             f"`{results['image']}`, 2 GB RAM, 2 vCPUs, 1920x1080, {accelerator}, on a 2-core host shared with other "
             f"work. One run of `bench/reset.py`; load average (1, 5, 15 min) at its end: "
             f"{', '.join(f'{x:.1f}' for x in results['load_average'])}.", "",
             f"Making the golden state (boot, settle, `savevm` + device state, then the first start from it): "
             f"{results['golden_make_s']:.1f} s; its RAM file in tmpfs: {results['ram_file_mib']:.0f} MiB "
             "(once per shape and host).", "",
             "| what | " + " | ".join(f"{WAYS[way][0]} p50 s (n)" for way in WAYS) + " |",
             "| --- |" + " ---: |" * len(WAYS)]

    def row(label: str, part: str, pick) -> str:
        cells = [f"{pick(results[part][way])['p50_s']:.2f} ({pick(results[part][way])['n']})"
                 if way in results[part] else "-" for way in WAYS]
        return f"| {label} | " + " | ".join(cells) + " |"

    lines += [row("reset as a trainer sees it (`reset()` + 1920x1080 observation)", "reset",
                  lambda r: r["reset_observed"]),
              row("revert alone", "reset", lambda r: r["revert"]),
              row("new desktop to first screenshot", "start", lambda r: r)]
    spare = results["reset"].get("spare", {})
    if "spare_wait" in spare:
        lines += ["", f"Warm spare: loaded {spare['spare_wait']['p50_s']:.2f} s p50 after the step that ended the "
                      f"previous episode (p95 {spare['spare_wait']['p95_s']:.2f} s; the bench waits for it as a longer "
                      f"episode would); there at {spare['spare_ready_at_reset']} resets. After a swap the reset returns "
                      f"while the guest's clock is set; a step sent at once waits for that first: "
                      f"{spare['settle']['p50_s']:.3f} s p50 (p95 {spare['settle']['p95_s']:.3f} s) after the reset "
                      f"returned (so `reset()` + that wait: {spare['reset_observed']['p50_s'] + spare['settle']['p50_s']:.2f} s)."]
    host = results["start"].get("host_spare")
    if host:
        lines += ["", f"Host spare: {host['adopted']} of {host['n']} new desktops adopted the paused desktop the one "
                      "before had made (`host_spare: true`; each closing desktop waits for the spare it is making), "
                      "and made the next in the background."]
    mem = results["memory"]
    lines += ["", f"Memory (PSS of every QEMU in a container, after one episode's writes): "
                  f"{mem['spare']['desktops']} template desktops with their warm spares p50 "
                  f"{mem['spare']['pss_p50_mib']:.0f} MiB each ({mem['spare']['pss_mib']}); one loadvm desktop "
                  f"{mem['loadvm']['pss_p50_mib']:.0f} MiB."]
    if "fork" in results:
        fork = results["fork"]
        lines += ["", f"Fork into 3 (as `EnvPool.fork`: the save, then the three loads at once): "
                      f"{fork['fork_into_3']['p50_s']:.2f} s p50 (p95 {fork['fork_into_3']['p95_s']:.2f} s); save "
                      f"{fork['save']['p50_s']:.2f} s, each load {fork['load']['p50_s']:.2f} s; every branch's guest "
                      f"answering (its clock set, what a first step waits for) {fork['fork_into_3_ready']['p50_s']:.2f} s. "
                      f"The saved state: {fork['state_mib_p50']:.0f} MiB (devices and the RAM the parent wrote)."
                      + (f" Measured by `bench/reset.py --fork-only` after the VM run, load average "
                         f"{', '.join(f'{x:.1f}' for x in fork['load_average'])}." if fork.get("separate") else "")]
    if "lite" in results:
        part = results["lite"]
        lines += ["", "## desktop-lite", "", "`reset(task)` of `mousepad-save-hello` on a used 1920x1080 desktop (the revert, "
                  "the task's setup: a command, mousepad launched, its window activated; the observation). Goal: "
                  "≤ 0.5 s." + (f" Measured by `bench/reset.py --lite-only` after the VM run, load average "
                                 f"{', '.join(f'{x:.1f}' for x in part['load_average'])}." if part.get("separate") else ""),
                  "", "| lite desktop | boot s | revert p50 s | reset(task) p50 s | p95 s | n |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for label, key in (("restarted per reset", "restart"), ("warm spare (`warm_spare: true`)", "spare")):
            r = part[key]
            lines.append(f"| {label} | {r['boot_s']:.2f} | {r['revert']['p50_s']:.3f} | {r['reset_task']['p50_s']:.2f} | "
                         f"{r['reset_task']['p95_s']:.2f} | {r['reset_task']['n']} |")
        lines += ["", f"The spare was up when the episode's step ended at {part['spare']['spare_ready_at_step']} of "
                      f"{part['spare']['reset_task']['n']} resets (the bench then waits for it, as a longer episode would)."]
    lines += ["", "Against issue 20's goals, and why where one is missed: [reset-goals.md](reset-goals.md) (by hand, "
                  "after this run)."]
    return "\n".join(lines + ["", "![reset](reset.png)", ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resets", type=int, default=20, help="per template way (loadvm: half)")
    parser.add_argument("--restarts", type=int, default=3, help="each is a full VM boot (0: skip the restart way)")
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--clones", type=int, default=8)
    parser.add_argument("--forks", type=int, default=3)
    parser.add_argument("--lite-cycles", type=int, default=10, help="lite resets per way")
    parser.add_argument("--no-lite", action="store_true", help="skip the desktop-lite part")
    parser.add_argument("--lite-only", action="store_true",
                        help="measure only desktop-lite and put it beside the VM results already in reset.json")
    parser.add_argument("--fork-only", action="store_true",
                        help="measure only the fork and put it beside the other results already in reset.json")
    args = parser.parse_args()
    if args.lite_only or args.fork_only:
        results = json.loads((RESULTS / "reset.json").read_text())
        if args.lite_only:
            results["lite"] = {**lite_part(args.lite_cycles), "separate": True}
        else:
            spec, store = vm_setup()
            starts(spec, 1, "golden")
            results["fork"] = {**forks(spec, args.forks, "fork"), "separate": True, "load_average": os.getloadavg()}
            for directory in (store.root, store.ram_root):
                shutil.rmtree(directory, ignore_errors=True)
        write(results)
        return
    spec, store = vm_setup()
    no_spare = spec.model_copy(update={"warm_spare": False})
    booting = spec.model_copy(update={"snapshot_reset": False})
    kvm = kvm_status(spec.docker_image)
    results: dict[str, Any] = {"image": spec.docker_image, "kvm": {"available": kvm.available, "message": kvm.message}}
    if not args.no_lite:  # first: minutes, where the VM ways take most of an hour
        results["lite"] = lite_part(args.lite_cycles)
    results["golden_make_s"] = timed(lambda: starts(spec, 1, "golden"))
    digest = next(p.name for p in store.ram_root.iterdir() if p.is_dir() and not p.name.endswith(".making"))
    ram_file = store.ram_directory(digest) / RAM_FILE
    results["ram_file_mib"] = int(subprocess.run(["du", "-k", str(ram_file)], capture_output=True, text=True,
                                                 check=True).stdout.split()[0]) / 1024
    results["reset"], results["start"], results["memory"] = {}, {}, {}
    results["reset"]["spare"] = resets(spec, args.resets, "reset-spare")
    results["reset"]["template"] = resets(no_spare, args.resets, "reset-template")
    results["start"]["spare"] = starts(spec, args.starts, "start-template")
    results["start"]["host_spare"] = adopted_starts(spec.model_copy(update={"host_spare": True}), args.starts,
                                                    "start-host-spare")
    results["memory"]["spare"] = memory(spec, args.clones, "memory-template")
    if args.forks:
        results["fork"] = forks(spec, args.forks, "fork")
    ram_file.unlink()  # from here on the golden snapshot is the way: the fallback
    results["reset"]["loadvm"] = resets(spec, max(args.resets // 2, 2), "reset-loadvm")
    results["start"]["loadvm"] = starts(spec, args.starts, "start-loadvm")
    results["memory"]["loadvm"] = memory(spec, 1, "memory-loadvm")
    if args.restarts:
        results["reset"]["restart"] = resets(booting, args.restarts * 2, "reset-restart")
        results["start"]["restart"] = starts(booting, args.restarts, "start-restart")
    for directory in (store.root, store.ram_root):
        shutil.rmtree(directory, ignore_errors=True)
    results["load_average"] = os.getloadavg()
    write(results)


def vm_setup() -> tuple[DesktopSpec, GoldenStore]:
    """The VM shape measured, and a golden store of its own: made (and timed) in this run, removed after it,
    other desktops' states untouched."""
    vm = build_vm_desktop()
    os.environ["RAYENV_GOLDEN_DIR"] = str(Path.home() / ".cache" / "rayenv" / "bench-reset-golden")
    os.environ["RAYENV_GOLDEN_RAM_DIR"] = "/dev/shm/rayenv-bench-reset"
    store = GoldenStore()
    for directory in (store.root, store.ram_root):
        shutil.rmtree(directory, ignore_errors=True)
    spec = DesktopSpec(provider="docker", docker_image=vm.image, vm_path=str(vm.qcow2), docker_memory="2G",
                       docker_cpus=2, boot_timeout=900, screen_width=1920, screen_height=1080)
    return spec, store


def write(results: dict[str, Any]) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "reset.json").write_text(json.dumps(results, indent=2))
    plot(results, RESULTS / "reset.png")
    (RESULTS / "reset.md").write_text(report(results))
    print((RESULTS / "reset.md").read_text())


if __name__ == "__main__":
    main()
