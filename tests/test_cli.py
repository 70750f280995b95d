"""The commands README.md tells users to run, run as written (with smaller sizes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

RAYENV = str(Path(sys.executable).with_name("rayenv"))
REPO = Path(__file__).resolve().parents[1]


def rayenv(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([RAYENV, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO)


def test_help_lists_every_command():
    out = rayenv("--help").stdout
    for command in ("demo", "pool", "desktop", "status", "sidecar", "tunnel"):
        assert command in out


def test_show_config_prints_the_resolved_pool_config_without_starting_anything():
    done = rayenv("pool", "create", "--config", "configs/pool.yaml", "--size", "3", "--provider", "process",
                  "--show-config")
    config = yaml.safe_load(done.stdout)["pool"]
    assert done.returncode == 0 and config["size"] == 3 and config["desktop"]["provider"] == "process"


@pytest.mark.slow
def test_the_demo_scores_a_scripted_episode_on_a_real_desktop():
    done = rayenv("demo", "--provider", "process", "--size", "1", "--width", "1280", "--height", "720", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["provider"] == "process"
    assert [(e["score"], e["error"]) for e in summary["episodes"]] == [(1.0, None)]
