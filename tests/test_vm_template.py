"""Copy-on-write VM desktops (issue 20's acceptance), on a real pool of two `rayenv/osworld-vm` desktops of one shape.

The pool's desktops are clones of the shape's template: the golden VM's RAM in one tmpfs file that each QEMU maps
privately, plus its device state. A reset is another QEMU from the template in the same container: the warm
spare the container kept loaded and paused while the episode ran, swapped in (and the next one loaded). So both
desktops run a sample task at once, cycle after cycle, scoring what they earned; an episode's file and
window are gone after a reset; a write of one desktop (to its disk or to its RAM) never shows in the other;
a desktop forked mid-episode into three goes on in each branch from where it was (the half-typed
command still in its terminal), each branch scored for what it did and blind to the others' writes;
and with the template's RAM file removed, a desktop falls back to loading the golden snapshot.
"""

from __future__ import annotations

import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker
import pytest
import ray

from rayenv.env.tasks import load_tasks
from rayenv.providers.golden import RAM_FILE, GoldenStore
from rayenv.waiting import wait_until
from vm_guest import bash, container_id, container_name, episode_left_a_trace, reset_after_an_episode, snapshot_pool

pytestmark = [pytest.mark.slow, pytest.mark.docker, pytest.mark.vm]

REPO = Path(__file__).resolve().parents[1]
OWNER = "vm-template"
NAMESPACE = "rayenv-vm-template"
TASK = next(t for t in load_tasks(REPO / "OSWorld" / "tasks") if t["id"] == "terminal-make-directory")
CYCLES = 20


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    from rayenv.desktop_vm.build import build_vm_desktop

    vm = build_vm_desktop()
    with snapshot_pool(tmp_path_factory.mktemp("tpl"), 29850, OWNER, NAMESPACE, vm.image, vm.qcow2,
                       size=4) as pool:
        yield pool


@pytest.fixture
def envs(pool):
    with contextlib.ExitStack() as leases:
        yield [leases.enter_context(pool.lease(timeout=600)).env for _ in range(2)]


def details(env) -> dict:
    return ray.get(env.status.remote())["details"]


def cycles(env, solve: list[bool]) -> list[float]:
    """One reset/step/evaluate cycle per entry, with the task's solution where it is True."""
    scores = []
    for solved in solve:
        ray.get(env.reset.remote(TASK))
        for action in TASK["rayenv_solution"] if solved else ["WAIT"]:
            ray.get(env.step.remote(action))
        scores.append(ray.get(env.evaluate.remote()))
    return scores


def test_both_desktops_are_clones_of_one_template(envs):
    first, second = (details(env) for env in envs)
    assert first["reset_path"] == second["reset_path"] == "template"
    assert first["golden_state"] == second["golden_state"]
    assert GoldenStore().has_template(first["golden_state"])


def test_twenty_cycles_on_two_desktops_at_once_score_what_they_earned(envs):
    plan = [cycle % 2 == 0 for cycle in range(CYCLES)]  # solved, unsolved, solved, ...
    with ThreadPoolExecutor(2) as both:
        results = list(both.map(lambda env: cycles(env, plan), envs))
    expected = [1.0 if solved else 0.0 for solved in plan]
    assert results == [expected, expected]


def qemus(env) -> dict[str, str]:
    """The QEMUs in the desktop's container, pid -> command line: the episode's, and its warm spare's (-S)."""
    top = docker.from_env().containers.get(container_name(env)).top(ps_args="-o pid,args")
    return {row[0]: row[1] + " " for row in top["Processes"] if row[1].startswith("qemu-system")}


def test_a_reset_swaps_in_the_warm_spare_and_takes_back_the_episodes_file_and_window_in_the_same_container(envs):
    env = envs[0]
    ray.get(env.reset.remote(TASK))
    before = container_id(env)
    wait_until(lambda: details(env)["warm_spare"] == "ready", timeout=120, interval=0.2, what="the warm spare loaded")
    running = qemus(env)
    spare = next(pid for pid, command in running.items() if " -S " in command)
    episode = next(pid for pid in running if pid != spare)
    reset_seconds = reset_after_an_episode(env, TASK)
    assert container_id(env) == before, "another QEMU in the same container, not a new container"
    assert spare in qemus(env) and episode not in qemus(env), "the spare runs the next episode"
    assert not episode_left_a_trace(env)
    assert reset_seconds < 30, f"a template reset (with the task's setup) took {reset_seconds:.1f}s"
    wait_until(lambda: details(env)["warm_spare"] == "ready", timeout=120, interval=0.2, what="the next warm spare loaded")


