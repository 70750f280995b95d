"""Snapshot resets of the VM desktop (issue 9's acceptance), on a real pool of one `rayenv/osworld-vm` desktop.

The desktop starts from the host's golden state (booted once, settled, saved with QMP ``savevm``),
and ``reset()`` of a used desktop loads that snapshot back into the running VM instead of restarting
its container: files and windows of the episode are gone, the guest's clock is the host's, a sample
task scores 1.0 cycle after cycle, and a snapshot that cannot be loaded falls back to a restart.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import docker
import pytest
import ray

from rayenv import EnvPool
from rayenv.engine.containers import LABEL_OWNER, LABEL_WORKDIR
from rayenv.env.tasks import load_tasks
from rayenv.providers.golden import LABEL_GOLDEN, GoldenStore
from rayenv.providers.qmp import Monitor
from rayenv.tools.localcluster import ray_cluster
from rayenv.waiting import wait_until
from vm_guest import bash, container_id

pytestmark = [pytest.mark.slow, pytest.mark.docker]

REPO = Path(__file__).resolve().parents[1]
OWNER = "vm-snap"
NAMESPACE = "rayenv-vm-snap"
TASK = next(t for t in load_tasks(REPO / "OSWorld" / "tasks") if t["id"] == "terminal-make-directory")


def owned_containers() -> list:
    return docker.from_env().containers.list(all=True, filters={"label": f"{LABEL_OWNER}={OWNER}"})


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    from rayenv.desktop_vm.build import build_vm_desktop

    vm = build_vm_desktop()
    with ray_cluster(tmp_path_factory.mktemp("snap"), base_port=26000, head_python=sys.executable,
                     env_python=sys.executable, env_units=1) as cluster:
        ray.init(address=cluster.address, namespace=NAMESPACE, log_to_driver=False)
        pool = EnvPool.create(name=OWNER, size=1, namespace=NAMESPACE, health_interval=2.0, revert_on_release=False,
                              desktop={"provider": "docker", "docker_image": vm.image, "vm_path": str(vm.qcow2),
                                       "docker_memory": "2G", "docker_cpus": 2, "screen_width": 800,
                                       "screen_height": 600},  # small: every observation is a PNG encoded under TCG
                              env={"default_pause": 0})
        work_dirs = {c.labels[LABEL_WORKDIR] for c in owned_containers() if LABEL_WORKDIR in c.labels}
        goldens = {c.labels[LABEL_GOLDEN] for c in owned_containers() if LABEL_GOLDEN in c.labels}
        try:
            yield pool
        finally:
            work_dirs |= {c.labels[LABEL_WORKDIR] for c in owned_containers() if LABEL_WORKDIR in c.labels}
            pool.shutdown()
            ray.shutdown()
    assert owned_containers() == []
    assert goldens, "the desktop started from a golden state"
    assert not any(GoldenStore().overlay(digest).exists() for digest in goldens), "no golden state outlives the pool"
    assert not [d for d in work_dirs if os.path.exists(d)], "no desktop overlay outlives the pool"


@pytest.fixture
def env(pool):
    with pool.lease(timeout=600) as leased:
        yield leased.env


def test_a_reset_takes_back_the_episodes_files_and_windows_without_restarting_the_vm(env):
    ray.get(env.reset.remote(TASK))
    booted = container_id(env)
    ray.get(env.step.remote("import subprocess; subprocess.run(['touch', '/root/left-by-the-episode']); "
                            "subprocess.Popen(['xterm', '-T', 'episode-window'])"))
    wait_until(lambda: "episode-window" in bash(env, "xdotool search --name episode-window getwindowname %@ || true"),
               timeout=60, what="the episode's window")
    assert "left-by-the-episode" in bash(env, "ls /root")
    started = time.monotonic()
    ray.get(env.reset.remote(TASK))
    reset_seconds = time.monotonic() - started
    assert container_id(env) == booted, "the VM was reverted in place, not restarted"
    assert "left-by-the-episode" not in bash(env, "ls /root")
    assert "episode-window" not in bash(env, "xdotool search --name episode-window getwindowname %@ || true")
    assert reset_seconds < 30, f"a snapshot reset (with the task's setup) took {reset_seconds:.1f}s"


def test_the_guest_clock_after_a_revert_is_the_hosts(env):
    ray.get(env.reset.remote(TASK))
    ray.get(env.step.remote("WAIT"))
    ray.get(env.reset.remote(TASK))  # a revert: the snapshot's clock is minutes old
    before = time.time()
    guest_time = float(bash(env, "date +%s.%N"))
    after = time.time()
    assert before - 2 <= guest_time <= after + 2, f"guest {guest_time:.2f}, host {before:.2f}..{after:.2f}"


def test_twenty_consecutive_cycles_of_a_sample_task_all_score_one(env):
    scores = []
    for _ in range(20):
        ray.get(env.reset.remote(TASK))
        for action in TASK["rayenv_solution"]:
            ray.get(env.step.remote(action))
        scores.append(ray.get(env.evaluate.remote()))
    assert scores == [1.0] * 20


def test_a_snapshot_that_cannot_be_loaded_falls_back_to_a_restart_and_the_episode_still_works(env):
    ray.get(env.reset.remote(TASK))
    details = ray.get(env.status.remote())["details"]
    Monitor(Path(details["work_dir"]) / "qmp.sock", env="test").human("delvm golden")  # gone under the desktop
    ray.get(env.reset.remote(TASK))
    status = ray.get(env.status.remote())
    assert status["details"]["container_id"] != details["container_id"], "restarted in a new container"
    assert "snapshot revert failed, restarted instead" in status["last_error"]
    assert "golden" in status["last_error"]
    for action in TASK["rayenv_solution"]:
        ray.get(env.step.remote(action))
    assert ray.get(env.evaluate.remote()) == 1.0
    assert not os.path.exists(details["work_dir"]), "the replaced container's overlay is gone"
