"""One way to wait for a real system to reach a state: poll it, and fail by naming what did not happen.

Used by production code (a guest server's port file, a container's health, a tunnel's listener, a
pool's healthy count) and by the tests alike, so every wait has a deadline, an interval and an
error that says what was awaited and what the system looked like when time ran out.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any, Awaitable, Callable


class WaitTimeout(TimeoutError):
    """The awaited state did not come within the timeout (the default error of :func:`wait_until`)."""


Condition = Callable[[], Any]
"""Returns something truthy once the state is reached (async conditions: :func:`wait_until_async`)."""


def _message(what: str, condition: Callable[..., Any], timeout: float, explain: Callable[[], str]) -> str:
    detail = explain()
    return f"{what or getattr(condition, '__name__', 'condition')} did not happen within {timeout:g}s" + (
        f": {detail}" if detail else "")


class _Reports:
    """Calls ``progress(elapsed)`` once per ``every`` seconds of waiting."""

    def __init__(self, progress: Callable[[float], Any] | None, every: float) -> None:
        self.progress, self.every, self.due = progress, every, every

    def tick(self, elapsed: float) -> None:
        if self.progress is not None and elapsed >= self.due:
            self.progress(elapsed)
            self.due += self.every


def wait_until(condition: Condition, timeout: float, *, interval: float = 1.0, what: str = "",
               explain: Callable[[], str] = str, error: Callable[[str], BaseException] = WaitTimeout,
               progress: Callable[[float], Any] | None = None, progress_every: float = 10.0) -> float:
    """Call ``condition`` every ``interval`` seconds until it returns something truthy; return the seconds
    that took. After ``timeout`` raise ``error(message)``, the message naming ``what`` (default: the
    condition's name) and whatever ``explain()`` says of the state then. An exception ``condition``
    raises (the system failed for good) ends the wait at once. ``progress(seconds)``, if given, is
    called every ``progress_every`` seconds of waiting, e.g. to log that a slow boot is still awaited.

    >>> wait_until(lambda: True, timeout=1)
    0.0
    >>> wait_until(lambda: False, timeout=0.05, interval=0.01, what="the port file")
    Traceback (most recent call last):
    ...
    rayenv.waiting.WaitTimeout: the port file did not happen within 0.05s
    >>> waited = []
    >>> _ = wait_until(lambda: len(waited) == 2, timeout=5, interval=0.01, progress=waited.append, progress_every=0.02)
    >>> len(waited), waited[0] >= 0.02
    (2, True)
    """
    start, reports = time.monotonic(), _Reports(progress, progress_every)
    while True:
        if condition():
            return round(time.monotonic() - start, 1)
        elapsed = time.monotonic() - start
        if elapsed >= timeout:
            raise error(_message(what, condition, timeout, explain))
        reports.tick(elapsed)
        time.sleep(min(interval, max(0.0, start + timeout - time.monotonic())))


async def wait_until_async(condition: Callable[[], Any | Awaitable[Any]], timeout: float, *, interval: float = 1.0,
                           what: str = "", explain: Callable[[], str] = str,
                           error: Callable[[str], BaseException] = WaitTimeout,
                           progress: Callable[[float], Any] | None = None, progress_every: float = 10.0) -> float:
    """:func:`wait_until` for an event loop: sleeps without blocking it; ``condition`` may be a coroutine function."""
    start, reports = time.monotonic(), _Reports(progress, progress_every)
    while True:
        reached = condition()
        if inspect.isawaitable(reached):
            reached = await reached
        if reached:
            return round(time.monotonic() - start, 1)
        elapsed = time.monotonic() - start
        if elapsed >= timeout:
            raise error(_message(what, condition, timeout, explain))
        reports.tick(elapsed)
        await asyncio.sleep(min(interval, max(0.0, start + timeout - time.monotonic())))
