"""What rayenv asks Ray beyond its public API, in one place to revisit on a Ray upgrade.

Every private Ray name rayenv uses is here (``python -m rayenv.tools.layers`` reports any use
elsewhere): the GCS's job and actor tables (is a lessee's driver or a desktop's actor still alive, even without a dashboard for
``ray.util.state``), free units per node, an actor handle's id before the actor runs, and attaching
a driver to one particular raylet of a host that sees two. The rest of rayenv uses public Ray only.
"""

from __future__ import annotations

from typing import Any

import ray
from ray._private import state as _gcs

from .types import HOST_LABEL  # noqa: F401 - the label, re-exported where Ray is asked about it


def host_of(node_id: str) -> str:
    """The env host a node is (its ``rayenv-host`` label), else its address (blocking: asks the GCS)."""
    node = next((n for n in ray.nodes() if n["NodeID"] == node_id), {})
    return node.get("Labels", {}).get(HOST_LABEL) or node.get("NodeManagerAddress", "")


def host_label(context: Any) -> str:
    """The env host the calling worker runs on, from its runtime context's node labels; "local" without one."""
    value = context.get_node_labels().get(HOST_LABEL, "")
    return (value[0] if isinstance(value, list) and value else value) or "local"


def dead_jobs() -> set[str]:
    """Ids of the jobs (drivers) the GCS reports dead (blocking)."""
    return {job["JobID"] for job in _gcs.jobs() if job["IsDead"]}


def actor_is_gone(actor_id: str) -> bool:
    """The GCS reports the actor dead, or has never heard of it (blocking)."""
    return _gcs.actors(actor_id=actor_id).get("State", "DEAD") == "DEAD"


def free_units_per_node() -> dict[str, dict[str, float]]:
    """Each live node's unclaimed resources by node id (``ray.available_resources()`` only sums them)."""
    return _gcs.available_resources_per_node()


def actor_id_of(handle: ray.actor.ActorHandle) -> str:
    """A handle's actor id in hex, known as soon as the actor is created (before it runs: a booting
    desktop that hangs can still be reaped by its id)."""
    return handle._actor_id.hex()


def init_on_this_node(address: str, temp_dir: str | None, **options: Any) -> None:
    """``ray.init`` attached to the raylet whose session lives under ``temp_dir``: an env host that also
    sees another raylet (a local head, a second worker) must talk to its own."""
    ray.init(address=address, _temp_dir=temp_dir, **options)
