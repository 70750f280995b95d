"""GET /health keeps the old bridge's keys with honest meanings; `rayenv status` shows every pool."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray
from fastapi.testclient import TestClient

from rayenv import EnvPool
from rayenv.sidecar import create_app

OLD_BRIDGE_KEYS = {"status", "provider", "observation_type", "screenshot_source", "kvm_available", "kvm_device",
                   "env_status", "message"}
NAMESPACE = "rayenv-sidecar"


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    os.environ["RAYENV_FAKE_DIR"] = str(tmp_path_factory.mktemp("fake"))
    context = ray.init(num_cpus=1, resources={"osworld_env": 2}, include_dashboard=False, log_to_driver=False)
    pool = EnvPool.create(name="side", size=2, provider="fakes:FakeProvider", namespace=NAMESPACE, health_interval=0.5)
    yield pool, context.address_info["gcs_address"]
    pool.shutdown()
    ray.shutdown()


def test_health_reports_the_old_keys_and_the_pool(pool):
    health = TestClient(create_app("side", NAMESPACE)).get("/health").json()
    assert OLD_BRIDGE_KEYS <= health.keys()
    assert health["status"] == "ok" and health["env_status"] == "initialized"
    assert health["kvm_available"] is True and health["kvm_device"] == "/dev/kvm"
    assert (health["pool_size"], health["healthy"], health["ray_connected"]) == (2, 2, True)
    assert health["provider"] == "fakes:FakeProvider" and health["observation_type"] == "screenshot"


def test_health_without_the_pool_says_not_initialized_and_why(pool):
    health = TestClient(create_app("missing", NAMESPACE)).get("/health").json()
    assert health["status"] == "degraded" and health["env_status"] == "not_initialized"
    assert "no pool 'missing'" in health["message"]


def test_health_recovers_after_a_dead_desktop_is_replaced(pool):
    from fakes import kill_file

    handle, _ = pool
    app = TestClient(create_app("side", NAMESPACE))
    kill_file(handle.status()["slots"][0]["env"]).touch()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        health = app.get("/health").json()
        if health["replacements"] >= 1 and health["env_status"] == "initialized":
            break
        time.sleep(0.5)
    assert health["replacements"] >= 1 and health["env_status"] == "initialized" and health["healthy"] == 2


def test_rayenv_status_lists_every_pool_as_json(pool):
    _, address = pool
    rayenv = str(Path(sys.executable).with_name("rayenv"))
    done = subprocess.run([rayenv, "status", "--json", "--address", address], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    pools = {p["name"]: p for p in json.loads(done.stdout)}
    assert pools["side"]["size"] == 2 and pools["side"]["namespace"] == NAMESPACE
