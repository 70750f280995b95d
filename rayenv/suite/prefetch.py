"""Fill the host's download cache with every file the chosen tasks download, on a host with internet."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from ..env.download_cache import DownloadCache, downloads_of
from ..env.tasks import validate_task
from .examples import SuiteTask


@dataclass
class Fetched:
    """One file: its ``url``, where it is cached, and ``status``: cached, fetched, or the error that stopped it."""

    url: str
    path: str
    status: str


def prefetch(tasks: Iterable[SuiteTask], cache: DownloadCache, *, timeout: float = 300.0) -> list[Fetched]:
    """Download what is not cached yet, each file once; a failed file is reported, the others go on."""
    seen: dict[str, Fetched] = {}
    for task in tasks:
        for download in downloads_of(validate_task(task.config)):
            target = cache.path(download)
            if str(target) in seen:
                continue
            if target.is_file():
                status = "cached"
            else:
                try:
                    cache.fetch(download, timeout=timeout)
                    status = "fetched"
                except Exception as exc:  # requests' and the file system's errors alike: report, go on
                    status = f"failed: {type(exc).__name__}: {str(exc)[:200]}"
            seen[str(target)] = Fetched(download.url, str(target), status)
    return list(seen.values())
