"""A strict client for the OSWorld guest HTTP API, used on the hot path (every step).

desktop-env's ``PythonController`` speaks the same API but returns ``None`` on any failure and
retries with sleeps, which would turn a dead desktop into an empty observation or a 0.0 reward.
This client keeps one keep-alive session, bounds every call with a timeout and raises typed errors
that name the desktop. desktop-env's own controllers are still used for task setup and evaluation
(see :mod:`rayenv.env.evaluation`), where OSWorld's semantics matter more than latency.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests

from ..errors import ActionFailed, DesktopUnavailable, EnvTimeout
from .actions import PYAUTOGUI_PRELUDE

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


#: Appended to every action: the action's process reports where it left the pointer, so the step's screenshot
#: (taken outside the guest) draws it without asking the guest again (a second HTTP round trip: ~20-40 ms into a
#: VM under TCG). An action that exits early or raises reports nothing; the screenshot then asks.
POINTER_REPORT = "rayenv-pointer-after-action"
#: on a line of its own whatever the action printed last; a pointer that cannot be read fails no action
REPORT_POINTER = (f"\ntry:\n    print('\\n{POINTER_REPORT}', *pyautogui.position())\n"
                   "except Exception:\n    pass\n")


@dataclass(frozen=True)
class ExecResult:
    output: str
    error: str
    returncode: int
    #: where the pointer was when the action finished, if it said so
    pointer: tuple[int, int] | None = None


def reported_pointer(output: str) -> tuple[str, tuple[int, int] | None]:
    """The action's own output, and the pointer position its last line reports (:data:`POINTER_REPORT`), if any."""
    own, marker, report = output.rpartition(f"\n{POINTER_REPORT} ")
    fields = report.split()
    if not marker or len(fields) != 2 or not all(field.lstrip("-").isdigit() for field in fields):
        return output, None
    return own, (int(fields[0]), int(fields[1]))


