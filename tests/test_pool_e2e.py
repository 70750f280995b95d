"""EnvPool on a real two-node Ray cluster with real desktops (issue 3's acceptance).

The head runs the driver; a second `ray start` node alone advertises `osworld_env`, as an env host
does. Desktops are desktop-lite containers (Docker) so that `docker kill` and orphan reaping are
real; the trainer-side virtualenv (no desktop-env) plays the second driver.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker
import pytest
import ray

from rayenv import DesktopUnavailable, EnvPool, InvalidAction, InvalidTaskConfig
from rayenv.engine.containers import LABEL_ACTOR, LABEL_OWNER
from rayenv.env.tasks import load_tasks
from rayenv.tools.localcluster import ray_cluster
from rayenv.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.docker]

REPO = Path(__file__).resolve().parents[1]
TRAINER_PYTHON = REPO / ".venv-trainer" / "bin" / "python"
SCREEN = {"screen_width": 1280, "screen_height": 720}
NAMESPACE = "rayenv-e2e"


def solvable_task() -> dict:
    return next(t for t in load_tasks(REPO / "OSWorld" / "tasks") if t["id"] == "mousepad-save-hello")


def owned_containers(owner: str) -> list:
    return docker.from_env().containers.list(all=True, filters={"label": f"{LABEL_OWNER}={owner}"})


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    python = sys.executable
    with ray_cluster(tmp_path_factory.mktemp("e2e"), base_port=26400, head_python=python, env_python=python,
                     env_units=4) as running:
        ray.init(address=running.address, namespace=NAMESPACE, log_to_driver=False)
        running.env_node_id = next(n["NodeID"] for n in ray.nodes()
                                   if n["Alive"] and "osworld_env" in n["Resources"])
        yield running
        ray.shutdown()


@pytest.fixture(scope="module")
def pool(cluster):
    from rayenv.desktop_lite.build import build_image

    build_image()
    pool = EnvPool.create(name="e2e", size=4, provider="lite", namespace=NAMESPACE, health_interval=2.0,
                          desktop={"provider": "lite", **SCREEN}, env={"default_pause": 0.2})
    yield pool
    pool.shutdown()
    assert owned_containers("e2e") == []
    dangling = docker.from_env().volumes.list(filters={"dangling": True})
    assert dangling == [], f"dangling volumes left: {[v.name for v in dangling]}"


def test_the_pool_lands_only_on_the_node_that_advertises_osworld_env(pool, cluster):
    status = pool.status()
    assert status.healthy == 4
    assert {slot.node_id for slot in status.slots} == {cluster.env_node_id}


def test_four_desktops_run_an_episode_concurrently_and_get_the_evaluators_score(pool):
    task = solvable_task()
    actions = list(task["rayenv_solution"]) + ["DONE"]
    actions = ["WAIT"] * (5 - len(actions)) + actions

    def episode(env) -> float:
        ray.get(env.reset.remote(task))
        for action in actions:
            ray.get(env.step.remote(action))
        return ray.get(env.evaluate.remote())

    envs = list(pool.envs().values())
    with ThreadPoolExecutor(4) as workers:
        scores = list(workers.map(episode, envs))
    assert scores == [1.0] * 4


def test_a_second_driver_from_the_trainer_install_attaches_and_sees_the_same_desktops(pool, cluster):
    assert TRAINER_PYTHON.exists(), "run scripts/bootstrap.sh --trainer to create the trainer virtualenv"
    script = ("import json, ray, importlib.util as u; from rayenv import EnvPool; "
              f"ray.init(address={cluster.address!r}, log_to_driver=False); "
              f"p = EnvPool.connect('e2e', namespace={NAMESPACE!r}); "
              "print(json.dumps({'envs': sorted(p.healthy_names()), 'desktop_env': u.find_spec('desktop_env') is not None, "
              "'torch': u.find_spec('torch') is not None}))")
    out = subprocess.run([str(TRAINER_PYTHON), "-c", script], capture_output=True, text=True, timeout=120,
                         env={k: v for k, v in cluster.env().items() if k != "PYTHONPATH"})
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen == {"envs": sorted(pool.healthy_names()), "desktop_env": False, "torch": False}


def test_concurrent_calls_on_one_desktop_run_one_at_a_time(pool):
    with pool.lease(timeout=120) as lease:
        env = lease.env
        ray.get(env.reset.remote(None))
        started = time.monotonic()
        refs = [env.step.remote("time.sleep(0.6)", 0) for _ in range(3)]
        results = ray.get(refs)
        assert time.monotonic() - started >= 1.8
        assert [r["info"]["step"] for r in results] == [1, 2, 3]


def test_bad_actions_and_bad_tasks_get_clear_errors_and_the_desktop_stays_usable(pool):
    with pool.lease(timeout=120) as lease:
        env = lease.env
        ray.get(env.reset.remote(None))
        with pytest.raises(InvalidAction, match="not valid Python"):
            ray.get(env.step.remote("pyautogui.click(("))
        with pytest.raises(InvalidTaskConfig, match="evaluator"):
            ray.get(env.reset.remote({"id": "x", "instruction": "no evaluator"}))
        with pytest.raises(InvalidTaskConfig, match="metric 'no_such_metric'"):
            ray.get(env.reset.remote({"id": "x", "instruction": "i", "evaluator": {"func": "no_such_metric"}}))
        assert ray.get(env.step.remote("pyautogui.moveTo(5, 5)"))["observation"]["screenshot"][:4] == b"\x89PNG"


def test_a_docker_killed_desktop_fails_its_step_by_name_and_is_replaced_without_leaks(pool):
    lease = pool.acquire(timeout=120)
    ray.get(lease.env.reset.remote(None))
    container = ray.get(lease.env.status.remote())["details"]["container_name"]
    docker.from_env().containers.get(container).kill()
    with pytest.raises(DesktopUnavailable) as failure:
        ray.get(lease.env.step.remote("pyautogui.moveTo(5, 5)"))
    assert failure.value.env == lease.env_name
    pool.release(lease, broken=True)
    pool.wait_healthy(timeout=180)
    names = [c.name for c in owned_containers("e2e")]
    assert container not in names and len(names) == 4


def test_a_kill_9_of_an_actor_worker_is_healed_and_its_container_reaped(pool):
    victim = pool.status().slots[0]
    status = ray.get(pool.envs()[victim.env_name].status.remote())
    os.kill(status["details"]["worker_pid"], signal.SIGKILL)

    def healed() -> bool:
        status = pool.status()
        slot = status.slots[0]
        return status.healthy == 4 and slot.generation > victim.generation and slot.state == "idle"

    wait_until(healed, timeout=180)
    live = {slot.actor_id for slot in pool.status().slots}
    assert victim.actor_id not in live

    def only_the_live_actors_have_containers() -> bool:
        return {c.labels[LABEL_ACTOR] for c in owned_containers("e2e")} == live

    wait_until(only_the_live_actors_have_containers, timeout=60)

