"""The port plan for joining an env host to a Ray head over one SSH connection.

Ray needs connections both ways, but the env host can only open an SSH connection to the head, and
the head's sshd is stock (``GatewayPorts no``). So every Ray port is pinned, and one ``ssh``
carries all of them. Verified by hand on Ray 2.60 between two network namespaces joined only by
that ssh (token auth on; a pool of two desktops on the env host scored a task through it):

* the head advertises ``127.0.0.2`` (Ray keeps it: it rewrites only 127.0.0.1/localhost given
  as ``--node-ip-address``);
* the env host is ``127.0.0.1`` (direct scheme, the default): its ``ray start`` gets no
  ``--node-ip-address`` at all, and Ray derives the node IP "from the perspective of" the head
  address; the kernel routes 127.0.0.2 over ``lo`` with source 127.0.0.1, so Ray's own public rule
  yields 127.0.0.1 with nothing patched (``tests/test_tunnel_e2e.py`` pins it). The head's sshd binds
  ``-R`` listeners on 127.0.0.1, exactly where the head then looks for the env host;
* ``-L 127.0.0.2:P:127.0.0.2:P`` lets the env host reach the head's GCS, node manager, object
  manager and worker ports;
* ``-R 127.0.0.1:Q:<env_ip>:Q`` brings the env host's node manager, object manager, dashboard agent
  and worker ports to the head (every ``actor.method.remote()`` lands on a worker port);
* relay scheme (``env_ip: 127.0.0.3``): the env host advertises 127.0.0.3 (kept by Ray as given) and
  a relay on the head (:meth:`PortPlan.relay_command`, socat) maps ``127.0.0.3:Q`` to the ``-R``
  listener ``127.0.0.1:Q``: one more process per connection and a dependency on the head;
* the env host's metrics-export port is forwarded too (``-R``), so the head's Prometheus scrapes every
  env host where Ray's own service discovery file says it is (``127.0.0.1:<its metrics port>``);
* runtime-env agent, dashboard and client server stay local: pinned, not forwarded.

Port sets of the two sides never overlap, since both sides' listeners share each host's loopback.

Several env hosts, one head: every env host's ``-R`` listeners share the head's loopback, so each host
gets its own block, derived from its ``host_index`` K (``rayenv worker start --host-index K``): the
``env_host`` section is host 0's, and host K's fixed ports are ``+ 10 K`` and its worker range
``+ B K``, B the worker block every host reserves: ``2 x max_desktops_per_host + 8`` (200 by default,
so 6390.., 21000.. for host 0; 6400.., 21200.. for host 1). A bigger host (a KVM machine with hundreds
of desktops) raises ``max_desktops_per_host`` in the tunnel file every host uses; the ports up to
65535 then hold fewer hosts, and a plan that does not fit says so. Derived, not allocated by the
head: ``rayenv tunnel plan --host-index K`` prints the same ports on either side before anything
runs, the tunnel needs no extra round trip to learn them, and a host keeps its block across restarts.
``host_id`` names the host (its Ray node label ``rayenv-host`` and the key of its ssh session records
on the head), so the head tells hosts apart even where two share an index by mistake.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationError, model_validator

from ..types import HOST_LABEL
from ..errors import ConfigError
from ..pool.status_endpoint import DEFAULT_PORT as DEFAULT_STATUS_PORT
from ..pool.status_endpoint import PORT_ENV as STATUS_PORT_ENV
from ..pool.status_endpoint import STATUS_PORTS, status_ports
from ..strict import StrictModel, explain, read_yaml_section

#: Host K's fixed ports (node manager .. runtime-env agent) are host 0's + K x this.
HOST_PORT_STEP = 10
#: The highest TCP port.
MAX_PORT = 65535
#: Worker ports the head keeps beyond its driver-side workers: pool managers, the dashboard's and Ray's own workers.
HEAD_SPARE_WORKERS = 16


def worker_ports_for(desktops: int) -> int:
    """Worker ports an env host of ``desktops`` needs: one per env actor, as many idle or starting workers,
    the reaper's and the driver that creates the pool."""
    return 2 * desktops + 8


