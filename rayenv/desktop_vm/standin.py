"""A stand-in for OSWorld's Ubuntu image, built here from Debian packages: a whole disk that boots itself.

OSWorld's ``Ubuntu.qcow2`` is an installed system: a partitioned disk with GRUB in its boot sector,
systemd as PID 1, a user ``user`` (password ``password``, a sudoer) and a systemd service that runs
the guest server on port 5000 as that user. No registry reaches it from our machines, so the tests
and the reset benchmark boot this instead, made the same way from the VM desktop's package set:

1. the VM desktop's guest rootfs (:func:`rayenv.desktop_vm.build._rootfs_tarball`: desktop-lite's
   packages, a kernel, an initramfs), plus systemd, udev, GRUB's BIOS modules and sudo installed with
   apt from this machine's Debian mirror (:func:`rayenv.desktop_lite.build.mirror`);
2. the system set up as an installer would: ``user`` with its password and sudo, the guest server and
   ``desktop-session`` as the ``rayenv-guest`` service (``User=user``), QEMU's network by ``ip``,
   ``/etc/fstab``, and a ``grub.cfg`` that boots the kernel with ``root=/dev/vda1``;
3. the disk: an MBR partition table with one bootable Linux partition at 1 MiB, that partition an
   ext4 made with ``mkfs.ext4 -d`` (no loop device, no mount), GRUB's ``boot.img`` in the boot sector
   and its ``core.img`` (``grub-mkimage``: BIOS disk, msdos partitions, ext4) in the gap before the
   partition; converted to ``System.qcow2`` by ``qemu-img`` in the QEMU base image.

Nothing here boots with ``-kernel``: ``rayenv/osworld-vm`` finds the partition table and lets SeaBIOS
run GRUB, as it does for OSWorld's own image. Cached by content hash in
``$RAYENV_VM_DESKTOP_DIR/standin/<hash>/`` (the packages, the guest files, this module's settings).
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Iterator

from rich.console import Console
from rich.progress import Progress

from ..desktop_lite.build import DEFAULT_PROFILE, GUEST_DIR, IMAGE_DIR, build_lock, digest, logged_build, mirror
from ..engine import containers
from . import build

#: What an installed system has beyond the VM desktop's rootfs (xclip: the clipboard a test writes).
SYSTEM_PACKAGES = ("systemd-sysv", "udev", "grub-pc-bin", "grub2-common", "sudo", "xclip")
USER, PASSWORD = "user", "password"
DISK_SIZE = 4 << 30
PARTITION_START = 1 << 20  # 1 MiB: the usual first partition; GRUB's core.img lives in the gap before it
SECTOR = 512
LABEL = "osworld-standin"
KERNEL_ARGUMENTS = "root=/dev/vda1 ro console=ttyS0 quiet"
#: Offsets GRUB's boot sector and core image keep their load addresses at (grub/i386/pc/boot.h).
GRUB_KERNEL_SECTOR, GRUB_BOOT_DRIVE, GRUB_DRIVE_CHECK, GRUB_BLOCKLIST_SIZE = 0x5C, 0x64, 0x66, 12
CORE_SECTOR = 1
GRUB_MODULES = ("biosdisk", "part_msdos", "ext2", "normal", "linux", "configfile", "echo", "test")

SERVICE = f"""[Unit]
Description=The OSWorld guest server (port 5000) and its desktop, as {USER}
Wants=rayenv-network.service
After=rayenv-network.service

[Service]
User={USER}
WorkingDirectory=/home/{USER}
Environment=HOME=/home/{USER} LANG=C.UTF-8 GUEST_HOST=0.0.0.0 GUEST_PORT=5000 GUEST_PYTHON=/usr/bin/python3
Environment=PYTHONDONTWRITEBYTECODE=1 SCREEN_WIDTH=1920 SCREEN_HEIGHT=1080
# the screen size rayenv/osworld-vm hands over as fw_cfg opt/rayenv.screen (readable by root only)
ExecStartPre=+/bin/sh -c 'modprobe qemu_fw_cfg; s=$(cat /sys/firmware/qemu_fw_cfg/by_name/opt/rayenv.screen/raw \\
  2>/dev/null) && printf "SCREEN_WIDTH=%%s\\nSCREEN_HEIGHT=%%s\\n" "$${{s%%x*}}" "$${{s#*x}}" >/run/rayenv-screen || true'