def test_the_guest_clock_after_a_reset_is_the_hosts(envs):
    env = envs[0]
    ray.get(env.reset.remote(TASK))  # a fresh QEMU from the template: its clock is the golden VM's
    before = time.time()
    guest_time = float(bash(env, "date +%s.%N"))
    after = time.time()
    assert before - 2 <= guest_time <= after + 2, f"guest {guest_time:.2f}, host {before:.2f}..{after:.2f}"


def test_one_desktops_writes_to_disk_and_ram_never_appear_in_the_other(envs):
    writer, reader = envs
    for env in envs:
        ray.get(env.reset.remote(TASK))
    bash(writer, "echo from-the-writer > /root/disk-note; echo from-the-writer > /dev/shm/ram-note; "
                 "dd if=/dev/urandom of=/dev/shm/filler bs=1M count=64 status=none")
    assert "from-the-writer" in bash(writer, "cat /root/disk-note /dev/shm/ram-note")
    assert not {"disk-note", "ram-note", "filler"} & set(bash(reader, "ls /root /dev/shm").split())
    assert "from-the-writer" not in bash(reader, "cat /root/disk-note /dev/shm/ram-note 2>&1 || true")
    ray.get(writer.reset.remote(TASK))
    assert "No such file" in bash(writer, "cat /root/disk-note /dev/shm/ram-note 2>&1 || true")


def test_a_fork_after_two_steps_goes_on_in_three_branches_each_scored_for_what_it_did(pool):
    with pool.lease(timeout=600) as parent:
        ray.get(parent.env.reset.remote(TASK))
        ray.get(parent.env.step.remote("pyautogui.typewrite('mkdir -p ~/rl-run', interval=0.02)"))  # no Enter yet
        ray.get(parent.env.step.remote("import subprocess; subprocess.run(['touch', '/root/before-the-fork', "
                                       "'/dev/shm/in-ram-before-the-fork'])"))
        started = time.monotonic()
        branches = pool.fork(parent, 3, timeout=600)
        fork_seconds = time.monotonic() - started
        try:
            envs = [branch.env for branch in branches]
            assert all(ray.get(env.status.remote())["steps"] == 2 for env in envs), "each branch has the history"
            finish = ["pyautogui.typewrite('-1', interval=0.02); pyautogui.press('enter')",  # mkdir -p ~/rl-run-1
                      "pyautogui.press('enter')",  # mkdir -p ~/rl-run: the wrong directory
                      "pass"]  # nothing more
            for index, (env, action) in enumerate(zip(envs, finish)):
                ray.get(env.step.remote(f"{action}; import subprocess, time; time.sleep(1); "
                                        f"subprocess.run(['touch', '/root/branch-{index}'])"))
            assert [ray.get(env.evaluate.remote()) for env in envs] == [1.0, 0.0, 0.0]
            for index, env in enumerate(envs):
                files = set(bash(env, "ls /root").split())
                assert "before-the-fork" in files
                assert "in-ram-before-the-fork" in bash(env, "ls /dev/shm"), "the RAM the parent wrote is the branch's"
                assert files & {"branch-0", "branch-1", "branch-2"} == {f"branch-{index}"}, files
            assert not set(bash(parent.env, "ls /root").split()) & {"branch-0", "branch-1", "branch-2"}
            assert ray.get(parent.env.evaluate.remote()) == 0.0, "the parent went on unchanged"
        finally:
            for branch in branches:
                pool.release(branch)
    assert fork_seconds < 120, f"the fork into 3 took {fork_seconds:.1f}s"
    print(f"fork into 3: {fork_seconds:.2f}s")


def test_without_the_templates_ram_file_a_desktop_falls_back_to_its_golden_snapshot(envs):
    """Last: it removes the template (a host reboot clears /dev/shm)."""
    env = envs[0]
    before = details(env)
    (GoldenStore().ram_directory(before["golden_state"]) / RAM_FILE).unlink()
    ray.get(env.reset.remote(TASK))
    after = details(env)
    assert after["reset_path"] == "loadvm" and after["container_id"] != before["container_id"]
    assert cycles(env, [True, False, True]) == [1.0, 0.0, 1.0], "loadvm resets score what they earned"
    assert details(env)["container_id"] == after["container_id"], "reverted in place by loadvm"
