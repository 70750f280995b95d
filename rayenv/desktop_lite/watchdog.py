"""Ends a process desktop when the process that started it (its env actor's Ray worker) dies.

    python watchdog.py PARENT_PID PGID WORKDIR RECORD

A desktop session runs in a process group of its own, so nothing of it dies with the Ray worker:
``ray stop``, an OOM kill or ``kill -9`` of the worker used to leave Xvfb and the guest server running
for good. This script is started by the worker beside each desktop; when the worker is gone (this
process is re-parented) it kills the desktop's group and removes its work directory and record. It
exits by itself once the group is gone (the desktop was stopped normally). Standard library only,
run by path: it must not import rayenv (Ray and all) once per desktop.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from pathlib import Path

POLL_SECONDS = 0.5


def group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def watch(parent: int, pgid: int, workdir: Path, record: Path) -> None:
    while os.getppid() == parent:
        if not group_exists(pgid):
            return
        time.sleep(POLL_SECONDS)
    if group_exists(pgid):
        os.killpg(pgid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while group_exists(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
    record.unlink(missing_ok=True)
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    watch(int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
