"""Build the VM desktop from Debian packages: a qcow2 Linux guest and the container that boots it.

Three parts, each cached by a content hash, so a second build with nothing changed takes seconds:

1. the guest root filesystem: desktop-lite's packages of the image profile (``small`` or ``osworld``,
   see :mod:`rayenv.desktop_lite.profiles`) plus a kernel, an initramfs and ``iproute2``, kept as a
   tarball. ``small`` debootstraps them (two minutes, and the stand-in disk builds on it); ``osworld``
   starts from desktop-lite's osworld base image (``docker export``, built first if missing) and adds
   only the kernel packages with apt, so its apps are downloaded and installed once per machine, not twice;
2. the disk: that rootfs plus our guest server, the profile's session script (run by
   ``OSWorld/vm/init`` as PID 1; the osworld profile's user and settings are applied in a chroot),
   made into an ext4 (4 GB small, 10 GB osworld (``mkfs.ext4 -d``) and converted to ``System.qcow2``; the guest kernel and
   initrd are copied out beside it for direct boot. Kept in ``$RAYENV_VM_DESKTOP_DIR``
   (default ``~/.cache/rayenv/vm-desktop/<hash>/``, one per profile), never in an image layer, because the docker
   provider mounts a qcow2 from the host the way it mounts OSWorld's;
3. ``rayenv/osworld-vm:<hash>``: a debootstrap rootfs with QEMU and noVNC (``docker import``) plus a
   ``docker build`` layer with ``OSWorld/vm/entrypoint`` and the guest's kernel and initrd. Its hash
   covers the disk's, so an image always matches the qcow2 built with it.

Nothing is pulled from a registry. ``qemu-img`` runs inside the QEMU base image, so the host
needs only ``debootstrap``, ``e2fsprogs`` and a Docker engine.
"""

from __future__ import annotations

import contextlib
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
    base_tag as lite_base_tag,
    build_image as build_lite_image,
    build_lock,
    debootstrap,
    export_base,
    digest,
    docker_build,
    docker_import,
    install_pypi,
    logged_build,
    mirror,
)
from ..desktop_lite.apt import apt_install, chroot_mounts
from ..desktop_lite.profiles import DEFAULT_PROFILE, OSWORLD_PROFILE_DIR, PROFILES, get_profile
from ..engine import containers
from ..errors import ProviderUnavailable

VM_DIR = OSWORLD_DIR / "vm"
REPOSITORY = "rayenv/osworld-vm"
#: The guest: desktop-lite's desktop plus what booting it as a VM needs (PID 1 uses ip and modprobe; Xorg draws
#: the desktop on the emulated graphics card, see ``OSWorld/vm/Xvfb``).
KERNEL_PACKAGES = ("linux-image-amd64", "initramfs-tools", "iproute2", "kmod", "xserver-xorg-core")
GUEST_PACKAGES = (*PACKAGES, *KERNEL_PACKAGES)
#: The container around the VM: QEMU, qemu-img for the overlay, noVNC for a browser view
#: (python3-cffi-backend: debootstrap does not resolve the virtual package python3-cryptography needs),
#: OVMF for disks that boot with UEFI.
QEMU_PACKAGES = ("qemu-system-x86", "qemu-utils", "novnc", "websockify", "python3-cffi-backend", "procps", "ovmf")
#: The image label saying where the guest's desktop is drawn: ``qemu`` (QEMU's display: Xorg on the emulated card,
#: so the docker provider's screenshots are QMP screendumps) or ``guest`` (an Xvfb only the guest can read).
DISPLAY_LABEL = "rayenv.vm.display"
#: Profiles whose desktop is on QEMU's display: the small profile's session runs as root, which Xorg needs for the
#: card and the console; the osworld profile's runs as ``user``, whom ``OSWorld/vm/Xvfb`` leaves on Xvfb.
QEMU_DISPLAY_PROFILES = ("small",)
#: The guest disk's size per profile (the osworld profile's apps take about 2.5 GB).
DISK_SIZES = {"small": "4G", "osworld": "10G"}
#: What the container layer adds from ``OSWorld/vm`` (the entry point picks the boot mode with boot-mode and
#: loads and runs its warm spare with qmp).
LAYER_FILES = ("Dockerfile", "entrypoint", "boot-mode", "qmp")
#: Where the guest's files go; ``init=`` on the kernel command line names the first; init runs the session, whose
#: ``Xvfb`` is the one in ``/opt/rayenv/vm/bin`` (Xorg on the emulated card, with ``xorg.conf`` beside it).
GUEST_PATHS = {"init": "opt/rayenv/vm/init", "Xvfb": "opt/rayenv/vm/bin/Xvfb", "xorg.conf": "opt/rayenv/vm/bin/xorg.conf",
               "desktop-session": "opt/rayenv/image/desktop-session", "guest": "opt/rayenv/guest"}
