"""Fetch the OSWorld Ubuntu qcow2 once per env host: resumable, with progress, checked, never half-used.

The image is ~10 GB zipped; a laptop VM's link drops. The download goes to ``<name>.part``, resumes
with an HTTP ``Range`` request, refuses to start without room for the archive and its extraction,
verifies the size (and a SHA-256 when one is configured), and only then unzips to a temporary name
that is renamed into place. A crash at any point leaves either nothing usable-looking or a
``.part`` to resume from.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import zipfile
from pathlib import Path

import requests
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from ..errors import ConfigError, ProviderUnavailable

#: Where OSWorld publishes its Ubuntu image (overridable per pool: ``desktop.vm_url``).
OSWORLD_UBUNTU_URL = "https://huggingface.co/datasets/xlangai/ubuntu_osworld/resolve/main/Ubuntu.qcow2.zip"
CHUNK = 1 << 16  # small: bytes read before a dropped connection are kept


def default_vm_dir() -> Path:
    return Path(os.environ.get("RAYENV_VM_DIR", Path.home() / ".cache" / "rayenv" / "vm"))


def ensure_vm_image(url: str = OSWORLD_UBUNTU_URL, dest_dir: Path | None = None, sha256: str | None = None,
                    show_progress: bool = True) -> Path:
    """Return the path of the extracted qcow2, downloading and unzipping it first if needed."""
    dest_dir = dest_dir or default_vm_dir()
    dest_dir.mkdir(parents=True, exist_ok=True)
    archive_name = url.rstrip("/").rsplit("/", 1)[-1]
    image = dest_dir / archive_name.removesuffix(".zip")
    if image.exists():
        return image
    archive = dest_dir / archive_name
    if not archive.exists():
        _download(url, archive, show_progress)
    if sha256:
        _verify_sha256(archive, sha256)
    if archive.suffix == ".zip":
        _unzip_single(archive, image)
        archive.unlink()
    return image


def _remote_size(url: str) -> int | None:
    response = requests.head(url, allow_redirects=True, timeout=30)
    response.raise_for_status()
    size = response.headers.get("Content-Length")
    return int(size) if size else None


def _check_free_disk(directory: Path, needed: int) -> None:
    free = shutil.disk_usage(directory).free
    if free < needed:
        raise ProviderUnavailable(f"{directory} has {free / 2**30:.1f} GiB free but the VM image needs "
                                  f"{needed / 2**30:.1f} GiB (archive + extraction)", phase="download",
                                  hint="free disk space or set RAYENV_VM_DIR to a larger disk")


@retry(retry=retry_if_exception_type((requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)),
       wait=wait_exponential(min=1, max=30), stop=stop_after_attempt(8), reraise=True)
def _download(url: str, archive: Path, show_progress: bool) -> None:
    partial = archive.with_name(archive.name + ".part")
    total = _remote_size(url)
    have = partial.stat().st_size if partial.exists() else 0
    if total is not None:
        _check_free_disk(archive.parent, 2 * total - have)
    headers = {"Range": f"bytes={have}-"} if have else {}
    with requests.get(url, headers=headers, stream=True, timeout=60) as response:
        if have and response.status_code == 200:  # the server ignored Range: start over
            have = 0
        elif response.status_code == 416 and total is not None and have == total:
            pass  # already complete
        else:
            response.raise_for_status()
        progress = Progress("[bold]VM image", BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                            disable=not show_progress, transient=True)
        with progress, open(partial, "ab" if have else "wb") as out:
            task = progress.add_task("download", total=total, completed=have)
            if response.status_code != 416:
                for chunk in response.iter_content(CHUNK):
                    out.write(chunk)
                    progress.advance(task, len(chunk))
    size = partial.stat().st_size
    if total is not None and size != total:
        raise requests.exceptions.ChunkedEncodingError(f"got {size} of {total} bytes")  # retried, resuming
    partial.rename(archive)


def _verify_sha256(archive: Path, expected: str) -> None:
    digest = hashlib.sha256()
    with open(archive, "rb") as source:
        for block in iter(lambda: source.read(CHUNK), b""):
            digest.update(block)
    if digest.hexdigest() != expected.lower():
        archive.unlink()
        raise ConfigError(f"{archive.name} has SHA-256 {digest.hexdigest()}, expected {expected}", phase="download",
                          hint="the download was corrupt and has been deleted; run again to fetch it anew")


def _unzip_single(archive: Path, image: Path) -> None:
    with zipfile.ZipFile(archive) as bundle:
        members = [m for m in bundle.infolist() if not m.is_dir()]
        if len(members) != 1:
            raise ConfigError(f"{archive.name} holds {len(members)} files, expected one qcow2", phase="download")
        _check_free_disk(image.parent, members[0].file_size)
        staging = image.with_name(image.name + ".extracting")
        with bundle.open(members[0]) as source, open(staging, "wb") as out:
            shutil.copyfileobj(source, out, CHUNK)
        staging.rename(image)
