"""Bounded desktops (issue 13): boots are rate-limited, containers are capped, and a pool the host
cannot hold is refused before anything boots.

Real desktop-lite containers on this machine's Docker engine, on a local Ray node that advertises
``osworld_env``; the assertions read the pool's own state history and Docker's own container state.
"""

from __future__ import annotations

import os

import docker
import pytest
import ray

from rayenv import EnvPool
from rayenv.engine.containers import LABEL_OWNER
from rayenv.errors import PoolError
from rayenv.providers.base import DesktopSpec
from rayenv.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.docker]

NAMESPACE = "rayenv-bounded"
SCREEN = {"screen_width": 800, "screen_height": 600}


@pytest.fixture(scope="module")
def cluster():
    from rayenv.desktop_lite.build import build_image

    build_image()
    ray.init(num_cpus=2, resources={"osworld_env": 4}, include_dashboard=False, namespace=NAMESPACE,
             log_to_driver=False)
    yield
    ray.shutdown()


def containers_of(owner: str) -> list:
    return docker.from_env().containers.list(all=True, filters={"label": f"{LABEL_OWNER}={owner}"})


def most_booting_at_once(history: list[tuple[float, int, str]]) -> int:
    """Replay the pool's state changes and return the peak number of slots in ``booting``."""
    state: dict[int, str] = {}
    peak = 0
    for _, slot, new in history:
        state[slot] = new
        peak = max(peak, sum(s == "booting" for s in state.values()))
    return peak


def test_container_limits_come_from_the_desktop_config():
    lite = DesktopSpec(provider="lite", memory_limit="300m", cpu_limit=0.5).container_limits()
    assert lite == {"mem_limit": "300m", "memswap_limit": "300m", "nano_cpus": 500_000_000}
    assert DesktopSpec(provider="lite").container_limits() == {}
    vm = DesktopSpec(provider="docker", docker_memory="2G", docker_cpus=64).container_limits()
    assert vm["mem_limit"] == 3 << 30  # guest RAM + 1 GiB for QEMU
    assert vm["nano_cpus"] == (os.cpu_count() or 1) * 10**9  # never more than the host has


def test_a_pool_of_4_with_a_start_limit_of_2_never_boots_more_than_2_at_once(cluster):
    pool = EnvPool.create(name="bounded-boots", size=4, provider="lite", namespace=NAMESPACE,
                          max_concurrent_boots=2, desktop={"provider": "lite", **SCREEN})
    try:
        assert pool.status().healthy == 4
        history = pool.history()
        assert most_booting_at_once(history) == 2, history
        assert sum(state == "queued" for _, _, state in history) >= 4  # every slot waited for a permit
    finally:
        pool.shutdown()
    assert containers_of("bounded-boots") == []


def test_a_container_over_its_memory_limit_is_killed_by_the_kernel_and_replaced(cluster):
    pool = EnvPool.create(name="bounded-oom", size=1, provider="lite", namespace=NAMESPACE, health_interval=1.0,
                          desktop={"provider": "lite", "memory_limit": "300m", **SCREEN})
    try:
        first = pool.status().slots[0]
        (container,) = containers_of("bounded-oom")
        assert container.attrs["HostConfig"]["Memory"] == 300 << 20
        lease = pool.acquire(timeout=60)
        ray.get(lease.env.reset.remote(None))
        hog = lease.env.step.remote("hog = b'x' * (600 << 20)")  # the action's process grows past 300 MiB
        ray.wait([hog], timeout=120)  # it dies; how the step reports that is not the point

        def replaced() -> bool:
            slot = pool.status().slots[0]
            return slot.generation > first.generation and slot.state == "idle"

        wait_until(replaced, 180, what="the pool replacing the OOM-killed desktop", explain=lambda: str(pool.status()))
        pool.release(lease)  # a lease on the replaced desktop: a no-op
        slot = pool.status().slots[0]
        assert "OOMKilled" in slot.last_error and "300 MiB" in slot.last_error, slot
        assert slot.replacements == 1
        assert [c.name for c in containers_of("bounded-oom")] != [container.name]
    finally:
        pool.shutdown()
    assert containers_of("bounded-oom") == []


def test_a_size_the_host_cannot_hold_in_ram_is_refused_saying_why(cluster):
    with pytest.raises(PoolError) as refused:
        EnvPool.create(name="bounded-ram", size=2, provider="lite", namespace=NAMESPACE,
                       desktop={"provider": "lite", "memory_limit": "4096g", **SCREEN})
    text = str(refused.value)
    assert "need 8192.0 GiB of RAM" in text and "available" in text and "--size 0" in text
    assert containers_of("bounded-ram") == []
