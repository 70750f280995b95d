"""Remove desktops whose owning actor no longer exists.

An env actor normally removes its container in ``close()``. When its worker process is killed
(``kill -9``, OOM, node restart) nobody does, so every container and process desktop carries its
owner and actor id (see :class:`~rayenv.providers.base.Ownership`), and the pool periodically runs
:func:`reap_node` on each env host with the set of actor ids it still owns. Anything of that pool
with another actor id is an orphan and is removed with its volumes.
"""

from __future__ import annotations

import logging
from typing import Iterable

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from .errors import ProviderUnavailable
from .providers import containers
from .providers.base import LABEL_ACTOR, LABEL_ENV

logger = logging.getLogger(__name__)


def reap_containers(owner: str, live_actor_ids: Iterable[str]) -> list[str]:
    """Remove this owner's containers whose actor is not live; returns the removed containers' names."""
    try:
        mine = containers.owned(owner)
    except ProviderUnavailable:  # no Docker engine on this node: nothing of ours can be there
        return []
    live = set(live_actor_ids)
    removed = []
    for container in mine:
        if container.labels.get(LABEL_ACTOR, "") in live:
            continue
        logger.warning("reaping container %s of %s (actor %s is gone)", container.name,
                       container.labels.get(LABEL_ENV), container.labels.get(LABEL_ACTOR))
        containers.remove(container)
        removed.append(container.name)
    return removed


def reap_processes(owner: str, live_actor_ids: Iterable[str]) -> list[str]:
    """Stop process-mode desktops of this owner whose actor is gone."""
    from .desktop_lite.process import reap_orphans

    return reap_orphans(owner, set(live_actor_ids))


@ray.remote(num_cpus=0)
def reap_node(owner: str, live_actor_ids: list[str]) -> list[str]:
    """Run on one env host: remove orphaned containers and process desktops of ``owner``."""
    return reap_containers(owner, live_actor_ids) + reap_processes(owner, live_actor_ids)


def env_nodes(resource: str) -> list[str]:
    """Ids of live nodes that advertise the env resource."""
    return [node["NodeID"] for node in ray.nodes() if node.get("Alive") and resource in node.get("Resources", {})]


def reap_cluster(owner: str, live_actor_ids: Iterable[str], resource: str) -> list[ray.ObjectRef]:
    """Start :func:`reap_node` on every env host; returns the refs (each yields removed names)."""
    live = list(live_actor_ids)
    return [reap_node.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(owner, live)
            for node in env_nodes(resource)]
