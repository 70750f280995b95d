"""Build the VM desktop from Debian packages: a qcow2 Linux guest and the container that boots it.

Three parts, each cached by a content hash, so a second build with nothing changed takes seconds:

1. the guest root filesystem: desktop-lite's packages plus a kernel, an initramfs and ``iproute2``
   (``debootstrap``, shared with :mod:`rayenv.desktop_lite.build`), kept as a tarball;
2. the disk: that rootfs plus our guest server, ``desktop-session`` and ``OSWorld/vm/init`` as PID 1,
   made into a 4 GB ext4 (``mkfs.ext4 -d``) and converted to ``System.qcow2``; the guest kernel and
   initrd are copied out beside it for direct boot. Kept in ``$RAYENV_VM_DESKTOP_DIR``
   (default ``~/.cache/rayenv/vm-desktop/<hash>/``), never in an image layer, because the docker
   provider mounts a qcow2 from the host the way it mounts OSWorld's;
3. ``rayenv/osworld-vm:<hash>``: a debootstrap rootfs with QEMU and noVNC (``docker import``) plus a
   ``docker build`` layer with ``OSWorld/vm/entrypoint`` and the guest's kernel and initrd. Its hash
   covers the disk's, so an image always matches the qcow2 built with it.

Nothing is pulled from a registry. ``qemu-img`` runs inside the QEMU base image, so the host
needs only ``debootstrap``, ``e2fsprogs`` and a Docker engine.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import io
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

from rich.console import Console
from rich.progress import Progress

from ..desktop_lite.build import (
    GUEST_DIR,
    IMAGE_DIR,
    OSWORLD_DIR,
    PACKAGES,
    PYPI_PACKAGES,
    SUITE,
    debootstrap,
    digest,
    docker_build,
    docker_import,
    install_pypi,
    logged_build,
)
from ..engine import containers
from ..errors import ProviderUnavailable

VM_DIR = OSWORLD_DIR / "vm"
REPOSITORY = "rayenv/osworld-vm"
#: The guest: desktop-lite's desktop plus what booting it as a VM needs (PID 1 uses ip and modprobe).
GUEST_PACKAGES = (*PACKAGES, "linux-image-amd64", "initramfs-tools", "iproute2", "kmod")
#: The container around the VM: QEMU, qemu-img for the overlay, noVNC for a browser view
#: (python3-cffi-backend: debootstrap does not resolve the virtual package python3-cryptography needs),
#: OVMF for disks that boot with UEFI.
QEMU_PACKAGES = ("qemu-system-x86", "qemu-utils", "novnc", "websockify", "python3-cffi-backend", "procps", "ovmf")
DISK_SIZE = "4G"
#: What the container layer adds from ``OSWorld/vm`` (the entry point picks the boot mode with boot-mode).
LAYER_FILES = ("Dockerfile", "entrypoint", "boot-mode")
#: Where the guest's files go; ``init=`` on the kernel command line names the first.
GUEST_PATHS = {"init": "opt/rayenv/vm/init", "desktop-session": "opt/rayenv/image/desktop-session",
               "guest": "opt/rayenv/guest"}


def cache_dir() -> Path:
    return Path(os.environ.get("RAYENV_VM_DESKTOP_DIR") or Path.home() / ".cache" / "rayenv" / "vm-desktop")


@dataclass(frozen=True)
class VmDesktop:
    """A built VM desktop: boot ``qcow2`` with the container image ``image`` (provider ``docker``)."""

    image: str
    qcow2: Path
    kernel: str  # the guest kernel's release (``uname -r`` inside the VM)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "qcow2": str(self.qcow2)}


@functools.lru_cache(maxsize=1)
def _rootfs_key() -> str:
    return digest(" ".join(GUEST_PACKAGES + PYPI_PACKAGES).encode(), SUITE.encode())


@functools.lru_cache(maxsize=1)
def qemu_base_tag() -> str:
    return f"{REPOSITORY}-base:{digest(' '.join(QEMU_PACKAGES).encode(), SUITE.encode())}"


def _disk_files() -> list[Path]:
    return [VM_DIR / "init", IMAGE_DIR / "desktop-session", *sorted(GUEST_DIR.rglob("*.py"))]


@functools.lru_cache(maxsize=1)
def disk_key() -> str:
    """Changes whenever the guest's packages, init, session script or guest server change."""
    return digest(_rootfs_key().encode(), DISK_SIZE.encode(), *(f.read_bytes() for f in _disk_files()))


