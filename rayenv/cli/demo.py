"""``rayenv demo``: the main job in one command.

A local Ray, a pool of real desktops on the best provider this machine supports, one scripted
episode of a sample task on every desktop at once (reset → steps → DONE → evaluate with
OSWorld's evaluator), a summary table, and a clean shutdown.
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from ..env.tasks import load_tasks
from ..errors import RayEnvError
from ..providers.base import DesktopSpec
from .common import console, json_option, print_json

REPO_TASKS = Path(__file__).resolve().parents[2] / "OSWorld" / "tasks"


def docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=5).ping()
        return True
    except Exception:
        return False


def best_provider() -> str:
    """``lite`` when a Docker engine answers, else ``process`` (host Xvfb, no Docker)."""
    return "lite" if docker_answers() else "process"


def scripted_tasks(tasks_dir: Path) -> list[dict[str, Any]]:
    tasks = [task for task in load_tasks(tasks_dir) if task.get("rayenv_solution")]
    if not tasks:
        raise typer.BadParameter(f"no task with a 'rayenv_solution' under {tasks_dir}")
    return sorted(tasks, key=lambda task: task["evaluator"]["func"] == "infeasible")  # GUI tasks first


def run_episode(env: Any, task: dict[str, Any], pause: float) -> dict[str, Any]:
    """Reset to ``task``, replay its scripted solution, say DONE and score it. Never raises."""
    import ray

    record: dict[str, Any] = {"task": task["id"], "score": None, "error": None, "steps": 0}
    try:
        started = time.perf_counter()
        ray.get(env.reset.remote(task))
        record["reset_s"] = time.perf_counter() - started
        step_times = []
        solution = list(task["rayenv_solution"])
        for action in solution if solution[-1] in ("DONE", "FAIL") else [*solution, "DONE"]:
            started = time.perf_counter()
            ray.get(env.step.remote(action, pause))
            step_times.append(time.perf_counter() - started)
        record["steps"] = len(step_times)
        record["step_p50_s"] = statistics.median(step_times)
        started = time.perf_counter()
        record["score"] = ray.get(env.evaluate.remote())
        record["evaluate_s"] = time.perf_counter() - started
    except RayEnvError as exc:
        record["error"] = f"{type(exc).__name__}: {exc.message}"
    return record


def demo(
    size: int = typer.Option(2, min=1, help="number of desktops"),
    provider: str = typer.Option("auto", help="auto | lite | process | docker (auto: lite if Docker answers)"),
    width: int = typer.Option(1920, min=320, max=7680, help="screen width of each desktop"),
    height: int = typer.Option(1080, min=240, max=4320, help="screen height of each desktop"),
    tasks: Path = typer.Option(REPO_TASKS, help="directory of OSWorld task JSONs with a 'rayenv_solution'"),
    pause: float = typer.Option(0.3, help="seconds between an action and its screenshot"),
    as_json: bool = json_option("the results"),
) -> None:
    """Run a local pool of real desktops through a scripted episode of a sample task, and score it."""
    import ray

    from ..pool.handle import EnvPool

    chosen = best_provider() if provider == "auto" else DesktopSpec(provider=provider).provider  # refuses a typo
    samples = scripted_tasks(tasks)
    if chosen == "lite":
        from ..desktop_lite.build import build_image

        build_image()
    context = ray.init(resources={"osworld_env": size}, namespace="rayenv", include_dashboard=True,
                       dashboard_host="127.0.0.1", log_to_driver=False)
    console.print(f"Ray dashboard: http://{context.dashboard_url}")
    pool = None
    try:
        with console.status(f"booting {size} {chosen} desktop(s) at {width}x{height} ..."):
            started = time.perf_counter()
            pool = EnvPool.create(name="demo", size=size, provider=chosen,
                                  desktop={"provider": chosen, "screen_width": width, "screen_height": height})
            boot_s = time.perf_counter() - started
        envs = pool.envs()
        with console.status(f"running {len(envs)} episode(s) ..."), ThreadPoolExecutor(len(envs) or 1) as workers:
            futures = {name: workers.submit(run_episode, env, samples[i % len(samples)], pause)
                       for i, (name, env) in enumerate(sorted(envs.items()))}
            results = [{"env": name, **future.result()} for name, future in futures.items()]
    finally:
        if pool is not None:
            pool.shutdown()
        ray.shutdown()
    summary = {"provider": chosen, "size": size, "boot_s": round(boot_s, 2), "episodes": results}
    if as_json:
        print_json(summary)
    else:
        _print_table(summary)
    if any(r["error"] for r in results) or len(results) < size:
        raise typer.Exit(1)


def _print_table(summary: dict[str, Any]) -> None:
    table = Table(title=f"rayenv demo: {summary['size']} {summary['provider']} desktop(s), booted in {summary['boot_s']}s")
    for column in ("env", "task", "steps", "reset s", "step p50 s", "evaluate s", "score", "error"):
        table.add_column(column, overflow="fold")
    for r in summary["episodes"]:
        table.add_row(r["env"], r["task"], str(r["steps"]), _fmt(r.get("reset_s")), _fmt(r.get("step_p50_s")),
                      _fmt(r.get("evaluate_s")), _fmt(r["score"]), r["error"] or "")
    Console(width=160).print(table)


def _fmt(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.2f}"
