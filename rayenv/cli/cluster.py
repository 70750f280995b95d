"""``rayenv head``, ``rayenv worker`` and ``rayenv tunnel``: the env host joins the head over one ssh.

On the cluster (your user, no root)::

    rayenv head start

On the env host (root; it is your VM)::

    rayenv worker start --ssh you@gpu-box --size 4 --provider docker
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Optional

import typer

from ..errors import RayEnvError
from ..pool.config import DEFAULT_NAMESPACE
from ..tunnel import head as head_side
from ..tunnel import worker as worker_side
from ..tunnel.plan import PortPlan
from ..tunnel.ssh import SshTarget, permanent_failure
from .common import RayenvTyper, console, either, flag, hidden_alias, json_option, print_json

head_app = RayenvTyper(help="The Ray head on the cluster side (as your user, no root).")
worker_app = RayenvTyper(help="The env host: join the head over one ssh and host a pool.")
tunnel_app = RayenvTyper(help="The SSH join of an env host to the Ray head.")

TunnelConfigOption = typer.Option(None, "--tunnel-config", exists=True,
                                  help="tunnel YAML (configs/tunnel.yaml); the same file on both sides")
DriversOption = typer.Option(None, "--drivers", min=1, help="Ray workers on the head's node (drivers, verl's workers): "
                             "sizes the head's worker ports; the same on the head and every env host "
                             "[default: the tunnel config's driver_workers, 48]")


def _tunnel_config(new: Optional[Path], long: Optional[Path], short: Optional[Path]) -> Optional[Path]:
    """--tunnel-config, or its old spellings --config / -c."""
    return either(new, either(long, short, "--config", "-c"), "--tunnel-config", "--config")


def _check_login(target: SshTarget) -> None:
    """One plain ssh login before anything starts: a refused or misconfigured ssh fails here in seconds,
    not after the join's whole timeout of reconnect attempts."""
    done = target.run("true", through_tunnel=False, timeout=target.connect_timeout + 20)
    if done.returncode == 255:
        said = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "no answer"
        raise RayEnvError(f"ssh {target.destination} failed before anything started: {said}",
                          phase="preflight", hint=permanent_failure(done.stderr, target.destination)
                          or "check --ssh / --ssh-port and that the head's sshd is reachable from here "
                             "(`ssh HOST true` must work without a password)")


def _target(ssh: str, ssh_port: Optional[int], identity: Optional[str], jump: Optional[str],
            ssh_option: list[str]) -> SshTarget:
    return SshTarget(destination=ssh, port=ssh_port, identity=identity, jump=jump, options=ssh_option)


