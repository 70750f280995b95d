"""The env host's cache of the files OSWorld tasks fetch from the internet, filled before any episode.

desktop-env downloads a ``download`` setup step's file into the task's ``cache_dir`` as
``<uuid5(NAMESPACE_URL, url)>_<basename of the guest path>`` and skips the download when that file
is there; the ``cloud_file`` getter does the same for gold files under their ``dest`` name. Left
alone, both download inside a step's time limit, and not at all on an offline env host. So rayenv
keeps one flat cache per host (every file named ``<uuid5(url)>_<name>``: the files of OSWorld's own
``cache/<task id>/`` folders can be copied in as they are), fills it beforehand (:meth:`DownloadCache.fetch`,
``rayenv suite prefetch``), and before a task's setup or scoring links the files it needs into that
desktop's own task folder under the names desktop-env looks for. A task whose files are not cached
is refused before its desktop is touched.

Desktops never share a task folder: getters write the guest's files there, and two rollouts of one
task on one host must not read each other's.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable


from ..errors import SetupFailed
from .tasks import TaskConfig

#: Where the cache lives unless the desktop's options or ``RAYENV_DOWNLOAD_CACHE`` say otherwise.
DEFAULT_ROOT = Path.home() / ".cache" / "rayenv" / "downloads"


def default_root() -> Path:
    return Path(os.environ.get("RAYENV_DOWNLOAD_CACHE") or DEFAULT_ROOT)


@dataclass(frozen=True)
class Download:
    """One file a task fetches: ``url``, the ``name`` desktop-env gives it in the task folder, and for what."""

    url: str
    name: str
    purpose: str  # "setup" (a download step) or "gold" (a cloud_file getter)

    @property
    def cached_name(self) -> str:
        """The file's name in the host cache: desktop-env's own naming for setup files, the same key for gold files."""
        key = uuid.uuid5(uuid.NAMESPACE_URL, self.url)
        return self.name if self.purpose == "setup" else f"{key}_{self.name}"


def downloads_of(task: TaskConfig) -> list[Download]:
    """Every file the task's setup, postconfig and evaluator fetch from a URL, in order, without repeats."""
    found: list[Download] = []
    for step in [*task.config, *task.evaluator.postconfig]:
        if step.type == "download":
            for file in step.parameters.get("files") or []:
                key = uuid.uuid5(uuid.NAMESPACE_URL, file["url"])
                found.append(Download(file["url"], f"{key}_{os.path.basename(file['path'])}", "setup"))
    for spec in _getter_specs(task):
        if spec.get("type") == "cloud_file":
            multi = spec.get("multi", False)
            urls, dests = (spec["path"], spec["dest"]) if multi else ([spec["path"]], [spec["dest"]])
            found += [Download(url, dest, "gold") for url, dest in zip(urls, dests)]
    return list(dict.fromkeys(found))


def _getter_specs(task: TaskConfig) -> Iterable[dict[str, Any]]:
    for value in (task.evaluator.result, task.evaluator.expected):
        for spec in value if isinstance(value, list) else [value]:
            if spec:
                yield spec


class DownloadCache:
    """One host's cache folder of downloaded task files (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root else default_root()

    def path(self, download: Download) -> Path:
        return self.root / download.cached_name

    def missing(self, task: TaskConfig) -> list[Download]:
        return [d for d in downloads_of(task) if not self.path(d).is_file()]

    def require(self, task: TaskConfig, *, env: str | None = None) -> None:
        """Raise :class:`SetupFailed` naming every file the task needs that is not cached (nothing downloads now)."""
        missing = self.missing(task)
        if missing:
            raise SetupFailed(f"task {task.id!r} needs {len(missing)} file(s) not in the download cache {self.root}: "
                              + "; ".join(f"{d.url} -> {self.path(d).name}" for d in missing),
                              env=env, phase="reset",
                              hint="run `rayenv suite prefetch` on a host with internet and copy the cache here, or "
                                   "place each file under the name shown; nothing was done on the desktop")

    def stage(self, task: TaskConfig, folder: Path) -> None:
        """Put the task's cached files into a desktop's task ``folder`` under the names desktop-env looks for."""
        folder.mkdir(parents=True, exist_ok=True)
        for download in downloads_of(task):
            source, target = self.path(download), folder / download.name
            if not source.is_file() or target.exists():
                continue
            try:
                os.link(source, target)  # same file system: no copy
            except OSError:
                shutil.copyfile(source, target)

    def fetch(self, download: Download, *, timeout: float = 300.0) -> Path:
        """Download one file into the cache (written under a temporary name, renamed when complete)."""
        target = self.path(download)
        if target.is_file():
            return target
        self.root.mkdir(parents=True, exist_ok=True)
        import requests  # here: the CLI imports this module for its types, and requests costs it ~0.15 s

        with requests.get(download.url, stream=True, timeout=timeout) as response:
            response.raise_for_status()
            handle, partial = tempfile.mkstemp(dir=self.root, prefix=".partial-")
            try:
                with os.fdopen(handle, "wb") as out:
                    for chunk in response.iter_content(chunk_size=1 << 16):
                        out.write(chunk)
                os.replace(partial, target)
            except BaseException:
                os.unlink(partial)
                raise
        return target
