"""scripts/verl-venv.sh: rayenv installed in the trainer venv, Ray pinned to the cluster's (issues 10, 12.9)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "verl-venv.sh"

pytestmark = [pytest.mark.verl, pytest.mark.slow]


def outside_the_checkout(tmp_path: Path) -> dict:
    """How a user's job runs: its own directory, no PYTHONPATH pointing into the checkout."""
    return {"cwd": tmp_path, "env": {k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
            "capture_output": True, "text": True, "timeout": 120}


def verl_venv() -> Path:
    done = subprocess.run([str(SCRIPT)], capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    return Path(done.stdout.strip().splitlines()[-1])


def pinned_ray() -> str:
    return re.search(r'"ray\[default\]==([^"]+)"', (REPO / "pyproject.toml").read_text()).group(1)


def test_the_verl_venv_imports_rayenv_and_has_the_rayenv_command_outside_the_checkout(tmp_path):
    venv = verl_venv()
    subprocess.run([str(venv / "bin" / "pip"), "uninstall", "-q", "-y", "rayenv"], check=True, capture_output=True)
    venv = verl_venv()  # a venv that lost rayenv gets it back
    imported = subprocess.run([str(venv / "bin" / "python"), "-c", "import rayenv; print(rayenv.__file__)"],
                              **outside_the_checkout(tmp_path))
    assert imported.returncode == 0, imported.stderr
    assert Path(imported.stdout.strip()) == REPO / "rayenv" / "__init__.py"
    cli = subprocess.run([str(venv / "bin" / "rayenv"), "--help"], **outside_the_checkout(tmp_path))
    assert cli.returncode == 0, cli.stderr
    assert "worker" in cli.stdout and "status" in cli.stdout


def test_the_ray_pin_comes_from_pyproject_and_matches_the_env_host_venv():
    venv = verl_venv()
    versions = {python: subprocess.run([str(python), "-c", "import ray; print(ray.__version__)"], capture_output=True,
                                       text=True, check=True, cwd="/").stdout.strip()
                for python in (venv / "bin" / "python", REPO / ".venv" / "bin" / "python")}
    assert set(versions.values()) == {pinned_ray()}, versions


def test_rayenv_ray_version_overrides_the_pin_and_names_another_venv():
    default = subprocess.run([str(SCRIPT), "--print"], capture_output=True, text=True, check=True).stdout
    other = subprocess.run([str(SCRIPT), "--print"], capture_output=True, text=True, check=True,
                           env={**os.environ, "RAYENV_RAY_VERSION": "2.0.0"}).stdout
    assert default != other