#: The files of ``GUEST_PATHS`` that come from ``OSWorld/vm``.
VM_GUEST_FILES = ("init", "Xvfb", "xorg.conf")
#: The session script init runs, per profile (installed at ``GUEST_PATHS["desktop-session"]``).
SESSIONS = {"small": IMAGE_DIR / "desktop-session", "osworld": OSWORLD_PROFILE_DIR / "osworld-session"}
#: Where the osworld profile's recipe (``setup-profile`` and its files) goes in the guest.
PROFILE_PATH = "opt/rayenv/image/osworld"


def cache_dir() -> Path:
    return Path(os.environ.get("RAYENV_VM_DESKTOP_DIR") or Path.home() / ".cache" / "rayenv" / "vm-desktop")


@dataclass(frozen=True)
class VmDesktop:
    """A built VM desktop: boot ``qcow2`` with the container image ``image`` (provider ``docker``)."""

    image: str
    qcow2: Path
    kernel: str  # the guest kernel's release (``uname -r`` inside the VM)
    profile: str = DEFAULT_PROFILE

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "qcow2": str(self.qcow2)}


@functools.lru_cache(maxsize=None)
def _rootfs_key(profile: str = DEFAULT_PROFILE) -> str:
    if _derives_from_lite(profile):
        return digest(lite_base_tag(profile).encode(), " ".join(KERNEL_PACKAGES).encode(), SUITE.encode())
    packages = GUEST_PACKAGES + get_profile(profile).apt_packages + PYPI_PACKAGES
    return digest(" ".join(packages).encode(), SUITE.encode())


def _derives_from_lite(profile: str) -> bool:
    """Whether ``profile``'s guest rootfs is desktop-lite's base image plus the kernel (every profile with apps of
    its own: their apt run is the expensive part of both builds)."""
    return bool(get_profile(profile).apt_packages)


@functools.lru_cache(maxsize=1)
def qemu_base_tag() -> str:
    return f"{REPOSITORY}-base:{digest(' '.join(QEMU_PACKAGES).encode(), SUITE.encode())}"


def _disk_files(profile: str) -> list[Path]:
    files = [*(VM_DIR / name for name in VM_GUEST_FILES), SESSIONS[profile], *sorted(GUEST_DIR.rglob("*.py"))]
    if profile != DEFAULT_PROFILE:
        files += sorted(path for path in OSWORLD_PROFILE_DIR.rglob("*") if path.is_file())
    return files


@functools.lru_cache(maxsize=None)
def disk_key(profile: str = DEFAULT_PROFILE) -> str:
    """Changes whenever the guest's packages, init, session script, profile recipe or guest server change."""
    return digest(_rootfs_key(profile).encode(), DISK_SIZES[profile].encode(),
                  *(f.read_bytes() for f in _disk_files(profile)))


@functools.lru_cache(maxsize=None)
def default_image_tag(profile: str = DEFAULT_PROFILE) -> str:
    """``rayenv/osworld-vm:<version>``, covering the QEMU base, the entry point and the disk it boots."""
    layer = [(VM_DIR / name).read_bytes() for name in LAYER_FILES]
    return f"{REPOSITORY}:{digest(qemu_base_tag().encode(), disk_key(profile).encode(), *layer)}"


def disk_dir(profile: str = DEFAULT_PROFILE) -> Path:
    return cache_dir() / disk_key(profile)


def built(profile: str = DEFAULT_PROFILE) -> VmDesktop | None:
    """The current VM desktop of ``profile`` if both its disk and its image exist here (no build)."""
    manifest = disk_dir(profile) / "manifest.json"
    if not (manifest.exists() and containers.image_exists(default_image_tag(profile))):
        return None
    return VmDesktop(default_image_tag(profile), disk_dir(profile) / "System.qcow2",
                     json.loads(manifest.read_text())["kernel"], profile)


def build_vm_desktop(force: bool = False, console: Console | None = None,
                     profile: str = DEFAULT_PROFILE) -> VmDesktop:
    """Build (or find) the VM desktop's qcow2 and container image of the image ``profile``."""
    get_profile(profile)  # an unknown name fails here, before any lock or build
    if not force and (existing := built(profile)) is not None:
        return existing
    if _derives_from_lite(profile) and not (cache_dir() / f"guest-rootfs-{_rootfs_key(profile)}.tar").exists():
        build_lite_image(console=console, profile=profile)  # its base image is the guest rootfs's start
    lock = "build.lock" if profile == DEFAULT_PROFILE else f"build-{profile}.lock"  # profiles never wait for each other
    with build_lock(cache_dir() / lock):  # a concurrent build (another test session, another pool) is waited for, then reused
        if not force and (existing := built(profile)) is not None:
            return existing
        return _build(force, console, profile)


