"""Nothing of a pool outlives ``pool.shutdown()``: after many leases with broken releases among them, and
when the shutdown lands while a released desktop's revert restarts it (issue 22's leak after a long
run). "Nothing" is checked where it would be: Docker's containers and volumes labelled with the pool's
owner, process desktops' records and processes, and the pool's named Ray actors."""

from __future__ import annotations

import psutil
import pytest
import ray

from rayenv import EnvPool
from rayenv.desktop_lite.process import run_dir
from rayenv.engine.containers import LABEL_OWNER

pytestmark = [pytest.mark.slow, pytest.mark.exclusive]  # timing-sensitive races: see pyproject

NAMESPACE = "rayenv-leaks"


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, resources={"osworld_env": 2}, include_dashboard=False, namespace=NAMESPACE,
             log_to_driver=False)
    yield
    ray.shutdown()


def leftovers(pool: str) -> dict[str, list[str]]:
    """Every trace of pool ``pool`` on this host and in Ray, by kind (all empty when it left nothing)."""
    named = ray.util.list_named_actors(all_namespaces=True) if ray.is_initialized() else []  # no Ray: no actor
    found = {"actors": [a["name"] for a in named
                        if a["name"].startswith(f"{pool}.env-") or a["name"] == f"rayenv-pool:{pool}"],
             "records": [p.name for p in run_dir(pool).glob("*.json")],
             "processes": [], "containers": [], "volumes": []}
    for process in psutil.process_iter(["pid", "cmdline", "cwd"]):
        with_pool = " ".join(process.info["cmdline"] or []) + " " + (process.info["cwd"] or "")
        if f"rayenv-{pool}-env-" in with_pool:
            found["processes"].append(f"{process.info['pid']}: {with_pool[:200]}")
    try:
        import docker

        client = docker.from_env()
        label = {"label": f"{LABEL_OWNER}={pool}"}
        found["containers"] = [c.name for c in client.containers.list(all=True, filters=label)]
        found["volumes"] = [v.name for v in client.volumes.list(filters=label)]
    except docker.errors.DockerException:  # no engine here: no container can be left either
        pass
    return found


def nothing_left(pool: str) -> bool:
    return not any(leftovers(pool).values())


def assert_nothing_left(pool: str) -> None:
    """One look, and what it saw in full when something was left (a second look may no longer see it)."""
    left = leftovers(pool)
    assert not any(left.values()), f"left of pool {pool}: {left}"


def test_fifty_leases_some_released_broken_leave_nothing_after_shutdown(cluster):
    pool = EnvPool.create(name="leak50", size=1, provider="process", namespace=NAMESPACE, health_interval=2.0,
                          desktop={"screen_width": 640, "screen_height": 480}, env={"default_pause": 0})
    try:
        for turn in range(50):
            lease = pool.acquire(timeout=180)
            if turn % 10 == 0:  # a used desktop is reverted (restarted) on release
                lease.call("step", "pyautogui.moveTo(5, 5)", timeout=60)
            pool.release(lease, broken=turn % 10 == 9)
        assert pool.status().replacements == 5
    finally:
        pool.shutdown()
    assert_nothing_left("leak50")


@pytest.mark.docker
def test_a_shutdown_while_a_released_lite_desktop_reverts_leaves_nothing(cluster):
    from rayenv.desktop_lite.build import build_image

    build_image()
    pool = EnvPool.create(name="leakrevert", size=1, provider="lite", namespace=NAMESPACE,
                          desktop={"screen_width": 640, "screen_height": 480}, env={"default_pause": 0})
    try:
        with pool.lease(timeout=120) as lease:
            ray.get(lease.env.step.remote("pyautogui.moveTo(5, 5)"))  # dirty: the release restarts it
        assert pool.status().slots[0].state == "reverting"
    finally:
        pool.shutdown()
    assert_nothing_left("leakrevert")
