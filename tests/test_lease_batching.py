"""A process's concurrent acquires and releases reach the pool manager as one call each (rayenv.pool.batching),
while every coroutine keeps its own lease, timeout and errors. Fast: the manager is a fake on the same loop."""

from __future__ import annotations

import asyncio

import pytest

from rayenv.errors import PoolError
from rayenv.pool.batching import LeaseBatcher
from rayenv.pool.lease import Lease


class _Method:
    def __init__(self, function):
        self.function = function

    def remote(self, *args):
        return asyncio.ensure_future(self.function(*args))


class FakeManager:
    """Lends ``size`` desktops as the real manager does: up to ``count`` of the idle ones once any is idle."""

    def __init__(self, size: int) -> None:
        self.idle = [Lease(slot=i, generation=1, env_name=f"env-{i}", env=None) for i in range(size)]
        self.freed = asyncio.Condition()
        self.acquire_calls: list[int] = []
        self.release_calls: list[tuple[list, list]] = []
        self.fail_with: Exception | None = None
        self.acquire_many = _Method(self._acquire_many)
        self.release_many = _Method(self._release_many)

    async def _acquire_many(self, count, timeout, lessee):
        self.acquire_calls.append(count)
        if self.fail_with is not None:
            raise self.fail_with
        async with self.freed:
            await asyncio.wait_for(self.freed.wait_for(lambda: self.idle), timeout)
            granted, self.idle = self.idle[:count], self.idle[count:]
            return granted

    async def _release_many(self, releases, unused):
        self.release_calls.append((list(releases), list(unused)))
        async with self.freed:
            self.idle += [Lease(slot=s, generation=g, env_name=f"env-{s}", env=None)
                          for s, g, *_ in [*releases, *unused]]
            self.freed.notify_all()


def run(coroutine):
    return asyncio.run(coroutine)


def test_many_coroutines_acquiring_at_once_cost_one_manager_call_and_each_gets_its_own_desktop():
    async def scenario():
        manager = FakeManager(64)
        batcher = LeaseBatcher(manager, "p", {"job_id": "01"})
        leases = await asyncio.gather(*(batcher.acquire(5) for _ in range(50)))
        await asyncio.gather(*(batcher.release(lease) for lease in leases))
        return manager, leases

    manager, leases = run(scenario())
    assert manager.acquire_calls == [50]
    assert len({lease.slot for lease in leases}) == 50
    assert len(manager.release_calls) == 1 and len(manager.release_calls[0][0]) == 50


def test_one_coroutine_alone_makes_one_call_per_acquire_and_release():
    async def scenario():
        manager = FakeManager(2)
        batcher = LeaseBatcher(manager, "p", {"job_id": "01"})
        for _ in range(3):
            lease = await batcher.acquire(5)
            await batcher.release(lease, broken=True)
        return manager

    manager = run(scenario())
    assert manager.acquire_calls == [1, 1, 1]
    assert [releases for releases, _ in manager.release_calls] == [[(0, 1, True)], [(1, 1, True)], [(0, 1, True)]]


def test_with_fewer_desktops_than_waiters_the_oldest_waiters_are_served_as_desktops_come_back():
    async def scenario():
        manager = FakeManager(2)
        batcher = LeaseBatcher(manager, "p", {"job_id": "01"})
        first = await asyncio.gather(*(batcher.acquire(5) for _ in range(2)))
        later = [asyncio.ensure_future(batcher.acquire(5)) for _ in range(3)]
        await asyncio.sleep(0.01)
        assert not any(task.done() for task in later)
        await batcher.release(first[0])
        await asyncio.sleep(0.01)
        assert [task.done() for task in later] == [True, False, False]
        await asyncio.gather(*(batcher.release(lease) for lease in first[1:]))
        await asyncio.sleep(0.01)
        assert [task.done() for task in later] == [True, True, False]
        for task in later:
            task.cancel()

    run(scenario())


def test_a_waiter_whose_timeout_passes_gets_a_pool_error_and_its_late_lease_goes_back_unused():
    async def scenario():
        manager = FakeManager(1)
        batcher = LeaseBatcher(manager, "p", {"job_id": "01"})
        held = await batcher.acquire(5)
        with pytest.raises(PoolError, match="became free within 0.05s"):
            await batcher.acquire(timeout=0.05)
        patient = asyncio.ensure_future(batcher.acquire(timeout=5))
        await asyncio.sleep(0.01)
        await batcher.release(held)
        assert (await patient).slot == held.slot  # the patient waiter gets the desktop, not the one that left
        return manager

    manager = run(scenario())
    assert all(not unused for _, unused in manager.release_calls)


def test_a_lease_granted_after_every_waiter_left_is_given_back_as_unused():
    async def scenario():
        manager = FakeManager(1)
        batcher = LeaseBatcher(manager, "p", {"job_id": "01"})
        held = await batcher.acquire(5)
        waiting = asyncio.ensure_future(batcher.acquire(timeout=5))
        await asyncio.sleep(0.01)
        waiting.cancel()  # the rollout was cancelled; its manager call still waits
        manager.idle.append(Lease(slot=7, generation=3, env_name="env-7", env=None))
        async with manager.freed:
            manager.freed.notify_all()
        await asyncio.sleep(0.05)
        return manager, held

    manager, _ = run(scenario())
    assert ([], [(7, 3)]) in manager.release_calls


def test_a_manager_error_reaches_every_waiter_of_that_call():
    async def scenario():
        manager = FakeManager(4)
        manager.fail_with = PoolError("pool 'p' is shutting down", phase="lease")
        batcher = LeaseBatcher(manager, "p", {"job_id": "01"})
        return await asyncio.gather(*(batcher.acquire(5) for _ in range(3)), return_exceptions=True)

    errors = run(scenario())
    assert all(isinstance(error, PoolError) and "shutting down" in str(error) for error in errors)


def test_a_reverts_answer_makes_its_slot_clean_silent_or_failed():
    """The manager applies reverts' answers in batches (rayenv.pool.manager._revert_event): what each one means."""
    import concurrent.futures

    from rayenv.errors import DesktopUnreachable, RayEnvError
    from rayenv.pool.events import Revert, RevertDone, RevertFailed, RevertSilent
    from rayenv.pool.manager import _revert_event

    def answered(error: Exception | None) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        future.set_result("ready") if error is None else future.set_exception(error)
        return future

    revert = Revert(slot=3, generation=2, handle=None)
    assert _revert_event(revert, answered(None)) == RevertDone(3, 2)
    assert isinstance(_revert_event(revert, answered(DesktopUnreachable("no answer", env="e"))), RevertSilent)
    failed = _revert_event(revert, answered(RayEnvError("snapshot missing", env="e")))
    assert isinstance(failed, RevertFailed) and "snapshot missing" in failed.error