def _build(force: bool, console: Console | None, profile: str) -> VmDesktop:
    tag = default_image_tag(profile)
    log_name = "build.log" if profile == DEFAULT_PROFILE else f"build-{profile}.log"
    with logged_build(tag, cache_dir() / log_name, console) as (progress, log):
        if force or not containers.image_exists(qemu_base_tag()):
            _build_qemu_base(progress, log)
        if force or not (disk_dir(profile) / "manifest.json").exists():
            _build_disk(force, profile, progress, log)
        kernel = json.loads((disk_dir(profile) / "manifest.json").read_text())["kernel"]
        task = progress.add_task(f"container layer (docker build {tag})", total=1)
        docker_build(tag, functools.partial(_layer_context, profile=profile), log,
                     buildargs={"BASE": qemu_base_tag(), "KERNEL": kernel,
                                "DISPLAY_SOURCE": "qemu" if profile in QEMU_DISPLAY_PROFILES else "guest"})
        progress.update(task, completed=1)
    _remove_stale()
    result = built(profile)
    assert result is not None, "the build just made both parts"
    return result


def _remove_stale() -> None:
    """Earlier disks (1.5 GB and more each), rootfs tarballs and images are dead weight once rebuilt: remove
    the unused. Every profile's current parts stay."""
    import docker.errors

    engine = containers.client()
    in_use = {mount["Source"] for container in engine.containers.list(all=True, ignore_removed=True)
              for mount in container.attrs.get("Mounts", [])}
    current_disks = {disk_dir(profile) for profile in PROFILES}
    for disk in cache_dir().iterdir():
        if (disk / "manifest.json").exists() and disk not in current_disks and str(disk / "System.qcow2") not in in_use:
            shutil.rmtree(disk, ignore_errors=True)
    current_tarballs = {f"guest-rootfs-{_rootfs_key(profile)}.tar" for profile in PROFILES}
    for tarball in cache_dir().glob("guest-rootfs-*.tar"):
        if tarball.name not in current_tarballs:
            tarball.unlink()
    current_tags = {default_image_tag(profile) for profile in PROFILES}
    for image in engine.images.list(REPOSITORY):
        for tag in image.tags:
            if tag not in current_tags:
                with contextlib.suppress(docker.errors.APIError):  # a container still runs it
                    engine.images.remove(tag)


def _build_qemu_base(progress: Progress, log: io.TextIOBase) -> None:
    cache_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="qemu-base-", dir=cache_dir()) as workdir:
        rootfs = Path(workdir) / "rootfs"
        debootstrap(rootfs, QEMU_PACKAGES, progress, log)
        docker_import(rootfs, qemu_base_tag(), progress, log)


def _rootfs_tarball(force: bool, profile: str, progress: Progress, log: io.TextIOBase) -> Path:
    """The guest's packages as a tarball (the slow part: debootstrap with a kernel, apt), built once."""
    tarball = cache_dir() / f"guest-rootfs-{_rootfs_key(profile)}.tar"
    if tarball.exists() and not force:
        return tarball
    with tempfile.TemporaryDirectory(prefix="guest-rootfs-", dir=cache_dir()) as workdir:
        rootfs = Path(workdir) / "rootfs"
        if _derives_from_lite(profile):
            task = progress.add_task(f"docker export {lite_base_tag(profile)}", total=1)
            rootfs.mkdir()
            export_base(profile, rootfs, log)
            progress.update(task, completed=1)
            apt_install(rootfs, KERNEL_PACKAGES, mirror(), SUITE, progress, log)
        else:
            debootstrap(rootfs, GUEST_PACKAGES, progress, log)
        if not list(rootfs.glob("boot/initrd.img-*")):  # initramfs-tools configured after the kernel
            task = progress.add_task("update-initramfs", total=1)
            subprocess.run(["chroot", str(rootfs), "update-initramfs", "-c", "-k", "all"], check=True,
                           stdout=log, stderr=subprocess.STDOUT)
            progress.update(task, completed=1)
        if not _derives_from_lite(profile):  # the lite base has them already
            install_pypi(rootfs, progress, log)
        task = progress.add_task("guest rootfs tarball", total=1)
        partial = Path(workdir) / "rootfs.tar"
        subprocess.run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(partial), "."], check=True,
                       stdout=log, stderr=subprocess.STDOUT)
        partial.rename(tarball)
        progress.update(task, completed=1)
    return tarball


