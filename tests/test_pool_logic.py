"""EnvPool bookkeeping, specified on fake desktops (fast). Real desktops prove the features in test_pool_e2e.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import ray
from fakes import hang_file, kill_file, silence_file

from rayenv import (ActionFailed, DesktopUnavailable, EnvPool, EnvTimeout, EvaluationError, InvalidAction,
                    PoolError)
from rayenv.failures import Failure, classify
from rayenv.pool.status import PoolStatus
from rayenv.waiting import wait_until

FAKE = "fakes:FakeProvider"

pytestmark = [pytest.mark.slow]  # a real Ray (fake desktops)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    fake_root = tmp_path_factory.mktemp("fake")
    os.environ["RAYENV_FAKE_DIR"] = str(fake_root)
    ray.init(num_cpus=2, resources={"osworld_env": 8}, include_dashboard=False, namespace="rayenv-tests",
             log_to_driver=False)
    yield fake_root
    ray.shutdown()


@pytest.fixture
def pool(cluster, request):
    pool = EnvPool.create(name=f"t{abs(hash(request.node.name)) % 10**6}", size=2, provider=FAKE,
                          health_interval=0.5, namespace="rayenv-tests", env={"default_pause": 0})
    yield pool
    pool.shutdown()


def running(fake_root) -> list[str]:
    return sorted(p.stem for p in fake_root.glob("*.running"))


def test_a_lease_lends_an_env_actor_that_steps(pool):
    with pool.lease(timeout=10) as lease:
        obs = ray.get(lease.env.reset.remote(None))
        assert obs["screenshot"].startswith(b"\x89PNG")
        result = ray.get(lease.env.step.remote("pyautogui.moveTo(1, 1)"))
        assert result["done"] is False and result["info"]["step"] == 1
        assert pool.status().counts["leased"] == 1


def test_leases_beyond_the_pool_size_wait_and_then_time_out_with_advice(pool):
    first, second = pool.acquire(5), pool.acquire(5)
    with pytest.raises(PoolError, match="no desktop .* became free"):
        pool.acquire(timeout=0.5)
    pool.release(first)
    third = pool.acquire(timeout=10)  # the released desktop comes back once reverted
    assert third.slot == first.slot
    pool.release(second), pool.release(third)


def test_concurrent_async_leases_of_one_process_share_the_desktops_and_each_gets_its_own(pool):
    """Six rollouts of one event loop on two desktops (their acquires reach the manager batched): never more
    than two at once, every one served, every desktop given back."""
    held: set[int] = set()
    most = [0]

    async def rollout() -> None:
        async with pool.lease_async(timeout=30) as lease:
            assert lease.slot not in held
            held.add(lease.slot)
            most[0] = max(most[0], len(held))
            await asyncio.sleep(0.05)
            held.discard(lease.slot)

    async def rollouts() -> None:
        await asyncio.gather(*(rollout() for _ in range(6)))

    asyncio.run(rollouts())
    assert most[0] == 2
    wait_until(lambda: pool.status().counts.get("idle") == 2, 10, what="both desktops idle again")


def test_a_malformed_action_is_rejected_and_the_desktop_stays_usable(pool):
    with pool.lease(timeout=10) as lease:
        env = lease.env
        with pytest.raises(InvalidAction, match="not valid Python"):
            ray.get(env.step.remote("pyautogui.click("))
        with pytest.raises(InvalidAction, match="unknown action_type"):
            ray.get(env.step.remote({"action_type": "TELEPORT"}))
        with pytest.raises(ActionFailed) as failure:
            ray.get(env.step.remote("raise ValueError('x')"))
        assert "boom" in failure.value.traceback
        assert ray.get(env.step.remote("DONE"))["done"] is True


def test_evaluating_without_a_task_is_an_error_not_a_zero(pool):
    with pool.lease(timeout=10) as lease:
        ray.get(lease.env.reset.remote(None))
        with pytest.raises(EvaluationError, match="no task"):
            ray.get(lease.env.evaluate.remote())


def test_a_desktop_that_dies_is_reported_by_name_and_replaced(pool, cluster):
    lease = pool.acquire(10)
    kill_file(lease.env_name).touch()
    with pytest.raises(DesktopUnavailable) as failure:
        ray.get(lease.env.step.remote("pyautogui.moveTo(1, 1)"))
    assert failure.value.env == lease.env_name
    pool.release(lease, broken=True)
    status = pool.wait_healthy(timeout=30)
    assert status.replacements == 1 and lease.env_name not in pool.healthy_names()
    assert len(running(cluster)) >= 2


def test_the_health_check_replaces_a_killed_actor(pool):
    before = pool.status().slots[0]
    ray.kill(pool.envs()[before.env_name], no_restart=True)
    wait_for(pool, lambda s: s.slots[0].generation > before.generation and s.slots[0].state == "idle", timeout=30)
    assert pool.status().healthy == 2


@pytest.fixture
def patient_pool(cluster, request):
    pool = EnvPool.create(name=f"p{abs(hash(request.node.name)) % 10**6}", size=1, provider=FAKE,
                          health_interval=0.3, ping_timeout=2.0, unreachable_grace=6.0, namespace="rayenv-tests",
                          env={"default_pause": 0})
    yield pool
    silence_file(pool.status().slots[0].env_name).unlink(missing_ok=True)
    pool.shutdown()


def wait_for(pool: EnvPool, predicate, timeout: float = 20) -> PoolStatus:
    seen: list[PoolStatus] = []

    def reached() -> bool:
        seen[:] = [pool.status()]
        return predicate(seen[0])

    wait_until(reached, timeout, interval=0.2, what="the expected pool state", explain=lambda: str(seen and seen[0]),
               error=AssertionError)
    return seen[0]


def test_a_desktop_silent_for_less_than_the_grace_is_kept_out_of_leases_and_comes_back_as_it_was(patient_pool):
    before = patient_pool.status().slots[0]
    silence_file(before.env_name).touch()
    silent = wait_for(patient_pool, lambda s: s.unreachable == 1)
    assert silent.healthy == 0 and silent.slots[0].last_error.startswith("unreachable")
    with pytest.raises(PoolError):
        patient_pool.acquire(timeout=1)
    silence_file(before.env_name).unlink()
    back = wait_for(patient_pool, lambda s: s.unreachable == 0 and s.healthy == 1)
    assert (back.slots[0].generation, back.replacements) == (before.generation, 0)
    patient_pool.release(patient_pool.acquire(timeout=5))


def test_a_desktop_silent_for_longer_than_the_grace_is_replaced(patient_pool):
    before = patient_pool.status().slots[0]
    silence_file(before.env_name).touch()
    wait_for(patient_pool, lambda s: s.unreachable == 1)
    # the grace, then a new actor that imports desktop-env's evaluators before it reports ready
    replaced = wait_for(patient_pool, lambda s: s.replacements == 1 and s.healthy == 1, timeout=90)
    assert replaced.slots[0].generation > before.generation
    assert replaced.slots[0].last_error.startswith("unreachable for")
    silence_file(before.env_name).unlink()


@ray.remote(num_cpus=0)
class Lessee:
    def take(self, pool: EnvPool) -> str:
        return pool.acquire(timeout=10).env_name


def test_a_lease_held_by_an_actor_that_died_goes_back_to_the_pool(pool):
    lessee = Lessee.remote()
    taken = ray.get(lessee.take.remote(pool))
    assert pool.status().counts.get("leased") == 1
    ray.kill(lessee)
    back = wait_for(pool, lambda s: s.counts.get("leased", 0) == 0 and s.healthy == 2)
    assert taken in pool.healthy_names() and back.replacements == 0


def test_a_lease_held_by_a_driver_that_exited_goes_back_to_the_pool(pool):
    gcs = ray.get_runtime_context().gcs_address
    script = ("import ray, sys; from rayenv import EnvPool; ray.init(address=sys.argv[1], namespace='rayenv-tests', "
              "log_to_driver=False); print(EnvPool.connect(sys.argv[2], 'rayenv-tests').acquire(timeout=10).env_name)")
    done = subprocess.run([sys.executable, "-c", script, gcs, pool.name], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    back = wait_for(pool, lambda s: s.counts.get("leased", 0) == 0 and s.healthy == 2, timeout=30)
    assert done.stdout.split()[-1] in pool.healthy_names() and back.replacements == 0


def test_lock_step_helpers_return_one_outcome_per_desktop_even_when_one_fails(pool):
    envs = pool.envs()
    names = sorted(envs)
    outcomes = pool.step_all(envs, {names[0]: "pyautogui.moveTo(1, 1)", names[1]: "pyautogui.click("})
    assert outcomes[names[0]].ok and not outcomes[names[1]].ok
    assert isinstance(outcomes[names[1]].error, InvalidAction)
    finished = [o.key for o in EnvPool.as_completed({n: envs[n].observe.remote() for n in names})]
    assert sorted(finished) == names


def test_a_lock_step_outcome_that_finds_a_desktop_dead_replaces_it_without_waiting_for_a_health_round(cluster):
    pool = EnvPool.create(name="heal", size=1, provider=FAKE, namespace="rayenv-tests", health_interval=3600,
                          env={"default_pause": 0})
    try:
        envs = pool.envs()
        (name,) = envs
        ray.kill(envs[name], no_restart=True)
        outcomes = pool.step_all(envs, {name: "pyautogui.moveTo(1, 1)"})
        assert isinstance(outcomes[name].error, DesktopUnavailable)
        replaced = wait_for(pool, lambda s: s.replacements == 1 and s.healthy == 1, timeout=60)
        assert replaced.slots[0].generation == 2 and "found it gone" in replaced.slots[0].last_error
    finally:
        pool.shutdown()


#: A lock-step batch's one timeout, and what the machine may add to it (a shared, loaded CI host).
BATCH_TIMEOUT, BATCH_MARGIN = 2.0, 1.5


def test_hung_desktops_cost_a_lock_step_batch_one_timeout_and_fail_as_they_would_in_a_lease(cluster):
    pool = EnvPool.create(name="hung3", size=3, provider=FAKE, namespace="rayenv-tests", health_interval=3600,
                          env={"default_pause": 0, "step_timeout": 60})
    envs = pool.envs()
    names = sorted(envs)
    try:
        for name in names:
            hang_file(name).touch()
        # one desktop answers late: as_completed must not give the others a fresh timeout after it
        thaw = threading.Timer(BATCH_TIMEOUT * 0.75, hang_file(names[0]).unlink)
        started = time.monotonic()
        thaw.start()
        finished = list(EnvPool.as_completed({n: envs[n].step.remote("pyautogui.moveTo(1, 1)") for n in names},
                                             timeout=BATCH_TIMEOUT))
        assert time.monotonic() - started < BATCH_TIMEOUT + BATCH_MARGIN
        assert finished[0].key == names[0] and finished[0].ok
        assert {o.key for o in finished[1:]} == set(names[1:])
        assert all(isinstance(o.error, EnvTimeout) and o.failure is Failure.TIMED_OUT for o in finished[1:])

        hang_file(names[0]).touch()
        started = time.monotonic()
        outcomes = pool.step_all(envs, {n: "pyautogui.moveTo(2, 2)" for n in names}, timeout=BATCH_TIMEOUT)
        assert time.monotonic() - started < BATCH_TIMEOUT + BATCH_MARGIN
        assert all(isinstance(o.error, EnvTimeout) and o.broken for o in outcomes.values())
        replaced = wait_for(pool, lambda s: s.replacements == 3, timeout=30)
        assert all("found it gone" in slot.last_error for slot in replaced.slots)

        # the same hang inside a lease: the same kind, and the desktop is replaced just the same
        with pytest.raises(EnvTimeout) as raised:
            with pool.lease(timeout=180) as lease:  # the first replacement to finish booting
                names.append(lease.env_name)
                hang_file(lease.env_name).touch()
                ray.get(lease.env.step.remote("pyautogui.moveTo(3, 3)"), timeout=BATCH_TIMEOUT)
        assert classify(raised.value) is Failure.TIMED_OUT
        wait_for(pool, lambda s: s.replacements == 4, timeout=30)
    finally:
        for name in names:
            hang_file(name).unlink(missing_ok=True)
        pool.shutdown()


def test_a_lessee_whose_frozen_desktop_the_pool_replaced_gets_a_rayenv_error(patient_pool):
    lease = patient_pool.acquire(timeout=10)
    worker = lease.call("status")["details"]["worker_pid"]
    os.kill(worker, signal.SIGSTOP)  # the env actor's worker freezes past the grace: the pool kills it
    try:  # silent past the grace, killed without a close it could not answer; the slot boots its next generation
        wait_for(patient_pool, lambda s: s.slots[0].generation > lease.generation, timeout=150)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker, signal.SIGCONT)
    with pytest.raises(DesktopUnavailable, match="env actor is gone") as raised:
        lease.call("step", "pyautogui.moveTo(1, 1)", timeout=30)
    assert raised.value.env == lease.env_name and raised.value.phase == "step"
    with pytest.raises(DesktopUnavailable):
        asyncio.run(lease.call_async("observe", timeout=30))
    patient_pool.release(lease)  # its generation is gone: a no-op
    assert patient_pool.status().replacements == 1


def test_connect_sees_the_same_desktops(pool):
    other = EnvPool.connect(pool.name, namespace="rayenv-tests")
    assert sorted(other.healthy_names()) == sorted(pool.healthy_names()) and other.size == 2


def test_every_handle_sees_the_pools_size_after_another_resizes_it(pool):
    other = EnvPool.connect(pool.name, namespace="rayenv-tests")
    pool.grow(1)  # an env host joining; a leaving one shrinks it the same way
    assert (pool.size, other.size, other.status().healthy) == (3, 3, 3)


def test_creating_a_pool_twice_or_connecting_to_none_says_what_to_do(pool):
    with pytest.raises(PoolError, match="already exists"):
        EnvPool.create(name=pool.name, size=1, provider=FAKE, namespace="rayenv-tests")
    with pytest.raises(PoolError, match="no pool 'nope'"):
        EnvPool.connect("nope", namespace="rayenv-tests")


def test_a_pool_larger_than_the_cluster_fails_fast(cluster):
    with pytest.raises(PoolError, match="advertises 8"):
        EnvPool.create(name="huge", size=9, provider=FAKE, namespace="rayenv-tests")


def test_a_pool_whose_desktops_cannot_boot_here_fails_at_once_with_their_error_and_leaves_nothing(cluster):
    started = time.monotonic()
    with pytest.raises(PoolError, match="no desktop of pool 'unbootable' came up") as error:
        EnvPool.create(name="unbootable", size=2, provider="fakes:UnbootableProvider", namespace="rayenv-tests")
    assert time.monotonic() - started < 20  # one attempt per slot: a retry cannot bring the image
    assert "slot(s) 0, 1: boot attempt 1: ProviderUnavailable: image rayenv/none:1 is not on this host" in error.value.hint
    assert "rayenv vm build" in error.value.hint
    with pytest.raises(PoolError, match="no pool 'unbootable'"):
        EnvPool.connect("unbootable", namespace="rayenv-tests")


def test_shutdown_leaves_no_desktop_behind(cluster):
    pool = EnvPool.create(name="short", size=2, provider=FAKE, namespace="rayenv-tests")
    assert len([n for n in running(cluster) if n.startswith("short-")]) == 2
    pool.shutdown()
    assert [n for n in running(cluster) if n.startswith("short-")] == []


def test_recording_keeps_each_episodes_screenshots_and_actions(cluster, tmp_path):
    pool = EnvPool.create(name="rec", size=1, provider=FAKE, namespace="rayenv-tests",
                          env={"default_pause": 0, "record_dir": str(tmp_path)})
    try:
        with pool.lease(timeout=10) as lease:
            ray.get(lease.env.reset.remote(None))
            ray.get(lease.env.step.remote("pyautogui.moveTo(1, 1)"))
            ray.get(lease.env.step.remote("DONE"))
    finally:
        pool.shutdown()
    (episode,) = list(tmp_path.glob("rec-env-00-g1/*"))
    events = [json.loads(line) for line in (episode / "trajectory.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events] == ["reset", "step", "step"]
    assert events[2]["done"] is True and (episode / "step-002.png").read_bytes().startswith(b"\x89PNG")


@ray.remote(num_cpus=0)
class Owner:
    """Stands for an env actor: all the reaper asks of it is whether the GCS says it lives."""

    def actor_id(self) -> str:
        return ray.get_runtime_context().get_actor_id()


def test_the_reaper_removes_desktops_whose_actor_died_and_spares_those_whose_actor_lives(cluster):
    from rayenv.desktop_lite.process import start_desktop
    from rayenv.pool.reaper import reap_cluster

    living, dead = Owner.remote(), Owner.remote()
    living_id, dead_id = ray.get([living.actor_id.remote(), dead.actor_id.remote()])
    ray.kill(dead)
    kept, orphan = (start_desktop(owner="reap-spec", env_name=env_name, actor_id=actor_id, width=320, height=240,
                                  timeout=30) for env_name, actor_id in (("kept", living_id), ("orphan", dead_id)))
    try:
        # The pool passes no list of its live actors: one that booted after such a list was taken
        # would have its brand-new desktop reaped. The GCS, asked on the node, knows better.
        assert ray.get(reap_cluster("reap-spec", "osworld_env")) == [["orphan"]]
        orphan.process.wait(timeout=10)
        assert kept.alive() and kept.record.exists() and not orphan.record.exists()
        assert ray.get(reap_cluster("reap-spec", "osworld_env", doomed=[living_id])) == [["kept"]]
    finally:
        kept.stop(), orphan.stop()
