"""Host spares: a started VM desktop per pool, VM shape and env host, paused, that the pool's next new desktop adopts.

A new VM desktop, even a clone of its template, takes ~1 s here: ``docker run``, a QEMU started and its state
loaded, a cold guest's first answers (under TCG a new QEMU translates the guest's code anew). A host spare is
such a desktop made ahead of time, warmed up (its guest answered and had its clock set) and paused; a new desktop
of the same pool and shape on the host adopts it (a rename of its marker, QEMU's ``cont``, the clock set in the
background) and makes the next one, in the background, for the desktop after it.

Who owns a spare: Docker labels cannot change once a container exists, and the reaper goes by the actor in them
(:mod:`rayenv.pool.reaper`). A spare is labelled with the actor that made it, and goes with that actor if nobody
adopts it (after a grace in which that actor's replacement may); the adopter writes its own actor id into the
spare's work directory (:data:`ADOPTER`), which the reaper reads before the label. Which desktops may adopt it
says its label :data:`LABEL_SPARE` with the pool's: the golden state and the whole desktop spec, so a desktop
only ever adopts one it would have started itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
from pathlib import Path
from typing import Any, Iterator

from ..engine import containers
from ..engine.containers import LABEL_WORKDIR

LABEL_SPARE = "rayenv.spare"
#: In a host spare's work directory: FREE while it waits (renamed to TAKEN by the one desktop that adopts it),
#: ADOPTER the adopting actor's id.
FREE, TAKEN, ADOPTER = "spare.free", "spare.taken", "adopter"


def spare_key(golden: str, spec_json: str) -> str:
    """What a spare must match to be adopted: the golden state it was started from and the whole desktop spec."""
    return hashlib.sha256(f"{golden}\n{spec_json}".encode()).hexdigest()[:16]


def claim(owner: str, key: str, actor_id: str) -> Any | None:
    """Adopt one of ``owner``'s free host spares labelled ``key`` for actor ``actor_id``: its container (running,
    its VM paused), or None where there is none. Two desktops never adopt the same: the marker's rename is
    atomic, and only one rename of it succeeds."""
    for container in containers.owned(owner):
        labels = container.labels
        if labels.get(LABEL_SPARE) != key or container.status != "running" or LABEL_WORKDIR not in labels:
            continue
        work = Path(labels[LABEL_WORKDIR])
        try:
            os.rename(work / FREE, work / TAKEN)
        except FileNotFoundError:  # adopted by another desktop, or still warming up
            continue
        (work / ADOPTER).write_text(actor_id)
        return container
    return None


def adopter(labels: dict[str, str]) -> str | None:
    """The actor that adopted the host spare with these labels (None: not a spare, or not adopted)."""
    if LABEL_SPARE not in labels or LABEL_WORKDIR not in labels:
        return None
    try:
        return (Path(labels[LABEL_WORKDIR]) / ADOPTER).read_text().strip()
    except OSError:
        return None


def free_for(labels: dict[str, str]) -> float | None:
    """Seconds the host spare with these labels has waited free (None: not a free host spare)."""
    if LABEL_SPARE not in labels or LABEL_WORKDIR not in labels:
        return None
    try:
        return time.time() - (Path(labels[LABEL_WORKDIR]) / FREE).stat().st_mtime
    except OSError:
        return None


def waiting(owner: str, key: str) -> int:
    """How many of ``owner``'s host spares labelled ``key`` are free now."""
    return sum(1 for container in containers.owned(owner) if container.labels.get(LABEL_SPARE) == key
               and free_for(container.labels) is not None)


@contextlib.contextmanager
def making(lock_directory: Path, owner: str, key: str) -> Iterator[bool]:
    """Held while one desktop makes ``owner``'s next host spare ``key`` on this host (the others' wait, then find
    it there); yields whether one is missing."""
    lock_directory.mkdir(parents=True, exist_ok=True)
    with open(lock_directory / f".spare-{owner}-{key}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield waiting(owner, key) == 0
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
