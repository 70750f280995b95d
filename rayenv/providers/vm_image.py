"""The OSWorld Ubuntu qcow2 on an env host: fetched once, beforehand, checked; never half-used.

The image is ~10 GB zipped and a laptop VM's link drops, so fetching is a step of its own
(``rayenv vm fetch``), never part of a desktop's boot: a pool that finds no image fails at once
with that command (:func:`locate_vm_image`) instead of downloading inside an actor's boot window,
where the pool would kill it half-way.

:func:`fetch_vm_image` downloads to ``<name>.part`` and resumes with an HTTP ``Range`` request,
holds a lock for the whole fetch (a second caller, thread or process, waits and then finds the
image), refuses to start without room for the archive and its extraction, verifies the size (and a
SHA-256 when one is given), extracts to a temporary name (zip's CRC checks every byte), checks the
qcow2 header, and only then renames into place. A corrupt archive is deleted, so the next fetch
starts clean. A crash at any point leaves either nothing usable-looking or a ``.part`` to resume.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import zipfile
from pathlib import Path
from typing import Iterator

import requests
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn
from tenacity import RetryCallState, retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from ..errors import ConfigError, ProviderUnavailable

#: Where OSWorld publishes its Ubuntu image (overridable per pool: ``desktop.vm_url``).
OSWORLD_UBUNTU_URL = "https://huggingface.co/datasets/xlangai/ubuntu_osworld/resolve/main/Ubuntu.qcow2.zip"
CHUNK = 1 << 16  # small: bytes read before a dropped connection are kept
QCOW2_MAGIC = b"QFI\xfb"
FETCH_COMMAND = "rayenv vm fetch"
DOWNLOAD_ATTEMPTS = 8


def default_vm_dir() -> Path:
    return Path(os.environ.get("RAYENV_VM_DIR", Path.home() / ".cache" / "rayenv" / "vm"))


def image_name(url: str) -> str:
    """``Ubuntu.qcow2`` for ``.../Ubuntu.qcow2.zip``: the file a fetch of ``url`` produces."""
    return url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".zip")


def check_qcow2(path: Path, *, env: str | None = None) -> Path:
    """``path`` if it starts with a qcow2 header; a typed error naming the file otherwise."""
    try:
        with open(path, "rb") as image:
            magic = image.read(len(QCOW2_MAGIC))
    except OSError as exc:
        raise ProviderUnavailable(f"cannot read the VM image {path}: {exc.strerror}", env=env, phase="boot",
                                  hint="fix desktop.vm_path (a path on the env host)") from None
    if magic != QCOW2_MAGIC:
        raise ProviderUnavailable(f"{path} is not a qcow2 image (it starts with {magic!r})", env=env, phase="boot",
                                  hint=f"point desktop.vm_path at a .qcow2, or run `{FETCH_COMMAND}` for OSWorld's")
    return path


def built_alongside(image: str | None) -> Path | None:
    """The qcow2 ``rayenv vm build`` made together with ``image``, when ``image`` is that build's
    ``rayenv/osworld-vm`` and its disk is on this host: the two only work as a pair."""
    from ..desktop_vm.build import REPOSITORY, built

    if not image or not image.startswith(f"{REPOSITORY}:"):
        return None
    desktop = built()
    return desktop.qcow2 if desktop is not None and desktop.image == image else None


def locate_vm_image(vm_path: str | None, url: str = OSWORLD_UBUNTU_URL, *, image: str | None = None,
                    env: str | None = None) -> Path:
    """The qcow2 a desktop boots: ``vm_path``; else the one built with ``image`` (our own VM image);
    else what :func:`fetch_vm_image` of ``url`` left. Never downloads."""
    if not vm_path:
        vm_path = str(built_alongside(image) or "") or None
    if vm_path:
        path = Path(vm_path).expanduser()
        if not path.is_file():
            raise ProviderUnavailable(f"VM image {path} does not exist on this env host", env=env, phase="boot",
                                      hint="fix desktop.vm_path, or unset it and run "
                                           f"`{FETCH_COMMAND}` to download OSWorld's Ubuntu image")
        return check_qcow2(path, env=env)
    path = default_vm_dir() / image_name(url)
    if not path.is_file():
        command = FETCH_COMMAND if url == OSWORLD_UBUNTU_URL else f"{FETCH_COMMAND} --url {url}"
        raise ProviderUnavailable(f"the VM image {path.name} has not been fetched to {path.parent}", env=env,
                                  phase="boot", hint=f"run `{command}` on this env host once (~10 GB, resumable), "
                                                     "or set desktop.vm_path to a qcow2 you already have")
    return check_qcow2(path, env=env)


def fetch_vm_image(url: str = OSWORLD_UBUNTU_URL, dest_dir: Path | None = None, sha256: str | None = None,
                   show_progress: bool = True) -> Path:
    """Return the path of the extracted qcow2, downloading and extracting it first if needed."""
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"cannot fetch {url!r}: only http(s) URLs are downloaded",
                          hint="for a qcow2 already on this host, set desktop.vm_path to it instead of fetching")
    dest_dir = dest_dir or default_vm_dir()
    dest_dir.mkdir(parents=True, exist_ok=True)
    image = dest_dir / image_name(url)
    with _exclusive(dest_dir / f"{image.name}.lock", show_progress):
        if image.exists():
            return image
        archive = dest_dir / url.rstrip("/").rsplit("/", 1)[-1]
        if not archive.exists():
            _download(url, archive, show_progress)
        if sha256:
            _verify_sha256(archive, sha256)
        if archive != image:
            _extract_single(archive, image)
            archive.unlink()
        try:
            check_qcow2(image)
        except ProviderUnavailable as exc:
            image.unlink()
            raise ProviderUnavailable(f"{url} did not hold a qcow2 image; deleted it", phase="download",
                                      hint=exc.message) from None
    return image


@contextlib.contextmanager
def _exclusive(lock_path: Path, show_progress: bool) -> Iterator[None]:
    """Hold ``lock_path`` exclusively (flock: released by the kernel if the holder dies)."""
    with open(lock_path, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "?"
            if show_progress:
                Console(stderr=True).print(f"another fetch (pid {holder}) is downloading {lock_path.stem}; waiting")
            fcntl.flock(lock, fcntl.LOCK_EX)
        lock.seek(0), lock.truncate(), lock.write(str(os.getpid())), lock.flush()
        try:
            yield
        finally:
            lock.truncate(0)
            fcntl.flock(lock, fcntl.LOCK_UN)


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


def _download(url: str, archive: Path, show_progress: bool) -> None:
    """Download with resumes: a link that drops mid-way is retried (each retry said on stderr); a server
    that refuses or cannot be resolved on the first try is an error at once, naming the URL."""
    try:
        with Console(stderr=True, quiet=not show_progress).status(f"contacting {url} ..."):
            _remote_size(url)
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise ProviderUnavailable(f"cannot reach {url}: {type(exc).__name__}", phase="download",
                                  hint="check the URL and this host's network (or its proxy settings)") from None
    except requests.HTTPError as exc:
        raise ProviderUnavailable(f"{url} answered {exc.response.status_code}", phase="download",
                                  hint="check the URL (--url or desktop.vm_url)") from None
    _download_resuming(url, archive, show_progress)


def _say_retry(state: RetryCallState) -> None:
    Console(stderr=True).print(f"download interrupted ({type(state.outcome.exception()).__name__}); resuming, "
                               f"attempt {state.attempt_number + 1} of {DOWNLOAD_ATTEMPTS}")


@retry(retry=retry_if_exception_type((requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)),
       wait=wait_exponential(min=1, max=30), stop=stop_after_attempt(DOWNLOAD_ATTEMPTS), reraise=True,
       before_sleep=_say_retry)
def _download_resuming(url: str, archive: Path, show_progress: bool) -> None:
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
        progress = Progress(f"[bold]{archive.name}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                            TimeRemainingColumn(), disable=not show_progress, transient=True)
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


def _extract_single(archive: Path, image: Path) -> None:
    """Unzip the archive's one file to ``image``; a damaged archive is deleted and reported."""
    staging = image.with_name(image.name + ".extracting")
    try:
        with zipfile.ZipFile(archive) as bundle:
            members = [m for m in bundle.infolist() if not m.is_dir()]
            if len(members) != 1:
                raise ConfigError(f"{archive.name} holds {len(members)} files, expected one qcow2", phase="download")
            _check_free_disk(image.parent, members[0].file_size)
            with bundle.open(members[0]) as source, open(staging, "wb") as out:
                shutil.copyfileobj(source, out, CHUNK)
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        staging.unlink(missing_ok=True)
        archive.unlink(missing_ok=True)
        raise ProviderUnavailable(f"{archive.name} is damaged ({exc}); deleted it", phase="download",
                                  hint=f"run `{FETCH_COMMAND}` again to download it anew") from None
    staging.rename(image)

