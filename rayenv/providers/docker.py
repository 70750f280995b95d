"""The ``docker`` provider: OSWorld's real desktop, an Ubuntu qcow2 booted by QEMU inside a container.

It runs the image OSWorld's own Docker provider uses (``happysixd/osworld-docker``) and fixes what
hurts there and in the old bridge:

* host ports are chosen by Docker (published on 127.0.0.1 with ephemeral host ports, read back from
  the container), so concurrent actors never race for a port and nothing scans the host;
* ``/dev/kvm`` is passed only when creating a VM through it actually works (:mod:`rayenv.kvm`),
  otherwise QEMU runs with ``KVM=N`` and the reason is logged (or, with ``require_kvm``, refused);
* the container carries its owner labels and is removed with its volumes; no pause/unpause;
* the readiness wait is bounded by ``boot_timeout`` and says which container and phase failed.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import requests

from ..errors import EnvTimeout, ProviderUnavailable
from ..kvm import probe_kvm
from . import containers
from .base import GuestEndpoint, Provider
from .vm_image import OSWORLD_UBUNTU_URL, ensure_vm_image

logger = logging.getLogger(__name__)

GUEST_PORT, CHROMIUM_PORT, VNC_PORT, VLC_PORT = 5000, 9222, 8006, 8080


class DockerProvider(Provider):
    name = "docker"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._container: Any = None
        self._kvm_reason = ""

    def _vm_path(self) -> Path:
        if self.spec.vm_path:
            path = Path(self.spec.vm_path).expanduser()
            if not path.exists():
                raise ProviderUnavailable(f"VM image {path} does not exist", env=self.ownership.env_id, phase="boot",
                                          hint="fix desktop.vm_path, or unset it to download OSWorld's Ubuntu image")
            return path
        return ensure_vm_image(self.spec.vm_url or OSWORLD_UBUNTU_URL, sha256=self.spec.vm_sha256)

    def start(self) -> GuestEndpoint:
        env_id = self.ownership.env_id
        kvm = probe_kvm()
        self._kvm_reason = kvm.message
        if not kvm.available and self.spec.require_kvm:
            raise ProviderUnavailable(f"KVM does not work here: {kvm.message}", env=env_id, phase="boot",
                                      hint="enable nested virtualization for this VM, or set require_kvm: false")
        environment = {"DISK_SIZE": "32G", "RAM_SIZE": self.spec.docker_memory, "CPU_CORES": str(self.spec.docker_cpus)}
        if not kvm.available:
            environment["KVM"] = "N"
            logger.warning("%s: running QEMU without KVM (slow): %s", env_id, kvm.message)
        self._container = containers.run_labelled(
            image=self.spec.docker_image, name=f"rayenv-{env_id}", labels=self.ownership.labels(self.name),
            environment=environment, ports=[GUEST_PORT, CHROMIUM_PORT, VNC_PORT, VLC_PORT],
            devices=[f"{kvm.device}:{kvm.device}:rwm"] if kvm.available else [], cap_add=["NET_ADMIN"],
            volumes={str(self._vm_path()): {"bind": "/System.qcow2", "mode": "ro"}}, env=env_id,
        )
        try:
            ports = containers.published_ports(self._container)
            endpoint = GuestEndpoint("127.0.0.1", ports[GUEST_PORT], extra_ports={
                "chromium": ports[CHROMIUM_PORT], "vnc": ports[VNC_PORT], "vlc": ports[VLC_PORT]})
            self._wait_ready(endpoint)
        except BaseException:
            self.stop()
            raise
        return endpoint

    def _wait_ready(self, endpoint: GuestEndpoint) -> None:
        """Poll the guest API until the VM has booted; log a progress line every 10 s."""
        started = time.monotonic()
        deadline, next_log = started + self.spec.boot_timeout, started + 10
        while time.monotonic() < deadline:
            if not self.is_alive():
                logs = self._container.logs(tail=20).decode(errors="replace")
                raise ProviderUnavailable(f"container {self._container.name} exited while booting", env=self.ownership.env_id,
                                          phase="boot", hint=f"its last log lines:\n{logs}")
            try:
                if requests.get(endpoint.url + "/screenshot", timeout=5).ok:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > next_log:
                logger.info("%s: VM booting in %s (%.0fs)", self.ownership.env_id, self._container.name,
                            time.monotonic() - started)
                next_log += 10
            time.sleep(1)
        raise EnvTimeout(f"the VM in {self._container.name} did not answer within {self.spec.boot_timeout:.0f}s",
                         env=self.ownership.env_id, phase="boot",
                         hint="raise desktop.boot_timeout (a VM without KVM takes minutes)")

    def stop(self) -> None:
        if self._container is not None:
            containers.remove(self._container)
            self._container = None

    def is_alive(self) -> bool:
        return self._container is not None and containers.is_running(self._container)

    def describe(self) -> dict[str, Any]:
        if self._container is None:
            return {"kvm": self._kvm_reason}
        return {"container_id": self._container.id[:12], "container_name": self._container.name,
                "image": self.spec.docker_image, "kvm": self._kvm_reason}
