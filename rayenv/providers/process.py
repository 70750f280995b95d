"""The ``process`` provider: desktop-lite as host processes (no Docker), see :mod:`rayenv.desktop_lite.process`.

Its apps share the host's network: Chrome's debugging port and VLC's HTTP interface listen on the
host's own loopback ports 9222 and 8080, so only one process desktop at a time can serve them.
"""

from __future__ import annotations

from typing import Any

from ..desktop_lite.process import ProcessDesktop, start_desktop
from .base import APP_PORTS, GuestEndpoint, Provider


class ProcessProvider(Provider):
    name = "process"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._desktop: ProcessDesktop | None = None

    def start(self) -> GuestEndpoint:
        self._desktop = start_desktop(owner=self.ownership.owner, env_name=self.ownership.env_name,
                                      actor_id=self.ownership.actor_id, width=self.spec.screen_width,
                                      height=self.spec.screen_height, timeout=self.spec.boot_timeout)
        return GuestEndpoint("127.0.0.1", self._desktop.port, extra_ports=dict(APP_PORTS))

    def stop(self) -> None:
        if self._desktop is not None:
            self._desktop.stop()
            self._desktop = None

    def is_alive(self) -> bool:
        return self._desktop is not None and self._desktop.alive()

    def describe(self) -> dict[str, Any]:
        if self._desktop is None:
            return {}
        return {"display": self._desktop.display, "pgid": self._desktop.pgid,
                "url": f"http://127.0.0.1:{self._desktop.port}", "workdir": str(self._desktop.workdir)}
