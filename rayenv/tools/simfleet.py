"""Simulated env hosts for the scale bench (``bench/scale.py``): a thousand desktops without a thousand actors.

A real desktop's env actor is a Ray worker process of its own; a thousand of them do not fit in a
bench machine. Here one :class:`SimHost` actor answers for every desktop of one simulated env host,
and the pool holds a :class:`SimDesktop` per slot, which forwards ``handle.<method>.remote(...)`` to
its host with the desktop's id: the pool's manager, leases, events, health rounds, status and metrics
stay the real ones, only the desktops behind them are fakes. The fakes behave like desktops where the
pool can tell: a boot takes time, a step and a revert take time, and now and then a desktop dies
(its next ping says so, and the pool replaces it).
"""

from __future__ import annotations

import asyncio
import os
import random
from dataclasses import dataclass
from typing import Any

import ray
from pydantic import BaseModel, Field

from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ..pool.config import PoolConfig
from ..pool.handle import HEAD_RESOURCE, EnvPool
from ..pool.manager import PoolManager, manager_name

#: Prefix of the node id a simulated desktop reports: the rest is its simulated env host's name.
SIM_NODE_PREFIX = "sim:"


class SimBehaviour(BaseModel):
    """How the simulated desktops behave (seconds are uniform between the given bounds)."""

    boot_s: tuple[float, float] = (0.05, 0.3)
    step_s: tuple[float, float] = (0.05, 0.2)
    revert_s: tuple[float, float] = (0.001, 0.01)
    death_rate: float = Field(0.001, ge=0, le=1, description="chance that a desktop is found dead at a ping")


@ray.remote(num_cpus=0)
class SimHost:
    """Every simulated desktop of one env host: each method takes the desktop's id first."""

    def __init__(self, name: str, behaviour: dict[str, Any], seed: int = 0) -> None:
        self.name, self.behaviour, self.random = name, SimBehaviour.model_validate(behaviour), random.Random(seed)
        self.desktops: dict[str, str] = {}  # desktop -> "ready" | "dead"

    async def _take(self, bounds: tuple[float, float]) -> None:
        await asyncio.sleep(self.random.uniform(*bounds))

    async def boot(self, desktop: str) -> str:
        await self._take(self.behaviour.boot_s)
        self.desktops[desktop] = "ready"
        return desktop

    async def status(self, desktop: str) -> dict[str, Any]:
        state = self.desktops.get(desktop, "closed")
        return {"node_id": SIM_NODE_PREFIX + self.name, "state": state,
                "details": {"exit_reason": "simulated death"} if state == "dead" else {}}

    async def ping(self, desktop: str, probe: float | None = None) -> bool:
        """As the env actor's ping; ``probe`` (the guest check of idle desktops) costs a simulated guest nothing."""
        if self.desktops.get(desktop) == "ready" and self.random.random() < self.behaviour.death_rate:
            self.desktops[desktop] = "dead"
        return self.desktops.get(desktop) == "ready"

    async def step(self, desktop: str, action: Any = None) -> dict[str, Any]:
        await self._take(self.behaviour.step_s)
        return {"reward": 0.0, "done": False}

    async def revert(self, desktop: str) -> str:
        await self._take(self.behaviour.revert_s)
        return self.desktops.get(desktop, "closed")

    async def close(self, desktop: str) -> None:
        self.desktops.pop(desktop, None)

    async def settle(self, desktop: str) -> None:
        """Nothing queues behind a simulated call: settled at once."""

    def count(self) -> int:
        return len(self.desktops)


@dataclass(frozen=True)
class _SimCall:
    host: Any
    method: str
    desktop: str

    def remote(self, *args: Any) -> ray.ObjectRef:
        return getattr(self.host, self.method).remote(self.desktop, *args)


@dataclass(frozen=True)
class SimDesktop:
    """Stands where an env actor's handle would: ``desktop.ping.remote()`` asks its host about this desktop."""

    host: Any
    desktop: str

    def __getattr__(self, method: str) -> _SimCall:
        if method.startswith("_"):
            raise AttributeError(method)
        return _SimCall(self.host, method, self.desktop)


class _SimPoolManager(PoolManager.__ray_metadata__.modified_class):  # type: ignore[name-defined,misc]
    """The real pool manager, except that a slot's desktop is a :class:`SimDesktop` on one of ``hosts``
    (slot ``i`` on host ``i mod len(hosts)``) and its env host is the simulated host's name."""

    def __init__(self, config: dict[str, Any], hosts: list[Any]) -> None:
        super().__init__(config)
        self._sim_hosts = hosts

    def _create_env(self, slot: int, generation: int, env_name: str) -> tuple[Any, str]:
        return SimDesktop(self._sim_hosts[slot % len(self._sim_hosts)], env_name), f"sim-{env_name}"

    async def _host_of(self, node_id: str) -> str:
        return node_id.removeprefix(SIM_NODE_PREFIX)

    def pid(self) -> int:
        """The manager's process id (the bench reads its memory and CPU time)."""
        return os.getpid()


SimPoolManager = ray.remote(num_cpus=0)(_SimPoolManager)


@dataclass
class SimFleet:
    """A started pool of simulated desktops: ``pool`` is the ordinary handle lessees use."""

    pool: EnvPool
    manager: Any
    hosts: list[Any]

    def shutdown(self) -> None:
        ray.get(self.manager.shutdown.remote())
        for actor in (self.manager, *self.hosts):
            ray.kill(actor)


def start_sim_fleet(config: PoolConfig, node_ids: list[str], hosts: int, behaviour: SimBehaviour) -> SimFleet:
    """``hosts`` simulated env hosts spread round-robin over ``node_ids``, and a pool of ``config.size``
    desktops over them whose manager runs on the head (as ``EnvPool.create`` places it), started."""
    sims = [SimHost.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node_ids[i % len(node_ids)], soft=False))
            .remote(f"sim-host-{i:02d}", behaviour.model_dump(), seed=i) for i in range(hosts)]
    manager = SimPoolManager.options(name=manager_name(config.name), namespace=config.namespace,
                                     max_concurrency=10_000, resources={HEAD_RESOURCE: 0.001}
                                     ).remote(config.model_dump(), sims)
    ray.get(manager.start.remote())
    return SimFleet(EnvPool.connect(config.name, config.namespace), manager, sims)