EnvironmentFile=-/run/rayenv-screen
ExecStart=/bin/bash /opt/rayenv/image/desktop-session
Restart=on-failure

[Install]
WantedBy=multi-user.target
"""
#: The guest's network, the addresses QEMU's user networking serves (guest 10.0.2.15, gateway
#: 10.0.2.2, DNS 10.0.2.3), set by a oneshot unit with ip: on a host at load 30 a TCG boot saw
#: systemd-networkd (and logind) fail to start, and the guest server was never reachable.
NETWORK_SERVICE = """[Unit]
Description=QEMU user networking for the guest server
Before=rayenv-guest.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'modprobe virtio_net; for i in $$(seq 600); do nic=$$(ls /sys/class/net | grep -vx lo | head -n1); \\
  [ -n "$$nic" ] && break; sleep 0.1; done; ip link set lo up; ip link set "$$nic" up; \\
  ip addr replace 10.0.2.15/24 dev "$$nic"; ip route replace default via 10.0.2.2; echo nameserver 10.0.2.3 >/etc/resolv.conf'

[Install]
WantedBy=multi-user.target
"""
#: Under TCG on a busy host a boot runs many times slower than systemd's 90 s defaults assume.
SYSTEM_TIMEOUTS = "[Manager]\nDefaultTimeoutStartSec=15min\nDefaultDeviceTimeoutSec=15min\n"
GRUB_CONFIG = """set timeout=0
set root=(hd0,msdos1)
linux /boot/vmlinuz-{release} {arguments}
initrd /boot/initrd.img-{release}
boot
"""


def _files() -> list[Path]:
    return [Path(__file__), IMAGE_DIR / "desktop-session", *sorted(GUEST_DIR.rglob("*.py"))]


@functools.lru_cache(maxsize=1)
def standin_key() -> str:
    """Changes whenever the guest rootfs, the added packages, the guest files or this recipe change."""
    return digest(build._rootfs_key().encode(), " ".join(SYSTEM_PACKAGES).encode(),
                  *(f.read_bytes() for f in _files()))


def standin_root() -> Path:
    """Beside the VM desktop's disks, in a folder of its own (the VM build removes stale disks of its own kind)."""
    return build.cache_dir() / "standin"


def standin_dir() -> Path:
    return standin_root() / standin_key()


def built_standin() -> Path | None:
    """The stand-in's ``System.qcow2`` if it has been built here (no build)."""
    qcow2 = standin_dir() / "System.qcow2"
    return qcow2 if (standin_dir() / "manifest.json").exists() else None


def build_standin(force: bool = False, console: Console | None = None) -> Path:
    """Build (or find) the stand-in disk; returns its qcow2. Builds the VM desktop's parts it reuses first."""
    if not force and (existing := built_standin()) is not None:
        return existing
    with build_lock(standin_root() / "build.lock"):  # not the VM build's lock: a VM build can take many minutes
        if not force and (existing := built_standin()) is not None:
            return existing
        with logged_build("the OSWorld stand-in disk", standin_root() / "build.log", console) as (progress, log):
            if not containers.image_exists(build.qemu_base_tag()):
                build._build_qemu_base(progress, log)
            _build(force, progress, log)
    for stale in standin_root().iterdir():
        if stale.is_dir() and stale != standin_dir():
            shutil.rmtree(stale, ignore_errors=True)
    qcow2 = built_standin()
    assert qcow2 is not None, "the build just made it"
    return qcow2


