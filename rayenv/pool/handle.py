"""EnvPool: N desktops kept alive as Ray actors, leased to rollouts, healed when they die.

The pool's state lives in one detached, named Ray actor (:class:`PoolManager`), so every process
of the cluster sees the same pool: the driver that created it, verl's agent-loop workers
(``EnvPool.connect``), ``rayenv status`` and the sidecar. :class:`EnvPool` is the thin handle they
hold. Example (runs as written on a machine with Xvfb)::

    import ray
    from rayenv import EnvPool

    ray.init(resources={"osworld_env": 2})
    pool = EnvPool.create(name="demo", size=2, provider="process")
    with pool.lease() as env:
        obs = ray.get(env.reset.remote(None))
        result = ray.get(env.step.remote("pyautogui.moveTo(100, 100)"))
    pool.shutdown()

Slots: each of the ``size`` slots holds at most one env actor at a time. A slot is ``queued`` (waiting
for one of ``max_concurrent_boots`` boot permits: a host never boots every desktop at once), ``booting``,
``idle``, ``leased``, ``preparing`` (reset prefetch after a release), ``replacing`` or ``failed``
(booting kept failing; retried by the health loop). A lease names its slot and the actor's
generation, so releasing a lease whose desktop was already replaced is a harmless no-op.

Dead or unreachable: a desktop whose actor died, or that reports itself down, is replaced at once.
One that does not answer (its ping times out, or Ray calls its actor unavailable) is most likely on
an env host whose link dropped: killing it would throw away a desktop, and the episode on it, that
comes back with the link. So it is only marked unreachable (not leased out, not counted healthy)
and replaced once it has been silent for ``unreachable_grace`` seconds; a node Ray declares dead
before then makes its actors die, which replaces them at once.

Orphaned leases: every lease records its lessee (the actor that took it, or else the driver's job).
When that lessee dies without releasing (a crashed trainer, a killed verl worker), the health loop
gives the desktop back as if it had been released, so a restarted trainer finds a full pool.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Iterator, Literal, NoReturn, Sequence, get_args

import ray
from ray.actor import ActorHandle
from ray.util import metrics

from ..cluster_state import actor_id_of, actor_is_gone, dead_jobs, host_of
from ..env.actor import OSWorldEnv
from ..errors import ConfigError, DesktopUnavailable, EnvTimeout, PoolError, ProviderUnavailable, RayEnvError
from .capacity import check_cluster
from .config import DEFAULT_NAMESPACE, PoolConfig
from .outcomes import Outcome, as_completed, as_env_error, gather
from .reaper import reap_cluster

logger = logging.getLogger("rayenv.pool.handle")

SlotState = Literal["queued", "booting", "idle", "leased", "preparing", "replacing", "failed"]
HEALTHY_STATES = ("idle", "leased", "preparing")
#: What a call to a desktop on a silent env host raises: the desktop may well come back with the link.
UNREACHABLE_ERRORS = (asyncio.TimeoutError, ray.exceptions.ActorUnavailableError)
#: A lessee's errors that say "this desktop is gone" (released as broken, replaced at once), except the
#: unreachable ones among them.
BROKEN_ERRORS = (DesktopUnavailable, EnvTimeout, ray.exceptions.RayActorError)
#: Boot failures that a retry on the same host cannot fix; the slot fails at once, with the error's hint.
PERMANENT_BOOT_ERRORS = (ProviderUnavailable, ConfigError)
#: Seconds ``_retire`` gives a call that ``close`` interrupted to deliver its error before the actor is killed.
SETTLE_TIMEOUT = 5.0
#: Ray gives the head node this resource; the manager asks for a sliver of it to live there.
HEAD_RESOURCE = "node:__internal_head__"
#: The health loop also reaps orphaned desktops every this many rounds.
REAP_EVERY = 6
#: Slot state changes the pool remembers (``PoolManager.history``), newest last.
HISTORY_LENGTH = 1000


def manager_name(pool: str) -> str:
    return f"rayenv-pool:{pool}"


@dataclass
class Slot:
    index: int
    state: SlotState = "queued"
    generation: int = 0
    handle: ActorHandle | None = None
    actor_id: str = ""
    node_id: str = ""
    env_name: str = ""
    leased_at: float | None = None
    replacements: int = 0
    last_error: str | None = None
    unreachable_since: float | None = None
    lessee: dict[str, str] | None = None
    host: str = ""

    @property
    def unreachable(self) -> bool:
        return self.unreachable_since is not None

    @property
    def healthy(self) -> bool:
        return self.state in HEALTHY_STATES and not self.unreachable

    @property
    def leasable(self) -> bool:
        return self.state == "idle" and not self.unreachable

    def summary(self) -> dict[str, Any]:
        return {"slot": self.index, "env": self.env_name, "state": self.state, "generation": self.generation,
                "actor_id": self.actor_id, "node_id": self.node_id, "host": self.host,
                "replacements": self.replacements,
                "leased_for": round(time.time() - self.leased_at, 1) if self.leased_at else None,
                "unreachable_for": round(time.time() - self.unreachable_since, 1) if self.unreachable_since else None,
                "lessee": self.lessee,
                "last_error": self.last_error}


@dataclass(frozen=True)
class Lease:
    """A desktop lent to one rollout. ``env`` is the actor handle to call."""

    slot: int
    generation: int
    env_name: str
    env: ActorHandle = field(compare=False)


@ray.remote(num_cpus=0)
class PoolManager:
    """Owns the pool's slots. Async actor: waiting lessees never block health checks or releases."""

    def __init__(self, config: dict[str, Any]) -> None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s [pool] %(name)s: %(message)s")
        self.config = PoolConfig.model_validate(config)
        self.slots = [Slot(index=i) for i in range(self.config.size)]
        self.changed = asyncio.Condition()
        self.closing = False
        self._tasks: set[asyncio.Task] = set()
        self._boot_permits = asyncio.Semaphore(self.config.max_concurrent_boots)
        self._hosts_seen: set[str] = set()
        self._history: collections.deque[tuple[float, int, str]] = collections.deque(maxlen=HISTORY_LENGTH)
        self._gauge = metrics.Gauge("rayenv_pool_desktops", "Desktops per slot state and env host",
                                    tag_keys=("pool", "state", "host"))
        self._lease_wait = metrics.Histogram("rayenv_lease_wait_seconds", "Time a lessee (the trainer) waited for a "
                                             "desktop", boundaries=[0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900],
                                             tag_keys=("pool",))

    # -- creation and replacement ------------------------------------------------------------
    async def start(self) -> dict[str, Any]:
        await asyncio.gather(*(self._boot(slot) for slot in self.slots))
        self._spawn(self._health_loop())
        return self.status()

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _boot(self, slot: Slot) -> None:
        """Boot the slot's desktop, retrying with backoff; at most ``max_concurrent_boots`` boot at once
        (the permit is held only while booting, not while backing off)."""
        for attempt in range(1, self.config.boot_attempts + 1):
            if self.closing:
                return
            await self._set_state(slot, "queued")
            async with self._boot_permits:
                outcome = await self._boot_once(slot, attempt)
            if outcome == "closed":
                return
            if outcome == "up":
                await self._set_state(slot, "idle")
                logger.info("slot %d: %s ready on node %s", slot.index, slot.env_name, slot.node_id[:8])
                return
            if outcome == "permanent":
                break  # this host cannot run it (no image, no engine, bad config): trying again only waits
            await asyncio.sleep(min(2 ** attempt, 30))
        slot.handle = None
        await self._set_state(slot, "failed")

    async def _boot_once(self, slot: Slot, attempt: int) -> Literal["up", "retry", "permanent", "closed"]:
        cfg = self.config
        if self.closing:
            return "closed"
        slot.generation += 1
        slot.env_name = f"{cfg.name}-env-{slot.index:02d}-g{slot.generation}"
        await self._set_state(slot, "booting")
        handle = OSWorldEnv.options(
            name=f"{cfg.name}.env-{slot.index:02d}.{cfg.desktop.provider}.g{slot.generation}",
            namespace=cfg.namespace, lifetime="detached", num_cpus=0, resources={cfg.resource: 1},
            max_restarts=0,
        ).remote(cfg.name, slot.env_name, cfg.desktop.model_dump(), cfg.env.model_dump())
        slot.handle, slot.actor_id = handle, actor_id_of(handle)
        try:
            await asyncio.wait_for(handle.boot.remote(), cfg.desktop.boot_timeout + 60)
            status = await handle.status.remote()
        except Exception as exc:  # noqa: BLE001 - any boot failure means: kill, record, retry
            slot.last_error = f"boot attempt {attempt}: {_short(exc)}"
            logger.warning("slot %d: %s", slot.index, slot.last_error)
            ray.kill(handle, no_restart=True)
            return "permanent" if isinstance(exc, PERMANENT_BOOT_ERRORS) else "retry"
        if self.closing:  # shut down while this desktop booted: it must not outlive the pool
            await self._retire(handle)
            return "closed"
        slot.node_id = status["node_id"]
        slot.host = await asyncio.to_thread(host_of, slot.node_id)
        return "up"

    async def _replace(self, slot: Slot, reason: str) -> None:
        """Close (best effort) and kill the slot's actor, reap what it left, boot a new one."""
        if slot.state in ("replacing", "queued", "booting") or self.closing:
            return
        logger.warning("slot %d: replacing %s: %s", slot.index, slot.env_name, reason)
        self._mark(slot, "replacing")
        slot.last_error, slot.leased_at, slot.unreachable_since = reason, None, None
        slot.lessee = None
        slot.replacements += 1
        doomed = slot.actor_id
        await self._retire(slot.handle)
        slot.handle, slot.actor_id = None, ""
        await self._reap(doomed=[doomed] if doomed else [])
        await self._boot(slot)

    async def _retire(self, handle: ActorHandle | None) -> None:
        """Close the desktop (a control-group call: it never queues behind a stuck step, whose caller then
        gets the step's typed error), let that call finish briefly, then kill the actor."""
        if handle is None:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(handle.close.remote(), self.config.close_timeout)
            await asyncio.wait_for(handle.settle.remote(), SETTLE_TIMEOUT)
        with contextlib.suppress(Exception):
            ray.kill(handle, no_restart=True)

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

    async def _set_state(self, slot: Slot, state: SlotState) -> None:
        async with self.changed:
            self._mark(slot, state)
            self.changed.notify_all()
        self._export_gauge()

    def _mark(self, slot: Slot, state: SlotState) -> None:
        """Every state change goes through here, so :meth:`history` misses none."""
        slot.state = state
        self._history.append((time.time(), slot.index, state))

    def history(self) -> list[tuple[float, int, str]]:
        """The last slot state changes as (time, slot, state), oldest first: how the pool got here."""
        return list(self._history)

    def _export_gauge(self) -> None:
        """Desktops per state per env host ("" for slots not placed yet); every pair is set, zeros included,
        so a host whose desktops all left a state reads 0 rather than its last count."""
        for host in {s.host for s in self.slots} | self._hosts_seen:
            mine = [s for s in self.slots if s.host == host]
            counts = {name: sum(s.state == name for s in mine) for name in get_args(SlotState)}
            counts["unreachable"] = sum(s.unreachable for s in mine)
            for name, count in counts.items():
                self._gauge.set(count, tags={"pool": self.config.name, "state": name, "host": host})
            self._hosts_seen.add(host)

    # -- health --------------------------------------------------------------------------------
    async def _health_loop(self) -> None:
        rounds = 0
        while not self.closing:
            await asyncio.sleep(self.config.health_interval)
            await self.check_health()
            rounds += 1
            if rounds % REAP_EVERY == 0:
                await self._reap()

    async def check_health(self) -> dict[str, Any]:
        """Ping every live desktop; replace the dead and the long silent; retry failed slots."""
        async def probe(slot: Slot) -> None:
            if slot.state == "failed":
                await self._boot(slot)
                return
            if slot.state not in HEALTHY_STATES or slot.handle is None:
                return
            try:
                alive = await asyncio.wait_for(slot.handle.ping.remote(), self.config.ping_timeout)
            except UNREACHABLE_ERRORS as exc:
                await self._unreachable(slot, exc)
                return
            except Exception as exc:  # noqa: BLE001 - a dead actor or a dead node: replace
                await self._replace(slot, f"ping failed: {_short(exc)}")
                return
            if not alive:
                await self._replace(slot, f"desktop is down: {await self._why_down(slot)}")
            elif slot.unreachable:
                logger.info("slot %d: %s answers again after %.0fs", slot.index, slot.env_name,
                            time.time() - slot.unreachable_since)
                async with self.changed:
                    slot.unreachable_since = None
                    self.changed.notify_all()
                self._export_gauge()

        await asyncio.gather(*(probe(slot) for slot in self.slots))
        await self._reclaim_orphaned_leases()
        return self.status()

    async def _why_down(self, slot: Slot) -> str:
        """The provider's account of a dead desktop (Docker's OOMKilled, an exit code), else what it is in."""
        try:
            status = await asyncio.wait_for(slot.handle.status.remote(), self.config.ping_timeout)
        except Exception as exc:  # noqa: BLE001 - the reason is a courtesy; replacing it is what matters
            return f"no status ({_short(exc)})"
        return status["details"].get("exit_reason") or f"its desktop is {status['state']}"

    async def _reclaim_orphaned_leases(self) -> None:
        leased = [s for s in self.slots if s.state == "leased" and s.lessee]
        if not leased:
            return
        dead = await asyncio.to_thread(_dead_lessees, [s.lessee for s in leased])
        for slot in leased:
            if _lessee_key(slot.lessee) in dead:
                logger.warning("slot %d: %s was leased by %s, which died without releasing it; taking it back",
                               slot.index, slot.env_name, _lessee_key(slot.lessee))
                await self.release(slot.index, slot.generation)

    async def _unreachable(self, slot: Slot, exc: BaseException) -> None:
        """Keep a silent desktop out of circulation; replace it once it has been silent too long."""
        now = time.time()
        if slot.unreachable_since is None:
            slot.unreachable_since = now
            slot.last_error = f"unreachable: {_short(exc) if str(exc) else 'ping timed out'}"
            logger.warning("slot %d: %s is %s; replaced if still silent in %.0fs", slot.index, slot.env_name,
                           slot.last_error, self.config.unreachable_grace)
            self._export_gauge()
        elif now - slot.unreachable_since >= self.config.unreachable_grace:
            await self._replace(slot, f"unreachable for {now - slot.unreachable_since:.0f}s")

    # -- leasing -------------------------------------------------------------------------------
    async def acquire(self, timeout: float | None = None, lessee: dict[str, str] | None = None) -> Lease:
        async def idle_slot() -> Slot:
            async with self.changed:
                await self.changed.wait_for(lambda: self.closing or any(s.leasable for s in self.slots))
                if self.closing:
                    raise PoolError(f"pool {self.config.name!r} is shutting down", phase="lease")
                slot = next(s for s in self.slots if s.leasable)
                self._mark(slot, "leased")
                slot.leased_at, slot.lessee = time.time(), lessee
                return slot

        asked = time.monotonic()
        try:
            slot = await asyncio.wait_for(idle_slot(), timeout)
            self._lease_wait.observe(time.monotonic() - asked, tags={"pool": self.config.name})
        except asyncio.TimeoutError:
            raise PoolError(f"no desktop of pool {self.config.name!r} became free within {timeout}s",
                            phase="lease", hint=f"pool status: {self._counts()}; grow the pool or release leases") from None
        assert slot.handle is not None
        return Lease(slot=slot.index, generation=slot.generation, env_name=slot.env_name, env=slot.handle)

    async def release(self, slot_index: int, generation: int, broken: bool = False) -> None:
        slot = next((s for s in self.slots if s.index == slot_index), None)
        if slot is None or slot.generation != generation or slot.state != "leased":
            return  # this desktop was already replaced (or its host left the pool); nothing to give back
        slot.leased_at, slot.lessee = None, None
        if broken:
            self._spawn(self._replace(slot, "released as broken"))
        elif self.config.prefetch:
            await self._set_state(slot, "preparing")
            self._spawn(self._prepare(slot, generation))
        else:
            await self._set_state(slot, "idle")

    async def _prepare(self, slot: Slot, generation: int) -> None:
        assert slot.handle is not None
        try:
            await slot.handle.prepare.remote()
        except UNREACHABLE_ERRORS as exc:  # its next reset reverts it; the health loop decides its fate
            if slot.generation == generation:
                await self._unreachable(slot, exc)
                await self._set_state(slot, "idle")
            return
        except Exception as exc:  # noqa: BLE001
            if slot.generation == generation:
                await self._replace(slot, f"revert failed: {_short(exc)}")
            return
        if slot.generation == generation and slot.state == "preparing":
            await self._set_state(slot, "idle")

    # -- inspection and shutdown -------------------------------------------------------------
    def _counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for slot in self.slots:
            counts[slot.state] = counts.get(slot.state, 0) + 1
        return counts

    def status(self) -> dict[str, Any]:
        cfg = self.config
        return {"name": cfg.name, "namespace": cfg.namespace, "size": cfg.size, "provider": cfg.desktop.provider,
                "resource": cfg.resource, "require_a11y_tree": cfg.env.require_a11y_tree,
                "healthy": sum(s.healthy for s in self.slots),
                "unreachable": sum(s.unreachable for s in self.slots),
                "counts": self._counts(), "replacements": sum(s.replacements for s in self.slots),
                "closing": self.closing, "slots": [s.summary() for s in self.slots]}

    def handles(self) -> dict[str, ActorHandle]:
        return {s.env_name: s.handle for s in self.slots if s.handle is not None and s.healthy}

    def config_dict(self) -> dict[str, Any]:
        return self.config.model_dump()

    def __repr__(self) -> str:
        """The Ray dashboard's "Repr" of the manager: which pool, how big, which desktops."""
        return f"PoolManager({self.config.name}, size={self.config.size}, {self.config.desktop.provider})"

    async def reap(self) -> list[str]:
        return await self._reap()

    # -- hosts joining and leaving -------------------------------------------------------------
    async def grow(self, count: int) -> dict[str, Any]:
        """Add ``count`` slots and boot them (another env host joined with that many units; Ray places the
        new desktops on the free units, i.e. on that host)."""
        first = max((s.index for s in self.slots), default=-1) + 1
        new = [Slot(index=i) for i in range(first, first + count)]
        self.slots += new
        self.config = self.config.model_copy(update={"size": len(self.slots)})
        await asyncio.gather(*(self._boot(slot) for slot in new))
        return self.status()

    async def leave(self, node_id: str) -> dict[str, Any] | None:
        """Drop the slots on ``node_id`` (its env host is leaving) and retire their desktops; with no slot
        left the pool shuts down and None is returned."""
        if all(s.node_id == node_id for s in self.slots):
            await self.shutdown()
            return None
        leaving = [s for s in self.slots if s.node_id == node_id]
        self.slots = [s for s in self.slots if s.node_id != node_id]  # first: no lease or health round sees them
        self.config = self.config.model_copy(update={"size": len(self.slots)})
        await asyncio.gather(*(self._retire(s.handle) for s in leaving))
        self._export_gauge()
        return self.status()

    async def shutdown(self) -> list[str]:
        """Close every desktop, kill every env actor, and remove anything left of this pool."""
        async with self.changed:
            self.closing = True
            self.changed.notify_all()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*(self._retire(s.handle) for s in self.slots))
        for slot in self.slots:
            slot.handle = None
            self._mark(slot, "failed")
        return await self._reap(everything=True)


