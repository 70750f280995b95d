"""Does KVM work here? Answered by booting a Linux kernel with it, not by looking at ``/dev/kvm``.

Two checks, cheapest first:

1. the device: open ``/dev/kvm``, check the API version, ask for a VM (``KVM_CREATE_VM``). This
   catches a missing device, wrong permissions or a container without the device rule;
2. a boot: the kernel ``rayenv/osworld-vm`` carries in ``/vm`` started by QEMU with ``-enable-kvm``
   (in a throwaway container of that image), watched on its serial console for the kernel reaching userspace. A half-working
   nested KVM passes check 1, and even runs real-mode guest code, yet hangs as soon as the kernel
   switches modes (seen as a console that stops after the boot loader's "Probing EDD"). Only a
   kernel that boots proves that a VM will. The kernel is the container's, not the desktop disk's,
   so the answer is the same whatever disk the desktops boot (OSWorld's Ubuntu image included).

The boot takes a few seconds where KVM works and ``BOOT_TIMEOUT`` where it hangs, so its verdict
is cached per host boot (``/proc/sys/kernel/random/boot_id``), image and device.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from ..waiting import WaitTimeout, wait_until

logger = logging.getLogger(__name__)

KVM_GET_API_VERSION = 0xAE00
KVM_CREATE_VM = 0xAE01
KVM_API_VERSION = 12
#: The kernel prints this once it has booted and starts userspace (the initramfs's /init).
USERSPACE_MARKER = "Run /init as init process"
#: The kernel proper (decompressed, in long mode) prints this first.
KERNEL_MARKER = "Linux version"
BOOT_TIMEOUT = 20.0
#: Images that carry a guest kernel for the boot check (rayenv/osworld-vm) have this label.
KERNEL_LABEL = "rayenv.vm.kernel"


@dataclass(frozen=True)
class KvmStatus:
    available: bool
    device: str
    message: str


@dataclass(frozen=True)
class BootTrace:
    """What a kernel booted with ``-enable-kvm`` printed, and whether it was still going at the deadline."""

    console: str
    timed_out: bool
    seconds: float


def probe_device(device: str = "/dev/kvm") -> KvmStatus:
    """Check 1: can a VM be created through ``device``? The message says why not, in words a user can act on."""
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
        return KvmStatus(True, device, f"KVM_CREATE_VM works on {device}")
    finally:
        os.close(fd)


def judge_boot(device: KvmStatus, trace: BootTrace | None) -> KvmStatus:
    """The verdict: KVM is available only if the device works *and* a kernel booted with it reached userspace."""
    if not device.available:
        return device
    name = device.device
    if trace is None:
        return KvmStatus(False, name, f"KVM_CREATE_VM works on {name}, but no kernel has been booted with it to "
                                      "prove a VM runs (build the VM image with `rayenv vm build` so rayenv can "
                                      "check); using software emulation (TCG)")
    if USERSPACE_MARKER in trace.console:
        return KvmStatus(True, name, f"KVM hardware acceleration enabled (a Linux kernel booted with it in "
                                     f"{trace.seconds:.1f}s)")
    lines = [line.strip() for line in trace.console.splitlines() if line.strip()]
    last = lines[-1] if lines else "nothing"
    if KERNEL_MARKER in trace.console:
        where = "the kernel started but did not reach userspace"
    elif trace.timed_out:
        where = "it hung before the kernel proper started"
    else:
        where = "QEMU exited before the kernel started"
    return KvmStatus(False, name, f"KVM_CREATE_VM works on {name}, but a Linux kernel booted with -enable-kvm does "
                                  f"not run: {where} (the console's last line was {last!r}); this looks like nested "
                                  "virtualization that cannot run a guest kernel, so VMs run under software emulation "
                                  "(TCG)")


def boot_with_kvm(image: str, device: str = "/dev/kvm", timeout: float = BOOT_TIMEOUT) -> BootTrace:
    """Check 2: boot ``image``'s ``/vm/vmlinuz`` + initrd under ``-enable-kvm`` in a throwaway container."""
    from . import containers

    # the same accelerator flags as OSWorld/vm/entrypoint; `timeout` ends a hung QEMU even if we are killed meanwhile
    command = ["timeout", "-s", "KILL", str(int(timeout) + 10),
               "qemu-system-x86_64", "-enable-kvm", "-cpu", "host", "-m", "256", "-nodefaults", "-no-user-config",
               "-display", "none", "-serial", "stdio", "-no-reboot", "-kernel", "/vm/vmlinuz", "-initrd",
               "/vm/initrd.img", "-append", "console=ttyS0 panic=-1"]
    started = time.monotonic()
    container = containers.client().containers.run(image, command, entrypoint=[], detach=True,
                                                   devices=[f"{device}:/dev/kvm:rwm"],
                                                   labels={"rayenv.owner": "kvm-probe"})
    console, seconds = "", 0.0

    def booted_or_ended() -> bool:
        nonlocal console, seconds
        console, seconds = container.logs().decode(errors="replace"), time.monotonic() - started
        return USERSPACE_MARKER in console or not containers.is_running(container)

    try:  # the timeout counts from before the container started, as the trace's seconds do
        wait_until(booted_or_ended, max(0.0, started + timeout - time.monotonic()), interval=0.5)
        timed_out = False
    except WaitTimeout:
        timed_out = True
    finally:
        containers.remove(container)
    return BootTrace(console, timed_out, seconds)


def kvm_status(image: str | None = None, device: str = "/dev/kvm",
               boot: Callable[[str, str], BootTrace] = boot_with_kvm) -> KvmStatus:
    """Whether VMs run with KVM here, and why (or why not). Boots at most once per host boot, image and device.

    ``image``: the container image whose kernel to boot; one without a guest kernel (OSWorld's) is
    judged with the newest local ``rayenv/osworld-vm`` image instead.
    """
    checked = probe_device(device)
    if not checked.available:
        return checked
    probe_image = _image_with_kernel(image)
    if probe_image is None:
        return judge_boot(checked, None)
    cache = _cache_file()
    key = f"{probe_image}:{device}"
    verdict = _verdicts(cache).get(key)
    if verdict is None:  # one process boots, the others wait for its verdict (two boots may end differently)
        cache.parent.mkdir(parents=True, exist_ok=True)
        with open(cache.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released by the kernel if the holder dies
            verdicts = _verdicts(cache)
            if key not in verdicts:
                status = judge_boot(checked, boot(probe_image, device))
                logger.info("KVM boot check with %s: %s", probe_image, status.message)
                verdicts[key] = asdict(status)
                partial = cache.with_suffix(f".{os.getpid()}")
                partial.write_text(json.dumps(verdicts))
                partial.replace(cache)
            verdict = verdicts[key]
    return KvmStatus(**verdict)


def _verdicts(cache: Path) -> dict[str, dict]:
    return json.loads(cache.read_text()) if cache.exists() else {}


def _image_with_kernel(preferred: str | None) -> str | None:
    """The id of ``preferred`` if it carries a guest kernel, else of the newest local image that does."""
    from . import containers

    try:
        engine = containers.client()
    except Exception:  # no Docker engine: nothing to boot with
        return None
    images = engine.images.list(filters={"label": KERNEL_LABEL})
    if preferred:
        chosen = [image for image in images if preferred in image.tags or image.id == preferred]
        images = chosen or images
    if not images:
        return None
    return max(images, key=lambda image: image.attrs.get("Created", "")).id


def _cache_file() -> Path:
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    root = Path(os.environ.get("RAYENV_KVM_CACHE_DIR") or Path.home() / ".cache" / "rayenv" / "kvm")
    return root / f"{boot_id}.json"
