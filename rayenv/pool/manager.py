"""PoolManager: the detached, named Ray actor that owns a pool's slots.

A thin async shell around :class:`~rayenv.pool.slots.Slots`: every change of a slot is an event
applied in :meth:`PoolManager._apply` (which also wakes waiting lessees and updates the metrics);
the effects it returns (boot, retire, revert) run as background tasks whose results come back as
events. A health round therefore never waits for a boot or a replacement.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import threading
from collections.abc import Sequence
from typing import Any

import ray
from ray.util import metrics

from ..cluster_state import actor_id_of, actor_is_gone, dead_jobs, host_of
from ..env.actor import OSWorldEnv
from ..errors import PoolError, RayEnvError
from ..failures import PERMANENT_BOOT_ERRORS, Failure, classify, classify_probe
from .actors import named, wait_gone
from .config import PoolConfig, manager_name
from .events import (Boot, BootFailed, BootStarted, BootSucceeded, Broken, Closing, Created,
                     Effect, Event, Grow, Leased, Leave, LesseeDied, PingOk, PingSilent, Released,
                     Retire, Retired, Retry, Revert, RevertDone, RevertFailed, RevertSilent, Start)
from .reaper import reap_cluster
from .lease import Lease
from .slots import HEALTHY_STATES, STATES, Slots
from .status import PoolStatus
from .status_endpoint import StatusEndpoint

logger = logging.getLogger("rayenv.pool.manager")

#: Seconds a retirement gives a call that ``close`` interrupted to deliver its error before the actor is killed.
SETTLE_TIMEOUT = 5.0
#: At most this many reaps at shutdown (each after the last found something).
FINAL_REAP_ROUNDS = 3
#: The health loop also reaps orphaned desktops every this many rounds.
REAP_EVERY = 6
#: Seconds between two exports of the per-host gauge: slot changes in between are exported together, so the
#: gauge costs the same at a thousand lease+release per second as at one.
GAUGE_PERIOD = 1.0
#: Slot states on the way to a desktop (``start`` and ``grow`` wait until none of their slots is in one).
ON_THE_WAY = ("queued", "booting", "replacing")


@ray.remote(num_cpus=0)
class PoolManager:
    """Owns the pool's slots. Async actor: waiting lessees never block health checks or releases."""

    def __init__(self, config: dict[str, Any]) -> None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s [pool] %(name)s: %(message)s")
        self.config = cfg = PoolConfig.model_validate(config)
        self.slots = Slots(cfg.name, cfg.size, boot_attempts=cfg.boot_attempts, revert_on_release=cfg.revert_on_release,
                           unreachable_grace=cfg.unreachable_grace)
        lock = asyncio.Lock()
        self.changed = asyncio.Condition(lock)  # any slot change: start and grow wait on it
        self._freed = asyncio.Condition(lock)  # a slot became idle: lessees wait on it, woken one per idle slot
        self._tasks: set[asyncio.Task] = set()
        self._boot_permits = asyncio.Semaphore(cfg.max_concurrent_boots)
        self._hosts_seen: set[str] = set()
        self._gauge_due = False
        self._host_names: dict[str, str] = {}  # node id -> env host, asked of the GCS once per node
        self._gauge = metrics.Gauge("rayenv_pool_desktops", "Desktops per slot state and env host",
                                    tag_keys=("pool", "state", "host"))
        self._lease_wait = metrics.Histogram("rayenv_lease_wait_seconds", "Time a lessee (the trainer) waited for a "
                                             "desktop", boundaries=[0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900],
                                             tag_keys=("pool",))
        self._answers: list[tuple[Revert, concurrent.futures.Future]] = []  # reverts answered, not yet applied
        self._answers_lock = threading.Lock()
        self._answers_due = False
        self._loop: asyncio.AbstractEventLoop | None = None  # the actor's event loop, where the answers are applied
        self._endpoint = StatusEndpoint(self.status, ray.get_runtime_context().gcs_address)

    # -- the one place slots change ------------------------------------------------------------------
    def _apply_locked(self, event: Event, background: bool = True) -> list[Effect]:
        """Apply ``event`` (the caller holds ``changed``), wake the waiters, schedule a gauge export; with
        ``background``, perform the effects in a background task, else return them to the caller."""
        return self._apply_all_locked([event], background)

    def _apply_all_locked(self, events: Sequence[Event], background: bool = True) -> list[Effect]:
        """Apply ``events`` in order with one wake-up of the waiters (a health round's results arrive together)."""
        effects = [effect for event in events for effect in self.slots.apply(event)]
        self.changed.notify_all()
        if self.slots.closing:
            self._freed.notify_all()
        else:  # not all: with hundreds of lessees waiting, each release would wake every one of them
            self._freed.notify(self.slots.idle_count())
        if not self._gauge_due:
            self._gauge_due = True
            asyncio.get_running_loop().call_later(GAUGE_PERIOD, self._export_gauge)
        if effects and background:
            reverts = [effect for effect in effects if isinstance(effect, Revert)]
            self._start_reverts(reverts)  # a batch of releases: its reverts go out at once, not task by task
            if len(reverts) < len(effects):
                self._spawn(self._perform([effect for effect in effects if not isinstance(effect, Revert)]))
            return []
        return effects

    async def _apply(self, event: Event, background: bool = True) -> list[Effect]:
        async with self.changed:
            return self._apply_locked(event, background)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _perform(self, effects: Sequence[Effect]) -> None:
        """One slot's effects in order (a replacement's successor boots after the old actor is gone), different
        slots' at once (a new pool boots ``max_concurrent_boots`` desktops in parallel)."""
        by_slot: dict[int, list[Effect]] = {}
        for effect in effects:
            slot = getattr(effect, "slot", None)
            by_slot.setdefault(id(effect) if slot is None else slot, []).append(effect)
        await asyncio.gather(*(self._perform_in_order(group) for group in by_slot.values()))

    async def _perform_in_order(self, effects: Sequence[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Boot):
                await self._boot(effect)
            elif isinstance(effect, Retire):
                await self._retire(effect)
            elif isinstance(effect, Revert):
                self._start_reverts([effect])

    async def _settled(self, indices: set[int]) -> None:
        """Wait until each of these slots has booted or given up (retries included)."""
        async with self.changed:
            await self.changed.wait_for(lambda: self.slots.closing or not any(
                s.state in ON_THE_WAY for s in self.slots if s.index in indices))

    # -- effects ---------------------------------------------------------------------------------------
    async def _boot(self, boot: Boot) -> None:
        """One boot attempt; at most ``max_concurrent_boots`` at once (a permit is held only while booting)."""
        await asyncio.sleep(boot.delay)
        cfg = self.config
        async with self._boot_permits:
            async with self.changed:
                slot = self.slots[boot.slot]
                before = slot.generation if slot else 0
                self._apply_locked(BootStarted(boot.slot))
                if slot is None or slot.generation != before + 1:
                    return  # closing, or the slot left
                generation, env_name = slot.generation, slot.env_name
            handle, actor_id = self._create_env(boot.slot, generation, env_name)
            await self._apply(Created(boot.slot, generation, handle, actor_id))
            try:
                await asyncio.wait_for(handle.boot.remote(), cfg.desktop.boot_timeout + 60)
                status = await handle.status.remote()
                host = await self._host_of(status["node_id"])
            except Exception as exc:  # noqa: BLE001 - any boot failure means: kill, record, retry
                await self._apply(BootFailed(boot.slot, generation, _short(exc), isinstance(exc, PERMANENT_BOOT_ERRORS)))
                return
        await self._apply(BootSucceeded(boot.slot, generation, status["node_id"], host))

    def _create_env(self, slot: int, generation: int, env_name: str) -> tuple[Any, str]:
        """A new env actor for ``slot`` on a free unit of an env host, and its actor id (``bench/scale.py``
        overrides this to place simulated desktops)."""
        cfg = self.config
        handle = OSWorldEnv.options(
            name=f"{cfg.name}.env-{slot:02d}.{cfg.desktop.provider}.g{generation}",
            namespace=cfg.namespace, lifetime="detached", num_cpus=0, resources={cfg.resource: 1},
            max_restarts=0,
        ).remote(cfg.name, env_name, cfg.desktop.model_dump(), cfg.env.model_dump())
        return handle, actor_id_of(handle)

    async def _host_of(self, node_id: str) -> str:
        """The env host of ``node_id``; the GCS is asked once per node, not once per boot."""
        if node_id not in self._host_names:
            self._host_names[node_id] = await asyncio.to_thread(host_of, node_id)
        return self._host_names[node_id]

    async def _retire(self, retire: Retire) -> None:
        """Close the desktop (a control-group call: it never queues behind a stuck step, whose caller then
        gets the step's typed error), let that call finish briefly, kill the actor, reap what it left."""
        if retire.handle is not None:
            if retire.close:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(retire.handle.close.remote(), self.config.close_timeout)
                    await asyncio.wait_for(retire.handle.settle.remote(), SETTLE_TIMEOUT)
            with contextlib.suppress(Exception):
                ray.kill(retire.handle, no_restart=True)
        if retire.reap:
            await self._reap(doomed=[retire.actor_id] if retire.actor_id else [])
        if retire.slot is not None:
            await self._apply(Retired(retire.slot, retire.generation))

    def _start_reverts(self, reverts: Sequence[Revert]) -> None:
        """Send each revert; their answers come back through :meth:`_revert_answered` and are applied in batches.

        Not one awaiting coroutine per revert: at hundreds of releases per second, each await of a Ray
        reference costs the manager a cross-thread hand-off and each result a pass through the lock, and
        the reverts are the one Ray call a lease+release cycle still makes per desktop."""
        self._loop = asyncio.get_running_loop()
        for revert in reverts:
            revert.handle.revert.remote().future().add_done_callback(functools.partial(self._revert_answered, revert))

    def _revert_answered(self, revert: Revert, answer: concurrent.futures.Future) -> None:
        """A revert's answer (called on Ray's thread): queued, and the event loop woken once per batch."""
        with self._answers_lock:
            self._answers.append((revert, answer))
            if self._answers_due:
                return
            self._answers_due = True
        self._loop.call_soon_threadsafe(lambda: self._spawn(self._apply_reverts()))

    async def _apply_reverts(self) -> None:
        with self._answers_lock:
            answers, self._answers, self._answers_due = self._answers, [], False
        async with self.changed:
            self._apply_all_locked([_revert_event(revert, answer) for revert, answer in answers])

    async def _reap(self, doomed: Sequence[str] = (), everything: bool = False) -> list[str]:
        """Remove this pool's desktops whose actor is gone (see :mod:`rayenv.pool.reaper`) on every env host."""
        removed: list[str] = []
        for ref in reap_cluster(self.config.name, self.config.resource, doomed, everything):
            try:
                removed += await asyncio.wait_for(ref, 60)
            except Exception as exc:  # noqa: BLE001 - an unreachable host is reaped on a later round
                logger.warning("reap on an env host failed (retried every %.0fs): %s",
                               self.config.health_interval * REAP_EVERY, _short(exc))
        return removed

    def _export_gauge(self) -> None:
        """Desktops per state per env host ("" for slots not placed yet), in one pass over the slots; every
        pair is set, zeros included, so a host whose desktops all left a state reads 0 rather than its last count."""
        self._gauge_due = False
        counts: dict[str, dict[str, int]] = {host: dict.fromkeys((*STATES, "unreachable"), 0) for host in self._hosts_seen}
        for slot in self.slots:
            mine = counts.setdefault(slot.host, dict.fromkeys((*STATES, "unreachable"), 0))
            mine[slot.state] += 1
            mine["unreachable"] += slot.unreachable
        for host, states in counts.items():
            for name, count in states.items():
                self._gauge.set(count, tags={"pool": self.config.name, "state": name, "host": host})
        self._hosts_seen.update(counts)

    # -- the pool's life -------------------------------------------------------------------------------
    async def start(self) -> PoolStatus:
        await self._endpoint.start()  # `rayenv status` on the head reads it without a Ray driver
        await self._apply(Start())
        await self._settled({s.index for s in self.slots})
        self._spawn(self._health_loop())
        return self.status()

    async def grow(self, count: int) -> PoolStatus:
        """Add ``count`` slots and boot them (another env host joined with that many units; Ray places the
        new desktops on the free units, i.e. on that host); returns once they booted or gave up."""
        known = {s.index for s in self.slots}
        await self._apply(Grow(count))
        self.config = self.config.model_copy(update={"size": len(self.slots)})
        await self._settled({s.index for s in self.slots} - known)
        return self.status()

    async def leave(self, node_id: str) -> PoolStatus | None:
        """Drop the slots on ``node_id`` (its env host is leaving) and retire their desktops; with no slot
        left the pool shuts down and None is returned."""
        if all(s.node_id == node_id for s in self.slots):
            await self.shutdown()
            return None
        effects = await self._apply(Leave(node_id), background=False)  # first: no lease or health round sees them
        self.config = self.config.model_copy(update={"size": len(self.slots)})
        await self._perform_all(effects)
        return self.status()

    async def _perform_all(self, effects: Sequence[Effect]) -> None:
        await asyncio.gather(*(self._perform([effect]) for effect in effects))

    async def shutdown(self) -> list[str]:
        """Close every desktop, kill every env actor, and remove anything left of this pool.

        The background tasks are cancelled mid-way: a boot whose actor was made but not yet recorded, a
        replacement whose old actor was not yet killed. So every env actor of this pool still named in
        Ray is killed too and waited for until Ray no longer lists it, and the reap is repeated until a round
        finds nothing: a container a killed actor was creating (a revert's restart) reaches Docker after the
        actor is gone.
        """
        self._endpoint.close()
        effects = await self._apply(Closing(), background=False)
        for task in list(self._tasks):
            task.cancel()
        await self._perform_all(effects)
        await asyncio.to_thread(self._kill_remaining_actors)
        await asyncio.to_thread(wait_gone, self.config.namespace, self._is_env_actor, "the killed env actors gone")
        removed: list[str] = []
        for _ in range(FINAL_REAP_ROUNDS):
            found = await self._reap(everything=True)
            removed += found
            if not found:
                break
        return removed

    def _kill_remaining_actors(self) -> None:
        """Kill the env actors of this pool that Ray still knows by name (blocking: run it off the loop)."""
        for name in named(self.config.namespace, self._is_env_actor):
            with contextlib.suppress(Exception):
                ray.kill(ray.get_actor(name, namespace=self.config.namespace), no_restart=True)

    def _is_env_actor(self, name: str) -> bool:
        return name.startswith(f"{self.config.name}.env-")

    # -- health ----------------------------------------------------------------------------------------
    async def _health_loop(self) -> None:
        rounds = 0
        while not self.slots.closing:
            await asyncio.sleep(self.config.health_interval)
            await self.check_health(detail=False)
            rounds += 1
            if rounds % REAP_EVERY == 0:
                await self._reap()

    async def check_health(self, detail: bool = True) -> PoolStatus:
        """Ping every live desktop at once (an idle one's guest must answer too: a frozen desktop still runs,
        and it would be leased next); replace the dead and the long silent (in the background); retry failed
        slots. The round is batched: the pings go out together and are awaited with one ``ray.wait`` (not one
        asyncio timer and future per desktop), and the answers are applied in one pass with one wake-up of the
        waiting lessees: at a thousand desktops the per-ping cost is what remains."""
        events: list[Event] = [Retry(s.index) for s in self.slots if s.state == "failed"]
        probed = [s for s in self.slots if s.state in HEALTHY_STATES and s.handle is not None]
        guest_wait = self.config.ping_timeout / 2
        pings = [(s.index, s.generation, s.handle, s.handle.ping.remote(guest_wait if s.state == "idle" else None))
                 for s in probed]
        answers = await asyncio.to_thread(_answers, [ref for *_, ref in pings], self.config.ping_timeout)
        for (index, generation, handle, _), answer in zip(pings, answers):
            if isinstance(answer, Exception):  # rayenv.failures decides: silent (kept a while) or replaced
                if classify_probe(answer) is Failure.UNREACHABLE:
                    events.append(PingSilent(index, generation, _short(answer) if str(answer) else "ping timed out"))
                else:
                    events.append(Broken(index, generation, f"ping failed: {_short(answer)}"))
            elif answer:
                events.append(PingOk(index, generation))
            else:
                events.append(Broken(index, generation, f"desktop is down: {await self._why_down(handle)}"))
        async with self.changed:
            self._apply_all_locked(events)
        await self._reclaim_orphaned_leases()
        return self.status(detail)

    async def _why_down(self, handle: Any) -> str:
        """The provider's account of a dead desktop (Docker's OOMKilled, an exit code), else what it is in."""
        try:
            status = await asyncio.wait_for(handle.status.remote(), self.config.ping_timeout)
        except Exception as exc:  # noqa: BLE001 - the reason is a courtesy; replacing it is what matters
            return f"no status ({_short(exc)})"
        return status["details"].get("exit_reason") or status.get("last_error") or f"its desktop is {status['state']}"

    async def _reclaim_orphaned_leases(self) -> None:
        leased = [(s.index, s.generation, s.env_name, s.lessee) for s in self.slots if s.state == "leased" and s.lessee]
        if not leased:
            return
        dead = await asyncio.to_thread(_dead_lessees, [lessee for *_, lessee in leased])
        for index, generation, env_name, lessee in leased:
            if _lessee_key(lessee) in dead:
                logger.warning("slot %d: %s was leased by %s, which died without releasing it; taking it back",
                               index, env_name, _lessee_key(lessee))
                await self._apply(LesseeDied(index, generation))

    async def report_broken(self, reasons: dict[str, str]) -> None:
        """Replace these desktops (by env name) now: a lessee's call found them gone (see ``EnvPool.step_all``)."""
        for slot in list(self.slots):
            if slot.env_name in reasons:
                await self._apply(Broken(slot.index, slot.generation, reasons[slot.env_name]))

    # -- leasing ---------------------------------------------------------------------------------------
    async def acquire(self, timeout: float | None = None, lessee: dict[str, str] | None = None) -> Lease:
        return (await self.acquire_many(1, timeout, lessee))[0]

    async def acquire_many(self, count: int, timeout: float | None = None,
                           lessee: dict[str, str] | None = None) -> list[Lease]:
        """Lease up to ``count`` desktops to one lessee: once any is idle, every idle one up to ``count`` (at least
        one). A process's concurrent acquires arrive as one call (:mod:`rayenv.pool.batching`)."""
        async def idle_slots() -> list[Lease]:
            async with self._freed:
                await self._freed.wait_for(lambda: self.slots.closing or self.slots.leasable() is not None)
                if self.slots.closing:
                    raise PoolError(f"pool {self.config.name!r} is shutting down", phase="lease")
                chosen = self.slots.leasable_many(count)
                self._apply_all_locked([Leased(slot.index, lessee) for slot in chosen])  # one wake-up for the lot
                return [Lease(slot=slot.index, generation=slot.generation, env_name=slot.env_name, env=slot.handle)
                        for slot in chosen]

        asked = asyncio.get_running_loop().time()
        try:
            leases = await asyncio.wait_for(idle_slots(), timeout)
        except asyncio.TimeoutError:
            raise PoolError(f"no desktop of pool {self.config.name!r} became free within {timeout}s", phase="lease",
                            hint=f"pool status: {self.status().counts}; grow the pool or release leases") from None
        waited = asyncio.get_running_loop().time() - asked
        for _ in leases:
            self._lease_wait.observe(waited, tags={"pool": self.config.name})
        return leases

    async def release(self, slot_index: int, generation: int, broken: bool = False) -> None:
        await self._apply(Released(slot_index, generation, broken))

    async def release_many(self, releases: Sequence[tuple[int, int, bool]],
                           unused: Sequence[tuple[int, int]] = ()) -> None:
        """Give back many leases in one call: ``releases`` as (slot, generation, broken), reverted as ``release``
        does; ``unused`` as (slot, generation), leases that were granted but never lent to a rollout (their
        waiter had left), idle again at once: their desktop is as clean as when it was leased."""
        events: list[Event] = [Released(slot, generation, broken) for slot, generation, broken in releases]
        events += [Released(slot, generation, unused=True) for slot, generation in unused]
        async with self.changed:
            self._apply_all_locked(events)

    # -- inspection ------------------------------------------------------------------------------------
    def status(self, detail: bool = True) -> PoolStatus:
        """Counts per state and env host; with ``detail``, every slot too (``rayenv status --slots``)."""
        return PoolStatus.of(self.slots, self.config, detail)

    def history(self) -> list[tuple[float, int, str]]:
        """The last slot state changes as (time, slot, state), oldest first: how the pool got here."""
        return list(self.slots.history)

    def handles(self) -> dict[str, Any]:
        return {s.env_name: s.handle for s in self.slots if s.handle is not None and s.healthy}

    def config_dict(self) -> dict[str, Any]:
        return self.config.model_dump()

    async def reap(self) -> list[str]:
        return await self._reap()

    def __repr__(self) -> str:
        """The Ray dashboard's "Repr" of the manager: which pool, how big, which desktops."""
        return f"PoolManager({self.config.name}, size={self.config.size}, {self.config.desktop.provider})"


def _answers(refs: list[ray.ObjectRef], timeout: float) -> list[Any]:
    """Each ping's answer, or the exception it raised, or :class:`asyncio.TimeoutError` if it did not answer
    within ``timeout`` seconds of the round's start (blocking: run it off the event loop)."""
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout) if refs else ([], [])
    answered = set(ready)
    results: list[Any] = []
    for ref in refs:
        if ref not in answered:
            results.append(asyncio.TimeoutError())
            continue
        try:
            results.append(ray.get(ref))
        except Exception as exc:  # noqa: BLE001 - the caller sorts silent from broken
            results.append(exc)
    return results


