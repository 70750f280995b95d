"""Can this desktop run a task? The checks behind the guest's ``GET /health``.

A desktop whose home or temporary directory is full still serves screenshots and the screen size,
but a task's app cannot save, and a command's output (captured in temporary files) comes back
empty: the evaluator then scores a solved task 0.0. So the host asks before setup and around
evaluation, and a desktop that fails is replaced rather than scored.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

#: What a probe writes and syncs: one page, so a file system with no free block refuses it.
PROBE_BYTES = 4096
#: Free space a task needs in home and tmp unless the host asks for another amount.
DEFAULT_MIN_FREE = 16 * 1024 * 1024


def free_bytes(path: Path) -> int | None:
    try:
        stats = os.statvfs(path)
    except OSError:
        return None
    return stats.f_bavail * stats.f_frsize


def room_problem(name: str, path: Path, free: int | None, min_free: int) -> str | None:
    """Why ``path`` cannot take a task's files (missing, too little free space, a write refused), or None."""
    if free is None:
        return f"{name} {path} is missing or unreadable"
    if free < min_free:
        return f"{name} {path} has {free // 1024} KiB free, tasks need {min_free // 1024} KiB"
    try:
        with tempfile.TemporaryFile(dir=path) as probe:
            probe.write(b"\0" * PROBE_BYTES)
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as exc:
        return f"{name} {path} refuses writes: {exc.strerror}"
    return None


def health(min_free: int) -> dict:
    """``status`` ok/error, each directory's free space, and the ``problems`` that make it an error."""
    # not tempfile.gettempdir(): it skips a full TMPDIR for /tmp, hiding exactly what is checked here
    places = {"home": Path.home(), "tmp": Path(os.environ.get("TMPDIR") or "/tmp")}
    disk = {name: {"path": str(path), "free_bytes": free_bytes(path)} for name, path in places.items()}
    problems = [problem for name, path in places.items()
                if (problem := room_problem(name, path, disk[name]["free_bytes"], min_free))]
    return {"status": "error" if problems else "ok", "disk": disk, "problems": problems}