@functools.lru_cache(maxsize=1)
def default_image_tag() -> str:
    """``rayenv/osworld-vm:<version>``, covering the QEMU base, the entry point and the disk it boots."""
    layer = [(VM_DIR / name).read_bytes() for name in LAYER_FILES]
    return f"{REPOSITORY}:{digest(qemu_base_tag().encode(), disk_key().encode(), *layer)}"


def disk_dir() -> Path:
    return cache_dir() / disk_key()


def built() -> VmDesktop | None:
    """The current VM desktop if both its disk and its image exist here (no build)."""
    manifest = disk_dir() / "manifest.json"
    if not (manifest.exists() and containers.image_exists(default_image_tag())):
        return None
    return VmDesktop(default_image_tag(), disk_dir() / "System.qcow2", json.loads(manifest.read_text())["kernel"])


def build_vm_desktop(force: bool = False, console: Console | None = None) -> VmDesktop:
    """Build (or find) the VM desktop's qcow2 and container image."""
    if not force and (existing := built()) is not None:
        return existing
    with _build_lock():  # a concurrent build (another test session, another pool) is waited for, then reused
        if not force and (existing := built()) is not None:
            return existing
        return _build(force, console)


@contextlib.contextmanager
def _build_lock(directory: Path | None = None) -> Iterator[None]:
    """Held while building into ``directory`` (default: the cache dir); released by the kernel if we die."""
    directory = directory or cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _build(force: bool, console: Console | None) -> VmDesktop:
    tag = default_image_tag()
    with logged_build(tag, cache_dir() / "build.log", console) as (progress, log):
        if force or not containers.image_exists(qemu_base_tag()):
            _build_qemu_base(progress, log)
        if force or not (disk_dir() / "manifest.json").exists():
            _build_disk(force, progress, log)
        kernel = json.loads((disk_dir() / "manifest.json").read_text())["kernel"]
        task = progress.add_task(f"container layer (docker build {tag})", total=1)
        docker_build(tag, _layer_context, log, buildargs={"BASE": qemu_base_tag(), "KERNEL": kernel})
        progress.update(task, completed=1)
    _remove_stale()
    result = built()
    assert result is not None, "the build just made both parts"
    return result


def _remove_stale() -> None:
    """Earlier disks (1.5 GB each), rootfs tarballs and images are dead weight once rebuilt: remove the unused."""
    import docker.errors

    engine = containers.client()
    in_use = {mount["Source"] for container in engine.containers.list(all=True)
              for mount in container.attrs.get("Mounts", [])}
    for disk in cache_dir().iterdir():
        if (disk / "manifest.json").exists() and disk != disk_dir() and str(disk / "System.qcow2") not in in_use:
            shutil.rmtree(disk, ignore_errors=True)
    for tarball in cache_dir().glob("guest-rootfs-*.tar"):
        if tarball.name != f"guest-rootfs-{_rootfs_key()}.tar":
            tarball.unlink()
    for image in engine.images.list(REPOSITORY):
        for tag in image.tags:
            if tag != default_image_tag():
                with contextlib.suppress(docker.errors.APIError):  # a container still runs it
                    engine.images.remove(tag)


def _build_qemu_base(progress: Progress, log: io.TextIOBase) -> None:
    cache_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="qemu-base-", dir=cache_dir()) as workdir:
        rootfs = Path(workdir) / "rootfs"
        debootstrap(rootfs, QEMU_PACKAGES, progress, log)
        docker_import(rootfs, qemu_base_tag(), progress, log)


