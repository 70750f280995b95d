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


def golden_root() -> Path:
    return Path(os.environ.get("RAYENV_GOLDEN_DIR", Path.home() / ".cache" / "rayenv" / "vm-golden"))


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

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or golden_root()

    def overlay(self, digest: str) -> Path:
        return self.root / digest / OVERLAY

    def _ensure_locked(self, key: GoldenKey, make: Callable[[Path], None]) -> Path:
        """The golden overlay of ``key``, made first by ``make(directory)`` if no one has yet (the key's
        lock held). ``make`` must leave ``directory/boot.qcow2`` holding the snapshot
        :data:`GOLDEN_SNAPSHOT` with its VM stopped; a failure leaves nothing behind."""
        final = self.root / key.digest
        if (final / OVERLAY).exists():
            return final / OVERLAY
        staging = self.root / f"{key.digest}.making"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            make(staging)
            (staging / "key.json").write_text(json.dumps(asdict(key), indent=2))
            staging.rename(final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return final / OVERLAY

    def checkout(self, key: GoldenKey, make: Callable[[Path], None], directory: Path) -> Path:
        """A private copy in ``directory`` of ``key``'s golden state, made first by ``make`` if no one has
        yet; both under the key's lock, so concurrent desktops make it once and the reaper cannot remove
        it in between. The copy is a reflink where the filesystem can."""
        with self._locked(key.digest):
            self._ensure_locked(key, make)
            target = directory / OVERLAY
            copied = subprocess.run(["cp", "--reflink=auto", "--sparse=always", str(self.overlay(key.digest)),
                                     str(target)], capture_output=True, text=True)
            if copied.returncode != 0:
                raise SnapshotError(f"could not copy golden state {key.digest} to {directory}: {copied.stderr.strip()}",
                                    phase="boot", hint=f"check free space in {directory.parent}")
            return target

    def discard(self, digest: str) -> None:
        """Delete one golden state (it failed to load: the next desktop makes it anew)."""
        with self._locked(digest):
            shutil.rmtree(self.root / digest, ignore_errors=True)

    def remove_unused(self, in_use: Iterable[str]) -> list[str]:
        """Delete every golden state whose digest is not in ``in_use`` and that no one is making."""
        keep, removed = set(in_use), []
        if not self.root.is_dir():
            return removed
        for directory in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.endswith(".making")):
            if directory.name in keep:
                continue
            with self._locked(directory.name, wait=False) as held:
                if held:
                    shutil.rmtree(directory, ignore_errors=True)
                    removed.append(directory.name)
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
