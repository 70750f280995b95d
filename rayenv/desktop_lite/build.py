"""Build the desktop-lite image from Debian packages, with no container registry.

Two layers, each cached by a content hash so a second build with nothing changed takes seconds:

1. ``rayenv/desktop-lite-base:<hash of packages + suite + mirror>``: a ``debootstrap --variant=minbase``
   root filesystem with the apps and Python libraries (pyautogui and its pure-Python helpers come
   from PyPI, installed into the rootfs by the host's pip), imported with ``docker import``;
2. ``rayenv/desktop-lite:<hash of base + guest server + session script>``: the guest server and the
   ``desktop-session`` entry point added by a ``docker build`` that starts ``FROM`` the base.

The Debian mirror is the one this machine's apt already uses (read from its sources), never a
hard-coded host. The full log goes to ``~/.cache/rayenv/desktop-lite/build.log``.
"""

from __future__ import annotations

import functools
import hashlib
import io
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from ..errors import ConfigError, ProviderUnavailable
from ..providers import containers

OSWORLD_DIR = Path(__file__).resolve().parents[2] / "OSWorld"
IMAGE_DIR = OSWORLD_DIR / "image"
GUEST_DIR = OSWORLD_DIR / "guest"
REPOSITORY = "rayenv/desktop-lite"
SUITE = "bookworm"

#: What a desktop has. Apps: a terminal, a GTK text editor and a GTK calculator.
PACKAGES = (
    "xvfb", "openbox", "xterm", "mousepad", "galculator", "x11-utils", "xdotool", "dbus", "dbus-x11", "at-spi2-core",
    "libatk-adaptor", "python3", "python3-flask", "python3-xlib", "python3-pil", "python3-pyatspi", "python3-gi",
    "python3-tk", "x11-xserver-utils", "ffmpeg", "fonts-dejavu-core", "procps", "xdg-utils", "ca-certificates",
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


def _digest(*parts: bytes) -> str:
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:12]


def _mirror() -> str:
    import os

    return os.environ.get("RAYENV_DEBIAN_MIRROR") or apt_mirror()


@functools.lru_cache(maxsize=1)
def base_tag() -> str:
    return f"{REPOSITORY}-base:{_digest(' '.join(PACKAGES + PYPI_PACKAGES).encode(), SUITE.encode())}"


def _layer_files() -> list[Path]:
    return [IMAGE_DIR / "Dockerfile", IMAGE_DIR / "desktop-session", *sorted(GUEST_DIR.glob("*.py"))]


@functools.lru_cache(maxsize=1)
def default_image_tag() -> str:
    """``rayenv/desktop-lite:<version>``: changes whenever the packages, guest server or entry point change."""
    return f"{REPOSITORY}:{_digest(base_tag().encode(), *(f.read_bytes() for f in _layer_files()))}"


def build_image(force: bool = False, console: Console | None = None) -> str:
    """Build (or find) the image; returns its tag."""
    console = console or Console(stderr=True)
    tag = default_image_tag()
    if not force and containers.image_exists(tag):
        return tag
    CACHE.mkdir(parents=True, exist_ok=True)
    log_path = CACHE / "build.log"
    with open(log_path, "w") as log, Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
                                              TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                                              console=console, transient=False) as progress:
        try:
            if force or not containers.image_exists(base_tag()):
                _build_base(progress, log)
            task = progress.add_task("guest layer (docker build)", total=1)
            _build_layer(tag, log)
            progress.update(task, completed=1)
        except (subprocess.CalledProcessError, OSError, RuntimeError) as exc:
            log.flush()
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-25:])
            raise ProviderUnavailable(f"building {tag} failed: {exc}", phase="build",
                                      hint=f"full log: {log_path}\n{tail}") from None
    return tag


def _build_base(progress: Progress, log: io.TextIOBase) -> None:
    if shutil.which("debootstrap") is None:
        raise ProviderUnavailable("debootstrap is not installed", phase="build", hint="apt-get install debootstrap")
    with tempfile.TemporaryDirectory(prefix="desktop-lite-", dir=CACHE) as workdir:
        rootfs = Path(workdir) / "rootfs"
        task = progress.add_task(f"debootstrap {SUITE} (minbase + {len(PACKAGES)} packages)", total=None)
        command = ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(rootfs), _mirror()]
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
        pip_task = progress.add_task("pyautogui from PyPI", total=1)
        site = rootfs / "usr" / "lib" / "python3" / "dist-packages"
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile",
                        "--target", str(site), *PYPI_PACKAGES], check=True, stdout=log, stderr=subprocess.STDOUT)
        progress.update(pip_task, completed=1)
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            shutil.rmtree(rootfs / cache, ignore_errors=True)
        import_task = progress.add_task("docker import", total=1)
        archive = Path(workdir) / "rootfs.tar"
        subprocess.run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(archive), "."], check=True,
                       stdout=log, stderr=subprocess.STDOUT)
        repository, tag = base_tag().split(":")
        containers.client().api.import_image_from_file(str(archive), repository=repository, tag=tag)
        progress.update(import_task, completed=1)
        shutil.rmtree(rootfs, ignore_errors=True)


def _build_layer(tag: str, log: io.TextIOBase) -> None:
    with tempfile.TemporaryDirectory(prefix="desktop-lite-ctx-") as context:
        root = Path(context)
        shutil.copytree(GUEST_DIR, root / "guest", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(IMAGE_DIR / "desktop-session", root / "desktop-session")
        shutil.copy2(IMAGE_DIR / "Dockerfile", root / "Dockerfile")
        stream = containers.client().api.build(path=context, tag=tag, rm=True, decode=True,
                                               buildargs={"BASE": base_tag()})
        for chunk in stream:
            if "stream" in chunk:
                log.write(chunk["stream"])
            if "error" in chunk:
                raise RuntimeError(chunk["error"].strip())
