"""Image profiles: what a desktop-lite image (and the VM guest built from the same packages) contains.

``small`` (the default) is today's desktop: a terminal, a text editor and a calculator, running as
root; it builds in about two minutes and keeps the fast tests fast. ``osworld`` adds what OSWorld's
own tasks expect of OSWorld's Ubuntu image: user ``user`` with sudo, its home, the session bus at
``/run/user/1000/bus``, dconf/gsettings with GNOME's schemas, pulseaudio, and the apps configured the
way the tasks and desktop-env's getters assume (Chrome as chromium, LibreOffice, GIMP, VLC,
Thunderbird, gnome-terminal). Its recipe is ``OSWorld/image/osworld/``. VS Code is not packaged by
Debian: tasks that need it need OSWorld's own image.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from . import GUEST_DIR, OSWORLD_DIR

IMAGE_DIR = OSWORLD_DIR / "image"
OSWORLD_PROFILE_DIR = IMAGE_DIR / "osworld"

#: OSWorld's user/session contract and apps, installed with apt-get into the debootstrap rootfs (apt, unlike
#: debootstrap, resolves the virtual packages and alternatives these pull in). No recommends: what a task
#: needs is named here, so the image stays as small as these apps allow.
OSWORLD_PACKAGES = (
    # the user/session contract
    "sudo", "python-is-python3", "gsettings-desktop-schemas", "dconf-gsettings-backend", "dconf-cli",
    "libglib2.0-bin", "gvfs", "pulseaudio", "pulseaudio-utils", "xdg-user-dirs",
    # the apps
    "gnome-terminal", "chromium", "libreoffice-calc", "libreoffice-writer", "libreoffice-impress",
    "libreoffice-gtk3", "gimp", "vlc", "thunderbird",
    # the command-line tools tasks call
    "git", "unzip", "xsel", "sysstat", "xz-utils", "socat", "wmctrl", "curl", "wget",
    # documents' usual fonts (metric-compatible with Arial/Times/Courier)
    "fonts-liberation2",
)


@dataclass(frozen=True)
class Profile:
    """One image profile: the packages on top of the debootstrap base and the ``docker build`` layer."""

    name: str
    #: installed with apt-get after debootstrap (none: the base alone)
    apt_packages: tuple[str, ...]
    #: the guest layer's Dockerfile
    dockerfile: Path
    #: what the Dockerfile copies besides ``guest/``: a file or folder of ``OSWorld/image/``, by its name there
    layer_paths: tuple[str, ...]
    #: the image's repository; its tag is a content hash
    repository: str

    def layer_files(self) -> list[Path]:
        """Every file the guest layer is made of (its content decides the image's tag)."""
        files = [self.dockerfile]
        for name in self.layer_paths:
            path = IMAGE_DIR / name
            files += sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        return [*files, *sorted(GUEST_DIR.rglob("*.py"))]

    def fill_context(self, root: Path) -> None:
        """Write the ``docker build`` context: the Dockerfile, ``guest/`` and the layer's paths."""
        shutil.copytree(GUEST_DIR, root / "guest", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(self.dockerfile, root / "Dockerfile")
        for name in self.layer_paths:
            source = IMAGE_DIR / name
            if source.is_dir():
                shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("Dockerfile"))
            else:
                shutil.copy2(source, root / name)


PROFILES = {
    "small": Profile("small", (), IMAGE_DIR / "Dockerfile", ("desktop-session",), "rayenv/desktop-lite"),
    "osworld": Profile("osworld", OSWORLD_PACKAGES, OSWORLD_PROFILE_DIR / "Dockerfile", ("osworld",),
                       "rayenv/desktop-lite-osworld"),
}
DEFAULT_PROFILE = "small"


def get_profile(name: str) -> Profile:
    """The profile called ``name``; an unknown name is a config error naming the known ones."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ConfigError(f"unknown image profile {name!r}", phase="build",
                          hint=f"choose one of: {', '.join(PROFILES)}") from None
