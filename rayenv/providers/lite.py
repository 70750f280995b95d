"""The ``lite`` provider: one desktop-lite container (Xvfb, openbox, real apps, the guest API server).

Starts in about two seconds, needs no KVM and no 10 GB image, and is driven exactly like an OSWorld
VM; see ``OSWorld/image/`` for what is inside and :mod:`rayenv.desktop_lite.build` for the build.
"""

from __future__ import annotations

import time
from typing import Any

import requests

from ..desktop_lite.build import default_image_tag
from ..errors import EnvTimeout, ProviderUnavailable
from . import containers
from .base import GuestEndpoint, Provider

GUEST_PORT = 5000


class LiteProvider(Provider):
    name = "lite"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._container: Any = None
        self._image = self.spec.lite_image or default_image_tag()

    def start(self) -> GuestEndpoint:
        env_id = self.ownership.env_id
        self._container = containers.run_labelled(
            image=self._image, name=f"rayenv-{env_id}",
            labels=self.ownership.labels(self.name), ports=[GUEST_PORT], env=env_id,
            environment={"SCREEN_WIDTH": str(self.spec.screen_width), "SCREEN_HEIGHT": str(self.spec.screen_height)},
            shm_size="256m", init=True,
        )
        try:
            endpoint = GuestEndpoint("127.0.0.1", containers.published_ports(self._container)[GUEST_PORT])
            self._wait_ready(endpoint)
        except BaseException:
            self.stop()
            raise
        return endpoint

    def _wait_ready(self, endpoint: GuestEndpoint) -> None:
        deadline = time.monotonic() + self.spec.boot_timeout
        while time.monotonic() < deadline:
            try:
                if requests.get(endpoint.url + "/health", timeout=2).ok:
                    return
            except requests.RequestException:
                pass
            if not containers.is_running(self._container):
                logs = self._container.logs(tail=20).decode(errors="replace")
                raise ProviderUnavailable(f"container {self._container.name} exited while starting",
                                          env=self.ownership.env_id, phase="boot", hint=f"its last log lines:\n{logs}")
            time.sleep(0.05)
        raise EnvTimeout(f"{self._container.name} did not answer within {self.spec.boot_timeout:.0f}s",
                         env=self.ownership.env_id, phase="boot", hint="raise desktop.boot_timeout")

    def stop(self) -> None:
        if self._container is not None:
            containers.remove(self._container)
            self._container = None

    def is_alive(self) -> bool:
        return self._container is not None and containers.is_running(self._container)

    def describe(self) -> dict[str, Any]:
        if self._container is None:
            return {}
        return {"container_id": self._container.id[:12], "container_name": self._container.name, "image": self._image}
