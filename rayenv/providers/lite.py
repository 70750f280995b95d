"""The ``lite`` provider: one desktop-lite container (Xvfb, openbox, real apps, the guest API server).

Starts in about a second, needs no KVM and no 10 GB image, and is driven exactly like an OSWorld
VM; see ``OSWorld/image/`` for what is inside and :mod:`rayenv.desktop_lite.build` for the build.
"""

from __future__ import annotations

from typing import Any

from ..desktop_lite.build import default_image_tag
from .base import APP_PORTS, GuestEndpoint
from .container_provider import ContainerProvider

GUEST_PORT = 5000


class LiteProvider(ContainerProvider):
    name = "lite"

    def container_options(self) -> dict[str, Any]:
        return {"image": self.spec.lite_image or default_image_tag(self.spec.profile),
                "ports": [GUEST_PORT, *APP_PORTS.values()], "shm_size": "256m", "init": True,
                "environment": {"SCREEN_WIDTH": str(self.spec.screen_width),
                                "SCREEN_HEIGHT": str(self.spec.screen_height),
                                "CLIENT_PASSWORD": self.spec.client_password}}

    def endpoint(self, ports: dict[int, int]) -> GuestEndpoint:
        """The guest API and the app ports of ``APP_PORTS``, each published on a loopback port Docker chose."""
        return GuestEndpoint("127.0.0.1", ports[GUEST_PORT],
                             extra_ports={name: ports[port] for name, port in APP_PORTS.items()})