def _rootfs_tarball(force: bool, progress: Progress, log: io.TextIOBase) -> Path:
    """The guest's packages as a tarball (the slow part: debootstrap with a kernel), built once."""
    tarball = cache_dir() / f"guest-rootfs-{_rootfs_key()}.tar"
    if tarball.exists() and not force:
        return tarball
    with tempfile.TemporaryDirectory(prefix="guest-rootfs-", dir=cache_dir()) as workdir:
        rootfs = Path(workdir) / "rootfs"
        debootstrap(rootfs, GUEST_PACKAGES, progress, log)
        if not list(rootfs.glob("boot/initrd.img-*")):  # initramfs-tools configured after the kernel
            task = progress.add_task("update-initramfs", total=1)
            subprocess.run(["chroot", str(rootfs), "update-initramfs", "-c", "-k", "all"], check=True,
                           stdout=log, stderr=subprocess.STDOUT)
            progress.update(task, completed=1)
        install_pypi(rootfs, progress, log)
        task = progress.add_task("guest rootfs tarball", total=1)
        partial = Path(workdir) / "rootfs.tar"
        subprocess.run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(partial), "."], check=True,
                       stdout=log, stderr=subprocess.STDOUT)
        partial.rename(tarball)
        progress.update(task, completed=1)
    return tarball


def _build_disk(force: bool, progress: Progress, log: io.TextIOBase) -> None:
    tarball = _rootfs_tarball(force, progress, log)
    if shutil.which("mkfs.ext4") is None:
        raise ProviderUnavailable("mkfs.ext4 is not installed", phase="build", hint="apt-get install e2fsprogs")
    with tempfile.TemporaryDirectory(prefix="disk-", dir=cache_dir()) as workdir:
        work = Path(workdir)
        rootfs, out = work / "rootfs", work / "out"
        rootfs.mkdir()
        out.mkdir()
        task = progress.add_task("guest files into the rootfs", total=1)
        subprocess.run(["tar", "-C", str(rootfs), "--numeric-owner", "-xpf", str(tarball)], check=True,
                       stdout=log, stderr=subprocess.STDOUT)
        _install_guest_files(rootfs)
        kernel = _copy_kernel(rootfs, out)
        progress.update(task, completed=1)
        task = progress.add_task(f"mkfs.ext4 -d ({DISK_SIZE} raw)", total=1)
        raw = out / "disk.raw"
        subprocess.run(["truncate", "-s", DISK_SIZE, str(raw)], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "rayenv-vm", "-d", str(rootfs), str(raw)], check=True,
                       stdout=log, stderr=subprocess.STDOUT)
        shutil.rmtree(rootfs)
        progress.update(task, completed=1)
        task = progress.add_task("qemu-img convert -O qcow2", total=1)
        containers.client().containers.run(qemu_base_tag(), ["qemu-img", "convert", "-O", "qcow2", "/disk/disk.raw",
                                                             "/disk/System.qcow2"],
                                           volumes={str(out): {"bind": "/disk", "mode": "rw"}}, remove=True)
        raw.unlink()
        (out / "manifest.json").write_text(json.dumps({"kernel": kernel, "disk_key": disk_key()}))
        progress.update(task, completed=1)
        shutil.rmtree(disk_dir(), ignore_errors=True)
        out.rename(disk_dir())


def _install_guest_files(rootfs: Path) -> None:
    for name, relative in GUEST_PATHS.items():
        target = rootfs / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if name == "guest":
            shutil.copytree(GUEST_DIR, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(VM_DIR / name if name == "init" else IMAGE_DIR / name, target)
            target.chmod(0o755)


def _copy_kernel(rootfs: Path, out: Path) -> str:
    """Copy the guest kernel and initrd beside the disk (for ``-kernel``/``-initrd``); returns its release."""
    kernels = sorted(rootfs.glob("boot/vmlinuz-*"))
    if len(kernels) != 1:
        raise RuntimeError(f"expected one kernel in the guest's /boot, found {[k.name for k in kernels]}")
    release = kernels[0].name.removeprefix("vmlinuz-")
    shutil.copy2(kernels[0], out / "vmlinuz")
    shutil.copy2(rootfs / "boot" / f"initrd.img-{release}", out / "initrd.img")
    return release


def _layer_context(root: Path) -> None:
    for name in LAYER_FILES:
        shutil.copy2(VM_DIR / name, root / name)
    for name in ("vmlinuz", "initrd.img"):
        shutil.copy2(disk_dir() / name, root / name)
