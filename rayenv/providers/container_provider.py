"""What the container-based providers (``lite``, ``docker``) share: one labelled container per desktop.

A subclass says which image, environment and ports its container needs and how its guest endpoint
is built from the published ports; this base starts the container, waits (bounded) until the guest
API answers, and removes the container with its volumes on ``stop``.
"""

from __future__ import annotations

import abc
import logging
import time
from typing import Any

import requests

from ..errors import EnvTimeout, ProviderUnavailable
from . import containers
from .base import GuestEndpoint, Provider

logger = logging.getLogger(__name__)


class ContainerProvider(Provider):
    #: seconds between readiness probes (a VM boots in minutes, desktop-lite in a second)
    poll_interval: float = 0.05

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._container: Any = None

    @abc.abstractmethod
    def container_options(self) -> dict[str, Any]:
        """``image``, ``ports`` and any docker-py ``containers.run`` options (environment, devices, ...).

        ``labels`` are added to the ownership labels (e.g. where a host directory the desktop uses lives).
        """

    @abc.abstractmethod
    def endpoint(self, ports: dict[int, int]) -> GuestEndpoint:
        """The guest endpoint, given container port → host port."""

    def start(self) -> GuestEndpoint:
        env_id = self.ownership.env_id
        options = self.container_options()
        labels = {**self.ownership.labels(self.name), **options.pop("labels", {})}
        try:  # stop() also removes what container_options() made (a work directory) if the container never ran
            self._container = containers.run_labelled(name=f"rayenv-{env_id}", labels=labels, env=env_id, **options)
            endpoint = self.endpoint(containers.published_ports(self._container))
            self._wait_ready(endpoint)
        except BaseException:
            self.stop()
            raise
        return endpoint

    def _wait_ready(self, endpoint: GuestEndpoint) -> None:
        """Poll the guest API until it answers; log progress every 10 s; fail if the container exits."""
        started = time.monotonic()
        timeout = self.spec.boot_timeout or 0.0  # filled per provider by DesktopSpec
        deadline, next_log = started + timeout, started + 10
        while time.monotonic() < deadline:
            try:
                if requests.get(endpoint.url + "/platform", timeout=5).ok:
                    return
            except requests.RequestException:
                pass
            if not containers.is_running(self._container):
                logs = self._container.logs(tail=20).decode(errors="replace")
                raise ProviderUnavailable(f"container {self._container.name} exited while starting",
                                          env=self.ownership.env_id, phase="boot", hint=f"its last log lines:\n{logs}")
            if time.monotonic() > next_log:
                logger.info("%s: waiting for %s (%.0fs)", self.ownership.env_id, self._container.name,
                            time.monotonic() - started)
                next_log += 10
            time.sleep(self.poll_interval)
        raise EnvTimeout(f"{self._container.name} did not answer within {timeout:.0f}s",
                         env=self.ownership.env_id, phase="boot",
                         hint="raise desktop.boot_timeout (a VM without KVM takes minutes)")

    def stop(self) -> None:
        if self._container is not None:
            containers.remove(self._container)
            self._container = None

    def is_alive(self) -> bool:
        """Running, or paused: a frozen container resumes where it stopped, so it is slow, not dead (its
        calls time out on their own timeouts)."""
        return self._container is not None and (containers.is_running(self._container)
                                                or self._container.status == "paused")

    def describe(self) -> dict[str, Any]:
        if self._container is None:
            return {}
        return {"container_id": self._container.id[:12], "container_name": self._container.name,
                "image": self.container_image}

    @property
    def container_image(self) -> str:
        return self._container.attrs["Config"]["Image"] if self._container is not None else ""
