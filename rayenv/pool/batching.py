"""One manager call for what a process's coroutines ask of the pool at once.

A lessee process (a verl ``AgentLoopWorker``, the scale bench) runs many rollouts as coroutines of one
event loop. Each lease+release used to be its own two Ray calls to the pool manager, and on a small
machine Ray's per-call CPU (~1 to 2 ms) is what caps a pool's lease rate, not the manager's
bookkeeping (``bench/results/scale.md``). :class:`LeaseBatcher` lets every coroutine keep the one-lease
API (``await pool.acquire_async()``, ``await pool.release_async(lease)``) while the calls that are
pending on the loop together go to the manager as one ``acquire_many`` / ``release_many``: at most one
of each is in flight per loop, and whatever queued behind it goes in the next. With one coroutine
there is nothing to coalesce and each call costs what it did.

Waiting and timeouts stay per coroutine: a waiter whose ``timeout`` passes leaves the queue with its
own :class:`~rayenv.errors.PoolError`; a lease the manager granted after its waiter left is handed to
the next waiter, or given back as unused (its desktop was never lent, so it skips the revert).

No Ray import: the manager is anything whose ``acquire_many.remote(...)`` / ``release_many.remote(...)``
are awaitable (an actor handle; a fake in the fast tests).
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass, field
from typing import Any

from ..errors import PoolError
from .lease import Lease


@dataclass
class _Waiter:
    future: asyncio.Future
    deadline: float | None  # loop time, None: wait as long as it takes


@dataclass
class _Release:
    slot: int
    generation: int
    broken: bool
    future: asyncio.Future | None = field(default=None)


class LeaseBatcher:
    """Coalesces the acquires and releases of one event loop for one pool manager."""

    def __init__(self, manager: Any, pool: str, lessee: dict[str, str]) -> None:
        self._manager, self._pool, self._lessee = manager, pool, lessee
        self._waiters: collections.deque[_Waiter] = collections.deque()
        self._releases: list[_Release] = []
        self._acquiring = self._releasing = False
        self._tasks: set[asyncio.Task] = set()

    # -- acquire ---------------------------------------------------------------------------------
    async def acquire(self, timeout: float | None = None) -> Lease:
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop.create_future(), None if timeout is None else loop.time() + timeout)
        self._waiters.append(waiter)
        if not self._acquiring:
            self._acquiring = True
            loop.call_soon(self._spawn, self._acquire_rounds)  # after every coroutine runnable now queued its own
        try:
            return await asyncio.wait_for(asyncio.shield(waiter.future), timeout)
        except asyncio.TimeoutError:
            if _granted(waiter.future):  # granted in the same instant the wait ran out: take it
                return waiter.future.result()
            raise PoolError(f"no desktop of pool {self._pool!r} became free within {timeout}s", phase="lease",
                            hint="`rayenv status` shows what holds the desktops; grow the pool or release leases"
                            ) from None
        except asyncio.CancelledError:
            if _granted(waiter.future):  # the lessee was cancelled as its lease arrived: give it back unused
                lease = waiter.future.result()
                self._spawn(lambda: self._manager.release_many.remote([], [(lease.slot, lease.generation)]))
            raise
        finally:
            if not waiter.future.done():
                waiter.future.cancel()  # left the queue: a lease granted later goes to the next waiter

    def _spawn(self, work: Any) -> None:
        """Run ``work()`` (a coroutine or an awaitable call) as a task this batcher keeps until it ends."""
        async def run() -> None:
            await work()

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _acquire_rounds(self) -> None:
        """Ask for as many desktops as there are waiters, hand them out oldest waiter first, and repeat while
        anyone is waiting; the manager answers with whatever is idle (at least one) once anything is."""
        try:
            while self._drop_gone_waiters():
                asking = list(self._waiters)
                try:
                    leases: list[Lease] = await self._manager.acquire_many.remote(len(asking), self._longest_wait(),
                                                                                 self._lessee)
                except Exception as exc:  # noqa: BLE001 - every waiter this call was for gets the manager's error
                    for waiter in asking:
                        if not waiter.future.done():
                            waiter.future.set_exception(exc)
                    continue
                unused = self._hand_out(leases)
                if unused:
                    await self._manager.release_many.remote([], [(lease.slot, lease.generation) for lease in unused])
        finally:
            self._acquiring = False

    def _drop_gone_waiters(self) -> bool:
        self._waiters = collections.deque(w for w in self._waiters if not w.future.done())
        return bool(self._waiters)

    def _longest_wait(self) -> float | None:
        """How long the most patient waiter still waits (None: forever): the manager call's own timeout."""
        deadlines = [w.deadline for w in self._waiters]
        if any(d is None for d in deadlines):
            return None
        return max(0.0, max(deadlines) - asyncio.get_running_loop().time())  # type: ignore[type-var]

    def _take(self, count: int) -> list[_Waiter]:
        taken = []
        while self._waiters and len(taken) < count:
            waiter = self._waiters.popleft()
            if not waiter.future.done():
                taken.append(waiter)
        return taken

    def _hand_out(self, leases: list[Lease]) -> list[Lease]:
        """Each lease to the oldest waiter still waiting; return the leases nobody waits for any more."""
        leases = list(leases)
        while leases:
            waiters = self._take(1)
            if not waiters:
                break
            waiters[0].future.set_result(leases.pop(0))
        return leases

    # -- release ---------------------------------------------------------------------------------
    async def release(self, lease: Lease, broken: bool = False) -> None:
        loop = asyncio.get_running_loop()
        release = _Release(lease.slot, lease.generation, broken, loop.create_future())
        self._releases.append(release)
        if not self._releasing:
            self._releasing = True
            loop.call_soon(self._spawn, self._release_rounds)
        await asyncio.shield(release.future)  # a cancelled releaser still gives the desktop back

    async def _release_rounds(self) -> None:
        try:
            while self._releases:
                batch, self._releases = self._releases, []
                try:
                    await self._manager.release_many.remote([(r.slot, r.generation, r.broken) for r in batch], [])
                except Exception as exc:  # noqa: BLE001 - each releaser sees the manager's error
                    for release in batch:
                        release.future.set_exception(exc)
                else:
                    for release in batch:
                        release.future.set_result(None)
        finally:
            self._releasing = False


def _granted(future: asyncio.Future) -> bool:
    return future.done() and not future.cancelled() and future.exception() is None
