"""Warm spares: a desktop with its successor already booted beside it, so a reset is a swap, not a restart.

A provider that cannot revert in place (desktop-lite restarts its container: ~1.5 s before the task's setup even
starts) pays its whole boot on the trainer's clock at every reset. :class:`WarmSpare` (``desktop.warm_spare``)
keeps a second desktop of the same spec booting in the background while an episode runs; a revert makes it the
desktop (milliseconds), removes the used one and boots the next spare, both off the trainer's clock. The price is
a second desktop's memory per slot (:meth:`DesktopSpec.memory_need` counts it) and its boot's CPU during the
episode. Where no spare is ready (a reset right after the last one, a spare that failed to boot) the revert falls
back to the provider's own (in place, or a restart), so a spare can only make a reset faster, never fail it.

Each incarnation is a provider of its own (``-<n>`` after its container's name), started and stopped whole; the
spare carries the desktop's ownership labels, so the pool's reaper finds it like any desktop of a dead actor.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .base import GuestEndpoint, Provider

if TYPE_CHECKING:
    from .screens import Display

logger = logging.getLogger(__name__)


class WarmSpare(Provider):
    """One desktop (``active``) plus the next one booting (``spare``); ``make(n)`` builds incarnation ``n``."""

    name = "warm-spare"

    def __init__(self, make: Callable[[int], Provider]) -> None:
        self._make = make
        self._incarnations = 0
        self._active = self._next()
        super().__init__(self._active.spec, self._active.ownership)
        self._endpoint: GuestEndpoint | None = None
        self._spare: Provider | None = None
        self._booting: concurrent.futures.Future[GuestEndpoint] | None = None
        self._lock = threading.Lock()  # revert (the actor's call) and stop (its control group) swap and read these
        self._closed = False
        self._boots = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self.ownership.env_name}-spare")
        self._removals = concurrent.futures.ThreadPoolExecutor(max_workers=1,
                                                               thread_name_prefix=f"{self.ownership.env_name}-used")

    def _next(self) -> Provider:
        self._incarnations += 1
        return self._make(self._incarnations)

    def start(self) -> GuestEndpoint:
        self._closed = False
        self._endpoint = self._active.start()
        self._boot_spare()
        return self._endpoint

    def _boot_spare(self) -> None:
        """Start the next incarnation in the background."""
        spare = self._next()

        def boot() -> GuestEndpoint:
            endpoint = spare.start()
            if self._closed or self._spare is not spare:  # stopped while it booted: remove it here
                spare.stop()
            return endpoint

        with self._lock:
            self._spare, self._booting = spare, self._boots.submit(boot)

    def revert(self) -> bool:
        """Swap to the spare (waiting for one still booting: it is nearer than a restart); without a usable one,
        what the provider itself can do (False: the caller restarts, which boots a new spare too)."""
        with self._lock:
            spare, booting = self._spare, self._booting
        failure = booting.exception() if booting is not None else None  # waits: its boot has its own timeout
        if spare is None or booting is None or failure is not None or not spare.is_alive():
            if spare is not None:
                logger.warning("%s: warm spare %s is not usable (%s); resetting without it", self.ownership.env_name,
                               spare.label(), failure or "it is not running")
                self._drop(spare)
            reverted = self._active.revert()
            if reverted:
                self._boot_spare()
            return reverted
        with self._lock:
            if self._spare is not spare:  # stopped meanwhile
                return False
            used, self._active, self._endpoint = self._active, spare, booting.result()
            self._spare = self._booting = None
        self._removals.submit(used.stop)
        self._boot_spare()
        return True

    def _drop(self, spare: Provider) -> None:
        with self._lock:
            if self._spare is spare:
                self._spare = self._booting = None
        self._removals.submit(spare.stop)

    def current_endpoint(self) -> GuestEndpoint | None:
        return self._endpoint

    def stop(self) -> None:
        """Remove the desktop and its spare, also one still booting (its start fails fast once it is removed)."""
        self._closed = True
        with self._lock:
            spare, self._spare, self._booting = self._spare, None, None
        if spare is not None:
            spare.stop()
        self._active.stop()
        for worker in (self._boots, self._removals):  # a boot or removal under way has finished
            worker.submit(lambda: None).result()
        if spare is not None:
            spare.stop()  # what a start racing the first stop created
        self._endpoint = None

    def is_alive(self) -> bool:
        return self._active.is_alive()

    def display(self) -> "Display | None":
        return self._active.display()

    def save_fork(self) -> Path:
        return self._active.save_fork()

    def load_fork(self, fork: Path) -> None:
        self._active.load_fork(fork)

    def describe(self) -> dict[str, Any]:
        facts = self._active.describe()
        booting = self._booting
        if booting is not None:
            facts["warm_spare"] = ("booting" if not booting.done() else
                                   "ready" if booting.exception() is None else f"failed: {booting.exception()}")
        return facts

    def label(self) -> str:
        return self._active.label()
