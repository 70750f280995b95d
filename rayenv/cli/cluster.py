"""``rayenv head``, ``rayenv worker`` and ``rayenv tunnel``: the env host joins the head over one ssh.

On the cluster (your user, no root)::

    rayenv head start

On the env host (root; it is your VM)::

    rayenv worker start --ssh you@gpu-box --size 4 --provider docker
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from ..errors import RayEnvError
from ..pool.config import DEFAULT_NAMESPACE
from ..tunnel import head as head_side
from ..tunnel import worker as worker_side
from ..tunnel.plan import PortPlan
from ..tunnel.ssh import SshTarget

head_app = typer.Typer(help="The Ray head on the cluster side (as your user, no root).", no_args_is_help=True)
worker_app = typer.Typer(help="The env host: join the head over one ssh and host a pool.", no_args_is_help=True)
tunnel_app = typer.Typer(help="The SSH join of an env host to the Ray head.", no_args_is_help=True)
console = Console(stderr=True)

ConfigOption = typer.Option(None, "--config", "-c", exists=True, help="tunnel YAML (configs/tunnel.yaml); "
                                                                     "the same file on both sides")
DriversOption = typer.Option(None, "--drivers", min=1, help="Ray workers on the head's node (drivers, verl's workers): "
                             "sizes the head's worker ports; the same on the head and every env host "
                             "[default: the tunnel config's driver_workers, 48]")


def _fail(exc: RayEnvError) -> None:
    console.print(exc.message, style="red", markup=False, soft_wrap=True)  # [default] is not markup
    raise typer.Exit(2)


def _target(ssh: str, ssh_port: Optional[int], identity: Optional[str], jump: Optional[str],
            ssh_option: list[str]) -> SshTarget:
    return SshTarget(destination=ssh, port=ssh_port, identity=identity, jump=jump, options=ssh_option)


@tunnel_app.command()
def plan(
    config: Optional[Path] = ConfigOption,
    size: int = typer.Option(8, min=1, help="desktops on the env host (sizes its worker-port range)"),
    host_index: Optional[int] = typer.Option(None, min=0, help="the env host's port block (one per env host)"),
    ssh: str = typer.Option("USER@HEAD", help="the head's ssh destination"),
    ssh_port: Optional[int] = typer.Option(None, help="ssh port of the head"),
    identity: Optional[str] = typer.Option(None, help="ssh identity file"),
    jump: Optional[str] = typer.Option(None, help="ssh jump host"),
    as_json: bool = typer.Option(False, "--json", help="print JSON on stdout"),
    drivers: Optional[int] = DriversOption,
) -> None:
    """Print the port plan and the exact commands `rayenv head start` / `rayenv worker start` run."""
    try:
        resolved = PortPlan.load(config, pool_size=size, host_index=host_index, driver_workers=drivers)
    except RayEnvError as exc:
        _fail(exc)
    commands = {"head": ["ray", "start", *resolved.head_start_flags()],
                "ssh": _target(ssh, ssh_port, identity, jump, []).tunnel_command(resolved),
                "worker": ["ray", "start", *resolved.worker_start_flags(size)]}
    if resolved.relayed:
        commands["relay"] = ["bash", "-c", resolved.relay_command()]
    if as_json:
        print(json.dumps({"plan": resolved.model_dump(), "commands": commands,
                          "forwards": {"local": resolved.local_forwards(), "remote": resolved.remote_forwards()},
                          "env": {"head": resolved.head_env(), "worker": resolved.worker_env()}}, indent=2))
        return
    print("# on the head (cluster side, as your user): what `rayenv head start` runs")
    print(shlex.join([f"{k}={v}" for k, v in resolved.head_env().items()] + commands["head"]))
    if resolved.relayed:
        print(f"# on the head: relay {resolved.env_ip} to the ssh -R listeners on {resolved.tunnel_ip} (socat)")
        print(shlex.join(commands["relay"]))
    print(f"# on the env host: one ssh with {len(resolved.local_forwards())} -L and "
          f"{len(resolved.remote_forwards())} -R forwards (kept up by `rayenv worker start`)")
    print(shlex.join(commands["ssh"]))
    print("# on the env host, once the tunnel is up and the head's token is in place")
    print(shlex.join([f"{k}={v}" for k, v in resolved.worker_env().items()] + commands["worker"]))


@head_app.command("start")
def head_start(
    config: Optional[Path] = ConfigOption,
    temp_dir: Path = typer.Option(Path(f"/tmp/rayenv-head-{os.getuid()}"),
                                  help="Ray's --temp-dir for this head (keep it short: unix sockets)"),
    drivers: Optional[int] = DriversOption,
) -> None:
    """Start the Ray head with every port pinned; print the driver address and the env host's command."""
    try:
        resolved = PortPlan.load(config, driver_workers=drivers)
        info = head_side.start(resolved, temp_dir, head_side.default_token_path())
    except RayEnvError as exc:
        _fail(exc)
    console.print(f"Ray head up at [bold]{info.address}[/bold] (Ray {info.ray}, Python {info.python}); "
                  f"dashboard http://127.0.0.1:{resolved.head.dashboard}")
    print(f"# drivers on this machine (the trainer, rayenv status):\n{head_side.driver_hint(info)}")
    print("# on the env host (as root; add --config with the same tunnel file if you changed ports):")
    print("rayenv worker start --ssh $USER@<this host> --size 4 --provider docker")


