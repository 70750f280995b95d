"""EnvPool: N desktops kept alive as Ray actors, leased to rollouts, healed when they die.

The pool's state lives in one detached, named Ray actor (:class:`~rayenv.pool.manager.PoolManager`),
so every process of the cluster sees the same pool: the driver that created it, verl's agent-loop
workers (``EnvPool.connect``), ``rayenv status`` and the sidecar. :class:`EnvPool` is the thin handle
they hold. Example (runs as written on a machine with Xvfb; ``tests/test_doctests.py`` runs it)::

    >>> import ray
    >>> from rayenv import EnvPool
    >>> _ = ray.init(ignore_reinit_error=True, resources={"osworld_env": 1}, include_dashboard=False,
    ...              log_to_driver=False)
    >>> pool = EnvPool.create(name="demo", size=1, provider="process")
    >>> with pool.lease(timeout=60) as lease:
    ...     obs = ray.get(lease.env.reset.remote(None))
    ...     result = ray.get(lease.env.step.remote("pyautogui.moveTo(100, 100)"))
    >>> result["done"], pool.status().healthy
    (False, 1)
    >>> removed = pool.shutdown()  # every desktop closed, every actor killed; returns what was reaped

Slots (:mod:`rayenv.pool.slots`): each of the ``size`` slots holds at most one env actor at a time. A
slot is ``queued`` (waiting for one of ``max_concurrent_boots`` boot permits: a host never boots every
desktop at once), ``booting``, ``idle``, ``leased``, ``reverting`` (a released desktop is reverted
before its next lease, unless ``revert_on_release`` is off), ``replacing`` or ``failed`` (booting kept
failing; retried by the health loop). A lease names its slot and the actor's generation, so releasing
a lease whose desktop was already replaced is a harmless no-op.

Dead or unreachable: a desktop whose actor died, or that reports itself down, is replaced at once
(also when a lessee's :meth:`EnvPool.step_all` or :meth:`EnvPool.reset_all` finds it so). One that
does not answer (its ping times out, or Ray calls its actor unavailable) is most likely on an env
host whose link dropped: killing it would throw away a desktop, and the episode on it, that comes
back with the link. So it is only marked unreachable (not leased out, not counted healthy) and
replaced once it has been silent for ``unreachable_grace`` seconds; a node Ray declares dead before
then makes its actors die, which replaces them at once.

Orphaned leases: every lease records its lessee (the actor that took it, or else the driver's job).
When that lessee dies without releasing (a crashed trainer, a killed verl worker), the health loop
gives the desktop back as if it had been released, so a restarted trainer finds a full pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import ray
from ray.actor import ActorHandle

from ..errors import PoolError
from ..failures import replaces_now, typed
from ..waiting import wait_until
from .actors import wait_gone
from .batching import LeaseBatcher
from .capacity import check_cluster
from .config import DEFAULT_NAMESPACE, PoolConfig
from .lease import Lease
from .manager import PoolManager, manager_name
from .outcomes import Outcome, as_completed, gather
from .status import PoolStatus

__all__ = ["EnvPool", "Lease", "PoolStatus", "manager_name"]

logger = logging.getLogger("rayenv.pool.handle")

#: Ray gives the head node this resource; the manager asks for a sliver of it to live there.
HEAD_RESOURCE = "node:__internal_head__"


class EnvPool:
    """A handle on a named pool; cheap to create, safe to pass to other Ray tasks and actors."""

    def __init__(self, name: str, namespace: str, manager: ActorHandle, config: dict[str, Any]) -> None:
        self.name = name
        self.namespace = namespace
        self._manager = manager
        self.config = PoolConfig.model_validate(config)
        self._batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LeaseBatcher] = weakref.WeakKeyDictionary()

    # -- creating and attaching ----------------------------------------------------------------
    @classmethod
    def create(cls, name: str = "default", size: int = 1, provider: str | None = None, *,
               config: PoolConfig | None = None, wait: bool = True, **overrides: Any) -> EnvPool:
        """Create a pool and (with ``wait``) return once every slot has booted or given up.

        With ``wait``, a pool none of whose desktops came up is shut down again (nothing is left
        behind) and :class:`~rayenv.errors.PoolError` lists each slot's error; one that is only
        partly up is returned and logged (``status().healthy`` says how many; the health loop
        keeps retrying the failed slots).

        ``overrides`` are :class:`~rayenv.pool.config.PoolConfig` fields (``namespace``, ``resource``,
        ``desktop={...}``, ``env={...}``, ``health_interval``, ...), merged into the defaults key by key;
        ``provider`` (default ``process``) may equally be given as ``desktop={"provider": ...}``. Ray must
        be initialized, or is initialized from ``RAY_ADDRESS`` / a local cluster.
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
            status: PoolStatus = ray.get(start)
            if status.healthy == 0:
                pool.shutdown()
                raise PoolError(f"no desktop of pool {config.name!r} came up ({config.size} "
                                f"{config.desktop.provider} slot(s) failed); the pool was shut down",
                                phase="create", hint=status.errors())
            if status.healthy < config.size:
                logger.warning("pool %s: only %d/%d desktops are up; %s", config.name, status.healthy, config.size,
                               status.errors())
        return pool

    @classmethod
    def connect(cls, name: str = "default", namespace: str = DEFAULT_NAMESPACE) -> EnvPool:
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
        """How many slots the pool has now, as its manager counts them (another process's ``grow`` or ``leave``
        changes it; ``config`` is what this handle was made or last resized with)."""
        return self.status(detail=False).size

    def status(self, detail: bool = True) -> PoolStatus:
        """The pool's counts per state and env host; with ``detail`` also one entry per slot."""
        return ray.get(self._manager.status.remote(detail))

    def healthy_names(self) -> list[str]:
        """Names of the desktops that are up (idle, leased or reverting); ``status().healthy`` counts them."""
        return list(ray.get(self._manager.handles.remote()))

    def envs(self) -> dict[str, ActorHandle]:
        """Actor handles of every healthy desktop, by name (for lock-step rollouts over the whole pool)."""
        return ray.get(self._manager.handles.remote())

    def history(self) -> list[tuple[float, int, str]]:
        """The pool's last slot state changes as (time, slot, state), oldest first."""
        return ray.get(self._manager.history.remote())

    def check_health(self) -> PoolStatus:
        """Run a health round now (the pool also runs one every ``health_interval`` seconds); replacements
        it starts run in the background."""
        return ray.get(self._manager.check_health.remote())

    def wait_healthy(self, timeout: float = 300.0, count: int | None = None) -> PoolStatus:
        """Block until ``count`` (default: all) desktops are healthy; raise :class:`PoolError` on timeout."""
        last: list[PoolStatus] = [self.status()]
        want = last[0].size if count is None else count  # the size the manager counts, from the status just read

        def enough() -> bool:
            last[0] = self.check_health()
            return last[0].healthy >= want

        wait_until(enough, timeout, interval=1.0, what=f"{want} healthy desktops in pool {self.name!r}",
                   explain=lambda: f"{last[0].healthy}/{want} healthy",
                   error=lambda msg: PoolError(msg, phase="wait",
                                               hint=f"slot errors: {[s.last_error for s in last[0].slots]}"))
        return last[0]

    # -- leasing -----------------------------------------------------------------------------------
    def acquire(self, timeout: float | None = None) -> Lease:
        return ray.get(self._manager.acquire.remote(timeout, _lessee()))

    def release(self, lease: Lease, broken: bool = False) -> None:
        ray.get(self._manager.release.remote(lease.slot, lease.generation, broken))

    @contextlib.contextmanager
    def lease(self, timeout: float | None = None) -> Iterator[Lease]:
        """Lend one desktop for the block (call it as ``lease.call("step", a)``, typed, or
        ``lease.env.step.remote(a)``). An error leaving the block is a :mod:`rayenv.errors` type, chained
        to Ray's or asyncio's where it was one of theirs, and :mod:`rayenv.failures` decides whether the
        desktop is released as broken (dead or timed out: replaced at once) or given back (an unreachable
        one is left to the health loop)."""
        lease = self.acquire(timeout)
        broken = False
        try:
            yield lease
        except Exception as exc:
            broken, error = _leave_typed(exc, lease)
            if error is exc:
                raise
            raise error from exc
        finally:
            self.release(lease, broken=broken)

    def fork(self, lease: Lease, k: int, timeout: float | None = None) -> list[Lease]:
        """``k`` more desktops of this pool, each leased to the caller and put in the state ``lease``'s desktop
        is in now, mid-episode (its task and action history too), for tree-shaped rollouts; ``lease`` runs on
        unchanged. Release each branch like any lease. Forks VM desktops started from a template (a pause of
        the parent while its RAM and devices are saved, then one fresh QEMU per branch), on one env host."""
        if k < 1:
            raise PoolError(f"cannot fork into {k} desktops", phase="fork", hint="ask for one branch or more")
        branches: list[Lease] = []
        try:
            branches = [self.acquire(timeout) for _ in range(k)]
            saved = lease.call("fork_save")
            for branch, loading in [(b, b.env.fork_load.remote(saved)) for b in branches]:
                try:
                    ray.get(loading)
                except Exception as exc:  # noqa: BLE001 - typed() re-raises what did not come from the call
                    raise typed(exc, branch.env_name, phase="fork") from exc
        except BaseException:
            for branch in branches:
                self.release(branch)
            raise
        return branches

    async def acquire_async(self, timeout: float | None = None) -> Lease:
        """The asyncio form of :meth:`acquire`. The acquires pending on one event loop at once reach the manager
        as one call (:mod:`rayenv.pool.batching`): a worker running many rollouts costs it a call per batch."""
        return await self._batcher().acquire(timeout)

    async def release_async(self, lease: Lease, broken: bool = False) -> None:
        """The asyncio form of :meth:`release`, coalesced as :meth:`acquire_async` is."""
        await self._batcher().release(lease, broken)

    def _batcher(self) -> LeaseBatcher:
        """This event loop's batcher (its futures belong to the loop; a new loop gets its own)."""
        loop = asyncio.get_running_loop()
        batcher = self._batchers.get(loop)
        if batcher is None:
            batcher = self._batchers[loop] = LeaseBatcher(self._manager, self.name, _lessee())
        return batcher

    @contextlib.asynccontextmanager
    async def lease_async(self, timeout: float | None = None) -> AsyncIterator[Lease]:
        """The asyncio form of :meth:`lease` for agent loops; yields the same :class:`Lease`."""
        lease = await self.acquire_async(timeout)
        broken = False
        try:
            yield lease
        except Exception as exc:
            broken, error = _leave_typed(exc, lease)
            if error is exc:
                raise
            raise error from exc
        finally:
            await self.release_async(lease, broken=broken)

    # -- batch helpers -------------------------------------------------------------------------------
    def reset_all(self, envs: Mapping[str, ActorHandle], tasks: Mapping[str, dict | None],
                  timeout: float | None = None) -> dict[str, Outcome]:
        """Reset each named desktop to its task, in parallel; one failure never hides the others. Desktops
        found gone are replaced at once, without waiting for the next health round."""
        return self._heal(gather({name: envs[name].reset.remote(task) for name, task in tasks.items()}, timeout))

    def step_all(self, envs: Mapping[str, ActorHandle], actions: Mapping[str, Any], pause: float | None = None,
                 timeout: float | None = None) -> dict[str, Outcome]:
        """One lock-step step: send every action, wait for all results (desktops found gone are replaced)."""
        return self._heal(gather({name: envs[name].step.remote(action, pause) for name, action in actions.items()},
                                 timeout))

    def _heal(self, outcomes: dict[str, Outcome]) -> dict[str, Outcome]:
        """Tell the manager which desktops these outcomes found gone (keyed by env name, as :meth:`envs`)."""
        broken = {str(key): f"a lessee's call found it gone: {o.error.message}" for key, o in outcomes.items()
                  if o.broken and o.error is not None}
        if broken:
            ray.get(self._manager.report_broken.remote(broken))
        return outcomes

    as_completed = staticmethod(as_completed)

    # -- hosts joining and leaving ----------------------------------------------------------------------
    def grow(self, count: int) -> PoolStatus:
        """Add ``count`` desktops to the pool (an env host joining it with that many free units); returns the
        status once they booted or gave up."""
        _check_capacity(self.config.model_copy(update={"size": count}))
        status: PoolStatus = ray.get(self._manager.grow.remote(count))
        self.config = self.config.model_copy(update={"size": status.size})
        return status

    def leave(self, node_id: str) -> PoolStatus | None:
        """Take the desktops on ``node_id`` out of the pool (its env host is leaving); the pool shuts down
        when they were its last (returns None then)."""
        status = ray.get(self._manager.leave.remote(node_id))
        if status is None:
            ray.kill(self._manager, no_restart=True)
        else:
            self.config = self.config.model_copy(update={"size": status.size})
        return status

    def reap(self) -> list[str]:
        """Remove this pool's containers and process desktops whose actor is gone; returns their names."""
        return ray.get(self._manager.reap.remote())

    def shutdown(self) -> list[str]:
        """Close every desktop, kill every actor of this pool and the manager; returns what the final reap removed.
        Returns once Ray no longer lists the manager (a name left a moment longer would look like a live pool)."""
        removed = ray.get(self._manager.shutdown.remote())
        ray.kill(self._manager, no_restart=True)
        wait_gone(self.namespace, manager_name(self.name).__eq__, f"pool {self.name}'s killed manager gone")
        return removed

    def __repr__(self) -> str:
        return f"EnvPool({self.name!r}, namespace={self.namespace!r})"  # no Ray call: a repr must not fail

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


def _leave_typed(exc: Exception, lease: Lease) -> tuple[bool, Exception]:
    """Whether the error leaving a lease's block breaks its desktop (:mod:`rayenv.failures` decides), and
    what leaves the block: one of Ray's or asyncio's (the actor died, a wait timed out) as its rayenv type;
    an error that did not come from the desktop (the lessee's own bug) as it is, the desktop kept."""
    try:
        error = typed(exc, lease.env_name)
    except Exception:  # noqa: BLE001 - not a desktop's failure
        return False, exc
    return replaces_now(error), error


def _lessee() -> dict[str, str]:
    """Who is taking a lease: the calling actor if there is one, else the driver's job."""
    context = ray.get_runtime_context()
    actor = context.get_actor_id()
    return {"actor_id": actor} if actor else {"job_id": context.get_job_id()}
