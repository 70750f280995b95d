"""Build the desktop-lite image from Debian packages, with no container registry.

Two layers per image profile (:mod:`rayenv.desktop_lite.profiles`), each cached by a content hash so
a second build with nothing changed takes seconds:

1. ``<repository>-base:<hash of packages + suite>``: a ``debootstrap --variant=minbase`` root
   filesystem with the desktop's packages (the ``osworld`` profile then ``apt-get install``s its apps
   into it), and the Python libraries (pyautogui and its pure-Python helpers come from PyPI,
   installed into the rootfs by the host's pip), imported with ``docker import``;
2. ``<repository>:<hash of base + guest server + the profile's layer files>``: the guest server and
   the session entry point added by a ``docker build`` that starts ``FROM`` the base.

The Debian mirror is the one this machine's apt already uses (read from its sources), never a
hard-coded host. The full log goes to ``~/.cache/rayenv/desktop-lite/build-<profile>.log``.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from ..engine import containers
from ..errors import ConfigError, ProviderUnavailable
from . import GUEST_DIR, OSWORLD_DIR
from .apt import apt_install
from .profiles import DEFAULT_PROFILE, IMAGE_DIR, Profile, get_profile

REPOSITORY = "rayenv/desktop-lite"
SUITE = "bookworm"

#: What every desktop has (the ``small`` profile has just this). Apps: a terminal, a GTK text editor and a GTK
#: calculator. ``file``: how ``xdg-open`` (the guest's ``/setup/open_file``) tells a file's type outside GNOME, to
#: pick the app the desktop files name for it.
PACKAGES = (
    "xvfb", "openbox", "xterm", "mousepad", "galculator", "x11-utils", "xdotool", "dbus", "dbus-x11", "at-spi2-core",
    "libatk-adaptor", "python3", "python3-flask", "python3-xlib", "python3-pil", "python3-pyatspi", "python3-gi",
    "python3-tk", "x11-xserver-utils", "ffmpeg", "fonts-dejavu-core", "procps", "xdg-utils", "ca-certificates", "file",
)
#: pyautogui is not packaged by Debian; these are pure Python and come from PyPI.
PYPI_PACKAGES = ("pyautogui==0.9.54", "pymsgbox", "pytweening", "pyscreeze", "mouseinfo", "pyperclip", "pygetwindow",
                 "pyrect")
CACHE = Path.home() / ".cache" / "rayenv" / "desktop-lite"


def apt_mirror() -> str:
    """The Debian archive URI this machine's apt is configured with (deb822 or one-line sources)."""
    sources = sorted(Path("/etc/apt/sources.list.d").glob("*.sources")) + [Path("/etc/apt/sources.list")]
    for source in sources:
        if not source.exists():
            continue
        text = source.read_text()
        for stanza in re.split(r"\n\s*\n", text):  # deb822: URIs + Suites per stanza
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
            if uris and suites and SUITE in suites.group(1).split():
                return uris.group(1)
        for line in text.splitlines():  # one-line format: deb [opts] URI suite components
            match = re.match(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line)
            if match and match.group(2) == SUITE:
                return match.group(1)
    raise ConfigError(f"no apt source for Debian {SUITE} found in /etc/apt", phase="build",
                      hint="add a Debian mirror to /etc/apt/sources.list, or set RAYENV_DEBIAN_MIRROR")


def digest(*parts: bytes) -> str:
    """A short content hash: the tag (or cache key) of whatever ``parts`` describe."""
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:12]


def mirror() -> str:
    return os.environ.get("RAYENV_DEBIAN_MIRROR") or apt_mirror()


def profile_packages(profile: Profile) -> tuple[str, ...]:
    """Every Debian package of ``profile``'s rootfs, in the order they are installed (debootstrap's, then apt's)."""
    return PACKAGES + profile.apt_packages


@functools.lru_cache(maxsize=None)
def base_tag(profile: str = DEFAULT_PROFILE) -> str:
    chosen = get_profile(profile)
    packages = " ".join(profile_packages(chosen) + PYPI_PACKAGES).encode()
    return f"{chosen.repository}-base:{digest(packages, SUITE.encode())}"


@functools.lru_cache(maxsize=None)
def default_image_tag(profile: str = DEFAULT_PROFILE) -> str:
    """``<repository>:<version>``: changes whenever the packages, guest server or the profile's layer change."""
    chosen = get_profile(profile)
    return f"{chosen.repository}:{digest(base_tag(profile).encode(), *(f.read_bytes() for f in chosen.layer_files()))}"


def build_image(force: bool = False, console: Console | None = None, profile: str = DEFAULT_PROFILE) -> str:
    """Build (or find) the image of ``profile``; returns its tag."""
    chosen, tag = get_profile(profile), default_image_tag(profile)
    if not force and containers.image_exists(tag):
        return tag
    # a concurrent build of this profile (another test session, another pool) is waited for, then reused
    with build_lock(CACHE / f"build-{profile}.lock"):
        if not force and containers.image_exists(tag):
            return tag
        _build(chosen, tag, force, console)
    return tag


def _build(profile: Profile, tag: str, force: bool, console: Console | None) -> None:
    log_name = "build.log" if profile.name == DEFAULT_PROFILE else f"build-{profile.name}.log"
    with logged_build(tag, CACHE / log_name, console) as (progress, log):
        base = base_tag(profile.name)
        if force or not containers.image_exists(base):
            _build_base(profile, base, progress, log)
        task = progress.add_task("guest layer (docker build)", total=1)
        docker_build(tag, profile.fill_context, log, buildargs={"BASE": base})
        progress.update(task, completed=1)


