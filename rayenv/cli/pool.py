"""``rayenv pool``: create, inspect and tear down a named pool on a running Ray cluster."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
import yaml
from rich.console import Console

from ..errors import RayEnvError
from ..pool.config import DEFAULT_NAMESPACE, PoolConfig

app = typer.Typer(help="Create and manage a named pool of desktops on a running Ray cluster.", no_args_is_help=True)
console = Console(stderr=True)


def _connect_ray(address: Optional[str]) -> None:
    import ray

    ray.init(address=address or "auto", namespace=DEFAULT_NAMESPACE, log_to_driver=False)


@app.command()
def create(
    config: Optional[Path] = typer.Option(None, "--config", "-c", exists=True, help="YAML (see configs/pool.yaml)"),
    name: Optional[str] = typer.Option(None, help="pool name"),
    size: Optional[int] = typer.Option(None, min=1, envvar="RAYENV_POOL_SIZE", help="number of desktops"),
    provider: Optional[str] = typer.Option(None, envvar="RAYENV_PROVIDER", help="docker | lite | process"),
    namespace: Optional[str] = typer.Option(None, help="Ray namespace"),
    address: Optional[str] = typer.Option(None, envvar="RAY_ADDRESS", help="Ray head address (host:port)"),
    show_config: bool = typer.Option(False, "--show-config", help="print the resolved config and exit"),
) -> None:
    """Create a pool that outlives this command (its actors are detached); prints its status as JSON."""
    resolved = PoolConfig.load(config, name=name, size=size, provider=provider, namespace=namespace)
    if show_config:
        print(yaml.safe_dump({"pool": resolved.model_dump()}, sort_keys=False))
        return
    from ..pool.handle import EnvPool

    _connect_ray(address)
    try:
        with console.status(f"booting {resolved.size} {resolved.desktop.provider} desktop(s) ..."):
            pool = EnvPool.create(config=resolved)
    except RayEnvError as exc:
        console.print(str(exc), style="red", markup=False, soft_wrap=True)
        raise typer.Exit(2) from None
    status = pool.status()
    console.print(f"pool {pool.name!r}: {status.healthy}/{status.size} desktops up")
    print(json.dumps(status.to_dict(), indent=2))


@app.command()
def shutdown(
    name: str = typer.Argument("default", help="pool name"),
    namespace: str = typer.Option(DEFAULT_NAMESPACE, help="Ray namespace"),
    address: Optional[str] = typer.Option(None, envvar="RAY_ADDRESS", help="Ray head address (host:port)"),
) -> None:
    """Close every desktop of the pool and remove its actors, containers and volumes."""
    from ..pool.handle import EnvPool

    _connect_ray(address)
    removed = EnvPool.connect(name, namespace).shutdown()
    console.print(f"pool {name!r} shut down" + (f"; reaped {len(removed)} orphan(s)" if removed else ""))
