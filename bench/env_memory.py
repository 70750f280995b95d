"""What does one desktop's env actor weigh on its env host, beside the desktop itself?

Eight process desktops in one pool on one host (a local Ray node); each runs one scripted task
(reset with the task's setup, its solution's steps, evaluate: the evaluator stack is loaded as a real
episode loads it). Then each env actor's Ray worker process is measured: RSS and PSS (PSS splits the
pages the eight workers share, so the eight PSS add up to what they cost together), not counting the
desktop's own processes. Run it once per code version and label the run:

    PYTHONPATH=/path/to/old/checkout .venv/bin/python bench/env_memory.py --label before
    PYTHONPATH=$PWD .venv/bin/python bench/env_memory.py --label after

Results: ``bench/results/env_memory.{json,md}`` (one entry per label, the md compares them).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
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

import rayenv  # noqa: E402
from rayenv import EnvPool  # noqa: E402
from rayenv.env.tasks import load_tasks  # noqa: E402

RESULTS = REPO / "bench" / "results"
TASK_IDS = ["mousepad-save-hello", "terminal-make-directory", "mousepad-replace-notes"]
POOL, NAMESPACE = "bench-env-memory", "rayenv-bench"


def episode(env: Any, task: dict[str, Any]) -> float:
    ray.get(env.reset.remote(task))
    for action in [*task["rayenv_solution"], "DONE"]:
        ray.get(env.step.remote(action))
    return ray.get(env.evaluate.remote())


def memory_mib(pid: int) -> dict[str, float]:
    info = psutil.Process(pid).memory_full_info()
    return {"rss_mib": round(info.rss / 2**20, 1), "pss_mib": round(info.pss / 2**20, 1),
            "uss_mib": round(info.uss / 2**20, 1)}


def measure(desktops: int) -> dict[str, Any]:
    tasks = {t["id"]: t for t in load_tasks(REPO / "OSWorld" / "tasks")}
    for attempt in range(3):  # on a loaded machine the raylet may miss Ray's 30 s registration deadline
        try:
            ray.init(resources={"osworld_env": desktops}, include_dashboard=False, log_to_driver=False,
                     namespace=NAMESPACE)
            break
        except Exception as exc:  # noqa: BLE001 - Ray raises a bare Exception for it
            print(f"ray.init failed (attempt {attempt + 1}): {exc}", flush=True)
            ray.shutdown()
    else:
        raise SystemExit("no local Ray came up in 3 attempts")
    pool = EnvPool.create(name=POOL, size=desktops, provider="process", namespace=NAMESPACE,
                          desktop={"provider": "process", "screen_width": 1024, "screen_height": 768},
                          env={"default_pause": 0.2}, max_concurrent_boots=4)
    try:
        leases = [pool.acquire(timeout=600) for _ in range(desktops)]
        scores: dict[str, float] = {}
        for i, lease in enumerate(leases):
            task = tasks[TASK_IDS[i % len(TASK_IDS)]]
            scores[lease.env_name] = episode(lease.env, task)
        actors = []
        for lease in leases:
            pid = ray.get(lease.env.status.remote())["details"]["worker_pid"]
            actors.append({"env": lease.env_name, "task": TASK_IDS[leases.index(lease) % len(TASK_IDS)],
                           "score": scores[lease.env_name], "worker_pid": pid, **memory_mib(pid)})
        for lease in leases:
            pool.release(lease)
    finally:
        pool.shutdown()
        ray.shutdown()
    return {"desktops": desktops, "rayenv": str(Path(rayenv.__file__).parent), "commit": _commit(),
            "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "mean_rss_mib": round(statistics.mean(a["rss_mib"] for a in actors), 1),
            "mean_pss_mib": round(statistics.mean(a["pss_mib"] for a in actors), 1),
            "sum_pss_mib": round(sum(a["pss_mib"] for a in actors), 1), "actors": actors}


def _commit() -> str:
    done = subprocess.run(["git", "-C", str(Path(rayenv.__file__).parents[1]), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True)
    return done.stdout.strip()


def report(results: dict[str, Any]) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "env_memory.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = ["# Env actor memory: the Ray worker holding one desktop (`bench/env_memory.py`)", "",
             "Eight process desktops of one pool on one host, each after one scripted episode (reset with setup, "
             "the solution's steps, evaluate); memory of each env actor's worker process, the desktop's own "
             "processes not counted. PSS shares the pages the workers share among them. Goal: <= 150 MiB PSS "
             "per actor.", "",
             "| run | rayenv | mean RSS MiB | mean PSS MiB | all 8 PSS MiB | scores |", "|---|---|---|---|---|---|"]
    for label, run in results.items():
        scores = sorted({a["task"]: a["score"] for a in run["actors"]}.items())
        lines.append(f"| {label} | {run['commit']} | {run['mean_rss_mib']} | {run['mean_pss_mib']} | "
                     f"{run['sum_pss_mib']} | {', '.join(f'{t}: {s}' for t, s in scores)} |")
    (RESULTS / "env_memory.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", required=True, help="before | after (a run replaces its label's entry)")
    parser.add_argument("--desktops", type=int, default=8)
    args = parser.parse_args()
    path = RESULTS / "env_memory.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    results[args.label] = measure(args.desktops)
    report(results)
    print(json.dumps({k: {"mean_rss_mib": v["mean_rss_mib"], "mean_pss_mib": v["mean_pss_mib"]}
                      for k, v in results.items()}))


if __name__ == "__main__":
    main()
