"""Shared fixtures. Tests start real parts (Ray, Xvfb, Docker) and own their teardown."""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent

# Ray's token authentication, with a token of this test session's own (never the user's ~/.ray one).
# Set before anything imports Ray: its C++ core reads the mode once, at import.
_AUTH_DIR = Path(tempfile.mkdtemp(prefix="rayenv-tests-auth-"))
atexit.register(shutil.rmtree, _AUTH_DIR, True)
(_AUTH_DIR / "auth_token").write_text(secrets.token_hex(32))
os.environ.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(_AUTH_DIR / "auth_token"),
                   "RAY_USAGE_STATS_ENABLED": "0"})

# Ray workers started by tests must import tests/fakes.py and the checkout's rayenv.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), str(REPO), os.environ.get("PYTHONPATH", "")) if p)
sys.path.insert(0, str(TESTS))


@pytest.fixture
def fake_dir(tmp_path, monkeypatch):
    """A private directory for fake desktops' kill switches, visible to Ray workers through the env."""
    monkeypatch.setenv("RAYENV_FAKE_DIR", str(tmp_path))
    return tmp_path
