"""The env contract: what one desktop does, written once.

``desktop_env.DesktopEnv``'s episode API, as rayenv keeps it: :class:`~rayenv.env.desktop.Desktop`
implements it in plain Python, the :class:`~rayenv.env.actor.OSWorldEnv` actor exposes the same
methods over Ray (``env.reset.remote(task)``), and the pool's health and reaping add ``status``.
Every method raises a typed :class:`~rayenv.errors.RayEnvError` on failure; ``evaluate`` returns a
score only when the evaluation really ran.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from ..types import EnvStatus, Observation, StepResult


@runtime_checkable
class EnvContract(Protocol):
    """One OSWorld desktop through one episode at a time."""

    def reset(self, task_config: dict[str, Any] | None = None) -> Observation:
        """Put the desktop in the task's start state (a clean desktop first, then the task's setup) and
        observe it; ``None`` gives a clean desktop without a task."""

    def step(self, action: Any, pause: float | None = None, step_id: Any = None) -> StepResult:
        """Run one action (pyautogui code, ``WAIT``/``DONE``/``FAIL``, or a computer-13 dict) inside the
        desktop, wait ``pause`` seconds, observe. ``step_id`` makes a retried step run once."""

    def evaluate(self) -> float:
        """The task's score from OSWorld's own evaluator."""

    def observe(self) -> Observation:
        """The desktop as it is now, without acting."""

    def close(self) -> None:
        """Stop the desktop and remove everything it started; safe to call twice."""

    def status(self) -> EnvStatus:
        """What the desktop is doing (state, task, provider details), without touching it."""
