"""Rollout wall time: lock-step batches (ARPO's shape) vs rayenv's as-completed episodes with revert on release.

Same desktops (a pool of process desktops on a two-node Ray cluster), same tasks, same scripted
policy with a randomized per-turn "thinking" delay standing in for generation:

* **lock-step**: one env worker per desktop holds it for the whole run (ARPO's dedicated
  workers); episodes go in batches of pool size; each turn the batch "generates" together (the
  turn takes the longest thinking time of the batch), steps every live env and waits for the
  slowest; the next batch starts after the whole batch is evaluated and then reset.
* **as-completed**: every episode is its own coroutine; it leases any free desktop, thinks, steps
  and evaluates on its own clock and gives the desktop back, which the pool reverts in the
  background (revert on release) while other episodes run.

Usage: ``.venv/bin/python bench/rollout.py [--episodes 8] [--think 1.0 4.0] [--seed 0]``. Writes
``bench/results/rollout.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
_AUTH = Path(tempfile.mkdtemp(prefix="rayenv-bench-auth-")) / "auth_token"  # this run's own cluster token,
_AUTH.write_text(secrets.token_hex(32))  # set before Ray is imported (its core reads the mode once)
os.environ.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(_AUTH), "RAY_USAGE_STATS_ENABLED": "0"})

import ray  # noqa: E402

from rayenv import EnvPool  # noqa: E402
from rayenv.env.tasks import load_tasks  # noqa: E402
from rayenv.rollout.episode import Episode  # noqa: E402
from rayenv.rollout.settings import AgentSettings  # noqa: E402
from rayenv.tools.localcluster import ray_cluster  # noqa: E402  (the multi-node cluster the e2e tests use)
from rayenv.waiting import wait_until_async  # noqa: E402

TASK_IDS = ["mousepad-save-hello", "terminal-make-directory", "mousepad-replace-notes"]
POOL, NAMESPACE, SIZE = "bench-rollout", "rayenv-bench", 2
RESULTS = REPO / "bench" / "results"


def episodes(n: int, think: tuple[float, float], seed: int) -> list[dict[str, Any]]:
    """The N episodes both modes run: task, its scripted actions, and each turn's thinking time."""
    tasks = {t["id"]: t for t in load_tasks(REPO / "OSWorld" / "tasks")}
    rng = random.Random(seed)
    plan = []
    for i in range(n):
        task = tasks[TASK_IDS[i % len(TASK_IDS)]]
        actions = [*task["rayenv_solution"], "DONE"]
        plan.append({"task": task, "actions": actions, "think": [rng.uniform(*think) for _ in actions]})
    return plan


async def lock_step(pool: EnvPool, plan: list[dict[str, Any]], settings: AgentSettings) -> list[float]:
    leases = [await pool.acquire_async(settings.lease_timeout) for _ in range(SIZE)]
    scores: list[float] = []
    try:
        for start in range(0, len(plan), SIZE):
            batch = list(zip(leases, plan[start:start + SIZE]))
            runs = [(Episode(lease, settings), ep) for lease, ep in batch]
            await asyncio.gather(*(run.reset(ep["task"]) for run, ep in runs))
            for turn in range(max(len(ep["actions"]) for _, ep in runs)):
                live = [(run, ep) for run, ep in runs if turn < len(ep["actions"])]
                await asyncio.sleep(max(ep["think"][turn] for _, ep in live))  # the batch generates together
                await asyncio.gather(*(run.step(ep["actions"][turn]) for run, ep in live))
            scores += await asyncio.gather(*(run.evaluate() for run, _ in runs))
    finally:
        for lease in leases:
            await pool.release_async(lease)
    return scores


async def as_completed(pool: EnvPool, plan: list[dict[str, Any]], settings: AgentSettings) -> list[float]:
    async def one(ep: dict[str, Any]) -> float:
        async with pool.lease_async(settings.lease_timeout) as lease:
            run = Episode(lease, settings)
            await run.reset(ep["task"])
            for action, think in zip(ep["actions"], ep["think"]):
                await asyncio.sleep(think)
                await run.step(action)
            return await run.evaluate()

    return list(await asyncio.gather(*(one(ep) for ep in plan)))


async def measure(pool: EnvPool, plan: list[dict[str, Any]]) -> dict[str, Any]:
    settings = AgentSettings(pool=POOL, namespace=NAMESPACE)
    results = {}
    for name, mode in (("lock_step", lock_step), ("as_completed", as_completed)):
        await asyncio.to_thread(pool.wait_healthy, 300)
        await wait_until_async(lambda: all(s.state == "idle" for s in pool.status().slots), 300, interval=0.5,
                               what="every desktop idle")  # both modes start from idle, clean desktops
        started = time.monotonic()
        scores = await mode(pool, plan, settings)
        results[name] = {"wall_s": round(time.monotonic() - started, 2), "scores": scores}
    return results


def report(results: dict[str, Any], args: argparse.Namespace) -> None:
    lock, done = results["lock_step"]["wall_s"], results["as_completed"]["wall_s"]
    summary = {"episodes": args.episodes, "desktops": SIZE, "think_s": list(args.think), "seed": args.seed,
               "tasks": TASK_IDS, **results, "speedup": round(lock / done, 2)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "rollout.json").write_text(json.dumps(summary, indent=2) + "\n")
    (RESULTS / "rollout.md").write_text(
        "# Rollout wall time: lock-step vs as-completed (`bench/rollout.py`)\n\n"
        f"{args.episodes} episodes ({', '.join(TASK_IDS)} in turn, scripted solutions) on {SIZE} process "
        f"desktops, thinking time per turn uniform in [{args.think[0]}, {args.think[1]}] s (seed {args.seed}).\n\n"
        "| mode | wall time (s) | mean score |\n| --- | --- | --- |\n"
        + "".join(f"| {name} | {r['wall_s']} | {sum(r['scores']) / len(r['scores']):.2f} |\n"
                  for name, r in results.items())
        + f"\n**as-completed is {summary['speedup']}x faster** (lock-step / as-completed wall time).\n\n"
        "Lock-step waits, at every turn, for the longest thinking time and the slowest step of the batch, and "
        "resets a batch only after all of it is scored; as-completed keeps each desktop busy on its own "
        "episode's clock and reverts released desktops in the background.\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    figure, axis = plt.subplots(figsize=(5, 3))
    axis.bar(list(results), [r["wall_s"] for r in results.values()], color=["#b55", "#5a5"])
    axis.set_ylabel("wall time (s)")
    axis.set_title(f"{args.episodes} episodes on {SIZE} desktops ({summary['speedup']}x)")
    figure.tight_layout()
    figure.savefig(RESULTS / "rollout.png", dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--think", type=float, nargs=2, default=(1.0, 4.0), metavar=("MIN", "MAX"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--base-port", type=int, default=24400)
    args = parser.parse_args()
    plan = episodes(args.episodes, tuple(args.think), args.seed)
    with ray_cluster(Path(tempfile.mkdtemp(prefix="rayenv-bench-")), base_port=args.base_port,
                     head_python=sys.executable, env_python=sys.executable, env_units=SIZE) as cluster:
        ray.init(address=cluster.address, namespace=NAMESPACE, log_to_driver=False)
        pool = EnvPool.create(name=POOL, size=SIZE, provider="process", namespace=NAMESPACE,
                              desktop={"provider": "process", "screen_width": 1024, "screen_height": 768},
                              env={"default_pause": 0.2})
        try:
            results = asyncio.run(measure(pool, plan))
        finally:
            pool.shutdown()
            ray.shutdown()
    report(results, args)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