def _build_disk(force: bool, profile: str, progress: Progress, log: io.TextIOBase) -> None:
    tarball = _rootfs_tarball(force, profile, progress, log)
    disk_size = DISK_SIZES[profile]
    if shutil.which("mkfs.ext4") is None:
        raise ProviderUnavailable("mkfs.ext4 is not installed", phase="build", hint="apt-get install e2fsprogs")
    task = progress.add_task("guest files into the rootfs", total=1)
    with unpacked_rootfs(tarball, "disk-", log) as (_, rootfs, out):
        _install_guest_files(rootfs, profile, log)
        kernel = _copy_kernel(rootfs, out)
        progress.update(task, completed=1)
        task = progress.add_task(f"mkfs.ext4 -d ({disk_size} raw)", total=1)
        raw = out / "disk.raw"
        subprocess.run(["truncate", "-s", disk_size, str(raw)], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "rayenv-vm", "-d", str(rootfs), str(raw)], check=True,
                       stdout=log, stderr=subprocess.STDOUT)
        shutil.rmtree(rootfs)
        progress.update(task, completed=1)
        task = progress.add_task("qemu-img convert -O qcow2", total=1)
        to_qcow2(out)
        (out / "manifest.json").write_text(json.dumps({"kernel": kernel, "disk_key": disk_key(profile),
                                                       "profile": profile}))
        progress.update(task, completed=1)
        shutil.rmtree(disk_dir(profile), ignore_errors=True)
        out.rename(disk_dir(profile))


@contextlib.contextmanager
def unpacked_rootfs(tarball: Path, prefix: str, log: io.TextIOBase) -> Iterator[tuple[Path, Path, Path]]:
    """A work dir in the VM cache (same file system as the result, so it moves into place) holding ``rootfs/``,
    the guest rootfs ``tarball`` unpacked with its owners, and an empty ``out/``; removed afterwards."""
    with tempfile.TemporaryDirectory(prefix=prefix, dir=cache_dir()) as workdir:
        work = Path(workdir)
        rootfs, out = work / "rootfs", work / "out"
        rootfs.mkdir()
        out.mkdir()
        subprocess.run(["tar", "-C", str(rootfs), "--numeric-owner", "-xpf", str(tarball)], check=True,
                       stdout=log, stderr=subprocess.STDOUT)
        yield work, rootfs, out


def to_qcow2(out: Path) -> None:
    """``out/disk.raw`` becomes ``out/System.qcow2``, by the QEMU base image's qemu-img (the host needs none)."""
    containers.client().containers.run(qemu_base_tag(), ["qemu-img", "convert", "-O", "qcow2", "/disk/disk.raw",
                                                         "/disk/System.qcow2"],
                                       volumes={str(out): {"bind": "/disk", "mode": "rw"}}, remove=True)
    (out / "disk.raw").unlink()

def _install_guest_files(rootfs: Path, profile: str, log: io.TextIOBase) -> None:
    """The guest server, init and the profile's session; the osworld profile's user and settings (in a chroot)."""
    for name, relative in GUEST_PATHS.items():
        target = rootfs / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if name == "guest":
            shutil.copytree(GUEST_DIR, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(VM_DIR / name if name in VM_GUEST_FILES else SESSIONS[profile], target)
            target.chmod(0o644 if name == "xorg.conf" else 0o755)
    if profile != DEFAULT_PROFILE:
        shutil.copytree(OSWORLD_PROFILE_DIR, rootfs / PROFILE_PATH, ignore=shutil.ignore_patterns("Dockerfile"))
        with chroot_mounts(rootfs):
            subprocess.run(["chroot", str(rootfs), "bash", f"/{PROFILE_PATH}/setup-profile", f"/{PROFILE_PATH}/files"],
                           check=True, stdout=log, stderr=subprocess.STDOUT,
                           env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"})


def _copy_kernel(rootfs: Path, out: Path) -> str:
    """Copy the guest kernel and initrd beside the disk (for ``-kernel``/``-initrd``); returns its release."""
    kernels = sorted(rootfs.glob("boot/vmlinuz-*"))
    if len(kernels) != 1:
        raise RuntimeError(f"expected one kernel in the guest's /boot, found {[k.name for k in kernels]}")
    release = kernels[0].name.removeprefix("vmlinuz-")
    shutil.copy2(kernels[0], out / "vmlinuz")
    shutil.copy2(rootfs / "boot" / f"initrd.img-{release}", out / "initrd.img")
    return release


def _layer_context(root: Path, profile: str) -> None:
    for name in LAYER_FILES:
        shutil.copy2(VM_DIR / name, root / name)
    for name in ("vmlinuz", "initrd.img"):
        shutil.copy2(disk_dir(profile) / name, root / name)
