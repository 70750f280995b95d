"""What does a pool cost as it grows to a fleet: one manager, 128 to thousands of slots?

The desktops are simulated (:mod:`rayenv.tools.simfleet`: a few actors per simulated env host answer
for many desktops each, with boot and revert times and occasional deaths); the pool's manager, its
events, leases, health rounds, status and gauge are the real ones, on the head of a local multi-node
Ray cluster (:mod:`rayenv.tools.localcluster`, one head plus ``--nodes`` env nodes). For each pool
size the bench measures:

* ``lease_release_per_s``: lease+release cycles per second with ``--lessees`` concurrent lessees
  (asyncio tasks of one driver calling ``acquire_async``/``release_async``, which coalesce what is
  pending on the loop into one manager call, :mod:`rayenv.pool.batching`; each release also makes the
  manager revert the desktop, as pools do by default), and the CPU time per cycle of the manager, of the
  lessees' driver and of the whole machine (where the cycle's cost goes);
  ``lease_release_per_s_processes``: the same lessees split over ``--lessee-processes`` lessee actors
  (as verl's agent-loop workers split rollouts), so each batches fewer;
* ``health_round_s``: one full health round (``check_health``: a ping to every desktop), median of 3;
* ``status_s``: ``EnvPool.status()`` as ``rayenv status`` asks it (the summary), median of 5, and the
  pickled size of the summary and of the status with every slot; ``status_cli_s``: the whole
  ``rayenv status`` command in a fresh process, which reads the manager's loopback status endpoint
  (``status_cli_path`` says so; :mod:`rayenv.pool.status_endpoint`), and ``status_cli_ray_s`` the same
  with ``--ray`` (Python start, ``import ray``, ``ray.init``: the path it falls back to);
* ``manager_rss_mib``: the manager process's resident memory after all of that; the history's length.

Results: ``bench/results/scale.{md,json,png}``. CPU heavy: run it once.

    .venv/bin/python bench/scale.py [--sizes 128 256 512 1024 2048] [--nodes 4] [--lessees 256] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pickle
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
_AUTH = Path(tempfile.mkdtemp(prefix="rayenv-bench-auth-")) / "auth_token"  # this run's own cluster token,
_AUTH.write_text(secrets.token_hex(32))  # set before Ray is imported (its core reads the mode once)
os.environ.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(_AUTH), "RAY_USAGE_STATS_ENABLED": "0"})

import psutil  # noqa: E402
import ray  # noqa: E402

from measure import percentile, timed_rayenv  # noqa: E402
from rayenv.pool.config import PoolConfig  # noqa: E402
from rayenv.pool.handle import HEAD_RESOURCE, EnvPool  # noqa: E402
from rayenv.pool.status_endpoint import PORT_ENV, free_status_block  # noqa: E402
from rayenv.tools.localcluster import ray_cluster  # noqa: E402
from rayenv.tools.simfleet import SimBehaviour, start_sim_fleet  # noqa: E402

NAMESPACE = "rayenv-bench"
RESULTS = REPO / "bench" / "results"
#: Desktops one simulated env host answers for at most (at least 16 hosts whatever the size).
DESKTOPS_PER_HOST = 64


async def lease_cycles(pool: EnvPool, lessees: int, seconds: float) -> tuple[list[float], float]:
    """``lessees`` tasks of this event loop leasing and releasing as fast as they can for ``seconds``: each
    cycle's latency, and the seconds it all took."""
    latencies: list[float] = []
    until = time.perf_counter() + seconds

    async def lessee() -> None:
        while time.perf_counter() < until:
            begun = time.perf_counter()
            lease = await pool.acquire_async(timeout=120)
            await pool.release_async(lease)
            latencies.append(time.perf_counter() - begun)

    started = time.perf_counter()
    await asyncio.gather(*(lessee() for _ in range(lessees)))
    return latencies, time.perf_counter() - started


@ray.remote(num_cpus=0)
class LesseeProcess:
    """One lessee process (as a verl AgentLoopWorker is) running its share of the lessees as coroutines."""

    async def run(self, pool: EnvPool, lessees: int, seconds: float) -> tuple[list[float], float]:
        return await lease_cycles(pool, lessees, seconds)


def cycle_stats(latencies: list[float], elapsed: float) -> dict[str, Any]:
    return {"cycles": len(latencies), "lease_release_per_s": round(len(latencies) / elapsed, 1),
            "cycle_p50_ms": round(1000 * statistics.median(latencies), 1),
            "cycle_p99_ms": round(1000 * percentile(latencies, 0.99), 1)}


def lease_and_release(pool: EnvPool, lessees: int, seconds: float) -> dict[str, Any]:
    return cycle_stats(*asyncio.run(lease_cycles(pool, lessees, seconds)))


