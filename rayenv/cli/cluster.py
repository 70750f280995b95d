"""``rayenv head``, ``rayenv worker`` and ``rayenv tunnel``: the env host joins the head over one ssh, or directly.

On the cluster (your user, no root)::

    rayenv head start                        # env hosts join over ssh
    rayenv head start --node-ip 10.0.0.1     # env hosts on a LAN or overlay join directly

On the env host (root; it is your VM)::

    rayenv worker start --ssh you@gpu-box --size 4 --provider docker
    rayenv worker start --address 10.0.0.1:6379 --token-file head_token --size 4 --provider docker
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
from ..tunnel.plan import PortPlan
from ..tunnel.ssh import SshTarget, permanent_failure
from .common import RayenvTyper, console, either, flag, hidden_alias, json_option, print_json

head_app = RayenvTyper(help="The Ray head on the cluster side (as your user, no root).")
worker_app = RayenvTyper(help="The env host: join the head (over one ssh, or directly) and host a pool.")
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
    node_ip: Optional[str] = typer.Option(None, help="the head's address on a LAN or overlay (WireGuard, Tailscale) "
                                          "that env hosts reach directly (`worker start --address`); default: the "
                                          "tunnel config's head_ip, a loopback alias only the ssh path reaches"),
) -> None:
    """Start the Ray head with every port pinned; print the driver address and the env host's command."""
    resolved = PortPlan.load(_tunnel_config(tunnel_config, config, short_config), driver_workers=drivers)
    if node_ip:
        resolved = resolved.at_head(node_ip)
    info = head_side.start(resolved, temp_dir, head_side.default_token_path())
    if as_json:
        print_json(info.model_dump())
        return
    console.print(f"Ray head up at [bold]{info.address}[/bold] (Ray {info.ray}, Python {info.python}); "
                  f"dashboard http://127.0.0.1:{resolved.head.dashboard}")
    print(f"# drivers on this machine (the trainer, rayenv status):\n{head_side.driver_hint(info)}")
    print("# on the env host (as root; add --tunnel-config with the same file if you changed ports):")
    if node_ip:
        print(f"# copy {info.token_path} there first, over a channel you trust (scp)")
        print(f"rayenv worker start --address {info.address} --token-file <the copied token> --size 4 "
              "--provider docker")
    else:
        print("rayenv worker start --ssh $USER@<this host> --size 4 --provider docker")


@head_app.command("stop")
def head_stop() -> None:
    """Stop the head that `rayenv head start` started (only its processes)."""
    console.print(f"stopped {head_side.stop()} process(es)")


@worker_app.command("start")
def worker_start(
    ssh: Optional[str] = typer.Option(None, help="USER@HOST of the head's sshd: join through one ssh tunnel"),
    address: Optional[str] = typer.Option(None, help="HEAD:PORT of the head's Ray GCS on a LAN or overlay: join "
                                          "directly, no tunnel (the head ran `rayenv head start --node-ip HEAD`)"),
    token_file: Path = typer.Option(head_side.default_token_path(), help="with --address: a copy of the head's Ray "
                                    "token file (over ssh it is read from the head)"),
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
    """Pre-flight, open the tunnel (or, with --address, reach the head directly), join Ray (kept joined by a background
    supervisor), create or grow the pool, serve /health."""
    if (ssh is None) == (address is None):
        raise RayEnvError("Give exactly one of --ssh USER@HOST (join through an ssh tunnel) and --address HEAD:PORT "
                          "(join directly over a LAN or overlay).", phase="worker start",
                          hint="rayenv worker start --help")
    from ..tunnel import worker as worker_side  # here: it imports Ray, which `rayenv status` and --help need not

    resolved = PortPlan.load(_tunnel_config(tunnel_config, config, short_config), pool_size=size,
                             host_index=host_index, driver_workers=drivers).model_copy(
        update={"host_id": worker_side.host_id()})
    if address:
        resolved = _direct_plan(resolved, address)
    state = worker_side.WorkerState(
        ssh=_target(ssh, ssh_port, identity, jump, ssh_option) if ssh else None, plan=resolved, size=size,
        provider=provider, pool=pool, namespace=namespace, temp_dir=str(temp_dir),
        token_path=str(worker_side.WORKER_DIR / "auth_token"), sidecar_host=sidecar_host, sidecar_port=sidecar_port)
    if state.ssh:
        console.print("tunnel: " + shlex.join(state.ssh.tunnel_command(resolved)), soft_wrap=True, markup=False)
        _check_login(state.ssh)
    with console.status("joining Ray, booting the pool's desktops ..."):
        head, status = worker_side.start(state, pool_config=pool_config, timeout=timeout,
                                         token_file=token_file if address else None)
    if as_json:
        print_json({"head": head, "host_id": resolved.host_id, "host_index": resolved.host_index,
                    "pool": status})
    up = f"{status['healthy']}/{status['size']} desktops up"
    if status["healthy"] < status["size"]:
        up += " (the pool keeps retrying the others; `rayenv status` shows why they failed)"
    console.print(f"joined {head} as {resolved.host_id} (host index {resolved.host_index}) with {size} x "
                  f"osworld_env; pool [bold]{pool}[/bold]: {up}; "
                  f"GET http://{sidecar_host}:{sidecar_port}/health; supervisor state in {worker_side.WORKER_DIR}")


def _direct_plan(plan: PortPlan, address: str) -> PortPlan:
    """The plan with the head at ``address`` (HOST:PORT); the env host's own ports stay pinned (firewall rules)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise RayEnvError(f"--address {address!r} is not HOST:PORT (e.g. 10.0.0.1:6379, the head's --node-ip and "
                          "its GCS port).", phase="worker start", hint="rayenv head start prints the address")
    return plan.at_head(host, int(port))


@worker_app.command("stop")
def worker_stop(keep_pool: bool = flag("--keep-pool", "leave the pool's actors (they die with the node)")) -> None:
    """Take this host's desktops out of the pool (the pool goes when none are left), stop the supervisor, the
    tunnel, the sidecar and this node's Ray processes."""
    from ..tunnel import worker as worker_side

    stopped = worker_side.stop(shutdown_pool=not keep_pool)
    console.print("stopped" if stopped else "no worker was running")
