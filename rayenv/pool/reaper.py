"""Remove desktops whose owning actor no longer exists.

An env actor normally removes its container in ``close()``. When its worker process is killed
(``kill -9``, OOM, node restart) nobody does, so every container and process desktop carries its
owner and actor id (see :class:`~rayenv.providers.base.Ownership`), and the pool periodically runs
:func:`reap_node` on each env host.

Who is an orphan is decided on the node, at the moment it looks, by asking Ray's GCS about each
desktop's actor: dead, or unknown to this cluster (a desktop from an earlier cluster), means orphan.
A list of live actors computed by the pool beforehand would not do: an actor booting meanwhile makes
its container after the list was taken, and the reaper would remove a healthy desktop. The pool adds
the actors it has just killed (``doomed``), which the GCS may still report alive for a moment.
"""

from __future__ import annotations

import logging
import shutil
from typing import Callable, Iterable

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ..cluster_state import actor_is_gone
from ..engine import containers
from ..engine.containers import LABEL_ACTOR, LABEL_ENV, LABEL_SCREENDIR, LABEL_WORKDIR
from ..errors import ProviderUnavailable
from ..providers.golden import LABEL_GOLDEN, GoldenStore
from ..providers.host_spare import adopter, free_for

logger = logging.getLogger(__name__)

IsOrphan = Callable[[str], bool]
"""Decides from a desktop's actor id whether the desktop is an orphan."""
#: Seconds a free host spare is kept after the desktop that made it is gone, for another desktop to adopt.
SPARE_GRACE = 120.0


def every_desktop(_actor_id: str) -> bool:
    """For when the whole pool goes (shutdown, ``worker stop``): every desktop of the owner is an orphan."""
    return True



def reap_containers(owner: str, is_orphan: IsOrphan, spares_wait: bool = True) -> list[str]:
    """Remove this owner's orphaned containers with their volumes; returns the removed containers' names.

    A host spare (:mod:`rayenv.providers.host_spare`) goes by its adopter once adopted; a free one outlives the
    desktop that made it by :data:`SPARE_GRACE` (that desktop's replacement is the one most likely to adopt it),
    unless not ``spares_wait`` (everything of the owner goes)."""
    try:
        mine = containers.owned(owner)
    except ProviderUnavailable:  # no Docker engine on this node: nothing of ours can be there
        return []
    removed = []
    for container in mine:
        actor_id = adopter(container.labels) or container.labels.get(LABEL_ACTOR, "")
        if not is_orphan(actor_id):
            continue
        if spares_wait and (waited := free_for(container.labels)) is not None and waited < SPARE_GRACE:
            continue
        logger.warning("reaping container %s of %s (actor %s is gone)", container.name,
                       container.labels.get(LABEL_ENV), actor_id)
        containers.remove(container)
        removed.append(container.name)
    return removed


def reap_processes(owner: str, is_orphan: IsOrphan) -> list[str]:
    """Stop this owner's orphaned process-mode desktops; returns their env names."""
    from ..desktop_lite.process import reap_orphans

    return reap_orphans(owner, is_orphan)


@ray.remote(num_cpus=0)
def reap_node(owner: str, doomed: list[str], everything: bool = False) -> list[str]:
    """Run on one env host: remove ``owner``'s desktops whose actor is doomed or gone (all, with ``everything``)."""
    killed = set(doomed)

    def is_orphan(actor_id: str) -> bool:
        return everything or actor_id in killed or actor_is_gone(actor_id)

    removed = reap_containers(owner, is_orphan, spares_wait=not everything) + reap_processes(owner, is_orphan)
    reap_host(owner if everything else None)
    return removed


def reap_host(going: str | None = None) -> list[str]:
    """Remove what this host keeps for its desktops beside their containers and no container uses any more: golden
    VM states, screen directories and VM work directories (one listing of the host's containers serves all);
    ``going``: the owner whose every desktop is being removed (its work directories go at once)."""
    try:
        here = containers.owned()
    except ProviderUnavailable:  # no Docker engine on this node: nothing of ours can be there
        return []
    return reap_golden_states(here) + reap_screen_dirs(here) + reap_work_dirs(here, going)


def reap_golden_states(here: list) -> list[str]:
    """Remove the golden VM states (:mod:`rayenv.providers.golden`) no container on this host (``here``) started from."""
    in_use = {c.labels.get(LABEL_GOLDEN) for c in here} - {None}
    removed = GoldenStore().remove_unused(in_use)
    if removed:
        logger.info("removed golden VM state(s) no desktop uses: %s", ", ".join(removed))
    return removed


#: A screen or work directory younger than this may be a start's under way (its container comes seconds after it).
DIR_GRACE = 600.0


def reap_screen_dirs(here: list, grace: float = DIR_GRACE) -> list[str]:
    """Remove the desktops' screen directories (tmpfs: RAM) that no container on this host (``here``) names, once
    older than ``grace``: what a start cut short left behind."""
    from ..providers.screens import unnamed_screen_dirs

    return _remove("screen directories", unnamed_screen_dirs(_named(here, LABEL_SCREENDIR), grace))


def reap_work_dirs(here: list, going: str | None = None, grace: float = DIR_GRACE) -> list[str]:
    """Remove the VM desktops' work directories (their disk overlays) that no container on this host (``here``)
    names: ``going``'s at once, others once older than ``grace``."""
    from ..providers.docker import unnamed_work_dirs

    return _remove("VM work directories", unnamed_work_dirs(_named(here, LABEL_WORKDIR), grace, going))


def _named(here: list, label: str) -> set[str]:
    """The directories the containers ``here`` name under ``label``."""
    return {c.labels.get(label) for c in here} - {None}


def _remove(what: str, directories: list) -> list[str]:
    """Remove ``directories`` (``what`` they are, for the log); returns their names."""
    for directory in directories:
        shutil.rmtree(directory, ignore_errors=True)
    if directories:
        logger.info("removed %s no desktop uses: %s", what, ", ".join(d.name for d in directories))
    return [directory.name for directory in directories]


def env_nodes(resource: str) -> list[str]:
    """Ids of live nodes that advertise the env resource."""
    return [node["NodeID"] for node in ray.nodes() if node.get("Alive") and resource in node.get("Resources", {})]


def reap_cluster(owner: str, resource: str, doomed: Iterable[str] = (), everything: bool = False) -> list[ray.ObjectRef]:
    """Start :func:`reap_node` on every env host; returns the refs (each yields removed names)."""
    killed = list(doomed)
    return [reap_node.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
            .remote(owner, killed, everything) for node in env_nodes(resource)]
