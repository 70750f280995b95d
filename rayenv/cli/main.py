"""``rayenv``: run desktops, pools, the demo and the cluster plumbing from one command."""

from __future__ import annotations

import typer

from . import cluster, demo, desktop, ops, pool, suite, vm
from .common import RayenvTyper, flag, set_debug

app = RayenvTyper(help="rayenv: a Ray-based pool of OSWorld desktops for training GUI agents with RL.",
                  rich_markup_mode="rich")


def _print_version(value: bool) -> None:
    if value:
        from importlib import metadata  # here: it costs every other command ~0.05 s

        print(f"rayenv {metadata.version('rayenv')}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = flag("--version", "print rayenv's version and exit", is_eager=True, callback=_print_version),
    debug: bool = flag("--debug", "print the traceback behind an error (for a bug report)", envvar="RAYENV_DEBUG"),
) -> None:
    """rayenv: a Ray-based pool of OSWorld desktops for training GUI agents with RL."""
    set_debug(debug)


app.command("demo")(demo.demo)
app.add_typer(pool.app, name="pool")
app.add_typer(desktop.app, name="desktop")
app.add_typer(vm.app, name="vm")
app.add_typer(suite.app, name="suite")
app.command("status")(ops.status)
app.command("sidecar")(ops.sidecar)
app.add_typer(cluster.head_app, name="head")
app.add_typer(cluster.worker_app, name="worker")
app.add_typer(cluster.tunnel_app, name="tunnel")

if __name__ == "__main__":  # pragma: no cover
    app()
