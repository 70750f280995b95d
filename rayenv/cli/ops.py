"""``rayenv sidecar`` and ``rayenv status``: what an operator runs on an env host or the head."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from ..pool.config import DEFAULT_NAMESPACE, manager_name
from ..pool.status import PoolStatus
from .common import connect_ray, json_option, print_json


def sidecar(
    host: str = typer.Option("127.0.0.1", help="bind address (loopback unless you mean it)"),
    port: int = typer.Option(18082, help="port of GET /health"),
    pool: str = typer.Option("default", help="pool to report"),
    namespace: str = typer.Option(DEFAULT_NAMESPACE, help="Ray namespace of the pool"),
    address: Optional[str] = typer.Option(None, envvar="RAY_ADDRESS", help="Ray head address (host:port)"),
    temp_dir: Optional[str] = typer.Option(None, help="this node's Ray --temp-dir (picks its raylet)"),
    worker_dir: Optional[Path] = typer.Option(None, help="`rayenv worker` state directory (adds the tunnel's state)"),
) -> None:
    """Serve GET /health (the old bridge's keys, plus Ray, node, pool and tunnel facts) until interrupted."""
    import uvicorn

    from ..ops.sidecar import create_app

    uvicorn.run(create_app(pool, namespace, address, temp_dir, worker_dir), host=host, port=port, log_level="warning")


def status(
    address: Optional[str] = typer.Option(None, envvar="RAY_ADDRESS", help="Ray head address (host:port)"),
    as_json: bool = json_option("every pool's status"),
    slots: bool = typer.Option(False, "--slots", help="one row per slot too (its env, node, lease, last error)"),
) -> None:
    """Every rayenv pool of the cluster: desktops per env host and state, replacements, failed slots' errors;
    each slot with ``--slots``."""
    import ray

    connect_ray(address)
    prefix = manager_name("")
    managers = [ray.get_actor(actor["name"], namespace=actor["namespace"])
                for actor in ray.util.list_named_actors(all_namespaces=True) if actor["name"].startswith(prefix)]
    pools: list[PoolStatus] = ray.get([manager.status.remote(slots) for manager in managers])  # asked together
    if as_json:
        print_json([pool.to_dict() for pool in pools])
        return
    console = Console(width=160)
    if not pools:
        console.print("no rayenv pool in this cluster")
    for pool in pools:
        table = Table(title=f"pool {pool.name} ({pool.namespace}): {pool.healthy}/{pool.size} up, "
                            f"{pool.provider}, {pool.replacements} replacement(s); {_per_host(pool)}")
        if not slots:
            console.print(table.title)
            if pool.failed:
                console.print(f"failed: {pool.errors()}")
            continue
        for column in ("slot", "env", "host", "state", "node", "leased for s", "replacements", "last error"):
            table.add_column(column, overflow="fold")
        for slot in pool.slots:
            table.add_row(str(slot.slot), slot.env_name, slot.host or "-", slot.state, slot.node_id[:8],
                          "" if slot.leased_for is None else str(slot.leased_for), str(slot.replacements),
                          slot.last_error or "")
        console.print(table)


def _per_host(pool: PoolStatus) -> str:
    """``host-a: 2 idle, host-b: 1 leased 1 booting``: the pool's desktops by env host and state."""
    return ", ".join(f"{host or '(not placed)'}: " + " ".join(f"{n} {state}" for state, n in sorted(states.items()))
                     for host, states in sorted(pool.hosts.items()))
