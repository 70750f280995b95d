"""Does KVM work here? Answered by creating a VM, not by looking for ``/dev/kvm``.

A ``/dev/kvm`` node can exist while KVM is unusable (nested virtualization off, wrong permissions,
a container without the device cgroup rule). The only honest test is the one QEMU will do: open the
device, check the API version and ask for a VM (``KVM_CREATE_VM``).
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass

KVM_GET_API_VERSION = 0xAE00
KVM_CREATE_VM = 0xAE01
KVM_API_VERSION = 12


@dataclass(frozen=True)
class KvmStatus:
    available: bool
    device: str
    message: str


def probe_kvm(device: str = "/dev/kvm") -> KvmStatus:
    """Try to create a VM through ``device``; the message says why not, in words a user can act on."""
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return KvmStatus(False, device, f"{device} does not exist: enable virtualization (or nested "
                                        "virtualization for a VM, e.g. 'Hypervisor applications' in VMware Fusion)")
    except PermissionError:
        return KvmStatus(False, device, f"no permission to open {device}: run as root or join the 'kvm' group")
    except OSError as exc:
        return KvmStatus(False, device, f"cannot open {device}: {exc.strerror}")
    try:
        try:
            version = fcntl.ioctl(fd, KVM_GET_API_VERSION)
        except OSError as exc:
            return KvmStatus(False, device, f"{device} is not a KVM device: {exc.strerror}")
        if version != KVM_API_VERSION:
            return KvmStatus(False, device, f"{device} speaks KVM API {version}, expected {KVM_API_VERSION}")
        try:
            vm = fcntl.ioctl(fd, KVM_CREATE_VM, 0)
        except OSError as exc:
            return KvmStatus(False, device, f"KVM_CREATE_VM failed on {device}: {exc.strerror} "
                                            "(is nested virtualization enabled?)")
        os.close(vm)
        return KvmStatus(True, device, "KVM hardware acceleration enabled")
    finally:
        os.close(fd)