class EnvPool:
    """A handle on a named pool; cheap to create, safe to pass to other Ray tasks and actors."""

    def __init__(self, name: str, namespace: str, manager: ActorHandle, config: dict[str, Any]) -> None:
        self.name = name
        self.namespace = namespace
        self._manager = manager
        self.config = PoolConfig.model_validate(config)

    # -- creating and attaching ----------------------------------------------------------------
    @classmethod
    def create(cls, name: str = "default", size: int = 1, provider: str | None = None, *,
               config: PoolConfig | None = None, wait: bool = True, **overrides: Any) -> "EnvPool":
        """Create a pool and (with ``wait``) return once every slot has booted or given up.

        With ``wait``, a pool none of whose desktops came up is shut down again (nothing is left
        behind) and :class:`~rayenv.errors.PoolError` lists each slot's error; one that is only
        partly up is returned and logged (``status()["healthy"]`` says how many; the health loop
        keeps retrying the failed slots).

        ``overrides`` are :class:`~rayenv.pool.config.PoolConfig` fields (``namespace``, ``resource``,
        ``desktop={...}``, ``env={...}``, ``health_interval``, ...), merged into the defaults key by key;
        ``provider`` (default ``process``) may equally be given as ``desktop={"provider": ...}``. Ray must be initialized, or is
        initialized from ``RAY_ADDRESS`` / a local cluster.
        """
        if config is None:
            config = PoolConfig.load(None, name=name, size=size, provider=provider, **overrides)
        _ensure_ray()
        with contextlib.suppress(ValueError):
            ray.get_actor(manager_name(config.name), namespace=config.namespace)
            raise PoolError(f"pool {config.name!r} already exists in namespace {config.namespace!r}",
                            phase="create", hint="EnvPool.connect(name) to use it, or shut it down first")
        _check_capacity(config)
        placement = {"resources": {HEAD_RESOURCE: 0.001}} if config.manager_on_head and _has_head_resource() else {}
        manager = PoolManager.options(name=manager_name(config.name), namespace=config.namespace, lifetime="detached",
                                      max_concurrency=10_000, **placement).remote(config.model_dump())
        pool = cls(config.name, config.namespace, manager, config.model_dump())
        start = manager.start.remote()
        if wait:
            status = ray.get(start)
            if status["healthy"] == 0:
                pool.shutdown()
                raise PoolError(f"no desktop of pool {config.name!r} came up ({config.size} "
                                f"{config.desktop.provider} slot(s) failed); the pool was shut down",
                                phase="create", hint=_slot_errors(status))
            if status["healthy"] < config.size:
                logger.warning("pool %s: only %d/%d desktops are up; %s", config.name, status["healthy"], config.size,
                               _slot_errors(status))
        return pool

    @classmethod
    def connect(cls, name: str = "default", namespace: str = DEFAULT_NAMESPACE) -> "EnvPool":
        """Attach to a pool created by another process (a verl worker, ``rayenv status``, ...)."""
        _ensure_ray()
        try:
            manager = ray.get_actor(manager_name(name), namespace=namespace)
        except ValueError:
            raise PoolError(f"no pool {name!r} in Ray namespace {namespace!r}", phase="connect",
                            hint="check the name and namespace (rayenv status lists pools), and RAY_ADDRESS") from None
        return cls(name, namespace, manager, ray.get(manager.config_dict.remote()))

    # -- inspection ------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return self.config.size

    def status(self) -> dict[str, Any]:
        return ray.get(self._manager.status.remote())

    def healthy(self) -> list[str]:
        """Names of the desktops that are up (idle, leased or being prepared)."""
        return list(ray.get(self._manager.handles.remote()))

    def envs(self) -> dict[str, ActorHandle]:
        """Actor handles of every healthy desktop, by name (for lock-step rollouts over the whole pool)."""
        return ray.get(self._manager.handles.remote())

    def history(self) -> list[tuple[float, int, str]]:
        """The pool's last slot state changes as (time, slot, state), oldest first."""
        return ray.get(self._manager.history.remote())

    def check_health(self) -> dict[str, Any]:
        """Run a health round now (the pool also runs one every ``health_interval`` seconds)."""
        return ray.get(self._manager.check_health.remote())

    def wait_healthy(self, timeout: float = 300.0, count: int | None = None) -> dict[str, Any]:
        """Block until ``count`` (default: all) desktops are healthy; raise :class:`PoolError` on timeout."""
        deadline, want = time.monotonic() + timeout, self.size if count is None else count
        while True:
            status = self.check_health()
            if status["healthy"] >= want:
                return status
            if time.monotonic() > deadline:
                raise PoolError(f"pool {self.name!r} has {status['healthy']}/{want} healthy desktops after {timeout}s",
                                phase="wait", hint=f"slot errors: {[s['last_error'] for s in status['slots']]}")
            time.sleep(1.0)

    # -- leasing -----------------------------------------------------------------------------------
    def acquire(self, timeout: float | None = None) -> Lease:
        return ray.get(self._manager.acquire.remote(timeout, _lessee()))

    def release(self, lease: Lease, broken: bool = False) -> None:
        ray.get(self._manager.release.remote(lease.slot, lease.generation, broken))

    @contextlib.contextmanager
    def lease(self, timeout: float | None = None) -> Iterator[ActorHandle]:
        """Lend one desktop for the block. A desktop that turned out dead is replaced on exit; an unreachable
        one (its link is down) is given back as is and left to the health loop. Ray's own errors from the
        desktop's calls leave the block as :mod:`rayenv.errors` types (an actor that died is
        :class:`~rayenv.errors.DesktopUnavailable`), chained to Ray's."""
        lease = self.acquire(timeout)
        broken = False
        try:
            yield lease.env
        except Exception as exc:
            broken = _breaks_the_desktop(exc)
            _raise_typed(exc, lease.env_name)
        finally:
            self.release(lease, broken=broken)

    async def acquire_async(self, timeout: float | None = None) -> Lease:
        return await self._manager.acquire.remote(timeout, _lessee())

    async def release_async(self, lease: Lease, broken: bool = False) -> None:
        await self._manager.release.remote(lease.slot, lease.generation, broken)

    @contextlib.asynccontextmanager
    async def lease_async(self, timeout: float | None = None) -> AsyncIterator[Lease]:
        """The asyncio form of :meth:`lease` for agent loops; yields the :class:`Lease`."""
        lease = await self.acquire_async(timeout)
        broken = False
        try:
            yield lease
        except Exception as exc:
            broken = _breaks_the_desktop(exc)
            _raise_typed(exc, lease.env_name)
        finally:
            await self.release_async(lease, broken=broken)

    # -- batch helpers -------------------------------------------------------------------------------
    @staticmethod
    def reset_all(envs: dict[str, ActorHandle], tasks: dict[str, dict | None], timeout: float | None = None
                  ) -> dict[str, Outcome]:
        """Reset each named desktop to its task, in parallel; one failure never hides the others."""
        return gather({name: envs[name].reset.remote(task) for name, task in tasks.items()}, timeout)

    @staticmethod
    def step_all(envs: dict[str, ActorHandle], actions: dict[str, Any], pause: float | None = None,
                 timeout: float | None = None) -> dict[str, Outcome]:
        """One lock-step step: send every action, wait for all results."""
        return gather({name: envs[name].step.remote(action, pause) for name, action in actions.items()}, timeout)

    as_completed = staticmethod(as_completed)

    def grow(self, count: int) -> dict[str, Any]:
        """Add ``count`` desktops to the pool (an env host joining it with that many free units); returns the
        status once they booted or gave up."""
        _check_capacity(self.config.model_copy(update={"size": count}))
        status = ray.get(self._manager.grow.remote(count))
        self.config = self.config.model_copy(update={"size": status["size"]})
        return status

    def leave(self, node_id: str) -> dict[str, Any] | None:
        """Take the desktops on ``node_id`` out of the pool (its env host is leaving); the pool shuts down
        when they were its last (returns None then)."""
        status = ray.get(self._manager.leave.remote(node_id))
        if status is None:
            ray.kill(self._manager, no_restart=True)
        return status

    def reap(self) -> list[str]:
        """Remove this pool's containers and process desktops whose actor is gone; returns their names."""
        return ray.get(self._manager.reap.remote())

    def shutdown(self) -> list[str]:
        """Close every desktop, kill every actor of this pool and the manager; returns what the final reap removed."""
        removed = ray.get(self._manager.shutdown.remote())
        ray.kill(self._manager, no_restart=True)
        return removed

    def __repr__(self) -> str:
        return f"EnvPool({self.name!r}, size={self.size}, namespace={self.namespace!r})"

    def __reduce__(self):
        return (EnvPool, (self.name, self.namespace, self._manager, self.config.model_dump()))


