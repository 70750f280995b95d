"""``rayenv tunnel plan``: the pinned ports and the exact commands of the one-SSH join."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Optional

import typer

from ..tunnel.plan import PortPlan

app = typer.Typer(help="The SSH join of an env host to the Ray head.", no_args_is_help=True)


@app.command()
def plan(
    config: Optional[Path] = typer.Option(None, "--config", "-c", exists=True, help="YAML (see configs/tunnel.yaml)"),
    size: int = typer.Option(8, min=1, help="desktops on the env host (sizes its worker-port range)"),
    ssh: str = typer.Option("USER@HEAD", help="the head's ssh destination"),
    ssh_port: Optional[int] = typer.Option(None, help="ssh port of the head"),
    identity: Optional[str] = typer.Option(None, help="ssh identity file"),
    jump: Optional[str] = typer.Option(None, help="ssh jump host"),
    as_json: bool = typer.Option(False, "--json", help="print JSON on stdout"),
) -> None:
    """Print the port plan: `ray start` on the head, the env host's ssh, and its `ray start`."""
    resolved = PortPlan.load(config, pool_size=size)
    commands = {
        "head": ["ray", "start", *resolved.head_start_flags()],
        "relay": ["bash", "-c", resolved.relay_command()],
        "ssh": resolved.ssh_command(ssh, port=ssh_port, identity=identity, jump=jump),
        "worker": ["ray", "start", *resolved.worker_start_flags(size)],
    }
    if as_json:
        print(json.dumps({"plan": resolved.model_dump(), "commands": commands,
                          "forwards": {"local": resolved.local_forwards(), "remote": resolved.remote_forwards()}},
                         indent=2))
        return
    print("# 1. on the head (cluster side, as your user); then copy its ~/.ray/auth_token to the env host")
    print(shlex.join(commands["head"]))
    print(f"# 2. on the head: relay the env host's advertised address {resolved.env_ip} to the ssh -R listeners (socat)")
    print(shlex.join(commands["relay"]))
    print(f"# 3. on the env host: one ssh with {len(resolved.local_forwards())} -L and "
          f"{len(resolved.remote_forwards())} -R forwards")
    print(shlex.join(commands["ssh"]))
    print("# 4. on the env host, with the head's token in ~/.ray/auth_token")
    print(shlex.join(commands["worker"]))
