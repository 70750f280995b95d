"""Run chosen OSWorld tasks on a pool's desktops: reset, the task's scripted actions if it has any, evaluate.

No agent takes part: this answers "does this image set these tasks up and score them as OSWorld
would?". A task's actions come from ``<solutions>/<id>.json`` (a JSON list of actions: pyautogui
code, ``computer_13`` dicts, ``WAIT``/``DONE``/``FAIL``), else from the task's own ``rayenv_solution``
key, else there are none (reset, then evaluate: an untouched run). Each task ends with a score or
with the typed error that stopped it; a task the checker refused is not run, its reasons are kept.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

from ..errors import RayEnvError
from .checker import Verdict
from .examples import SuiteTask


@dataclass
class TaskResult:
    """One task's outcome: a ``score``, or the ``error`` (typed) that stopped it, or why it was ``skipped``."""

    domain: str
    id: str
    score: float | None = None
    error: str | None = None
    skipped: str | None = None
    actions: int = 0
    seconds: float = 0.0
    env: str | None = None

    @property
    def outcome(self) -> str:
        return "skipped" if self.skipped else "error" if self.error else "scored"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "outcome": self.outcome}


def actions_for(task: SuiteTask, solutions: Path | None) -> list[Any]:
    """The task's scripted actions, ending in ``DONE`` unless they end in ``DONE`` or ``FAIL`` already."""
    file = solutions / f"{task.id}.json" if solutions else None
    actions = json.loads(file.read_text()) if file and file.is_file() else list(task.config.get("rayenv_solution") or [])
    if actions and actions[-1] not in ("DONE", "FAIL"):
        actions.append("DONE")
    return actions


def run_one(pool: Any, task: SuiteTask, actions: list[Any], *, pause: float, lease_timeout: float) -> TaskResult:
    """Lease a desktop, reset it to ``task``, play ``actions``, score it. Never raises: errors are results."""
    import ray

    result = TaskResult(task.domain, task.id)
    started = time.perf_counter()
    try:
        with pool.lease(timeout=lease_timeout) as lease:
            result.env = lease.env_name
            ray.get(lease.env.reset.remote(task.config))
            for action in actions:
                ray.get(lease.env.step.remote(action, pause))
                result.actions += 1
            result.score = ray.get(lease.env.evaluate.remote())
    except RayEnvError as exc:
        result.error = f"{type(exc).__name__}: {exc.message}"
    result.seconds = round(time.perf_counter() - started, 2)
    return result


def run_tasks(pool: Any, tasks: Iterable[SuiteTask], verdicts: dict[str, Verdict], *, solutions: Path | None = None,
              pause: float = 0.3, lease_timeout: float = 600.0, parallel: int = 1) -> list[TaskResult]:
    """Every runnable task on the pool (``parallel`` at a time), the others as skipped, in the given order."""
    chosen = list(tasks)
    with ThreadPoolExecutor(max(1, parallel)) as workers:
        futures = [None if not verdicts[task.id].runnable else
                   workers.submit(run_one, pool, task, actions_for(task, solutions), pause=pause,
                                  lease_timeout=lease_timeout) for task in chosen]
        return [future.result() if future else
                TaskResult(task.domain, task.id, skipped="; ".join(verdicts[task.id].reasons))
                for task, future in zip(chosen, futures)]


def summary(results: list[TaskResult]) -> dict[str, Any]:
    """Counts per outcome and the mean score of the scored tasks."""
    scored = [r.score for r in results if r.score is not None]
    return {"tasks": len(results), "scored": len(scored), "errors": sum(r.error is not None for r in results),
            "skipped": sum(r.skipped is not None for r in results), "solved": sum(s == 1.0 for s in scored),
            "mean_score": round(sum(scored) / len(scored), 3) if scored else None,
            "seconds": round(sum(r.seconds for r in results), 1)}