def _ensure_ray() -> None:
    if not ray.is_initialized():
        ray.init(namespace=DEFAULT_NAMESPACE, log_to_driver=False)


def _has_head_resource() -> bool:
    return HEAD_RESOURCE in ray.cluster_resources()


def _check_capacity(config: PoolConfig) -> None:
    """Fail fast, in words, when too few env units are free (Ray would wait forever): units another
    pool's desktops hold do not count; then each env host checks it has the RAM (:mod:`rayenv.pool.capacity`)."""
    total = ray.cluster_resources().get(config.resource, 0)
    free = ray.available_resources().get(config.resource, 0)
    if free < config.size:
        raise PoolError(f"the cluster advertises {total:g} {config.resource!r}, {free:g} of them free, "
                        f"but the pool needs {config.size}",
                        phase="create",
                        hint=f"start env hosts with `ray start ... --resources='{{\"{config.resource}\": N}}'` "
                             f"(rayenv worker start does this), use the pool that holds them (rayenv status), "
                             f"or lower the pool size")
    check_cluster(config.desktop, config.size, config.resource)


def _slot_errors(status: dict[str, Any]) -> str:
    """Each distinct boot error of a pool's failed slots, with the slots it hit."""
    errors: dict[str, list[int]] = {}
    for slot in status["slots"]:
        if slot["state"] == "failed" and slot["last_error"]:
            errors.setdefault(slot["last_error"], []).append(slot["slot"])
    return "; ".join(f"slot(s) {', '.join(map(str, slots))}: {error}" for error, slots in errors.items()) or "no error recorded"


