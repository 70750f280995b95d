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

from ..engine import containers
from ..errors import EnvTimeout, ProviderUnavailable
from ..waiting import wait_until
from .base import GuestEndpoint, Provider

logger = logging.getLogger(__name__)


class ContainerProvider(Provider):
    #: seconds between readiness probes (a VM boots in minutes, desktop-lite in a second)
    poll_interval: float = 0.05

    def __init__(self, *args: Any, name_suffix: str = "", **kwargs: Any) -> None:
        """``name_suffix``: after the container's name ``rayenv-<env>``, when one desktop has two (a warm spare)."""
        super().__init__(*args, **kwargs)
        self.container_name = f"rayenv-{self.ownership.env_name}{name_suffix}"
        self._container: Any = None
        self._started_at = 0
        self._oom_killed = False

    @abc.abstractmethod
    def container_options(self) -> dict[str, Any]:
        """``image``, ``ports`` and any docker-py ``containers.run`` options (environment, devices, ...).

        ``labels`` are added to the ownership labels (e.g. where a host directory the desktop uses lives).
        """

    @abc.abstractmethod
    def endpoint(self, ports: dict[int, int]) -> GuestEndpoint:
        """The guest endpoint, given container port → host port."""

    def start(self) -> GuestEndpoint:
        env_name = self.ownership.env_name
        options = {**self.spec.container_limits(), **self.container_options()}
        labels = {**self.ownership.labels(self.name), **options.pop("labels", {})}
        self._started_at, self._oom_killed = int(time.time()), False
        try:  # stop() also removes what container_options() made (a work directory) if the container never ran
            self._container = containers.run_labelled(name=self.container_name, labels=labels, env=env_name, **options)
            endpoint = self.endpoint(containers.published_ports(self._container))
            self.container_started()
            self._wait_ready(endpoint)
        except BaseException:
            self.stop()
            raise
        return endpoint

    def container_started(self) -> None:
        """Called once the container runs, before waiting for its guest API (a VM waiting for its state)."""

    def _wait_ready(self, endpoint: GuestEndpoint, interval: float | None = None) -> None:
        """Poll the guest API (every ``interval``, default :attr:`poll_interval`) until it answers; log
        progress every 10 s; fail if the container exits."""
        container, env_name = self._container, self.ownership.env_name

        def answers() -> bool:
            try:
                if requests.get(endpoint.url + "/platform", timeout=5).ok:
                    return True
            except requests.RequestException:
                pass
            if not containers.is_running(container):
                logs = container.logs(tail=20).decode(errors="replace")
                raise ProviderUnavailable(f"container {container.name} exited while starting",
                                          env=env_name, phase="boot", hint=f"its last log lines:\n{logs}")
            return False

        wait_until(answers, self.spec.boot_timeout or 0.0,  # filled per provider by DesktopSpec
                   interval=interval or self.poll_interval, what=f"{container.name}'s guest API answering",
                   progress=lambda seconds: logger.info("%s: waiting for %s (%.0fs)", env_name, container.name, seconds),
                   error=lambda message: EnvTimeout(message, env=env_name, phase="boot",
                                                    hint="raise desktop.boot_timeout (a VM without KVM takes minutes)"))

    def stop(self) -> None:
        if self._container is not None:
            containers.remove(self._container)
            self._container = None

    def is_alive(self) -> bool:
        """Running, or paused: a frozen container resumes where it stopped, so it is slow, not dead (its
        calls time out on their own timeouts). A container in which the kernel's OOM killer struck is dead
        even if it still runs: whatever it killed (the app under test, Xvfb, the guest server) is gone, and
        a desktop missing a part must not be scored."""
        if self._container is None:
            return False
        alive = containers.is_running(self._container) or self._container.status == "paused"
        return alive and not self.oom_killed()

    def oom_killed(self) -> bool:
        """Docker saw the kernel kill for memory in this container: ``State.OOMKilled`` once it exited (its
        main process died), an ``oom`` event while it still runs (a child died). The events are read up to now (a
        fractional timestamp): a whole second in the future made the daemon hold every check open until then."""
        if not self._oom_killed and self._container is not None:
            self._oom_killed = bool(self._container.attrs.get("State", {}).get("OOMKilled")) or any(
                True for _ in containers.client().events(since=self._started_at, until=time.time(),
                                                         filters={"container": self._container.id, "event": "oom"},
                                                         decode=True))
        return self._oom_killed

    def describe(self) -> dict[str, Any]:
        if self._container is None:
            return {}
        facts = {"container_id": self._container.id[:12], "container_name": self._container.name,
                 "image": self.container_image}
        if self._oom_killed or self._container.status not in ("running", "paused", "created"):
            facts["exit_reason"] = self.exit_reason()
        return facts

    def exit_reason(self) -> str:
        """Why the container is dead, in Docker's own terms (the kernel's OOM kill is the one to spot)."""
        state = self._container.attrs.get("State", {})
        limit = self._container.attrs.get("HostConfig", {}).get("Memory") or 0
        if self._oom_killed or state.get("OOMKilled"):
            return (f"container {self._container.name} exceeded its memory limit ({limit / 2**20:.0f} MiB) and "
                    "the kernel's OOM killer struck in it (Docker: OOMKilled); raise desktop.memory_limit or run fewer apps per desktop")
        return f"container {self._container.name} exited with code {state.get('ExitCode')}: {state.get('Error') or 'no error recorded'}"

    @property
    def container_image(self) -> str:
        return self._container.attrs["Config"]["Image"] if self._container is not None else ""
