"""Host spares (issue 20's new desktop from golden), on a real pool of one `rayenv/osworld-vm` desktop with `host_spare`.

Beside its desktop the pool keeps one more VM desktop of the shape on the host, started, warmed up and paused.
When the desktop dies (its container killed), the pool's replacement adopts that spare instead of starting a
VM: it is the spare's container, answers at once, has the host's clock, runs a task to its score, and is kept
by the reaper although the desktop that made the spare is gone; the next spare is made behind it. Shutdown
leaves nothing (checked by ``snapshot_pool``).
"""

from __future__ import annotations

import time
from pathlib import Path

import docker
import pytest
import ray

from rayenv.cluster_state import actor_is_gone
from rayenv.engine.containers import LABEL_WORKDIR
from rayenv.env.tasks import load_tasks
from rayenv.pool.reaper import reap_containers
from rayenv.providers.host_spare import FREE, LABEL_SPARE
from rayenv.providers.qmp import Monitor
from rayenv.waiting import wait_until
from vm_guest import bash, owned_containers, snapshot_pool

pytestmark = [pytest.mark.slow, pytest.mark.docker, pytest.mark.vm]

REPO = Path(__file__).resolve().parents[1]
OWNER = "vm-host-spare"
NAMESPACE = "rayenv-vm-host-spare"
TASK = next(t for t in load_tasks(REPO / "OSWorld" / "tasks") if t["id"] == "terminal-make-directory")


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    from rayenv.desktop_vm.build import build_vm_desktop

    vm = build_vm_desktop()
    with snapshot_pool(tmp_path_factory.mktemp("spare"), 30400, OWNER, NAMESPACE, vm.image, vm.qcow2,
                       host_spare=True) as pool:
        yield pool


def free_spare():
    """The pool's free host spare on this host, or None."""
    return next((c for c in owned_containers(OWNER) if LABEL_SPARE in c.labels
                 and (Path(c.labels[LABEL_WORKDIR]) / FREE).exists()), None)


def details(pool) -> dict:
    return ray.get(next(iter(pool.envs().values())).status.remote())["details"]


def kill_and_replace(pool) -> dict:
    """Kill the desktop's container; the replacement desktop's status details, once the pool has one."""
    before = pool.status().slots[0]
    docker.from_env().containers.get(details(pool)["container_name"]).kill()

    def replaced() -> bool:
        slot = pool.status().slots[0]
        return slot.generation > before.generation and slot.state == "idle"

    wait_until(replaced, timeout=600, what="the replacement desktop", explain=lambda: str(pool.status()))
    return details(pool)


def test_a_replacement_desktop_adopts_the_paused_host_spare_and_runs_a_task_at_once(pool):
    wait_until(lambda: free_spare() is not None, timeout=600, what="the pool's host spare")
    spare = free_spare()
    assert not Monitor(Path(spare.labels[LABEL_WORKDIR]) / "qmp.sock", env="test").running(), "it waits paused"
    adopted = kill_and_replace(pool)
    assert (adopted["started_as"], adopted["container_name"]) == ("host spare", spare.name)

    with pool.lease(timeout=600) as lease:
        ray.get(lease.env.reset.remote(TASK))
        assert abs(float(bash(lease.env, "date +%s.%N")) - time.time()) < 2, "the guest's clock is the host's"
        for action in TASK["rayenv_solution"]:
            ray.get(lease.env.step.remote(action))
        assert ray.get(lease.env.evaluate.remote()) == 1.0

    reap_containers(OWNER, actor_is_gone)  # the spare's maker is gone, its adopter is not
    assert docker.from_env().containers.get(spare.id).status == "running"
    wait_until(lambda: free_spare() not in (None, spare), timeout=600, what="the next host spare")
    assert free_spare().labels[LABEL_SPARE] == spare.labels[LABEL_SPARE]


def test_a_spare_that_cannot_be_woken_is_removed_and_the_replacement_starts_its_own_vm(pool):
    wait_until(lambda: free_spare() is not None, timeout=600, what="the pool's host spare")
    spare = free_spare()
    (Path(spare.labels[LABEL_WORKDIR]) / "qmp.sock").unlink()  # its QEMU can no longer be told to run
    started = kill_and_replace(pool)
    assert "started_as" not in started and started["container_name"] != spare.name
    assert spare.id not in {c.id for c in owned_containers(OWNER)}, "the spare that failed is removed"
    with pool.lease(timeout=600) as lease:
        assert bash(lease.env, "echo answers").strip() == "answers"
