"""``rayenv sidecar`` and ``rayenv status``: what an operator runs on an env host or the head."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from ..pool.config import DEFAULT_NAMESPACE, manager_name
from ..pool.status import PoolStatus
from ..pool.status_endpoint import PORT_ENV, read_statuses, status_ports
from ..tunnel.raynode import HeadInfo
from .common import connect_ray, debug, flag, json_option, print_json


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
    via_ray: bool = flag("--ray", "ask the pools' managers through Ray, not their status endpoints on this machine"),
) -> None:
    """Every rayenv pool of the cluster: desktops per env host and state, replacements, failed slots' errors;
    each slot with ``--slots``. On the head it reads the managers' status endpoints (no Ray driver: well under a
    second); elsewhere, or when none answers, it asks Ray."""
    pools = None if via_ray else _from_endpoints(address, slots)
    if pools is None:
        pools = _from_ray(address, slots)
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


def _from_endpoints(address: Optional[str], slots: bool) -> Optional[list[PoolStatus]]:
    """The pools of the cluster at ``address`` (else the one this machine last started) whose managers serve a
    status endpoint here (:mod:`rayenv.pool.status_endpoint`); None when that cluster is unknown or none answers."""
    cluster = address or _current_cluster()
    ports = status_ports(_planned_status_port())
    if not cluster:
        debug("status: no --address, $RAY_ADDRESS or local cluster on record; asking Ray")
        return None
    pools = read_statuses(cluster, detail=slots, ports=ports)
    if not pools:
        debug(f"status: no status endpoint of cluster {cluster} on 127.0.0.1:{ports[0]}..{ports[-1]}; asking Ray")
        return None
    debug(f"status: read {len(pools)} pool(s) of cluster {cluster} from 127.0.0.1:{ports[0]}..{ports[-1]}")
    return pools


def _current_cluster() -> Optional[str]:
    """The GCS address of the cluster ``ray start`` last started on this machine (where ``ray.init("auto")``
    looks first, under Ray's temp dir: ``$RAY_TMPDIR``, else ``$TMPDIR``, else /tmp)."""
    temp = os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or "/tmp"
    try:
        return (Path(temp) / "ray" / "ray_current_cluster").read_text().strip() or None
    except OSError:
        return None


def _planned_status_port() -> Optional[int]:
    """The status block of the head ``rayenv head start`` runs on this machine (its port plan), unless
    ``$RAYENV_POOL_STATUS_PORT`` says otherwise; None: the default block."""
    if os.environ.get(PORT_ENV):
        return None
    try:
        return HeadInfo.model_validate_json(HeadInfo.path().read_text()).plan.head.pool_status
    except (OSError, ValueError):
        return None


def _from_ray(address: Optional[str], slots: bool) -> list[PoolStatus]:
    """Every pool's status, asked of its manager through Ray (all managers in one round)."""
    import ray

    connect_ray(address)
    prefix = manager_name("")
    managers = [ray.get_actor(actor["name"], namespace=actor["namespace"])
                for actor in ray.util.list_named_actors(all_namespaces=True) if actor["name"].startswith(prefix)]
    return ray.get([manager.status.remote(slots) for manager in managers])


def _per_host(pool: PoolStatus) -> str:
    """``host-a: 2 idle, host-b: 1 leased 1 booting``: the pool's desktops by env host and state."""
    return ", ".join(f"{host or '(not placed)'}: " + " ".join(f"{n} {state}" for state, n in sorted(states.items()))
                     for host, states in sorted(pool.hosts.items()))