def _build(force: bool, progress: Progress, log: io.TextIOBase) -> None:
    tarball = build._rootfs_tarball(force, DEFAULT_PROFILE, progress, log)
    task = progress.add_task("installed system (apt: systemd, GRUB, sudo; user, service)", total=1)
    with build.unpacked_rootfs(tarball, "standin-", log) as (work, rootfs, out):
        _install_packages(rootfs, log)
        _configure(rootfs, log)
        progress.update(task, completed=1)
        task = progress.add_task("whole disk: partition table, ext4, GRUB", total=1)
        core = work / "core.img"
        _chroot(rootfs, log, "grub-mkimage", "-O", "i386-pc", "-o", "/core.img", "-p", "(hd0,msdos1)/boot/grub",
                *GRUB_MODULES)
        shutil.move(rootfs / "core.img", core)
        boot_sector = (rootfs / "usr/lib/grub/i386-pc/boot.img").read_bytes()
        raw = out / "disk.raw"
        _make_disk(raw, rootfs, boot_sector, core.read_bytes(), log)
        shutil.rmtree(rootfs)
        progress.update(task, completed=1)
        task = progress.add_task("qemu-img convert -O qcow2", total=1)
        build.to_qcow2(out)
        (out / "manifest.json").write_text(json.dumps({"standin_key": standin_key(), "user": USER}))
        progress.update(task, completed=1)
        shutil.rmtree(standin_dir(), ignore_errors=True)
        standin_root().mkdir(parents=True, exist_ok=True)
        out.rename(standin_dir())


def _chroot(rootfs: Path, log: io.TextIOBase, *command: str) -> None:
    subprocess.run(["chroot", str(rootfs), *command], check=True, stdout=log, stderr=subprocess.STDOUT,
                   env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "LANG": "C"})


@contextlib.contextmanager
def _system_mounts(rootfs: Path) -> Iterator[None]:
    """/proc, /sys and /dev inside the chroot while apt runs there (maintainer scripts read them)."""
    mounted: list[Path] = []
    try:
        for name, options in (("proc", ["-t", "proc", "proc"]), ("sys", ["--rbind", "/sys"]), ("dev", ["--rbind", "/dev"])):
            target = rootfs / name
            subprocess.run(["mount", *options, str(target)], check=True)
            mounted.append(target)
        yield
    finally:
        for target in reversed(mounted):
            subprocess.run(["umount", "-R", "-l", str(target)], check=False)


def _install_packages(rootfs: Path, log: io.TextIOBase) -> None:
    (rootfs / "etc/apt/sources.list").write_text(f"deb {mirror()} {build.SUITE} main\n")
    shutil.copy2("/etc/resolv.conf", rootfs / "etc/resolv.conf")
    with _system_mounts(rootfs):
        _chroot(rootfs, log, "apt-get", "update", "-q")
        _chroot(rootfs, log, "apt-get", "install", "-y", "-q", "--no-install-recommends", *SYSTEM_PACKAGES)
        _chroot(rootfs, log, "apt-get", "clean")
    shutil.rmtree(rootfs / "var/lib/apt/lists", ignore_errors=True)
    (rootfs / "etc/resolv.conf").unlink()


def _configure(rootfs: Path, log: io.TextIOBase) -> None:
    """What OSWorld's installer left on its image: the user, the guest service, networking, fstab, GRUB's config."""
    _chroot(rootfs, log, "useradd", "--create-home", "--shell", "/bin/bash", "--groups", "sudo", USER)
    subprocess.run(["chroot", str(rootfs), "chpasswd"], input=f"{USER}:{PASSWORD}\n", text=True, check=True,
                   stdout=log, stderr=subprocess.STDOUT)
    guest = rootfs / "opt/rayenv/guest"
    shutil.copytree(GUEST_DIR, guest, ignore=shutil.ignore_patterns("__pycache__"))
    session = rootfs / "opt/rayenv/image/desktop-session"
    session.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(IMAGE_DIR / "desktop-session", session)
    (rootfs / "etc/systemd/system/rayenv-guest.service").write_text(SERVICE)
    (rootfs / "etc/systemd/system/rayenv-network.service").write_text(NETWORK_SERVICE)
    (rootfs / "etc/systemd/system.conf.d").mkdir(parents=True, exist_ok=True)
    (rootfs / "etc/systemd/system.conf.d/slow-boot.conf").write_text(SYSTEM_TIMEOUTS)
    _chroot(rootfs, log, "systemctl", "enable", "rayenv-guest.service", "rayenv-network.service")
    (rootfs / "etc/hostname").write_text("osworld-standin\n")
    (rootfs / "etc/hosts").write_text("127.0.0.1 localhost\n127.0.1.1 osworld-standin\n")
    (rootfs / "etc/fstab").write_text(f"LABEL={LABEL} / ext4 errors=remount-ro 0 1\n")
    grub = rootfs / "boot/grub"
    shutil.copytree(rootfs / "usr/lib/grub/i386-pc", grub / "i386-pc")
    release = _kernel_release(rootfs)
    (grub / "grub.cfg").write_text(GRUB_CONFIG.format(release=release, arguments=KERNEL_ARGUMENTS))


