"""The cluster-side install (``pip install .``, no extras) runs every cluster-side command (issue 12, item 8).

The virtualenv is scripts/bootstrap.sh's trainer venv (``pip install . pytest``), found or made at the
path bootstrap.sh gives it (keyed by pyproject.toml and python3's version), so a changed dependency
list gets a fresh venv. Every command runs outside the checkout with no PYTHONPATH, as on a GPU box:
the checkout's folder is never what gets imported by accident.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENVS = Path.home() / ".cache" / "rayenv" / "venvs"

pytestmark = pytest.mark.slow


def bootstrap_hash() -> str:
    """What scripts/bootstrap.sh keys its venvs by: ``(cat pyproject.toml; python3 --version) | sha256sum``."""
    version = subprocess.run(["python3", "--version"], capture_output=True, check=True).stdout
    return hashlib.sha256((REPO / "pyproject.toml").read_bytes() + version).hexdigest()[:12]


def light_venv() -> Path:
    """The trainer venv for this pyproject.toml; made here (once, under a lock) when bootstrap.sh has not yet."""
    venv = VENVS / f"trainer-{bootstrap_hash()}"
    VENVS.mkdir(parents=True, exist_ok=True)
    with open(VENVS / ".trainer.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (venv / ".complete").exists():
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run(["python3", "-m", "venv", str(venv)], check=True, timeout=300)
            done = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(REPO), "pytest"],
                                  capture_output=True, text=True, timeout=1500, cwd="/")
            assert done.returncode == 0, done.stderr[-3000:]
            (venv / ".complete").touch()
    return venv


@pytest.fixture(scope="module")
def venv() -> Path:
    return light_venv()


def outside_the_checkout(venv: Path, tmp_path: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(venv / "bin" / argv[0]), *argv[1:]], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env=env)


@pytest.mark.parametrize("command", [("head", "start", "--help"), ("status", "--help")])
def test_the_light_install_shows_the_help_of_cluster_side_commands(venv, tmp_path, command):
    done = outside_the_checkout(venv, tmp_path, "rayenv", *command)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Usage: rayenv " + " ".join(c for c in command if c != "--help") in done.stdout


def test_the_light_install_prints_the_tunnel_plan(venv, tmp_path):
    done = outside_the_checkout(venv, tmp_path, "rayenv", "tunnel", "plan")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ray start --head" in done.stdout and "ExitOnForwardFailure=yes" in done.stdout


def test_the_light_install_imports_the_pool_without_desktop_env(venv, tmp_path):
    script = ("import importlib.util, rayenv.pool.handle, rayenv; "
              "print(rayenv.__file__); print(importlib.util.find_spec('desktop_env') is None)")
    done = outside_the_checkout(venv, tmp_path, "python", "-c", script)
    assert done.returncode == 0, done.stderr[-2000:]
    where, light = done.stdout.split()
    assert not Path(where).is_relative_to(tmp_path) and light == "True"