class NodePorts(StrictModel):
    """The ports one Ray node listens on; ``worker_ports`` is sized from what runs there."""

    node_manager: int
    object_manager: int
    dashboard_agent_grpc: int
    dashboard_agent_http: int
    metrics_export: int
    runtime_env_agent: int
    min_worker_port: int
    worker_ports: int = Field(ge=4, description="one per actor, idle worker and driver on this node")

    @property
    def max_worker_port(self) -> int:
        return self.min_worker_port + self.worker_ports - 1

    @property
    def worker_range(self) -> range:
        return range(self.min_worker_port, self.max_worker_port + 1)

    def all_ports(self) -> set[int]:
        return {self.node_manager, self.object_manager, self.dashboard_agent_grpc, self.dashboard_agent_http,
                self.metrics_export, self.runtime_env_agent, *self.worker_range}

    def ray_start_flags(self) -> list[str]:
        return [f"--node-manager-port={self.node_manager}", f"--object-manager-port={self.object_manager}",
                f"--dashboard-agent-grpc-port={self.dashboard_agent_grpc}",
                f"--dashboard-agent-listen-port={self.dashboard_agent_http}",
                f"--metrics-export-port={self.metrics_export}", f"--runtime-env-agent-port={self.runtime_env_agent}",
                f"--min-worker-port={self.min_worker_port}", f"--max-worker-port={self.max_worker_port}"]


class HeadPorts(NodePorts):
    gcs: int = 6379
    dashboard: int = 8265
    client_server: int = 10001
    pool_status: int = Field(DEFAULT_STATUS_PORT, description="first of the pool managers' status endpoints "
                             f"({STATUS_PORTS} ports, loopback only; `rayenv status` reads them)")

    def all_ports(self) -> set[int]:
        return super().all_ports() | {self.gcs, self.dashboard, self.client_server, *status_ports(self.pool_status)}


def default_head() -> HeadPorts:
    return HeadPorts(node_manager=6380, object_manager=6381, dashboard_agent_grpc=6382, dashboard_agent_http=6383,
                     metrics_export=6384, runtime_env_agent=6385, min_worker_port=20000, worker_ports=64)


def default_env_host() -> NodePorts:
    return NodePorts(node_manager=6390, object_manager=6391, dashboard_agent_grpc=6392, dashboard_agent_http=6393,
                     metrics_export=6394, runtime_env_agent=6395, min_worker_port=21000, worker_ports=24)


