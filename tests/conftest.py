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


#: Programs a fast test must not start (an X server, a desktop session, Docker, QEMU, a Ray node).
HEAVY_PROGRAMS = ("Xvfb", "desktop-session", "docker", "dockerd", "qemu-system-x86_64", "ray")


class StartsHeavyParts(RuntimeError):
    """A test selected by ``-m "not slow"`` tried to start Ray, a container, QEMU or an X server."""


def _refuse(what: str) -> StartsHeavyParts:
    return StartsHeavyParts(f"the fast tier (-m 'not slow') must not start {what}: mark this test "
                            "@pytest.mark.slow (and docker/netns where it applies)")


def _guard_fast_tier() -> None:
    """Make starting Ray, a Docker container, QEMU or an X server raise, so a test that needs them and is not marked
    slow fails in the fast tier instead of quietly making it slow."""
    import subprocess

    import ray

    def no_ray(*args, **kwargs):
        raise _refuse("Ray (ray.init)")

    ray.init = no_ray
    try:
        from docker.models.containers import ContainerCollection
    except ImportError:  # pragma: no cover - docker-py is a dependency of the env host
        pass
    else:
        def no_container(*args, **kwargs):
            raise _refuse("a Docker container")

        ContainerCollection.run = ContainerCollection.create = no_container  # asking Docker questions is fine
    original = subprocess.Popen.__init__

    def guarded(self, args, *rest, **kwargs):
        argv = [args] if isinstance(args, (str, bytes, os.PathLike)) else list(args)
        words = [os.path.basename(str(word)) for word in argv[:3]]
        heavy = next((w for w in words if w in HEAVY_PROGRAMS), None)
        if heavy is not None:
            raise _refuse(heavy)
        original(self, args, *rest, **kwargs)

    subprocess.Popen.__init__ = guarded


def _watch_for_ray_in_subprocesses(config) -> None:
    """Give every process of this session a private Ray temp dir (``RAY_TMPDIR`` is inherited): the guard above
    cannot reach a subprocess (a CLI command, a doc block), but a local Ray it starts leaves a session there."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="rayenv-fast-ray-"))  # short: Ray's socket paths must stay < 108 bytes
    atexit.register(shutil.rmtree, ray_tmp, True)
    os.environ["RAY_TMPDIR"] = str(ray_tmp)
    config._rayenv_ray_tmp = ray_tmp


def pytest_configure(config):
    if "not slow" in (config.option.markexpr or "").replace("  ", " "):
        _guard_fast_tier()
        _watch_for_ray_in_subprocesses(config)


#: The fast tier's budget (issue 22): ``-m "not slow"`` must finish within it on a CI machine.
FAST_TIER_SECONDS = 120.0


def pytest_sessionstart(session):
    import time

    session.config._rayenv_started = time.monotonic()


def pytest_sessionfinish(session, exitstatus):
    import time

    if "not slow" not in (session.config.option.markexpr or "") or exitstatus != 0:
        return
    ray_sessions = sorted(p.name for p in session.config._rayenv_ray_tmp.glob("ray/session_2*"))
    if ray_sessions:
        print(f"\na fast test started Ray through a subprocess ({', '.join(ray_sessions)}): mark it "
              "@pytest.mark.slow (a doc block: <!-- doc-test: slow: WHAT -->)")
        session.exitstatus = 1
        return
    took = time.monotonic() - session.config._rayenv_started
    if took > FAST_TIER_SECONDS and not session.config.option.keyword:
        print(f"\nthe fast tier took {took:.0f}s, over its {FAST_TIER_SECONDS:.0f}s budget: "
              "mark the slow tests @pytest.mark.slow")
        session.exitstatus = 1