@tunnel_app.command()
def plan(
    tunnel_config: Optional[Path] = TunnelConfigOption,
    size: int = typer.Option(8, min=1, help="desktops on the env host (sizes its worker-port range)"),
    host_index: Optional[int] = typer.Option(None, min=0, help="the env host's port block (one per env host)"),
    ssh: str = typer.Option("USER@HEAD", help="the head's ssh destination"),
    ssh_port: Optional[int] = typer.Option(None, help="ssh port of the head"),
    identity: Optional[str] = typer.Option(None, help="ssh identity file"),
    jump: Optional[str] = typer.Option(None, help="ssh jump host"),
    as_json: bool = json_option("the plan, its commands and forwards"),
    config: Optional[Path] = hidden_alias("--config", exists=True),
    short_config: Optional[Path] = hidden_alias("-c", exists=True),
    drivers: Optional[int] = DriversOption,
) -> None:
    """Print the port plan and the exact commands `rayenv head start` / `rayenv worker start` run."""
    resolved = PortPlan.load(_tunnel_config(tunnel_config, config, short_config), pool_size=size,
                             host_index=host_index, driver_workers=drivers)
    commands = {"head": ["ray", "start", *resolved.head_start_flags()],
                "ssh": _target(ssh, ssh_port, identity, jump, []).tunnel_command(resolved),
                "worker": ["ray", "start", *resolved.worker_start_flags(size)]}
    if resolved.relayed:
        commands["relay"] = ["bash", "-c", resolved.relay_command()]
    if as_json:
        print_json({"plan": resolved.model_dump(), "commands": commands,
                    "forwards": {"local": resolved.local_forwards(), "remote": resolved.remote_forwards()},
                    "env": {"head": resolved.head_env(), "worker": resolved.worker_env()}})
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
    tunnel_config: Optional[Path] = TunnelConfigOption,
    temp_dir: Path = typer.Option(Path(f"/tmp/rayenv-head-{os.getuid()}"),
                                  help="Ray's --temp-dir for this head (keep it short: unix sockets)"),
    as_json: bool = json_option("the head's address, versions and token path"),
    config: Optional[Path] = hidden_alias("--config", exists=True),
    short_config: Optional[Path] = hidden_alias("-c", exists=True),
    drivers: Optional[int] = DriversOption,
) -> None:
    """Start the Ray head with every port pinned; print the driver address and the env host's command."""
    resolved = PortPlan.load(_tunnel_config(tunnel_config, config, short_config), driver_workers=drivers)
    info = head_side.start(resolved, temp_dir, head_side.default_token_path())
    if as_json:
        print_json(info.model_dump())
        return
    console.print(f"Ray head up at [bold]{info.address}[/bold] (Ray {info.ray}, Python {info.python}); "
                  f"dashboard http://127.0.0.1:{resolved.head.dashboard}")
    print(f"# drivers on this machine (the trainer, rayenv status):\n{head_side.driver_hint(info)}")
    print("# on the env host (as root; add --tunnel-config with the same file if you changed ports):")
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
                                                               "host of the head (default: the tunnel config's, or 0)"),
    pool_config: Optional[Path] = typer.Option(None, exists=True, help="pool YAML (configs/pool.yaml)"),
    tunnel_config: Optional[Path] = TunnelConfigOption,
    ssh_port: Optional[int] = typer.Option(None, help="ssh port of the head"),
    identity: Optional[str] = typer.Option(None, help="ssh identity file"),
    jump: Optional[str] = typer.Option(None, help="ssh jump host (ProxyJump)"),
    ssh_option: list[str] = typer.Option([], help="extra ssh -o KEY=VALUE (repeatable)"),
    namespace: str = typer.Option(DEFAULT_NAMESPACE, help="Ray namespace of the pool"),
    sidecar_host: str = typer.Option("127.0.0.1", help="bind address of GET /health"),
    sidecar_port: int = typer.Option(18082, help="port of GET /health"),
    temp_dir: Path = typer.Option(Path("/tmp/rayenv-worker"), help="Ray's --temp-dir for this node"),
    timeout: float = typer.Option(120, help="seconds to wait for the tunnel and the join (a refused ssh fails "
                                            "at once, before this)"),
    as_json: bool = json_option("the head's address, this host and the pool's status"),
    config: Optional[Path] = hidden_alias("--config", exists=True),
    short_config: Optional[Path] = hidden_alias("-c", exists=True),
    drivers: Optional[int] = DriversOption,
) -> None:
    """Pre-flight, open the tunnel (kept up by a background supervisor), join Ray, create or grow the pool, serve /health."""
    resolved = PortPlan.load(_tunnel_config(tunnel_config, config, short_config), pool_size=size,
                             host_index=host_index, driver_workers=drivers).model_copy(
        update={"host_id": worker_side.host_id()})
    state = worker_side.WorkerState(
        ssh=_target(ssh, ssh_port, identity, jump, ssh_option), plan=resolved, size=size, provider=provider,
        pool=pool, namespace=namespace, temp_dir=str(temp_dir), token_path=str(worker_side.WORKER_DIR / "auth_token"),
        sidecar_host=sidecar_host, sidecar_port=sidecar_port)
    console.print("tunnel: " + shlex.join(state.ssh.tunnel_command(resolved)), soft_wrap=True, markup=False)
    _check_login(state.ssh)
    with console.status("opening the tunnel, joining Ray, booting the pool's desktops ..."):
        info, status = worker_side.start(state, pool_config=pool_config, timeout=timeout)
    if as_json:
        print_json({"head": info.address, "host_id": resolved.host_id, "host_index": resolved.host_index,
                    "pool": status})
    up = f"{status['healthy']}/{status['size']} desktops up"
    if status["healthy"] < status["size"]:
        up += " (the pool keeps retrying the others; `rayenv status` shows why they failed)"
    console.print(f"joined {info.address} as {resolved.host_id} (host index {resolved.host_index}) with {size} x "
                  f"osworld_env; pool [bold]{pool}[/bold]: {up}; "
                  f"GET http://{sidecar_host}:{sidecar_port}/health; supervisor state in {worker_side.WORKER_DIR}")


@worker_app.command("stop")
def worker_stop(keep_pool: bool = flag("--keep-pool", "leave the pool's actors (they die with the node)")) -> None:
    """Take this host's desktops out of the pool (the pool goes when none are left), stop the supervisor, the
    tunnel, the sidecar and this node's Ray processes."""
    stopped = worker_side.stop(shutdown_pool=not keep_pool)
    console.print("stopped" if stopped else "no worker was running")
