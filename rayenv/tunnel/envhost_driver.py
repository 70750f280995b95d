"""A short-lived Ray driver on the env host: create or grow the worker's pool, or take this host out of it.

One pool spans every env host that names it: the first host's ``worker start`` creates it, each
later one asks its manager for ``--size`` more slots (they boot where the free ``osworld_env`` units
are, i.e. on the new host), and ``worker stop`` removes this node's slots again (the pool itself goes
with its last host).

It runs in its own process because Ray's token-auth mode is read once, at import, and because it
must attach to *this* node's raylet: ``_temp_dir`` selects it even where another raylet is visible
(two nodes on one machine, as in the tests).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import ray

from ..cluster_state import init_on_this_node
from ..errors import PoolError
from ..pool.config import PoolConfig
from ..pool.handle import EnvPool
from .supervisor import WorkerState


def connect(state: WorkerState) -> None:
    init_on_this_node(state.plan.head_address, state.temp_dir, namespace=state.namespace, log_to_driver=False)


def main() -> None:
    action, state = sys.argv[1], WorkerState.model_validate_json(Path(sys.argv[2]).read_text())
    connect(state)
    if action == "create":
        config = PoolConfig.load(sys.argv[3] if len(sys.argv) > 3 else None, name=state.pool, size=state.size,
                                 provider=state.provider, namespace=state.namespace)
        if "unreachable_grace" not in config.model_fields_set:  # a desktop outlives what the node outlives
            config = config.model_copy(update={"unreachable_grace": float(state.plan.outage_tolerance)})
        try:
            pool = EnvPool.connect(state.pool, state.namespace)
        except PoolError:  # the first env host of this pool
            pool = EnvPool.create(config=config)
        else:
            if pool.config.desktop.provider != config.desktop.provider:
                raise PoolError(f"pool {state.pool!r} runs {pool.config.desktop.provider} desktops, this host was "
                                f"started with --provider {config.desktop.provider}", phase="join",
                                hint=f"use --provider {pool.config.desktop.provider}, or --pool with another name")
            pool.grow(state.size)
        print(json.dumps(pool.status().to_dict(), default=str))
    elif action == "leave":
        EnvPool.connect(state.pool, state.namespace).leave(ray.get_runtime_context().get_node_id())


if __name__ == "__main__":
    main()
