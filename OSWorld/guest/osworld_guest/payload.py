"""Reading a request's body the lenient way OSWorld's clients need.

desktop-env's controllers post JSON without always saying so in ``Content-Type``, and some send no
body at all; a missing or unparsable body reads as ``{}`` so each route answers with its own error.
"""

from __future__ import annotations

from typing import Any

from flask import request

from .commands import DEFAULT_TIMEOUT


def json_body() -> dict[str, Any]:
    """The request's JSON object, whatever its content type; ``{}`` when there is none."""
    return request.get_json(force=True, silent=True) or {}


def timeout_of(data: dict[str, Any]) -> float:
    """The ``timeout`` the request asks for, in seconds (``DEFAULT_TIMEOUT`` when absent or 0)."""
    return float(data.get("timeout") or DEFAULT_TIMEOUT)