def _breaks_the_desktop(exc: BaseException) -> bool:
    """Whether a lessee's error means its desktop is gone (released as broken, replaced at once); an
    unreachable one (``ActorUnavailableError`` is a ``RayActorError`` too) is left to the health loop."""
    return isinstance(exc, BROKEN_ERRORS) and not isinstance(exc, UNREACHABLE_ERRORS)


def _raise_typed(exc: Exception, env_name: str) -> NoReturn:
    """Re-raise a lessee's error; one of Ray's (the actor died, a get timed out) as its rayenv type."""
    if isinstance(exc, ray.exceptions.RayError) and not isinstance(exc, RayEnvError):
        raise as_env_error(exc, env_name) from exc
    raise exc


def _lessee() -> dict[str, str]:
    """Who is taking a lease: the calling actor if there is one, else the driver's job."""
    context = ray.get_runtime_context()
    actor = context.get_actor_id()
    return {"actor_id": actor} if actor else {"job_id": context.get_job_id()}


def _lessee_key(lessee: dict[str, str]) -> str:
    return f"actor {lessee['actor_id']}" if "actor_id" in lessee else f"job {lessee['job_id']}"


def _dead_lessees(lessees: list[dict[str, str]]) -> set[str]:
    """The keys of the lessees that the GCS reports dead (blocking: run it off the event loop)."""
    dead: set[str] = set()
    if any("job_id" in lessee for lessee in lessees):
        dead |= {f"job {job_id}" for job_id in dead_jobs()}
    for lessee in lessees:
        if "actor_id" in lessee and actor_is_gone(lessee["actor_id"]):
            dead.add(_lessee_key(lessee))
    return dead


def _short(exc: BaseException) -> str:
    """One line for a slot's ``last_error``: a typed error's own words and fix, else the first line."""
    if isinstance(exc, RayEnvError):  # also a RayTaskError(<RayEnvError>) from a remote call
        kind = next(c.__name__ for c in type(exc).__mro__ if issubclass(c, RayEnvError) and "(" not in c.__name__)
        return f"{kind}: {exc.message}" + (f" -> {exc.hint}" if exc.hint else "")
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
