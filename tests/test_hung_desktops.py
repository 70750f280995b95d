"""Hung and frozen desktops: typed errors within the configured timeouts, and short freezes survived
(issue 12, items 2-4), on a real two-node Ray cluster with desktop-lite containers frozen by ``docker pause``.

The pool is created with the shape docs/pool.md shows (``provider=`` beside ``desktop={...}``), which
used to give host-process desktops.
"""

from __future__ import annotations

import sys
import threading
import time

import docker
import pytest
import ray

from rayenv import ActionFailed, DesktopUnavailable, EnvPool, EnvTimeout
from rayenv.engine.containers import LABEL_OWNER
from rayenv.tools.localcluster import ray_cluster

pytestmark = [pytest.mark.slow, pytest.mark.docker]

NAMESPACE = "rayenv-hung"
STEP_TIMEOUT = 5.0
#: GuestClient waits this much beyond the step timeout for the guest's own timeout report.
GUEST_SLACK = 5.0


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    from rayenv.desktop_lite.build import build_image

    build_image()
    with ray_cluster(tmp_path_factory.mktemp("hung"), base_port=27500, head_python=sys.executable,
                     env_python=sys.executable, env_units=2) as running:
        ray.init(address=running.address, namespace=NAMESPACE, log_to_driver=False)
        pool = EnvPool.create(name="hung", size=2, provider="lite", namespace=NAMESPACE, health_interval=1.0,
                              desktop={"screen_width": 1280, "screen_height": 720},
                              env={"default_pause": 0, "step_timeout": STEP_TIMEOUT})
        yield pool
        pool.shutdown()
        assert containers("hung") == []
        ray.shutdown()


def containers(owner: str) -> list:
    return docker.from_env().containers.list(all=True, filters={"label": f"{LABEL_OWNER}={owner}"})


def container_of(env) -> docker.models.containers.Container:
    return docker.from_env().containers.get(ray.get(env.status.remote())["details"]["container_id"])


def test_the_documented_create_shape_makes_lite_desktops(pool):
    assert pool.status().provider == "lite"
    assert {ray.get(env.status.remote())["provider"] for env in pool.envs().values()} == {"lite"}
    assert len(containers("hung")) == 2


def test_an_action_longer_than_the_step_timeout_is_stopped_as_action_failed_and_the_desktop_is_kept(pool):
    replacements = pool.status().replacements
    with pool.lease(timeout=60) as leased:
        env = leased.env
        ray.get(env.reset.remote(None))
        started = time.monotonic()
        with pytest.raises(ActionFailed) as raised:
            ray.get(env.step.remote("import time; time.sleep(60)"))
        assert STEP_TIMEOUT <= time.monotonic() - started < STEP_TIMEOUT + GUEST_SLACK
        assert "TimeoutError" in raised.value.traceback
        assert ray.get(env.step.remote("pyautogui.moveTo(2, 2)"))["info"]["step"] == 1  # a failed action is not history
    assert pool.status().replacements == replacements


def test_a_paused_desktop_fails_its_step_with_env_timeout_within_the_step_timeout_and_is_replaced(pool):
    lease = pool.acquire(timeout=60)
    ray.get(lease.env.reset.remote(None))
    container_of(lease.env).pause()
    started = time.monotonic()
    with pytest.raises(EnvTimeout, match="did not answer"):
        ray.get(lease.env.step.remote("pyautogui.moveTo(5, 5)"))
    waited = time.monotonic() - started
    assert waited < STEP_TIMEOUT + GUEST_SLACK + 3, waited
    pool.release(lease, broken=True)
    pool.wait_healthy(timeout=120)
    assert pool.status().slots[lease.slot].generation > lease.generation
    assert len(containers("hung")) == 2  # the paused one was removed, a fresh one took its slot


def test_a_desktop_frozen_for_a_few_seconds_keeps_its_episode(pool):
    pool.wait_healthy(timeout=120)
    replacements = pool.status().replacements
    with pool.lease(timeout=60) as leased:
        env = leased.env
        ray.get(env.reset.remote(None))
        container = container_of(env)
        container.pause()
        thaw = threading.Timer(4.0, container.unpause)  # four health rounds see it frozen
        thaw.start()
        started = time.monotonic()
        first = ray.get(env.step.remote("pyautogui.moveTo(7, 7)"))
        assert time.monotonic() - started >= 3.5  # it really waited for the thaw
        second = ray.get(env.step.remote("pyautogui.moveTo(9, 9)"))
        thaw.join()
    assert (first["info"]["step"], second["info"]["step"]) == (1, 2)
    assert pool.status().replacements == replacements


def test_the_pools_kill_does_not_wait_behind_a_stuck_call_whose_caller_gets_a_typed_error(pool):
    pool.wait_healthy(timeout=120)
    lease = pool.acquire(timeout=60)
    ray.get(lease.env.reset.remote(None))
    container_of(lease.env).pause()
    stuck = lease.env.step.remote("pyautogui.moveTo(3, 3)")
    time.sleep(1.0)  # the step is in flight inside the frozen desktop
    started = time.monotonic()
    pool.release(lease, broken=True)  # the pool replaces it: close (control group), then kill
    with pytest.raises(DesktopUnavailable):
        ray.get(stuck)
    assert time.monotonic() - started < 8.0  # not behind the step's own timeout (10 s), nor close_timeout (30 s)


def test_an_actor_killed_under_a_lease_leaves_the_block_as_desktop_unavailable(pool):
    pool.wait_healthy(timeout=120)
    with pytest.raises(DesktopUnavailable, match="env actor is gone: ActorDiedError") as raised:
        with pool.lease(timeout=60) as leased:
            env = leased.env
            ray.kill(env, no_restart=True)
            ray.get(env.step.remote("pyautogui.moveTo(1, 1)"))
    assert isinstance(raised.value.__cause__, ray.exceptions.ActorDiedError)


def test_a_paused_idle_desktop_is_replaced_before_anyone_leases_it(pool):
    from rayenv.waiting import wait_until

    pool.wait_healthy(timeout=120)
    slot = next(s for s in pool.status().slots if s.state == "idle")
    container_of(pool.envs()[slot.env_name]).pause()
    paused = time.time()

    def since_the_pause() -> list[str]:
        return [state for when, index, state in pool.history() if index == slot.slot and when >= paused]

    # a health round (every second here) probes an idle desktop: its guest must answer in ping_timeout / 2 (5 s)
    wait_until(lambda: "replacing" in since_the_pause(), 1.0 + 5.0 + 5.0, interval=0.2,
               what="the paused idle desktop being replaced", explain=lambda: str(pool.status().slots[slot.slot]))
    print(f"paused idle desktop taken out {time.time() - paused:.1f}s after the pause")
    assert since_the_pause()[0] == "replacing", since_the_pause()  # never leased meanwhile
    assert "did not answer a probe" in pool.status().slots[slot.slot].last_error
    pool.wait_healthy(timeout=120)
    assert pool.status().slots[slot.slot].generation > slot.generation
    assert len(containers("hung")) == 2
