"""What rayenv reads of the Ray cluster's state: which env host a node is.

One module for every question rayenv asks Ray's GCS about nodes, jobs and actors, so the few that
public APIs do not answer are in one place to revisit on a Ray upgrade.
"""

from __future__ import annotations

from typing import Any

import ray

#: The Ray node label an env host's node carries (``rayenv worker start`` sets it): which host a desktop runs on.
HOST_LABEL = "rayenv-host"


def host_of(node_id: str) -> str:
    """The env host a node is (its ``rayenv-host`` label), else its address (blocking: asks the GCS)."""
    node = next((n for n in ray.nodes() if n["NodeID"] == node_id), {})
    return node.get("Labels", {}).get(HOST_LABEL) or node.get("NodeManagerAddress", "")


def host_label(context: Any) -> str:
    """The env host the calling worker runs on, from its runtime context's node labels; "local" without one."""
    value = context.get_node_labels().get(HOST_LABEL, "")
    return (value[0] if isinstance(value, list) and value else value) or "local"