@contextlib.contextmanager
def build_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the block: one build of a thing at a time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def logged_build(what: str, log_path: Path, console: Console | None = None) -> Iterator[tuple[Progress, io.TextIOBase]]:
    """A rich progress display and a full log file for one build; a failure becomes a typed error showing the log's tail."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log, Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
                                              TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                                              console=console or Console(stderr=True), transient=False) as progress:
        try:
            yield progress, log
        except (subprocess.CalledProcessError, OSError, RuntimeError) as exc:
            log.flush()
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-25:])
            raise ProviderUnavailable(f"building {what} failed: {exc}", phase="build",
                                      hint=f"full log: {log_path}\n{tail}") from None


def debootstrap(rootfs: Path, packages: Sequence[str], progress: Progress, log: io.TextIOBase) -> None:
    """A ``minbase`` Debian root filesystem with ``packages``, each package counted on the progress bar."""
    if shutil.which("debootstrap") is None:
        raise ProviderUnavailable("debootstrap is not installed", phase="build", hint="apt-get install debootstrap")
    task = progress.add_task(f"debootstrap {SUITE} (minbase + {len(packages)} packages)", total=None)
    command = ["debootstrap", "--variant=minbase", f"--include={','.join(packages)}", SUITE, str(rootfs), mirror()]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    for line in process.stdout:
        log.write(line)
        counted = re.match(r"I: (Retrieving|Validating|Extracting|Unpacking|Configuring) (\S+)", line)
        if counted:
            progress.update(task, advance=1, description=f"debootstrap: {counted.group(1).lower()} {counted.group(2)}")
    if process.wait() != 0:
        raise subprocess.CalledProcessError(process.returncode, command)
    progress.update(task, total=progress.tasks[task].completed, description="debootstrap done")
    for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
        shutil.rmtree(rootfs / cache, ignore_errors=True)


def install_pypi(rootfs: Path, progress: Progress, log: io.TextIOBase) -> None:
    """pyautogui and its helpers into the rootfs's system Python, by the host's pip (nothing runs in the chroot)."""
    task = progress.add_task("pyautogui from PyPI", total=1)
    site = rootfs / "usr" / "lib" / "python3" / "dist-packages"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile",
                    "--target", str(site), *PYPI_PACKAGES], check=True, stdout=log, stderr=subprocess.STDOUT)
    progress.update(task, completed=1)


def docker_import(rootfs: Path, tag: str, progress: Progress, log: io.TextIOBase) -> None:
    """Make ``rootfs`` the image ``tag`` (``docker import``; no registry involved)."""
    task = progress.add_task(f"docker import {tag}", total=1)
    archive = rootfs.parent / "rootfs.tar"
    subprocess.run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(archive), "."], check=True,
                   stdout=log, stderr=subprocess.STDOUT)
    repository, version = tag.split(":")
    containers.client().api.import_image_from_file(str(archive), repository=repository, tag=version)
    archive.unlink()
    progress.update(task, completed=1)


def docker_build(tag: str, fill_context: Callable[[Path], None], log: io.TextIOBase, **options: Any) -> None:
    """``docker build`` of a context that ``fill_context`` writes (a Dockerfile and what it copies)."""
    with tempfile.TemporaryDirectory(prefix="rayenv-ctx-") as context:
        fill_context(Path(context))
        for chunk in containers.client().api.build(path=context, tag=tag, rm=True, decode=True, **options):
            if "stream" in chunk:
                log.write(chunk["stream"])
            if "error" in chunk:
                raise RuntimeError(chunk["error"].strip())


def install_profile_packages(rootfs: Path, profile: Profile, progress: Progress, log: io.TextIOBase) -> None:
    """debootstrap the common desktop, then apt-get the profile's own packages (if any) into it."""
    debootstrap(rootfs, PACKAGES, progress, log)
    if profile.apt_packages:
        apt_install(rootfs, profile.apt_packages, mirror(), SUITE, progress, log)


def export_base(profile: str, rootfs: Path, log: io.TextIOBase) -> None:
    """Unpack ``profile``'s base image (which must exist) into the empty dir ``rootfs``, owners kept: the VM guest
    starts from the packages this build already installed instead of a second debootstrap and apt run."""
    engine = containers.client()
    container = engine.containers.create(base_tag(profile), ["true"])
    try:
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "--numeric-owner", "-xpf", "-"], stdin=subprocess.PIPE,
                               stdout=log, stderr=subprocess.STDOUT)
        assert tar.stdin is not None
        with tar.stdin:
            for chunk in container.export():
                tar.stdin.write(chunk)
        if tar.wait() != 0:
            raise subprocess.CalledProcessError(tar.returncode, tar.args)
    finally:
        container.remove(force=True)
    for mount_point in ("etc/hostname", "etc/resolv.conf", ".dockerenv"):  # empty files the engine put in
        (rootfs / mount_point).unlink(missing_ok=True)
    (rootfs / "etc/hosts").write_text("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")


def _build_base(profile: Profile, tag: str, progress: Progress, log: io.TextIOBase) -> None:
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"desktop-lite-{profile.name}-", dir=CACHE) as workdir:
        rootfs = Path(workdir) / "rootfs"
        install_profile_packages(rootfs, profile, progress, log)
        install_pypi(rootfs, progress, log)
        docker_import(rootfs, tag, progress, log)
        shutil.rmtree(rootfs, ignore_errors=True)
