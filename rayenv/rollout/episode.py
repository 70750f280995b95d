"""One leased desktop driven through one episode, every remote call awaited with a timeout.

Shared by the verl agent loop, the ARPO-compatible worker and the rollout bench, so all three
classify failures the same way: an env failure (the desktop died, a call timed out, setup or
evaluation could not run) ends the episode as :class:`EpisodeFailed` carrying the typed
:class:`~rayenv.errors.RayEnvError`; a desktop that died or hung is released as broken so the pool
replaces it. A timed-out ``await`` does not stop the actor's running call, which is why a timeout
always means "broken".
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from typing import Any, AsyncIterator

from ..errors import ActionFailed, EnvTimeout, InvalidAction, RayEnvError
from ..pool.handle import EnvPool, Lease
from ..pool.outcomes import as_env_error
from ..types import Observation, StepResult
from .settings import AgentSettings

#: Errors caused by the model's action, not the desktop: the episode goes on and the model is told.
ACTION_ERRORS = (ActionFailed, InvalidAction)


class EpisodeFailed(Exception):
    """The desktop could not carry the episode to a score. ``reason`` is what metrics report."""

    def __init__(self, error: RayEnvError) -> None:
        self.error = error
        self.phase = error.phase or "unknown"
        self.reason = f"{type(error).__name__} in {self.phase}: {error.message}"
        super().__init__(self.reason)

    def __reduce__(self) -> tuple[Any, ...]:  # crosses Ray (ARPOEnvWorker.evaluate raises it) whole
        return (EpisodeFailed, (self.error,))


class Episode:
    """The env calls of one episode on a leased desktop (see :func:`open_episode`)."""

    def __init__(self, lease: Lease, settings: AgentSettings) -> None:
        self.lease = lease
        self.settings = settings
        self.steps = 0

    @property
    def env_name(self) -> str:
        return self.lease.env_name

    async def _call(self, ref: Any, timeout: float, phase: str) -> Any:
        try:
            return await asyncio.wait_for(ref, timeout)
        except asyncio.TimeoutError:
            raise EnvTimeout(f"{phase} did not answer within {timeout:.0f}s", env=self.env_name, phase=phase,
                             hint=f"raise rayenv.agent.{phase}_timeout; the desktop is replaced") from None
        except Exception as exc:  # noqa: BLE001 - typed by as_env_error; anything unknown is re-raised
            cause = getattr(exc, "cause", None)  # Ray wraps the actor's typed error; keep the original
            error = cause if isinstance(cause, RayEnvError) else as_env_error(exc, self.env_name)
            if error.phase is None:
                error.phase = phase
            raise error from None

    async def reset(self, task: dict[str, Any]) -> Observation:
        return await self._call(self.lease.env.reset.remote(task), self.settings.reset_timeout, "reset")

    async def step(self, action: str) -> StepResult:
        """One action. Raises ActionFailed/InvalidAction (the model's fault) or an env error."""
        self.steps += 1
        ref = self.lease.env.step.remote(action, self.settings.pause, f"{self.env_name}:{self.steps}")
        return await self._call(ref, self.settings.step_timeout, "step")

    async def evaluate(self) -> float:
        return float(await self._call(self.lease.env.evaluate.remote(), self.settings.evaluate_timeout, "evaluate"))


@contextlib.asynccontextmanager
async def open_episode(pool: EnvPool, settings: AgentSettings) -> AsyncIterator[Episode]:
    """Lease a desktop for one episode; env failures leave as :class:`EpisodeFailed`, the lease released."""
    try:
        async with pool.lease_async(settings.lease_timeout) as lease:
            yield Episode(lease, settings)
    except RayEnvError as error:
        raise EpisodeFailed(error) from error


_POOLS: dict[tuple[str, str], EnvPool] = {}


def connect_pool(settings: AgentSettings) -> EnvPool:
    """The pool handle for these settings, looked up once per process (verl builds a loop per sample)."""
    key = (settings.pool, settings.namespace)
    if key not in _POOLS:
        _POOLS[key] = EnvPool.connect(settings.pool, namespace=settings.namespace)
    return _POOLS[key]


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's header, without decoding the image."""
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG screenshot")
    width, height = struct.unpack(">II", png[16:24])
    return width, height
