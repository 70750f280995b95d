"""Snapshot resets of the VM desktop (issue 9's acceptance), on a real pool of one `rayenv/osworld-vm` desktop.

The desktop starts from the host's golden state (booted once, settled, saved with QMP ``savevm``),
and ``reset()`` of a used desktop loads that snapshot back into the running VM instead of restarting
its container: files and windows of the episode are gone, the guest's clock is the host's, a sample
task scores 1.0 cycle after cycle, and a snapshot that cannot be loaded falls back to a restart.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import ray

from rayenv.env.tasks import load_tasks
from rayenv.providers.qmp import Monitor
from vm_guest import bash, container_id, episode_left_a_trace, reset_after_an_episode, snapshot_pool

pytestmark = [pytest.mark.slow, pytest.mark.docker, pytest.mark.vm]

REPO = Path(__file__).resolve().parents[1]
OWNER = "vm-snap"
NAMESPACE = "rayenv-vm-snap"
TASK = next(t for t in load_tasks(REPO / "OSWorld" / "tasks") if t["id"] == "terminal-make-directory")


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    from rayenv.desktop_vm.build import build_vm_desktop

    vm = build_vm_desktop()
    with snapshot_pool(tmp_path_factory.mktemp("snap"), 26000, OWNER, NAMESPACE, vm.image, vm.qcow2,
                       vm_template=False) as pool:  # the loadvm path (test_vm_template.py has the template's)
        yield pool


@pytest.fixture
def env(pool):
    with pool.lease(timeout=600) as leased:
        yield leased.env


def test_a_reset_takes_back_the_episodes_files_and_windows_without_restarting_the_vm(env):
    ray.get(env.reset.remote(TASK))
    booted = container_id(env)
    reset_seconds = reset_after_an_episode(env, TASK)
    assert container_id(env) == booted, "the VM was reverted in place, not restarted"
    assert not episode_left_a_trace(env)
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
    assert details["reset_path"] == "loadvm"
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