def _revert_event(revert: Revert, answer: concurrent.futures.Future) -> Event:
    """What a revert's answer means for its slot: clean again, silent (its next reset reverts it; the health
    loop decides), or failed (replaced)."""
    error = answer.exception()
    if error is None:
        return RevertDone(revert.slot, revert.generation)
    if classify(error) is Failure.UNREACHABLE:
        return RevertSilent(revert.slot, revert.generation, _short(error) if str(error) else "revert timed out")
    return RevertFailed(revert.slot, revert.generation, _short(error))


def _lessee_key(lessee: dict[str, str]) -> str:
    return f"actor {lessee['actor_id']}" if "actor_id" in lessee else f"job {lessee['job_id']}"


def _dead_lessees(lessees: list[dict[str, str]]) -> set[str]:
    """The keys of the lessees that the GCS reports dead (blocking: run it off the event loop)."""
    dead: set[str] = set()
    if any("job_id" in lessee for lessee in lessees):
        dead |= {f"job {job_id}" for job_id in dead_jobs()}
    for actor_id in {lessee["actor_id"] for lessee in lessees if "actor_id" in lessee}:
        if actor_is_gone(actor_id):
            dead.add(f"actor {actor_id}")
    return dead


def _short(exc: BaseException) -> str:
    """One line for a slot's ``last_error``: a typed error's own words and fix, else the first line."""
    if isinstance(exc, RayEnvError):  # also a RayTaskError(<RayEnvError>) from a remote call
        kind = next(c.__name__ for c in type(exc).__mro__ if issubclass(c, RayEnvError) and "(" not in c.__name__)
        return f"{kind}: {exc.message}" + (f" -> {exc.hint}" if exc.hint else "")
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
