"""The ``docker`` provider: a QEMU VM desktop inside a container, OSWorld's way.

It runs any image with the interface of OSWorld's own (``happysixd/osworld-docker``): the qcow2
mounted read-only at ``/System.qcow2``, ``RAM_SIZE``/``CPU_CORES``/``DISK_SIZE``/``KVM=N``, the guest
API on container port 5000. ``rayenv/osworld-vm`` (``rayenv vm build``) is such an image, built here
from Debian packages. What this provider adds:

* host ports are chosen by Docker (published on 127.0.0.1 with ephemeral host ports, read back from
  the container), so concurrent actors never race for a port and nothing scans the host;
* ``/dev/kvm`` is passed only when a kernel really boots with it (:func:`rayenv.kvm.kvm_status`),
  otherwise QEMU runs with ``KVM=N`` and the reason is logged, reported by :meth:`describe` (and so
  in ``EnvStatus``), or, with ``require_kvm``, raised;
* a per-desktop work directory on the host, bind-mounted at ``/run/vm``, where the image keeps the
  copy-on-write overlay and QEMU's QMP socket, named by the container's ``rayenv.workdir`` label and
  removed with the container (by :meth:`stop` or the reaper). Snapshots (QMP ``savevm``, a copy of the
  overlay started with ``LOADVM``) build on it;
* the container carries its owner labels and is removed with its volumes; no pause/unpause;
* the readiness wait is bounded by ``boot_timeout`` (600 s by default) and names container and phase.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..errors import ProviderUnavailable
from ..kvm import KvmStatus, kvm_status
from .base import LABEL_WORKDIR, GuestEndpoint
from .container_provider import ContainerProvider
from .vm_image import OSWORLD_UBUNTU_URL, locate_vm_image

logger = logging.getLogger(__name__)

GUEST_PORT, CHROMIUM_PORT, VNC_PORT, VLC_PORT = 5000, 9222, 8006, 8080
#: Where the image keeps the overlay (``boot.qcow2``) and QMP socket (``qmp.sock``).
WORK_MOUNT = "/run/vm"


def work_root() -> Path:
    """Parent of the per-desktop work directories (overlays grow with the guest's writes and snapshots)."""
    return Path(os.environ.get("RAYENV_VM_WORK_DIR") or Path.home() / ".cache" / "rayenv" / "vm-work")


class DockerProvider(ContainerProvider):
    name = "docker"
    poll_interval = 1.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._kvm: KvmStatus | None = None
        self.work_dir: Path | None = None

    def _vm_path(self) -> Path:
        """The qcow2 to mount; never downloaded here (a boot window is no place for 10 GB)."""
        return locate_vm_image(self.spec.vm_path, self.spec.vm_url or OSWORLD_UBUNTU_URL, env=self.ownership.env_id)

    def container_options(self) -> dict[str, Any]:
        env_id = self.ownership.env_id
        kvm = self._kvm = kvm_status(self.spec.docker_image)
        if not kvm.available and self.spec.require_kvm:
            raise ProviderUnavailable(f"KVM does not work here: {kvm.message}", env=env_id, phase="boot",
                                      hint="enable nested virtualization for this VM, or set require_kvm: false")
        environment = {"DISK_SIZE": "32G", "RAM_SIZE": self.spec.docker_memory, "CPU_CORES": str(self.spec.docker_cpus),
                       "SCREEN_WIDTH": str(self.spec.screen_width), "SCREEN_HEIGHT": str(self.spec.screen_height)}
        if not kvm.available:
            environment["KVM"] = "N"
            logger.warning("%s: running QEMU without KVM (slow): %s", env_id, kvm.message)
        qcow2 = self._vm_path()
        work_root().mkdir(parents=True, exist_ok=True)
        self.work_dir = Path(tempfile.mkdtemp(prefix=f"{self.ownership.owner}-{env_id}-", dir=work_root()))
        return {"image": self.spec.docker_image, "environment": environment, "cap_add": ["NET_ADMIN"], "init": True,
                "ports": [GUEST_PORT, CHROMIUM_PORT, VNC_PORT, VLC_PORT],
                "devices": [f"{kvm.device}:/dev/kvm:rwm"] if kvm.available else [],
                "labels": {LABEL_WORKDIR: str(self.work_dir)},
                "volumes": {str(qcow2): {"bind": "/System.qcow2", "mode": "ro"},
                            str(self.work_dir): {"bind": WORK_MOUNT, "mode": "rw"}}}

    def endpoint(self, ports: dict[int, int]) -> GuestEndpoint:
        return GuestEndpoint("127.0.0.1", ports[GUEST_PORT], extra_ports={
            "chromium": ports[CHROMIUM_PORT], "vnc": ports[VNC_PORT], "vlc": ports[VLC_PORT]})

    def stop(self) -> None:
        super().stop()
        if self.work_dir is not None:  # also when the container never started
            shutil.rmtree(self.work_dir, ignore_errors=True)
            self.work_dir = None

    @property
    def qmp_socket(self) -> Path | None:
        """QEMU's monitor for this desktop (host side), for snapshot control; None when not started."""
        return self.work_dir / "qmp.sock" if self.work_dir is not None else None

    def describe(self) -> dict[str, Any]:
        facts = super().describe()
        if self._kvm is not None:
            facts.update(kvm_available=self._kvm.available, kvm=self._kvm.message)
        if self.work_dir is not None:
            facts["work_dir"] = str(self.work_dir)
        return facts
