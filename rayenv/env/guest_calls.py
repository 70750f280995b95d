"""Every HTTP call desktop-env makes to one guest while it sets a task up or scores it, with whether it failed.

desktop-env's getters swallow guest failures: ``PythonController.get_file`` returns ``None`` after
three refused attempts, ``get_vm_command_line`` returns ``None`` on an HTTP 500, and the metric
then scores the missing value 0.0, exactly like a task the agent did not solve. Both reach the
guest through ``requests`` (the controller's methods and the getters' own ``requests.post`` calls,
each on a fresh ``Session``), so wrapping ``requests.Session.send`` sees every one of them, whoever
made it. The wrapper is installed once per process and only looks at a call when the calling thread
is inside :func:`watching` and the call goes to that guest; everything else passes through untouched.

Setup is held to a stricter standard than scoring (``during="setup"``): desktop-env's
``SetupController`` only logs a refused ``/setup/launch``, ``/setup/activate_window`` or
``/setup/upload``, so an episode would start on a desktop that is not in the task's state.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator
from urllib.parse import urlsplit

import requests

_watch = threading.local()
_install_lock = threading.Lock()
_installed: list[Any] = []  # the original Session.send, once wrapped


@dataclass
class CallLog:
    """The guest calls of one watched block. A retry that succeeds clears the failure of the same request."""

    base_url: str
    during: str = "evaluation"
    _failed: dict[tuple[str, str, Any], str] = field(default_factory=dict)

    def covers(self, url: str) -> bool:
        return url.startswith(self.base_url + "/")

    def record(self, request: requests.PreparedRequest, problem: str | None) -> None:
        key = (request.method or "", request.url or "", request.body)
        if problem is None:
            self._failed.pop(key, None)
        else:
            self._failed[key] = f"{request.method} {urlsplit(request.url or '').path}: {problem}"

    def failures(self) -> list[str]:
        """One line per request that failed and was not retried successfully."""
        return list(self._failed.values())


#: Routes whose 404 leaves a task's setup where it wanted to be: nothing to close is closed.
SETUP_404_IS_DONE = ("/setup/close_window",)


def problem_of(response: requests.Response, streamed: bool, during: str = "evaluation") -> str | None:
    """What is wrong with a guest's answer, or None when it is an answer a metric may score or setup may go on from.

    While scoring, 404 is an answer (the file or window does not exist: a task the agent did not do
    scores 0); during setup it is a failure (the file to open or the window to raise is not there),
    except where the step wanted the thing gone (:data:`SETUP_404_IS_DONE`). An ``error`` status
    without an exit code means the guest could not run the command at all (OSWorld's server answers so
    on an exception), a negative exit code that it was killed or timed out. A command that ran and
    exited non-zero is not a failure in either phase: tasks run ``pkill`` and ``rm -f`` that may find nothing.
    """
    if response.status_code == 404 and (during != "setup" or urlsplit(response.url).path in SETUP_404_IS_DONE):
        return None
    if response.status_code >= 400:
        return f"HTTP {response.status_code}: {response.text.strip()[:300]}"
    if streamed or "json" not in response.headers.get("Content-Type", ""):
        return None
    try:
        data = response.json()
    except ValueError:
        return "the guest answered malformed JSON"
    if not isinstance(data, dict) or data.get("status") != "error":
        return None
    code = data.get("returncode")
    if isinstance(code, int) and code >= 0:
        return None  # the command ran and exited non-zero: its output is the evidence
    return f"the guest could not run it: {str(data.get('message') or data.get('error') or data)[:300]}"


def _send(session: requests.Session, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
    log: CallLog | None = getattr(_watch, "log", None)
    original = _installed[0]
    if log is None or not log.covers(request.url or ""):
        return original(session, request, **kwargs)
    try:
        response = original(session, request, **kwargs)
    except requests.RequestException as exc:
        log.record(request, f"{type(exc).__name__}: {str(exc)[:300]}")
        raise
    log.record(request, problem_of(response, bool(kwargs.get("stream")), log.during))
    return response


def _install() -> None:
    with _install_lock:
        if not _installed:
            _installed.append(requests.Session.send)
            requests.Session.send = _send  # type: ignore[method-assign]


@contextmanager
def watching(base_url: str, during: str = "evaluation") -> Iterator[CallLog]:
    """Record this thread's calls to the guest at ``base_url`` for the duration of the block, judged as ``during``
    (``"evaluation"`` or ``"setup"``, see :func:`problem_of`)."""
    _install()
    previous = getattr(_watch, "log", None)
    _watch.log = log = CallLog(base_url.rstrip("/"), during)
    try:
        yield log
    finally:
        _watch.log = previous
