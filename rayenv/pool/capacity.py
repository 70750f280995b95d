"""Will the desktops fit? A pool refuses a size its env hosts cannot hold in RAM, before booting any.

Ray schedules desktops by the ``osworld_env`` units a host advertises and knows nothing of the RAM
each desktop takes; on a 8 GB host four 4 GB VMs boot, then the kernel kills them one by one. So the
check runs where the desktops run: ``rayenv worker start`` asks on its own host before joining, and
:meth:`rayenv.pool.handle.EnvPool.create` runs :func:`check_node` on every env host with free units (each
may receive up to that many desktops). A desktop's need is its ``memory_limit``, else the provider's
estimate (:meth:`rayenv.providers.base.DesktopSpec.memory_need`); the host's offer is what the kernel
reports available now, so desktops already running count against it.
"""

from __future__ import annotations

import socket
from typing import Any

import psutil
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ..cluster_state import free_units_per_node
from ..errors import PoolError
from ..providers.base import DesktopSpec

GIB = 1 << 30


def check_memory(spec: DesktopSpec, count: int, host: str | None = None) -> None:
    """Raise :class:`PoolError` when ``count`` desktops of ``spec`` need more RAM than this host has free."""
    need, available = spec.memory_need(), psutil.virtual_memory().available
    if count * need <= available:
        return
    fits = available // need
    raise PoolError(f"{count} {spec.provider} desktop(s) need {count * need / GIB:.1f} GiB of RAM "
                    f"({need / GIB:.2f} GiB each: {_need_source(spec)}), but {host or socket.gethostname()} has "
                    f"{available / GIB:.1f} GiB available: it holds {fits} of them",
                    phase="capacity",
                    hint=f"use --size {fits} (or fewer) on this host, add an env host, or lower the desktop's "
                         "memory (desktop.docker_memory / desktop.memory_limit)")


def _need_source(spec: DesktopSpec) -> str:
    if spec.memory_limit:
        return f"desktop.memory_limit={spec.memory_limit}"
    return f"docker_memory={spec.docker_memory} + QEMU" if spec.provider == "docker" else "the provider's estimate"


@ray.remote(num_cpus=0)
def check_node(spec: dict[str, Any], count: int) -> None:
    """:func:`check_memory` on the env host this task is pinned to."""
    check_memory(DesktopSpec.model_validate(spec), count)


def check_cluster(spec: DesktopSpec, size: int, resource: str) -> None:
    """Run :func:`check_node` on every live node with free ``resource`` units, for as many desktops as it
    may receive (its free units, at most ``size``); the first refusal is raised as is."""
    free = free_units_per_node()
    refs = [check_node.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
            .remote(spec.model_dump(), min(size, int(units[resource])))
            for node, units in free.items() if units.get(resource, 0) >= 1]
    try:
        ray.get(refs, timeout=120)
    except ray.exceptions.RayTaskError as exc:  # the env host's own words, as the PoolError it raised
        raise exc.cause from None
