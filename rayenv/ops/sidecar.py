"""The health sidecar: the old bridge's ``GET /health`` contract, answered from real desktops.

Scripts and dashboards of the HTTP-bridge era poll ``GET /health``; they keep working. Every old
key is here with an honest meaning: ``kvm_available`` is true only if a Linux kernel boots with
KVM on this host (:func:`rayenv.engine.kvm.kvm_status`; ``message`` says why not), ``env_status`` says
whether the pool's desktops are up (not whether a Python object exists). New keys tell an
operator what the bridge could not: the Ray connection, this node, the pool's size and healthy
count, and replacements so far. Binds 127.0.0.1 by default.
The old ``/env/reset|step|evaluate|history_messages`` endpoints are served too, from a pool
desktop (:mod:`rayenv.ops.bridge`), so an old HTTP client keeps working during migration.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI
from pydantic import BaseModel, Field

from ..engine.kvm import kvm_status
from ..pool.config import DEFAULT_NAMESPACE
from ..tunnel.supervisor import read_status
from ..tunnel.worker import host_id
from .bridge import bridge_router

EnvState = Literal["initialized", "degraded", "not_initialized"]

#: Where a provider's screenshots come from (each desktop's EnvStatus details say which it uses).
GUEST_SCREENSHOTS = "guest API GET /screenshot (PNG bytes through Ray)"
SCREENSHOT_SOURCES = {
    "docker": "QEMU's display (QMP screendump) on rayenv's VM image, else the guest API's GET /screenshot; the guest's "
              "pointer drawn in, PNG bytes through Ray",
    "lite": "Xvfb's framebuffer file read on the env host, the guest's pointer drawn in (PNG bytes through Ray)",
}


class Health(BaseModel):
    """``GET /health``. The first eight keys are the old bridge's, with the same meanings."""

    status: Literal["ok", "degraded"] = Field(description="ok: every desktop of the pool is up")
    provider: str | None = Field(description="docker | lite | process (the pool's provider)")
    observation_type: str = Field(description="what an observation holds: screenshot or screenshot_a11y_tree")
    screenshot_source: str = Field(description="where screenshots come from")
    kvm_available: bool = Field(description="a VM boots with KVM through kvm_device on this host (else: TCG)")
    kvm_device: str
    env_status: EnvState = Field(description="initialized: all desktops up; degraded: some; not_initialized: no pool")
    message: str
    ray_connected: bool
    ray_address: str | None
    node_id: str | None = Field(description="the Ray node this sidecar runs on")
    pool: str
    namespace: str
    pool_size: int
    healthy: int
    leased: int
    replacements: int
    tunnel: str | None = Field(description="connecting | up | down | stopped; None: not joined over ssh")
    tunnel_reconnects: int = 0
    tunnel_last_outage_s: float | None = None
    tunnel_last_error: str = ""


class PoolWatcher:
    """Connects to Ray on first use and reads the pool's status; never raises into a request."""

    def __init__(self, pool: str, namespace: str, address: str | None, temp_dir: str | None = None) -> None:
        self.pool, self.namespace, self.address, self.temp_dir = pool, namespace, address, temp_dir
        self._lock = threading.Lock()

    def connect(self) -> Any:
        """The ``ray`` module, connected to the cluster on first use."""
        import ray

        from ..cluster_state import init_on_this_node

        with self._lock:
            if not ray.is_initialized():
                init_on_this_node(self.address or "auto", self.temp_dir, namespace=self.namespace,
                                  log_to_driver=False)
        return ray

    def read(self) -> tuple[bool, str | None, dict[str, Any] | None, str]:
        """(ray connected, node id, pool status or None, problem in words)."""
        try:
            ray = self.connect()
        except Exception as exc:  # no cluster reachable
            return False, None, None, f"Ray is not reachable at {self.address or 'auto'}: {type(exc).__name__}"
        node_id = ray.get_runtime_context().get_node_id()
        try:
            from ..pool.handle import EnvPool

            return True, node_id, EnvPool.connect(self.pool, self.namespace).status(), ""
        except Exception as exc:
            return True, node_id, None, f"no pool {self.pool!r} in namespace {self.namespace!r}: {type(exc).__name__}"


def export_tunnel_metrics(watcher: PoolWatcher, worker_dir: Path, host: str, period: float = 5.0) -> None:
    """Forever: publish the supervisor's tunnel counters as Ray metrics of this node (the supervisor holds no
    Ray connection of its own), so the head's Prometheus sees each env host's reconnects next to its desktops."""
    watcher.connect()
    from ray.util import metrics

    tags = {"host": host}
    reconnects = metrics.Gauge("rayenv_tunnel_reconnects", "Times this env host's ssh tunnel came back",
                                        tag_keys=("host",))
    up = metrics.Gauge("rayenv_tunnel_up", "1 while the env host's ssh tunnel is up", tag_keys=("host",))
    while True:
        status = read_status(worker_dir)
        if status:
            reconnects.set(status.reconnects, tags=tags)
            up.set(float(status.tunnel in ("up", "direct")), tags=tags)  # direct: no tunnel to lose
        time.sleep(period)


def create_app(pool: str = "default", namespace: str = DEFAULT_NAMESPACE, address: str | None = None,
               temp_dir: str | None = None, worker_dir: Path | None = None) -> FastAPI:
    """``worker_dir``: the supervisor's state directory, for the tunnel's state (``rayenv worker start`` sets it)."""
    app = FastAPI(title="rayenv sidecar", description=__doc__)
    watcher = PoolWatcher(pool, namespace, address, temp_dir)
    kvm = kvm_status()  # boots a kernel at most once per host boot

    @app.get("/health", response_model=Health)
    def health() -> Health:
        connected, node_id, status, problem = watcher.read()
        tunnel = read_status(worker_dir) if worker_dir else None
        size = status.size if status else 0
        healthy = status.healthy if status else 0
        counts = status.counts if status else {}
        env_status: EnvState = ("not_initialized" if status is None else
                                "initialized" if healthy == size else "degraded")
        parts = [kvm.message, problem or f"{healthy}/{size} desktops up"]
        return Health(
            status="ok" if env_status == "initialized" else "degraded",
            provider=status.provider if status else None,
            observation_type=("screenshot_a11y_tree" if status and status.require_a11y_tree else "screenshot"),
            screenshot_source=SCREENSHOT_SOURCES.get(status.provider if status else "", GUEST_SCREENSHOTS),
            kvm_available=kvm.available, kvm_device=kvm.device, env_status=env_status, message="; ".join(parts),
            ray_connected=connected, ray_address=address, node_id=node_id, pool=pool, namespace=namespace,
            pool_size=size, healthy=healthy, leased=counts.get("leased", 0),
            replacements=status.replacements if status else 0,
            tunnel=tunnel.tunnel if tunnel else None, tunnel_reconnects=tunnel.reconnects if tunnel else 0,
            tunnel_last_outage_s=tunnel.last_outage_s if tunnel else None,
            tunnel_last_error=tunnel.last_error if tunnel else "")

    app.include_router(bridge_router(watcher.connect, pool, namespace))
    if worker_dir:
        threading.Thread(target=export_tunnel_metrics, args=(watcher, worker_dir, host_id(worker_dir.parent)), daemon=True,
                         name="tunnel-metrics").start()
    return app
