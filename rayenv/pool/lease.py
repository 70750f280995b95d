"""A desktop lent to one rollout, and the typed way to call it.

``lease.env`` is the env actor's raw handle. The pool may kill that actor under a lessee (it was
released as broken elsewhere, found dead, or silent past ``unreachable_grace``); a raw
``ray.get(lease.env.step.remote(a))`` then raises Ray's own ``RayActorError`` /
``ActorUnavailableError`` (or ``GetTimeoutError`` with a timeout) until the block of
``pool.lease()`` ends, where it leaves typed. :meth:`Lease.call` and :meth:`Lease.call_async` raise
only :mod:`rayenv.errors` types, always (:func:`rayenv.failures.typed`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import ray

from ..failures import typed


@dataclass(frozen=True)
class Lease:
    """A desktop lent to one rollout: ``env`` is the actor handle (``lease.env.step.remote(a)``); :meth:`call`
    is the same call with every failure a :mod:`rayenv.errors` type."""

    slot: int
    generation: int
    env_name: str
    env: Any = field(compare=False, repr=False)

    def call(self, method: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        """``ray.get(lease.env.<method>.remote(*args, **kwargs), timeout=timeout)``, typed."""
        try:
            return ray.get(getattr(self.env, method).remote(*args, **kwargs), timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - typed() re-raises what did not come from the call
            raise typed(exc, self.env_name, phase=method) from exc

    async def call_async(self, method: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        """The asyncio form of :meth:`call` (awaits the ref; a timeout is an ``EnvTimeout``)."""
        try:
            return await asyncio.wait_for(getattr(self.env, method).remote(*args, **kwargs), timeout)
        except Exception as exc:  # noqa: BLE001
            raise typed(exc, self.env_name, phase=method) from exc
