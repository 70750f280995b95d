"""A short-lived Ray driver on the env host: create or shut down the worker's pool.

It runs in its own process because Ray's token-auth mode is read once, at import, and because it
must attach to *this* node's raylet: ``_temp_dir`` selects it even where another raylet is visible
(two nodes on one machine, as in the tests).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import ray

from ..config import PoolConfig
from ..pool import EnvPool
from .supervisor import WorkerState


def connect(state: WorkerState) -> None:
    ray.init(address=state.plan.head_address, _temp_dir=state.temp_dir, namespace=state.namespace,
             log_to_driver=False)


def main() -> None:
    action, state = sys.argv[1], WorkerState.model_validate_json(Path(sys.argv[2]).read_text())
    connect(state)
    if action == "create":
        config = PoolConfig.load(sys.argv[3] if len(sys.argv) > 3 else None, name=state.pool, size=state.size,
                                 provider=state.provider, namespace=state.namespace)
        if "unreachable_grace" not in config.model_fields_set:  # a desktop outlives what the node outlives
            config = config.model_copy(update={"unreachable_grace": float(state.plan.outage_tolerance)})
        pool = EnvPool.create(config=config)
        print(json.dumps(pool.status(), default=str))
    elif action == "shutdown":
        EnvPool.connect(state.pool, state.namespace).shutdown()


if __name__ == "__main__":
    main()
