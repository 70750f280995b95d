"""``rayenv pool``: create, inspect and tear down a named pool on a running Ray cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
import yaml

from ..pool.config import DEFAULT_NAMESPACE, PoolConfig
from .common import RayenvTyper, connect_ray, console, either, flag, hidden_alias, json_option, print_json

app = RayenvTyper(help="Create and manage a named pool of desktops on a running Ray cluster.")

PoolConfigOption = typer.Option(None, "--pool-config", exists=True, help="pool YAML (see configs/pool.yaml)")
AddressOption = typer.Option(None, "--address", envvar="RAY_ADDRESS", help="Ray head address (host:port) "
                             "(default: the cluster on this machine)")


@app.command()
def create(
    pool_config: Optional[Path] = PoolConfigOption,
    pool: Optional[str] = typer.Option(None, "--pool", help="pool name (default: the YAML's, else 'default')"),
    size: Optional[int] = typer.Option(None, min=1, envvar="RAYENV_POOL_SIZE", help="number of desktops"),
    provider: Optional[str] = typer.Option(None, envvar="RAYENV_PROVIDER", help="docker | lite | process"),
    namespace: Optional[str] = typer.Option(None, help="Ray namespace"),
    address: Optional[str] = AddressOption,
    show_config: bool = flag("--show-config", "print the resolved config and exit"),
    as_json: bool = json_option("the pool's status"),
    config: Optional[Path] = hidden_alias("--config", exists=True),
    short_config: Optional[Path] = hidden_alias("-c", exists=True),
    name: Optional[str] = hidden_alias("--name"),
) -> None:
    """Create a pool that outlives this command (its actors are detached) and report its desktops."""
    path = either(pool_config, either(config, short_config, "--config", "-c"), "--pool-config", "--config")
    resolved = PoolConfig.load(path, name=either(pool, name, "--pool", "--name"), size=size, provider=provider,
                               namespace=namespace)
    if show_config:
        print(yaml.safe_dump({"pool": resolved.model_dump()}, sort_keys=False))
        return
    from ..pool.handle import EnvPool

    connect_ray(address, DEFAULT_NAMESPACE)
    with console.status(f"booting {resolved.size} {resolved.desktop.provider} desktop(s) ..."):
        created = EnvPool.create(config=resolved)
    status = created.status()
    console.print(f"pool {created.name!r}: {status.healthy}/{status.size} desktops up "
                  "(`rayenv status` shows them; `rayenv pool shutdown` removes them)")
    if as_json:
        print_json(status.to_dict())


@app.command()
def shutdown(
    pool: Optional[str] = typer.Option(None, "--pool", help="pool name (default: default)"),
    namespace: str = typer.Option(DEFAULT_NAMESPACE, help="Ray namespace"),
    address: Optional[str] = AddressOption,
    as_json: bool = json_option("{'pool': ..., 'reaped': [...]}"),
    positional: Optional[str] = typer.Argument(None, hidden=True, metavar="[POOL]"),
) -> None:
    """Close every desktop of the pool and remove its actors, containers and volumes."""
    from ..pool.handle import EnvPool

    name = either(pool, positional, "--pool", "the positional pool name") or "default"
    connect_ray(address, DEFAULT_NAMESPACE)
    removed = EnvPool.connect(name, namespace).shutdown()
    console.print(f"pool {name!r} shut down" + (f"; reaped {len(removed)} orphan(s)" if removed else ""))
    if as_json:
        print_json({"pool": name, "reaped": list(removed)})
