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
from pathlib import Path
from typing import Any

from ..errors import ProviderUnavailable
from ..kvm import probe_kvm
from .base import GuestEndpoint
from .container_provider import ContainerProvider
from .vm_image import OSWORLD_UBUNTU_URL, locate_vm_image

logger = logging.getLogger(__name__)

GUEST_PORT, CHROMIUM_PORT, VNC_PORT, VLC_PORT = 5000, 9222, 8006, 8080


class DockerProvider(ContainerProvider):
    name = "docker"
    poll_interval = 1.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._kvm_reason = ""

    def _vm_path(self) -> Path:
        """The qcow2 to mount; never downloaded here (a boot window is no place for 10 GB)."""
        return locate_vm_image(self.spec.vm_path, self.spec.vm_url or OSWORLD_UBUNTU_URL, env=self.ownership.env_id)

    def container_options(self) -> dict[str, Any]:
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
        return {"image": self.spec.docker_image, "environment": environment, "cap_add": ["NET_ADMIN"],
                "ports": [GUEST_PORT, CHROMIUM_PORT, VNC_PORT, VLC_PORT],
                "devices": [f"{kvm.device}:{kvm.device}:rwm"] if kvm.available else [],
                "volumes": {str(self._vm_path()): {"bind": "/System.qcow2", "mode": "ro"}}}

    def endpoint(self, ports: dict[int, int]) -> GuestEndpoint:
        return GuestEndpoint("127.0.0.1", ports[GUEST_PORT], extra_ports={
            "chromium": ports[CHROMIUM_PORT], "vnc": ports[VNC_PORT], "vlc": ports[VLC_PORT]})

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "kvm": self._kvm_reason}