class PortPlan(StrictModel):
    """Both sides' ports and addresses; everything else (flags, forwards, the ssh command) derives from it."""

    head_ip: str = "127.0.0.2"
    env_ip: str = Field("127.0.0.1", description="what the env host's Ray node is at; tunnel_ip: direct, else relayed")
    tunnel_ip: str = Field("127.0.0.1", description="where the head's sshd binds -R listeners (GatewayPorts no)")
    head: HeadPorts = Field(default_factory=default_head)
    env_host: NodePorts = Field(default_factory=default_env_host)
    keepalive_interval: int = Field(10, ge=1, description="ssh ServerAliveInterval, seconds")
    keepalive_count: int = Field(3, ge=1, description="missed keepalives before ssh gives up")
    outage_tolerance: int = Field(180, ge=15, description="seconds the link may be down before the head declares "
                                                          "the env node dead (Ray's default is ~15 s)")
    host_index: int = Field(0, ge=0, description="which port block this env host takes (one per env host of one "
                                                 "head); env_host holds block 0")
    max_desktops_per_host: int = Field(96, ge=1, description="the most desktops one env host may run: sizes every "
                                       "host's worker-port block, so the same on every host of one head")
    driver_workers: int = Field(48, ge=1, description="Ray workers on the head's node (drivers, verl's workers): "
                                "sizes the head's worker ports, which every env host forwards, so the same on both sides")
    host_id: str = Field("", description="the env host's name: its node label and ssh session key on the head")

    @model_validator(mode="after")
    def _sides_do_not_overlap(self) -> "PortPlan":
        shared = self.head.all_ports() & self.env_host.all_ports()
        if shared:
            raise ValueError(f"head and env host ports overlap: {sorted(shared)[:10]}")
        return self

    @property
    def host_worker_block(self) -> int:
        """Worker ports between the starts of host K's and host K+1's ranges."""
        return worker_ports_for(self.max_desktops_per_host)

    @classmethod
    def load(cls, path: str | Path | None = None, pool_size: int | None = None,
             host_index: int | None = None, driver_workers: int | None = None) -> "PortPlan":
        """The file's plan (a file may name only what it changes), sized for ``pool_size`` desktops and
        ``driver_workers`` workers on the head, with the env-host ports of ``host_index`` (else the file's
        ``host_index``, else 0)."""
        data, prefix = read_yaml_section(path, "tunnel") if path else ({}, ())
        given = {"host_index": host_index, "driver_workers": driver_workers}
        data = {**data, **{key: value for key, value in given.items() if value is not None}}
        source = str(path) if path else "tunnel config"
        try:
            plan = cls.model_validate(_merged(cls().model_dump(), data))
        except ValidationError as exc:
            raise ConfigError(explain(exc, cls, source, prefix), hint="see configs/tunnel.yaml for every key") from None
        try:
            return plan.sized_for(pool_size).for_host(plan.host_index)
        except ValueError as exc:
            raise ConfigError(f"invalid port plan: {exc}", hint="see configs/tunnel.yaml") from None

    def for_host(self, index: int) -> "PortPlan":
        """This plan with ``env_host`` moved to host ``index``'s block (``env_host`` is block 0's)."""
        env, block = self.env_host, self.host_worker_block
        if env.worker_ports > block:
            desktops = (env.worker_ports - 8) // 2
            raise ValueError(f"{env.worker_ports} worker ports per env host overlap the next host's block ({block} "
                             f"apart): at most {self.max_desktops_per_host} desktops per host; set "
                             f"max_desktops_per_host: {desktops} (or more) in the tunnel file every env host uses")
        last = env.min_worker_port + block * index + env.worker_ports - 1
        if last > MAX_PORT:
            hosts = (MAX_PORT - env.min_worker_port - env.worker_ports + 1) // block + 1
            raise ValueError(f"host index {index} would need worker ports up to {last} (> {MAX_PORT}): with "
                             f"max_desktops_per_host: {self.max_desktops_per_host} one head has at most {hosts} env "
                             "hosts; lower max_desktops_per_host or start a second head")
        shift = {name: getattr(env, name) + HOST_PORT_STEP * index for name in
                 ("node_manager", "object_manager", "dashboard_agent_grpc", "dashboard_agent_http", "metrics_export",
                  "runtime_env_agent")}
        moved = env.model_copy(update={**shift, "min_worker_port": env.min_worker_port + block * index})
        return self.model_validate({**self.model_dump(), "env_host": moved.model_dump(), "host_index": index})

    def at_head(self, ip: str, gcs: int | None = None) -> "PortPlan":
        """This plan with the head at ``ip`` (and its GCS on ``gcs``): a head that env hosts reach directly, over a
        LAN or an overlay; validated like a file's ``head_ip``."""
        data = self.model_dump()
        return self.model_validate({**data, "head_ip": ip, "head": {**data["head"], "gcs": gcs or self.head.gcs}})

    def sized_for(self, pool_size: int | None = None) -> "PortPlan":
        """Enough env-host worker ports for ``pool_size`` desktop actors, the reaper and idle workers, and
        enough head worker ports for ``driver_workers`` (never fewer than the file gives either side)."""
        env = self.env_host.worker_ports
        needed_env = max(env, worker_ports_for(pool_size)) if pool_size else env
        needed_head = max(self.head.worker_ports, self.driver_workers + HEAD_SPARE_WORKERS)
        plan = self.model_copy(update={"env_host": self.env_host.model_copy(update={"worker_ports": needed_env}),
                                       "head": self.head.model_copy(update={"worker_ports": needed_head})})
        return plan.model_validate(plan.model_dump())  # the grown ranges must not run into each other

    # -- what the head must reach on the env host, and the other way round --------------------------
    def local_forwards(self) -> list[int]:
        """Head ports the env host reaches (``-L``): GCS, node manager, object manager, worker ports."""
        head = self.head
        return [head.gcs, head.node_manager, head.object_manager, *head.worker_range]

    def remote_forwards(self) -> list[int]:
        """Env-host ports the head reaches (``-R``): node manager, object manager, dashboard agent, metrics
        export (the head's Prometheus scrapes it), workers."""
        env = self.env_host
        return [env.node_manager, env.object_manager, env.dashboard_agent_grpc, env.dashboard_agent_http,
                env.metrics_export, *env.worker_range]

    @property
    def relayed(self) -> bool:
        """Whether the head needs a relay from the advertised env address to the ``-R`` listeners."""
        return self.env_ip != self.tunnel_ip

    @property
    def head_address(self) -> str:
        return f"{self.head_ip}:{self.head.gcs}"

    def forward_args(self) -> list[str]:
        """``-L`` for every head port the env host dials, ``-R`` for every env-host port the head dials."""
        args: list[str] = []
        for p in self.local_forwards():
            args += ["-L", f"{self.head_ip}:{p}:{self.head_ip}:{p}"]
        for p in self.remote_forwards():
            args += ["-R", f"{self.tunnel_ip}:{p}:{self.env_ip}:{p}"]
        return args

    def keepalive_args(self) -> list[str]:
        return ["-o", f"ServerAliveInterval={self.keepalive_interval}", "-o", f"ServerAliveCountMax={self.keepalive_count}"]

    def head_env(self) -> dict[str, str]:
        """Health checks that tolerate ``outage_tolerance`` seconds of silence before declaring the node dead; where
        the pool managers serve their status."""
        period_ms = 3000
        return {"RAY_health_check_period_ms": str(period_ms),
                "RAY_health_check_failure_threshold": str(-(-self.outage_tolerance * 1000 // period_ms)),
                STATUS_PORT_ENV: str(self.head.pool_status)}  # the pool managers' status endpoints

    def worker_env(self) -> dict[str, str]:
        """The env host's raylet keeps retrying the GCS through an outage instead of exiting after 60 s."""
        return {"RAY_gcs_rpc_server_reconnect_timeout_s": str(self.outage_tolerance)}

    def relay_command(self) -> str:
        """Shell for the head: relay each env-host port from the advertised address to the -R listener."""
        return " & ".join(f"socat TCP-LISTEN:{p},bind={self.env_ip},fork,reuseaddr TCP:{self.tunnel_ip}:{p}"
                          for p in self.remote_forwards()) + " & wait"

    def head_start_flags(self) -> list[str]:
        return ["--head", f"--node-ip-address={self.head_ip}", f"--port={self.head.gcs}", "--disable-usage-stats",
                f"--dashboard-port={self.head.dashboard}", f"--ray-client-server-port={self.head.client_server}",
                "--dashboard-host=127.0.0.1", *self.head.ray_start_flags()]

    def worker_start_flags(self, size: int, resource: str = "osworld_env") -> list[str]:
        # direct scheme: no --node-ip-address, Ray derives 127.0.0.1 from the head address (see above)
        node_ip = [f"--node-ip-address={self.env_ip}"] if self.relayed else []
        label = [f"--labels={HOST_LABEL}={self.host_id}"] if self.host_id else []
        return [f"--address={self.head_address}", *node_ip, "--num-cpus=0", f"--resources={{\"{resource}\": {size}}}",
                "--disable-usage-stats", *label, *self.env_host.ray_start_flags()]


def _merged(base: dict, override: dict) -> dict:
    return {key: _merged(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
            for key, value in {**base, **override}.items()}