class GuestClient:
    """Calls one desktop's guest server. ``env`` is the desktop's name, used in every error; ``ready`` is called
    before every request but the pool's probe and returns once the guest may be asked (a reset's last work may
    still run: see :meth:`rayenv.providers.base.Provider.settle`)."""

    def __init__(self, url: str, *, env: str, timeout: float = 30.0, ready: Callable[[], None] = lambda: None) -> None:
        self.url = url.rstrip("/")
        self.env = env
        self.timeout = timeout
        self._ready = ready
        self._session = requests.Session()

    def close(self) -> None:
        self._session.close()

    def _request(self, method: str, path: str, *, phase: str, timeout: float | None = None,
                 **kwargs: Any) -> requests.Response:
        self._ready()
        limit = timeout or self.timeout
        # One fresh try after a dropped connection (a VM's snapshot revert cuts kept-alive ones), except
        # for an action: it may have run before the connection broke, and a step is never replayed.
        attempts = 1 if path == "/execute" else 2
        for attempt in range(1, attempts + 1):
            try:
                response = self._session.request(method, self.url + path, timeout=limit, **kwargs)
                break
            except requests.Timeout:
                raise EnvTimeout(f"guest API {path} did not answer within {limit:.0f}s", env=self.env, phase=phase,
                                 hint="raise the timeout, or let the pool replace this desktop") from None
            except requests.ConnectionError as exc:
                if attempt < attempts:
                    continue
                raise DesktopUnavailable(f"guest API at {self.url} is unreachable: {exc.__class__.__name__}",
                                         env=self.env, phase=phase, hint="the desktop is down; release the lease "
                                                                         "as broken so the pool replaces it") from None
        if response.status_code >= 500 and path in ("/screenshot", "/screen_size", "/platform"):
            raise DesktopUnavailable(f"guest API {path} answered HTTP {response.status_code}: {response.text[:200]}",
                                     env=self.env, phase=phase, hint="the desktop is unhealthy; the pool replaces it")
        return response

    def screenshot(self) -> bytes:
        response = self._request("GET", "/screenshot", phase="observe")
        if not response.content.startswith(PNG_MAGIC):
            raise DesktopUnavailable(f"/screenshot returned {len(response.content)} bytes that are not a PNG",
                                     env=self.env, phase="observe", hint="the desktop's X server may be down")
        return response.content

    def cursor_position(self) -> tuple[int, int]:
        """Where the pointer is (screen pixels): what a screenshot taken outside the guest draws it at."""
        response = self._request("GET", "/cursor_position", phase="observe")
        try:
            x, y = response.json()
            return int(x), int(y)
        except (ValueError, TypeError) as exc:
            raise DesktopUnavailable(f"/cursor_position answered HTTP {response.status_code} without a position: "
                                     f"{exc}", env=self.env, phase="observe",
                                     hint="the desktop's X server may be down") from None

    def accessibility_tree(self) -> str | None:
        response = self._request("GET", "/accessibility", phase="observe")
        return response.json().get("AT") if response.ok else None

    def terminal(self) -> str | None:
        response = self._request("GET", "/terminal", phase="observe")
        return response.json().get("output") if response.ok else None

    def problems(self, min_free: int) -> list[str]:
        """Why this desktop cannot run a task now (home or tmp full or read-only), from its ``/health``.

        A guest without that endpoint (404: OSWorld's own VM server) reports nothing; it is then
        only checked to be answering.
        """
        response = self._request("GET", "/health", phase="health", timeout=10, params={"min_free": min_free})
        if response.status_code == 404:
            self.screen_size()
            return []
        try:
            data = response.json()
        except ValueError:
            return [f"/health answered HTTP {response.status_code} without JSON: {response.text[:200]}"]
        problems = list(data.get("problems") or []) if isinstance(data, dict) else []
        return problems if response.ok or problems else [f"/health answered HTTP {response.status_code}: {data}"]

    def screen_size(self) -> tuple[int, int]:
        data = self._request("POST", "/screen_size", phase="status", timeout=5).json()
        return int(data["width"]), int(data["height"])

    def probe(self, timeout: float) -> None:
        """Raise a typed error unless the guest answers ``/screen_size`` within ``timeout``. On its own
        connection, not the session's: the pool probes from the actor's control group, beside any call."""
        try:
            requests.post(self.url + "/screen_size", timeout=timeout).raise_for_status()
        except requests.Timeout:
            raise EnvTimeout(f"guest API did not answer a probe within {timeout:.0f}s", env=self.env,
                             phase="probe", hint="the desktop is frozen or overloaded; the pool replaces it") from None
        except requests.RequestException as exc:
            raise DesktopUnavailable(f"guest API at {self.url} failed a probe: {type(exc).__name__}", env=self.env,
                                     phase="probe", hint="the desktop is down; the pool replaces it") from None

    def run_action(self, code: str, *, timeout: float) -> ExecResult:
        """Run pyautogui code inside the desktop; raise :class:`ActionFailed` with the guest traceback."""
        payload = {"command": ["python3", "-c", PYAUTOGUI_PRELUDE + code + REPORT_POINTER], "shell": False,
                   "timeout": timeout}
        response = self._request("POST", "/execute", phase="step", json=payload, timeout=timeout + 5)
        try:
            data = response.json()
        except ValueError:
            raise ActionFailed(f"guest /execute answered HTTP {response.status_code} without JSON",
                               env=self.env, phase="step", traceback=response.text[:2000]) from None
        output, pointer = reported_pointer(data.get("output") or "")
        result = ExecResult(output=output, error=data.get("error") or data.get("message") or "",
                            returncode=int(data.get("returncode", 0 if response.ok else -1)), pointer=pointer)
        if not response.ok or data.get("status") == "error" or result.returncode != 0:
            last_line = (result.error.strip().splitlines() or [f"exit {result.returncode}"])[-1]
            raise ActionFailed(f"action raised inside the desktop: {last_line[:300]}", env=self.env,
                               phase="step", traceback=result.error,
                               hint="the desktop is still usable; fix the action and step again")
        return result
