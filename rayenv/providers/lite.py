"""The ``lite`` provider: one desktop-lite container (Xvfb, openbox, real apps, the guest API server).

Starts in about a second, needs no KVM and no 10 GB image, and is driven exactly like an OSWorld
VM; see ``OSWorld/image/`` for what is inside and :mod:`rayenv.desktop_lite.build` for the build.
Its Xvfb keeps the screen in a file of a host directory on tmpfs (``FRAMEBUFFER_DIR``, bind-mounted),
which screenshots read (:class:`~rayenv.providers.screens.XwdFramebuffer`); the directory goes with
the container.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ..desktop_lite.build import default_image_tag
from ..engine.containers import LABEL_SCREENDIR
from .base import APP_PORTS, GuestEndpoint
from .container_provider import ContainerProvider
from .screens import SCREEN_MOUNT, XVFB_SCREEN_FILE, XwdFramebuffer, make_screen_dir

GUEST_PORT = 5000


class LiteProvider(ContainerProvider):
    name = "lite"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.screen_dir: Path | None = None

    def container_options(self) -> dict[str, Any]:
        self.screen_dir = make_screen_dir(self.ownership.owner, self.ownership.env_name)
        return {"image": self.spec.lite_image or default_image_tag(self.spec.profile),
                "ports": [GUEST_PORT, *APP_PORTS.values()], "shm_size": "256m", "init": True,
                "labels": {LABEL_SCREENDIR: str(self.screen_dir)},
                "volumes": {str(self.screen_dir): {"bind": SCREEN_MOUNT, "mode": "rw"}},
                "environment": {"SCREEN_WIDTH": str(self.spec.screen_width),
                                "SCREEN_HEIGHT": str(self.spec.screen_height),
                                "CLIENT_PASSWORD": self.spec.client_password,
                                "FRAMEBUFFER_DIR": SCREEN_MOUNT}}

    def endpoint(self, ports: dict[int, int]) -> GuestEndpoint:
        """The guest API and the app ports of ``APP_PORTS``, each published on a loopback port Docker chose."""
        return GuestEndpoint("127.0.0.1", ports[GUEST_PORT],
                             extra_ports={name: ports[port] for name, port in APP_PORTS.items()})

    def display(self) -> XwdFramebuffer | None:
        """Xvfb's screen file, once the container runs and its X server made it (an image from before
        ``FRAMEBUFFER_DIR`` makes none: its screenshots come from the guest)."""
        if self._container is None or self.screen_dir is None:
            return None
        framebuffer = XwdFramebuffer(self.screen_dir / XVFB_SCREEN_FILE, env=self.ownership.env_name)
        return framebuffer if framebuffer.available() else None

    def stop(self) -> None:
        super().stop()  # removes the screen directory with the container (its label)
        if self.screen_dir is not None:  # also when the container never started
            shutil.rmtree(self.screen_dir, ignore_errors=True)
            self.screen_dir = None

    def describe(self) -> dict[str, Any]:
        facts = super().describe()
        if facts:
            facts["screenshots"] = "Xvfb's framebuffer file" if self.display() is not None else "guest GET /screenshot"
        return facts
