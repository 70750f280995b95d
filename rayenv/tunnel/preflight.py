"""Checks before anything starts, each failing with one paragraph that names the fix.

A taken port or a version mismatch otherwise surfaces minutes later as a Ray timeout deep in a log.
"""

from __future__ import annotations

import errno
import socket

import psutil

from ..errors import RayEnvError
from .plan import PortPlan


class PreflightError(RayEnvError):
    """The join cannot work as configured; nothing was started (or it was undone)."""


def env_host_listeners(plan: PortPlan, forwards: bool = True) -> dict[tuple[str, int], str]:
    """Every (address, port) the env host will listen on, named for the error message (``forwards``: the
    tunnel's ``-L`` listeners too; a direct join has none)."""
    env = plan.env_host
    named = {"node manager": env.node_manager, "object manager": env.object_manager,
             "dashboard agent grpc": env.dashboard_agent_grpc, "dashboard agent http": env.dashboard_agent_http,
             "metrics export": env.metrics_export, "runtime env agent": env.runtime_env_agent}
    listeners = {(plan.env_ip, port): f"env host {name} (env_host.{name.replace(' ', '_')})"
                 for name, port in named.items()}
    listeners.update({(plan.env_ip, port): "env host worker port (env_host.min_worker_port..)"
                      for port in env.worker_range})
    if forwards:
        listeners.update({(plan.head_ip, port): f"-L forward of the head's port {port}"
                          for port in plan.local_forwards()})
    return listeners


def _holder(port: int) -> str:
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                proc = psutil.Process(conn.pid)
                return f"pid {conn.pid} ({' '.join(proc.cmdline())[:80]})"
    except psutil.Error:
        pass
    return "another process"


def check_ports_free(plan: PortPlan, forwards: bool = True) -> None:
    for (ip, port), role in env_host_listeners(plan, forwards).items():
        with socket.socket() as probe:
            try:
                probe.bind((ip, port))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                raise PreflightError(
                    f"Port {ip}:{port}, the {role}, is taken on this env host by {_holder(port)}, so the tunnel "
                    f"or Ray could not bind it and the join would fail half-way. If it is a leftover of an earlier "
                    f"join, run `rayenv worker stop`; otherwise stop that process, or move the port in your tunnel "
                    f"config (configs/tunnel.yaml) and pass the same file to `rayenv head start` and "
                    f"`rayenv worker start --config`.", phase="preflight", hint=f"free {ip}:{port}") from None


def check_head_reachable(address: str, timeout: float = 5) -> None:
    """A direct join dials the head's GCS itself: an unreachable one (overlay down, firewall) fails here in
    seconds, not after ``ray start``'s minute of retries."""
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise PreflightError(
            f"The head's Ray GCS at {address} does not answer from this env host ({exc.strerror or exc}): a direct "
            f"join needs a routed link to the head. Check that the head runs `rayenv head start --node-ip "
            f"{host}`, that this host reaches {host} (the overlay is up: `ping {host}`), and that the head's "
            f"firewall lets this host in on port {port} and the head's other Ray ports (`rayenv tunnel plan` "
            f"lists them).", phase="preflight", hint=f"nc -vz {host} {port}") from None


def check_versions(head_python: str, head_ray: str, here_python: str, here_ray: str) -> None:
    if (head_python, head_ray) == (here_python, here_ray):
        return
    raise PreflightError(
        f"The head runs Ray {head_ray} on Python {head_python}, but this env host has Ray {here_ray} on Python "
        f"{here_python}; Ray nodes must run the same Ray version and Python minor version, or the join fails with "
        f"obscure RPC or pickling errors. Fix: on the env host install the head's versions, e.g. "
        f"`uv venv --python {head_python} && uv pip install 'ray[default]=={head_ray}'` and reinstall rayenv into "
        f"that venv (or upgrade the head to match), then run `rayenv worker start` again.",
        phase="preflight", hint=f"python {head_python} + ray {head_ray} on both sides")


def check_same_head_ports(head: PortPlan, here: PortPlan) -> None:
    """The env host forwards the head's worker ports by its own plan: a head sized for more drivers than this
    host's plan says would have workers this host cannot reach (a hang at the first call, not an error)."""
    if head.head.worker_range == here.head.worker_range:
        return
    raise PreflightError(
        f"The head's worker ports are {head.head.min_worker_port}..{head.head.max_worker_port} "
        f"({head.driver_workers} driver workers), but this env host forwards {here.head.min_worker_port}.."
        f"{here.head.max_worker_port} ({here.driver_workers}): Ray calls from those head workers to this host's "
        f"desktops would never arrive. Fix: pass the same --drivers (or the same tunnel file) to `rayenv head start` "
        f"and `rayenv worker start`.", phase="preflight", hint=f"rayenv worker start --drivers {head.driver_workers}")