def lease_and_release_in_processes(pool: EnvPool, lessees: int, processes: int, seconds: float) -> dict[str, Any]:
    """The same load split over ``processes`` lessee actors on the head: fewer acquires per process to batch."""
    actors = [LesseeProcess.options(resources={HEAD_RESOURCE: 0.001}).remote() for _ in range(processes)]
    try:
        ray.get([actor.run.remote(pool, 1, 0.5) for actor in actors])  # warm-up: the actors' connections
        runs = ray.get([actor.run.remote(pool, lessees // processes, seconds) for actor in actors])
    finally:
        for actor in actors:
            ray.kill(actor)
    latencies = [latency for run, _ in runs for latency in run]
    return cycle_stats(latencies, max(elapsed for _, elapsed in runs))


def timed(call: Any) -> tuple[float, Any]:
    begun = time.perf_counter()
    result = call()
    return time.perf_counter() - begun, result


def measure(size: int, node_ids: list[str], args: argparse.Namespace) -> dict[str, Any]:
    hosts = max(16, -(-size // DESKTOPS_PER_HOST))
    config = PoolConfig(name=f"scale-{size}", namespace=NAMESPACE, size=size, resource="rayenv_sim",
                        health_interval=3600, max_concurrent_boots=64)
    boot_s, fleet = timed(lambda: start_sim_fleet(config, node_ids, hosts, SimBehaviour()))
    manager = psutil.Process(ray.get(fleet.manager.pid.remote()))
    try:
        lease_and_release(fleet.pool, args.lessees, 2.0)  # warm-up: workers, connections
        driver, machine_before = psutil.Process(), psutil.cpu_times()
        cpu_before = sum(manager.cpu_times()[:2]), sum(driver.cpu_times()[:2]), machine_before.user + machine_before.system
        leases = lease_and_release(fleet.pool, args.lessees, args.seconds)
        machine_after = psutil.cpu_times()
        cpu_after = sum(manager.cpu_times()[:2]), sum(driver.cpu_times()[:2]), machine_after.user + machine_after.system
        cpu_per_cycle_ms = [1000 * (after - before) / max(leases["cycles"], 1)
                            for before, after in zip(cpu_before, cpu_after)]
        spread = lease_and_release_in_processes(fleet.pool, args.lessees, args.lessee_processes, args.seconds)
        rounds = [timed(lambda: ray.get(fleet.manager.check_health.remote(False)))[0] for _ in range(3)]
        statuses = [timed(lambda: fleet.pool.status(detail=False))[0] for _ in range(5)]
        summary, detail = fleet.pool.status(detail=False), fleet.pool.status()
        history = fleet.pool.history()
        row = {"slots": size, "nodes": len(node_ids) + 1, "env_nodes": len(node_ids), "sim_hosts": hosts,
               "lessees": args.lessees, "boot_s": round(boot_s, 2), **leases,
               "manager_cpu_ms_per_cycle": round(cpu_per_cycle_ms[0], 3),
               "driver_cpu_ms_per_cycle": round(cpu_per_cycle_ms[1], 3),
               "machine_cpu_ms_per_cycle": round(cpu_per_cycle_ms[2], 3),
               "lessee_processes": args.lessee_processes,
               "lease_release_per_s_processes": spread["lease_release_per_s"],
               "cycle_p50_ms_processes": spread["cycle_p50_ms"],
               "health_round_s": round(statistics.median(rounds), 3),
               "health_round_us_per_slot": round(1e6 * statistics.median(rounds) / size, 1),
               "status_s": round(statistics.median(statuses), 4), "status_summary_bytes": len(pickle.dumps(summary)),
               "status_detail_bytes": len(pickle.dumps(detail)), "healthy": summary.healthy,
               "replacements": summary.replacements, "history_entries": len(history),
               "manager_rss_mib": round(manager.memory_info().rss / 2**20, 1),
               "load_avg_1m": round(os.getloadavg()[0], 1)}  # how busy the shared machine was
        if size == max(args.sizes):
            row["status_cli_s"], row["status_cli_path"] = status_command(args.address)
            row["status_cli_ray_s"] = round(timed_rayenv("status", "--address", args.address, "--ray"), 2)
            # the floor under any command that talks to Ray: a fresh Python importing it
            row["import_ray_s"] = round(timed(lambda: subprocess.run([sys.executable, "-c", "import ray"],
                                                                      check=True))[0], 2)
        return row
    finally:
        fleet.shutdown()


def status_command(address: str) -> tuple[float, str]:
    """``rayenv status`` as an operator on the head runs it: its wall time, and which way it went (its --debug line)."""
    begun = time.perf_counter()
    done = subprocess.run([str(Path(sys.executable).with_name("rayenv")), "--debug", "status", "--address", address],
                          check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    took = round(time.perf_counter() - begun, 2)
    return took, next((line.removeprefix("status: ") for line in done.stderr.splitlines()
                       if line.startswith("status: ")), "?")


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    slots = [row["slots"] for row in rows]
    panels = [("lease_release_per_s", "lease+release / s", 500, "goal >= 500"),
              ("manager_cpu_ms_per_cycle", "manager CPU ms per lease+release", None, ""),
              ("health_round_s", "full health round, s", 2, "goal <= 2 s"),
              ("status_s", "status() summary, s", 1, "goal <= 1 s"),
              ("manager_rss_mib", "manager RSS, MiB", 200, "goal <= 200 MiB"),
              ("health_round_us_per_slot", "health round, us per slot", None, "")]
    figure, axes = plt.subplots(2, 3, figsize=(13, 6.5))
    for axis, (key, title, goal, label) in zip(axes.flat, panels):
        axis.plot(slots, [row[key] for row in rows], marker="o")
        if goal is not None:
            axis.axhline(goal, color="tab:red", linestyle="--", label=label)
            axis.legend(loc="best", fontsize=8)
        axis.set_xscale("log", base=2)
        axis.set_xticks(slots, [str(s) for s in slots])
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("slots")
        axis.set_ylim(bottom=0)
    figure.suptitle(f"one pool manager, simulated desktops on {rows[0]['env_nodes']} env nodes "
                    f"({rows[0]['lessees']} concurrent lessees; 2-core machine shared with other jobs)", fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scale.json").write_text(json.dumps(rows, indent=2) + "\n")
    plot(rows, RESULTS / "scale.png")
    keys = ["slots", "nodes", "sim_hosts", "boot_s", "lease_release_per_s", "cycle_p50_ms", "cycle_p99_ms",
            "manager_cpu_ms_per_cycle", "driver_cpu_ms_per_cycle", "machine_cpu_ms_per_cycle",
            "lease_release_per_s_processes", "health_round_s", "status_s", "status_summary_bytes", "status_detail_bytes",
            "history_entries", "manager_rss_mib", "load_avg_1m"]
    loads = [row["load_avg_1m"] for row in rows]
    lines = ["# Scale: one pool manager, 128 to a thousand+ slots", "",
             f"## Run at {time.strftime('%Y-%m-%d %H:%M')}, sizes {' '.join(map(str, args.sizes))}, machine load "
             f"{min(loads)} to {max(loads)}", "",
             f"`{' '.join(['bench/scale.py', *sys.argv[1:]])}`: simulated desktops (rayenv.tools.simfleet) on "
             f"{args.nodes} env nodes of a local Ray cluster plus its head; the manager, leases, events, health "
             f"rounds, status and gauge are the real ones. {args.lessees} concurrent lessees for {args.seconds:.0f} s "
             "per size. Machine: 2 cores shared with other jobs, so absolute rates are noisy; the per-slot "
             "columns show how each cost grows.", "",
             "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(row[k]) for k in keys) + " |" for row in rows]
    cli = [row for row in rows if "status_cli_s" in row]
    if cli:
        lines += ["", f"`rayenv status` as a command at {max(args.sizes)} slots (fresh Python, the summary, the "
                      f"table): {cli[0]['status_cli_s']} s ({cli[0]['status_cli_path']}); with `--ray` (`import ray`, "
                      f"`ray.init`): {cli[0]['status_cli_ray_s']} s; `python -c \"import ray\"` alone: "
                      f"{cli[0]['import_ray_s']} s."]
    lines += ["", "![scale](scale.png)", ""]
    earlier = (RESULTS / "scale.md").read_text() if (RESULTS / "scale.md").exists() else ""
    if "\n## " in earlier:  # earlier runs stay below, newest first (their plot is this run's now)
        lines += [earlier[earlier.index("\n## ") + 1:].replace("![scale](scale.png)", "(plot: replaced by a later run)")]
    (RESULTS / "scale.md").write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512, 1024])
    parser.add_argument("--nodes", type=int, default=4, help="env nodes besides the head")
    parser.add_argument("--lessees", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--lessee-processes", type=int, default=8,
                        help="the second load: the lessees split over this many lessee processes (actors)")
    parser.add_argument("--base-port", type=int, default=25600)
    args = parser.parse_args()
    for attempt in range(3):  # on a loaded machine a raylet may miss Ray's 30 s registration deadline
        try:
            rows = run(args, args.base_port + 1000 * attempt)
            break
        except RuntimeError as exc:
            print(f"cluster start failed (attempt {attempt + 1}): {str(exc)[-300:]}", file=sys.stderr)
    else:
        raise SystemExit("no local cluster came up in 3 attempts")
    report(rows, args)


def run(args: argparse.Namespace, base_port: int) -> list[dict[str, Any]]:
    rows = []
    os.environ[PORT_ENV] = str(free_status_block())  # the managers' status endpoints: a block of this run's own
    with ray_cluster(Path(tempfile.mkdtemp(prefix="rayenv-bench-scale-")), base_port=base_port,
                     head_python=sys.executable, env_python=sys.executable, env_units=1, head_cpus=1,
                     env_nodes=args.nodes) as cluster:
        args.address = cluster.address
        ray.init(address=cluster.address, namespace=NAMESPACE, log_to_driver=False)
        node_ids = [n["NodeID"] for n in ray.nodes() if n["Alive"] and HEAD_RESOURCE not in n["Resources"]]
        for size in args.sizes:
            rows.append(measure(size, node_ids, args))
            print(json.dumps(rows[-1]), flush=True)
        ray.shutdown()
    return rows


if __name__ == "__main__":
    main()