def _kernel_release(rootfs: Path) -> str:
    kernels = sorted(rootfs.glob("boot/vmlinuz-*"))
    if len(kernels) != 1:
        raise RuntimeError(f"expected one kernel in the stand-in's /boot, found {[k.name for k in kernels]}")
    return kernels[0].name.removeprefix("vmlinuz-")


def partition_table(disk_size: int) -> bytes:
    """The 64 bytes of an MBR partition table with one bootable Linux partition from 1 MiB to the end
    (CHS fields saturated: every BIOS since the 90s boots by LBA)."""
    first, count = PARTITION_START // SECTOR, (disk_size - PARTITION_START) // SECTOR
    saturated = b"\xfe\xff\xff"
    entry = struct.pack("<B3sB3sII", 0x80, saturated, 0x83, saturated, first, count)
    return entry + bytes(48)


def boot_sector(grub_boot_img: bytes, disk_size: int) -> bytes:
    """Sector 0: GRUB's boot code (boot.img's first 440 bytes, set up as grub-bios-setup would for a hard
    disk), a disk id, the partition table, 55AA."""
    code = bytearray(grub_boot_img[:440])
    struct.pack_into("<Q", code, GRUB_KERNEL_SECTOR, CORE_SECTOR)  # where core.img starts
    code[GRUB_BOOT_DRIVE] = 0xFF  # boot from the drive the BIOS booted
    code[GRUB_DRIVE_CHECK:GRUB_DRIVE_CHECK + 2] = b"\x90\x90"  # hard disk: trust no BIOS's drive number below 0x80
    return bytes(code) + b"RAYE" + bytes(2) + partition_table(disk_size) + b"\x55\xaa"


def core_image(grub_core_img: bytes) -> bytes:
    """core.img with its first sector's block list pointing at the rest of it (right behind, from sector 2)."""
    core = bytearray(grub_core_img)
    struct.pack_into("<Q", core, SECTOR - GRUB_BLOCKLIST_SIZE, CORE_SECTOR + 1)
    return bytes(core)


def _make_disk(raw: Path, rootfs: Path, grub_boot_img: bytes, core_img: bytes, log: io.TextIOBase) -> None:
    if len(core_img) > PARTITION_START - SECTOR:
        raise RuntimeError(f"GRUB's core.img ({len(core_img)} bytes) does not fit before the partition")
    partition = raw.with_name("partition.raw")
    with open(partition, "wb") as part:
        part.truncate(DISK_SIZE - PARTITION_START)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", LABEL, "-d", str(rootfs), str(partition)], check=True,
                   stdout=log, stderr=subprocess.STDOUT)
    with open(raw, "wb") as disk:
        disk.write(boot_sector(grub_boot_img, DISK_SIZE))
        disk.write(core_image(core_img))
    subprocess.run(["dd", f"if={partition}", f"of={raw}", "bs=1M", f"seek={PARTITION_START >> 20}", "conv=sparse,notrunc",
                    "status=none"], check=True, stdout=log, stderr=subprocess.STDOUT)
    partition.unlink()
