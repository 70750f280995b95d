"""GET /health keeps the old bridge's keys with honest meanings; `rayenv status` shows every pool."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import ray
from fastapi.testclient import TestClient

from rayenv import EnvPool
from rayenv.engine.kvm import kvm_status
from rayenv.ops.sidecar import create_app
from rayenv.waiting import wait_until

OLD_BRIDGE_KEYS = {"status", "provider", "observation_type", "screenshot_source", "kvm_available", "kvm_device",
                   "env_status", "message"}
NAMESPACE = "rayenv-sidecar"

pytestmark = [pytest.mark.slow]  # a real Ray (fake desktops)


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
    kvm = kvm_status()
    assert health["kvm_available"] is kvm.available and health["kvm_device"] == "/dev/kvm"
    assert kvm.message in health["message"]
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
    kill_file(handle.status().slots[0].env_name).touch()
    health: dict = {}

    def replaced() -> bool:
        health.update(app.get("/health").json())
        return health["replacements"] >= 1 and health["env_status"] == "initialized"

    wait_until(replaced, 30, interval=0.5, what="/health reporting the replaced desktop", explain=lambda: str(health))
    assert health["replacements"] >= 1 and health["env_status"] == "initialized" and health["healthy"] == 2


def test_rayenv_status_lists_every_pool_as_json(pool):
    _, address = pool
    rayenv = str(Path(sys.executable).with_name("rayenv"))
    done = subprocess.run([rayenv, "status", "--json", "--address", address], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    pools = {p["name"]: p for p in json.loads(done.stdout)}
    assert pools["side"]["size"] == 2 and pools["side"]["namespace"] == NAMESPACE


def test_the_old_bridge_endpoints_run_an_episode_on_a_pool_desktop_and_never_fake_a_score(pool):
    handle, _ = pool
    app = TestClient(create_app("side", NAMESPACE))
    task = {"id": "bridge-client", "instruction": "Move the pointer.", "config": [],
            "evaluator": {"func": "exact_match", "result": {"type": "vm_file", "path": "/tmp/x", "dest": "x"},
                          "expected": {"type": "rule", "rules": {"expected": "x"}}}}
    reset = app.post("/env/reset", json={"task_config": task}).json()
    assert reset["is_done"] is False and reset["env_error"] == ""
    assert handle.status().counts.get("leased") == 1
    step = app.post("/env/step", json={"prediction": "```python\npyautogui.moveTo(1, 1)\n```"}).json()
    assert step["is_done"] is False and step["obs_messages"][-1]["role"] == "user"
    history = app.get("/env/history_messages").json()
    assert [m["role"] for m in history] == ["system", "user", "assistant", "user"]
    assert history[1]["content"][1]["image"].startswith("data:image/png;base64,")
    from fakes import kill_file

    kill_file(next(s.env_name for s in handle.status().slots if s.state == "leased")).touch()
    evaluate = app.post("/env/evaluate")  # the desktop died: no score, and no 0.0 either
    assert evaluate.status_code == 502 and "DesktopUnavailable" in evaluate.json()["detail"]
    assert handle.status().counts.get("leased", 0) == 0
