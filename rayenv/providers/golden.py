"""Golden VM states: a snapshotted overlay made once per VM shape per host, cloned for every new desktop.

A VM desktop that has booted and settled is saved (RAM + devices + disk, QEMU's ``savevm``) into its
copy-on-write overlay. That overlay, closed, is the *golden state*: a new desktop starts from a copy
of it with ``-loadvm`` in about two seconds instead of a 20-second boot, and every reset of that
desktop loads the same snapshot back (its copy holds it too).

A golden state is only valid for the VM it was taken on: the same base qcow2, QEMU image, RAM,
vCPUs, screen, accelerator and firmware. :class:`GoldenKey` names exactly that, and the store keys its
directories by the key's digest. Making one is serialized by a lock per key (the first desktop
of a pool makes it; the others wait, then clone). Containers started from one carry the label
``rayenv.golden=<digest>``; :meth:`GoldenStore.remove_unused` (the reaper) deletes every golden
state that no container on this host uses and nobody is making.

A golden state made by an image that supports it is also a *template* (copy-on-write RAM, Kata's
"VM templating" with stock QEMU): its VM ran with its RAM in a file, ``<ram root>/<digest>/memory``
on a tmpfs (``/dev/shm`` unless ``RAYENV_GOLDEN_RAM_DIR`` says otherwise), and was saved, stopped,
as device state only (``devices.state``, a migration with ``x-ignore-shared``: under a MiB) at the
same instant as the snapshot. Every desktop of the shape then maps that file privately and migrates
the device state in: it starts without reading its RAM, and shares every page it does not write.
It costs the host the golden VM's touched RAM in tmpfs once per shape (all 2 GiB of a 2 GB VM of rayenv's
own disk, measured); with the file gone (a reboot cleared the tmpfs) the snapshot above is the fallback.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from ..errors import SnapshotError

GOLDEN_SNAPSHOT = "golden"
LABEL_GOLDEN = "rayenv.golden"
OVERLAY = "boot.qcow2"
#: The template's device state (beside the overlay) and RAM file (in the RAM root).
DEVICE_STATE, RAM_FILE = "devices.state", "memory"


def golden_root() -> Path:
    return Path(os.environ.get("RAYENV_GOLDEN_DIR", Path.home() / ".cache" / "rayenv" / "vm-golden"))


def golden_ram_root() -> Path:
    """Where templates keep their RAM: a tmpfs, since every page a desktop touches is read from it."""
    return Path(os.environ.get("RAYENV_GOLDEN_RAM_DIR", "/dev/shm/rayenv-vm-golden"))


@dataclass(frozen=True)
class GoldenKey:
    """Everything a saved VM state depends on: a snapshot loads only into an identical VM."""

    base_image: str  # the qcow2's path, size and mtime: a replaced file is a new base
    container_image: str  # the QEMU image's id (its QEMU version and kernel)
    memory: str
    cpus: int
    screen: str
    accelerator: str
    boot: str  # the firmware the disk boots with (``auto``, ``bios``, ``uefi``, ``kernel``): a state saved under
    # SeaBIOS does not load into OVMF

    @classmethod
    def for_vm(cls, base: Path, container_image: str, memory: str, cpus: int, screen: tuple[int, int],
               accelerator: str, boot: str = "auto") -> "GoldenKey":
        stat = base.stat()
        return cls(f"{base.resolve()}:{stat.st_size}:{stat.st_mtime_ns}", container_image, memory, cpus,
                   f"{screen[0]}x{screen[1]}", accelerator, boot)

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


class GoldenStore:
    """Golden overlays under one directory of this host: ``<digest>/boot.qcow2`` + ``key.json``."""

    def __init__(self, root: Path | None = None, ram_root: Path | None = None) -> None:
        self.root = root or golden_root()
        self.ram_root = ram_root or golden_ram_root()

    def overlay(self, digest: str) -> Path:
        return self.root / digest / OVERLAY

    def directory(self, digest: str) -> Path:
        return self.root / digest

    def ram_directory(self, digest: str) -> Path:
        return self.ram_root / digest

    def has_template(self, digest: str) -> bool:
        """The golden state's RAM file and device state are both there (a clone can start from them)."""
        return (self.ram_directory(digest) / RAM_FILE).exists() and (self.directory(digest) / DEVICE_STATE).exists()

    def _ensure_locked(self, key: GoldenKey, make: Callable[[Path, Path], None]) -> Path:
        """The golden overlay of ``key``, made first by ``make(directory, ram_directory)`` if no one has yet
        (the key's lock held). ``make`` must leave ``directory/boot.qcow2`` holding the snapshot
        :data:`GOLDEN_SNAPSHOT` with its VM stopped, and may leave a template (``directory/devices.state``
        and ``ram_directory/memory``) of the same instant; a failure leaves nothing behind."""
        final = self.root / key.digest
        if (final / OVERLAY).exists():
            return final / OVERLAY
        staging, ram_staging = self.root / f"{key.digest}.making", self.ram_root / f"{key.digest}.making"
        for directory in (staging, ram_staging):
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir(parents=True)
        try:
            make(staging, ram_staging)
            (staging / "key.json").write_text(json.dumps(asdict(key), indent=2))
            shutil.rmtree(self.ram_directory(key.digest), ignore_errors=True)
            ram_staging.rename(self.ram_directory(key.digest))
            staging.rename(final)
        except BaseException:
            for directory in (staging, ram_staging, self.ram_directory(key.digest)):
                shutil.rmtree(directory, ignore_errors=True)
            raise
        return final / OVERLAY

    @contextlib.contextmanager
    def held(self, key: GoldenKey, make: Callable[[Path, Path], None]) -> Iterator[Path]:
        """``key``'s golden directory, made first by ``make`` if no one has yet; the key's lock is held
        until the block ends, so the reaper cannot remove it before a container that uses it is labelled."""
        with self._locked(key.digest):
            self._ensure_locked(key, make)
            yield self.directory(key.digest)

    def checkout(self, key: GoldenKey, make: Callable[[Path, Path], None], directory: Path) -> Path:
        """A private copy in ``directory`` of ``key``'s golden state, made first by ``make`` if no one has
        yet; both under the key's lock, so concurrent desktops make it once and the reaper cannot remove
        it in between. The copy is a reflink where the filesystem can."""
        with self._locked(key.digest):
            self._ensure_locked(key, make)
            return self.copy_overlay(key.digest, directory)

    def copy_overlay(self, digest: str, directory: Path) -> Path:
        """A private copy in ``directory`` of golden state ``digest``'s overlay (hold its lock: :meth:`held`)."""
        return copy_sparse(self.overlay(digest), directory / OVERLAY)

    def discard(self, digest: str) -> None:
        """Delete one golden state (it failed to load: the next desktop makes it anew)."""
        with self._locked(digest):
            self._remove(digest)

    def _remove(self, digest: str) -> None:
        shutil.rmtree(self.root / digest, ignore_errors=True)
        shutil.rmtree(self.ram_directory(digest), ignore_errors=True)

    def remove_unused(self, in_use: Iterable[str]) -> list[str]:
        """Delete every golden state whose digest is not in ``in_use`` and that no one is making."""
        keep, removed = set(in_use), []
        digests = {p.name for root in (self.root, self.ram_root) if root.is_dir()
                   for p in root.iterdir() if p.is_dir() and not p.name.endswith(".making")}
        for digest in sorted(digests - keep):
            with self._locked(digest, wait=False) as held:
                if held:
                    self._remove(digest)
                    removed.append(digest)
        return removed  # the empty lock files stay: deleting one a waiter has open would split the lock

    @contextlib.contextmanager
    def _locked(self, digest: str, wait: bool = True) -> Iterator[bool]:
        """Hold the key's lock (flock: released by the kernel if the holder dies); yields whether it is held."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f"{digest}.lock", "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def copy_sparse(source: Path, target: Path, *, env: str | None = None) -> Path:
    """Copy a qcow2 (a reflink where the filesystem can, holes kept); ``target``."""
    copied = subprocess.run(["cp", "--reflink=auto", "--sparse=always", str(source), str(target)],
                            capture_output=True, text=True)
    if copied.returncode != 0:
        raise SnapshotError(f"could not copy {source} to {target}: {copied.stderr.strip()}", env=env, phase="boot",
                            hint=f"check free space in {target.parent}")
    return target
