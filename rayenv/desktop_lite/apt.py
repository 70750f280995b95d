"""``apt-get install`` into a debootstrap root filesystem (a chroot), with progress.

debootstrap's own resolver handles a desktop's few packages, but not what big apps pull in (virtual
packages, alternatives); apt inside the rootfs does, from the same mirror. Nothing runs as a service:
``policy-rc.d`` refuses every start, and the host's ``/proc`` is mounted only while apt runs (never
left inside a rootfs that is about to be archived; ``/dev`` holds the nodes debootstrap made).
"""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import subprocess
from pathlib import Path
from typing import Iterator, Sequence

from rich.progress import Progress

#: Refuses every service start inside the chroot (invoke-rc.d asks it first).
POLICY_RC_D = "#!/bin/sh\nexit 101\n"


@contextlib.contextmanager
def chroot_mounts(rootfs: Path) -> Iterator[None]:
    """The host's ``/proc`` in ``rootfs``, its DNS, and no services, for the block's length."""
    proc, policy = rootfs / "proc", rootfs / "usr/sbin/policy-rc.d"
    proc.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "proc", "proc", str(proc)], check=True)
    try:
        shutil.copy2("/etc/resolv.conf", rootfs / "etc/resolv.conf")
        policy.write_text(POLICY_RC_D)
        policy.chmod(0o755)
        yield
    finally:
        policy.unlink(missing_ok=True)
        subprocess.run(["umount", "--lazy", str(proc)], check=True)


def apt_install(rootfs: Path, packages: Sequence[str], mirror: str, suite: str, progress: Progress,
                log: io.TextIOBase) -> None:
    """Install ``packages`` (no recommends) into ``rootfs`` from ``mirror``; each unpack and setup advances the bar."""
    task = progress.add_task(f"apt-get install ({len(packages)} packages and their dependencies)", total=None)
    (rootfs / "etc/apt/sources.list").write_text(f"deb {mirror} {suite} main\n")
    environment = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    with chroot_mounts(rootfs):
        _run(["chroot", str(rootfs), "apt-get", "update"], environment, log)
        command = ["chroot", str(rootfs), "apt-get", "install", "--yes", "--no-install-recommends",
                   "-o", "Dpkg::Use-Pty=0", *packages]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   env=environment)
        assert process.stdout is not None
        for line in process.stdout:
            log.write(line)
            if counted := re.match(r"(\d+) upgraded, (\d+) newly installed", line):
                progress.update(task, total=2 * int(counted.group(2)))  # each one unpacked, then set up
            elif step := re.match(r"(Unpacking|Setting up) (\S+)", line):
                progress.update(task, advance=1, description=f"apt: {step.group(1).lower()} {step.group(2)}")
        if process.wait() != 0:
            raise subprocess.CalledProcessError(process.returncode, command)
        _run(["chroot", str(rootfs), "apt-get", "clean"], environment, log)
    shutil.rmtree(rootfs / "var/lib/apt/lists", ignore_errors=True)
    progress.update(task, description="apt-get install done")


def _run(command: list[str], environment: dict[str, str], log: io.TextIOBase) -> None:
    log.flush()
    subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT, env=environment)
