"""The env actor: one desktop behind Ray, called as ``env.step.remote(action)``.

Concurrency: reset/step/evaluate/observe/revert share Ray's default concurrency group with one
slot, so calls on one desktop run one at a time in arrival order (concurrent calls are queued,
never interleaved). ``status``, ``ping`` and ``close`` live in a separate ``control`` group so the
pool's health checks and ``rayenv status`` answer while a long step runs, and so the pool can take
away a desktop whose call hangs: ``close`` removes the desktop under the stuck call, which then
fails with a typed error its caller receives, instead of queueing behind it.

The actor asks for ``num_cpus=0`` plus one unit of the custom resource (``osworld_env`` by
default): only env hosts advertise it, so desktops never land on GPU nodes and verl's CPU workers
never land on the env host.

The pool creates and names these actors; by hand (runs as written on a machine with Xvfb;
``tests/test_doctests.py`` runs it)::

    >>> import ray
    >>> from rayenv.env.actor import OSWorldEnv
    >>> _ = ray.init(ignore_reinit_error=True, resources={"osworld_env": 1}, include_dashboard=False,
    ...              log_to_driver=False)
    >>> env = OSWorldEnv.options(resources={"osworld_env": 1}).remote(
    ...     "demo", "demo-env-00", {"provider": "process", "screen_width": 800, "screen_height": 600}, {})
    >>> ray.get(env.boot.remote())
    'demo-env-00'
    >>> ray.get(env.reset.remote(None))["screenshot"][:4]
    b'\\x89PNG'
    >>> ray.get(env.step.remote("pyautogui.moveTo(10, 10)", 0))["done"]
    False
    >>> ray.get(env.revert.remote())  # what the pool does on release: back to a clean desktop
    'ready'
    >>> ray.get(env.close.remote()); ray.kill(env)
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable, TypeVar

import ray
from ray.util import metrics

from ..cluster_state import host_label
from ..errors import DesktopUnavailable, RayEnvError
from ..providers import DesktopSpec, Ownership
from ..types import EnvStatus, Observation, StepResult
from .desktop import Desktop, ForkState
from .options import EnvOptions

logger = logging.getLogger("rayenv.env")
T = TypeVar("T")

_LATENCY_BOUNDARIES = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300]


class _Metrics:
    """Ray metrics shared by every env actor in a worker process (exported to the dashboard/Prometheus), tagged
    per env host, and per desktop only when asked (``EnvOptions.per_desktop_metrics``)."""

    def __init__(self, per_desktop: bool) -> None:
        tags = ("pool", "provider", "phase", "host") + (("env",) if per_desktop else ())
        self.latency = metrics.Histogram("rayenv_env_call_seconds", "Latency of env actor calls",
                                         boundaries=_LATENCY_BOUNDARIES, tag_keys=tags)
        self.failures = metrics.Counter("rayenv_env_failures_total", "Env calls that raised",
                                        tag_keys=tags + ("error",))


@ray.remote(num_cpus=0, concurrency_groups={"control": 4})
class OSWorldEnv:
    """A Ray actor wrapping one :class:`~rayenv.env.desktop.Desktop`; the pool creates and names it."""

    def __init__(self, pool: str, env_name: str, spec: dict[str, Any], options: dict[str, Any]) -> None:
        context = ray.get_runtime_context()
        ownership = Ownership(owner=pool, env_name=env_name, actor_id=context.get_actor_id() or "",
                              node_id=context.get_node_id() or "")
        self.pool = pool
        self.desktop = Desktop(DesktopSpec.model_validate(spec), ownership, EnvOptions.model_validate(options))
        self._metrics = _Metrics(self.desktop.options.per_desktop_metrics)
        self.host = host_label(context)
        self._tags = {"pool": pool, "provider": self.desktop.spec.provider, "host": self.host,
                      **({"env": env_name} if self.desktop.options.per_desktop_metrics else {})}
        logging.basicConfig(level=logging.INFO, format=f"%(asctime)s %(levelname)s [{env_name}] %(name)s: %(message)s")

    def _timed(self, phase: str, call: Callable[[], T]) -> T:
        started = time.perf_counter()
        try:
            return call()
        except RayEnvError as exc:
            self._metrics.failures.inc(tags={**self._tags, "phase": phase, "error": type(exc).__name__})
            logger.warning("%s %s failed: %s", self.desktop.provider.label(), phase, exc)
            raise
        finally:
            self._metrics.latency.observe(time.perf_counter() - started, tags={**self._tags, "phase": phase})

    def boot(self) -> str:
        """Start the desktop (the pool calls this once, first); returns the env's name.

        A method, not ``__init__``: an error raised here reaches the caller as the typed
        :mod:`rayenv.errors` exception it is, where a failed ``__init__`` becomes an untyped
        ``ActorDiedError`` carrying only the traceback's text.
        """
        if self.desktop.state == "booting":
            self._timed("boot", self._start_typed)
        return self.desktop.env_name

    def _start_typed(self) -> None:
        """Start the desktop; a failure no layer below typed (a library's own error) leaves as
        :class:`~rayenv.errors.DesktopUnavailable` naming it, so the pool retries the boot."""
        try:
            self.desktop.start()
        except RayEnvError:
            raise
        except Exception as exc:
            raise DesktopUnavailable(f"boot failed: {type(exc).__name__}: {exc}", env=self.desktop.env_name,
                                     phase="boot", hint="the pool retries the boot") from exc

    def reset(self, task_config: dict[str, Any] | None = None) -> Observation:
        return self._timed("reset", lambda: self.desktop.reset(task_config))

    def step(self, action: str | dict[str, Any], pause: float | None = None, step_id: Any = None) -> StepResult:
        return self._timed("step", lambda: self.desktop.step(action, pause, step_id))

    def evaluate(self) -> float:
        return self._timed("evaluate", self.desktop.evaluate)

    def observe(self) -> Observation:
        return self._timed("observe", self.desktop.observe)

    def fork_save(self) -> ForkState:
        """Save this desktop's state mid-episode (``EnvPool.fork`` then loads it into other desktops)."""
        return self._timed("fork", self.desktop.save_fork)

    def fork_load(self, fork: ForkState) -> None:
        """Continue the episode ``fork`` was saved in, from where it was saved."""
        self._timed("fork", lambda: self.desktop.load_fork(fork))

    def revert(self) -> str:
        """Revert a used desktop ahead of its next lease (the pool does this on release); returns its state."""
        if self.desktop.state != "ready":
            self._timed("revert", self.desktop.revert)
        return self.desktop.state

    @ray.method(concurrency_group="control")
    def close(self) -> None:
        self.desktop.close()

    def settle(self) -> None:
        """Returns once every call queued before it has finished (same one-slot group): after ``close``,
        the pool waits for this so the call ``close`` interrupted delivers its error before the kill."""

    @ray.method(concurrency_group="control")
    def status(self) -> EnvStatus:
        status = self.desktop.status()
        status["details"]["worker_pid"] = os.getpid()
        return status

    @ray.method(concurrency_group="control")
    def ping(self, probe: float | None = None) -> bool:
        """Cheap liveness: the desktop's container/processes run (or are restarting) and it is not broken.
        With ``probe`` (seconds; the pool gives it for idle desktops), its guest must also answer in that
        time: a frozen desktop still runs."""
        return self.desktop.alive() if probe is None else self.desktop.answers(probe)

    def __repr__(self) -> str:
        """What the Ray dashboard's Actors page shows (as "Repr", read once the actor is up): which desktop
        of which pool, on which env host; the live state and task are in :meth:`status` and the task names."""
        node = self.desktop.ownership.node_id[:8]
        return (f"OSWorldEnv({self.desktop.provider.label()}, pool={self.pool}, host={self.host}, "
                f"{self.desktop.spec.provider}, node={node})")

