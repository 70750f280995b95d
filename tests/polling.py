"""Waiting for a real system to reach a state: poll, and fail by naming what did not happen."""

from __future__ import annotations

import time
from typing import Callable


def wait_until(condition: Callable[[], bool], timeout: float, what: str = "", explain: Callable[[], str] = str,
               interval: float = 1.0) -> float:
    """Poll ``condition`` every ``interval`` s; returns the seconds it took (to 0.1 s). Fails after
    ``timeout`` with ``what`` (default: the condition's name) and whatever ``explain()`` adds."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if condition():
            return round(time.monotonic() - start, 1)
        time.sleep(interval)
    raise AssertionError(f"{what or condition.__name__} did not happen within {timeout:.0f}s\n{explain()}")
