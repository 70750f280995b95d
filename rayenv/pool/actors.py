"""A pool's named Ray actors, and waiting for killed ones to be gone.

``ray.kill`` returns once the kill is asked for: the actor's name stays listed until Ray has seen its
worker exit, and an env actor killed mid-revert may have sent Docker a request the final reap must see.
A shutdown that returned then would leave a name behind its caller's back (a test found the pool's
manager still listed right after ``shutdown()``), so the pool waits until the names are gone."""

from __future__ import annotations

import logging
from collections.abc import Callable

import ray

from ..waiting import WaitTimeout, wait_until

logger = logging.getLogger(__name__)

#: Seconds a shutdown waits for killed actors to leave Ray's name list (they go in well under one here).
GONE_TIMEOUT = 10.0


def named(namespace: str, match: Callable[[str], bool]) -> list[str]:
    """Names of the live actors of ``namespace`` that ``match`` accepts (blocking: asks the GCS)."""
    return [actor["name"] for actor in ray.util.list_named_actors(all_namespaces=True)
            if actor["namespace"] == namespace and match(actor["name"])]


def wait_gone(namespace: str, match: Callable[[str], bool], what: str, timeout: float = GONE_TIMEOUT) -> None:
    """Wait until no actor ``match`` accepts is listed in ``namespace``; past ``timeout`` log which still are (the
    shutdown goes on: its final reap does not depend on the names)."""
    try:
        wait_until(lambda: not named(namespace, match), timeout, interval=0.05, what=what,
                   explain=lambda: "still listed: " + ", ".join(named(namespace, match)))
    except WaitTimeout as exc:
        logger.warning("%s", exc)
