"""``rayenv``: run desktops, pools, the demo and the cluster plumbing from one command."""

from __future__ import annotations

import typer

from . import cluster, demo, desktop, ops, pool, suite, vm

app = typer.Typer(help="rayenv: a Ray-based pool of OSWorld desktops for training GUI agents with RL.",
                  no_args_is_help=True, rich_markup_mode="rich")
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