@head_app.command("stop")
def head_stop() -> None:
    """Stop the head that `rayenv head start` started (only its processes)."""
    console.print(f"stopped {head_side.stop()} process(es)")


@worker_app.command("start")
def worker_start(
    ssh: str = typer.Option(..., help="USER@HOST of the head's sshd"),
    size: int = typer.Option(..., min=1, help="desktops on this env host"),
    provider: str = typer.Option("docker", help="docker | lite | process"),
    pool: str = typer.Option("default", help="the pool to create, or to grow by --size if another env host "
                                             "created it already"),
    host_index: Optional[int] = typer.Option(None, min=0, help="this env host's port block: 0, 1, 2, ... one per env "
                                                               "host of the head [default: the tunnel config's, or 0]"),
    pool_config: Optional[Path] = typer.Option(None, exists=True, help="pool YAML (configs/pool.yaml)"),
    config: Optional[Path] = ConfigOption,
    ssh_port: Optional[int] = typer.Option(None, help="ssh port of the head"),
    identity: Optional[str] = typer.Option(None, help="ssh identity file"),
    jump: Optional[str] = typer.Option(None, help="ssh jump host (ProxyJump)"),
    ssh_option: list[str] = typer.Option([], help="extra ssh -o KEY=VALUE (repeatable)"),
    namespace: str = typer.Option(DEFAULT_NAMESPACE, help="Ray namespace of the pool"),
    sidecar_host: str = typer.Option("127.0.0.1", help="bind address of GET /health"),
    sidecar_port: int = typer.Option(18082, help="port of GET /health"),
    temp_dir: Path = typer.Option(Path("/tmp/rayenv-worker"), help="Ray's --temp-dir for this node"),
    timeout: float = typer.Option(120, help="seconds to wait for the tunnel and the join"),
    drivers: Optional[int] = DriversOption,
) -> None:
    """Pre-flight, open the tunnel (kept up by a background supervisor), join Ray, create or grow the pool, serve /health."""
    try:
        resolved = PortPlan.load(config, pool_size=size, host_index=host_index, driver_workers=drivers).model_copy(
            update={"host_id": worker_side.host_id()})
    except RayEnvError as exc:
        _fail(exc)
    state = worker_side.WorkerState(
        ssh=_target(ssh, ssh_port, identity, jump, ssh_option), plan=resolved, size=size, provider=provider,
        pool=pool, namespace=namespace, temp_dir=str(temp_dir), token_path=str(worker_side.WORKER_DIR / "auth_token"),
        sidecar_host=sidecar_host, sidecar_port=sidecar_port)
    console.print("tunnel: " + shlex.join(state.ssh.tunnel_command(resolved)), soft_wrap=True)
    try:
        info, status = worker_side.start(state, pool_config=pool_config, timeout=timeout)
    except RayEnvError as exc:
        _fail(exc)
    up = f"{status['healthy']}/{status['size']} desktops up"
    if status["healthy"] < status["size"]:
        up += " (the pool keeps retrying the others; `rayenv status` shows why they failed)"
    console.print(f"joined {info.address} as {resolved.host_id} (host index {resolved.host_index}) with {size} x "
                  f"osworld_env; pool [bold]{pool}[/bold]: {up}; "
                  f"GET http://{sidecar_host}:{sidecar_port}/health; supervisor state in {worker_side.WORKER_DIR}")


@worker_app.command("stop")
def worker_stop(keep_pool: bool = typer.Option(False, help="leave the pool's actors (they die with the node)")) -> None:
    """Take this host's desktops out of the pool (the pool goes when none are left), stop the supervisor, the
    tunnel, the sidecar and this node's Ray processes."""
    stopped = worker_side.stop(shutdown_pool=not keep_pool)
    console.print("stopped" if stopped else "no worker was running")
