"""A pool manager serves its status on the head's loopback (rayenv.pool.status_endpoint), and `rayenv status`
reads it without importing Ray. Fast: the endpoint on a fake pool; slow: the CLI in a fresh process against the
manager of a real (simulated-desktop) pool."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from rayenv.pool.slots import Slots
from rayenv.pool.status import PoolStatus
from rayenv.pool.status_endpoint import StatusEndpoint, _get, free_status_block, read_statuses, same_cluster, status_ports


class _Config:
    """The few PoolConfig fields a status names."""

    name, namespace, resource = "demo", "rayenv-tests", "osworld_env"

    class desktop:
        provider = "process"

    class env:
        require_a11y_tree = False


@pytest.fixture
def served():
    """Two pools' endpoints (one of another cluster) on a free block, served from a loop in a thread."""
    first = free_status_block()
    slots = Slots("demo", 3, boot_attempts=1, revert_on_release=True, unreachable_grace=60)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    ours = StatusEndpoint(lambda detail: PoolStatus.of(slots, _Config, detail), "10.0.0.1:6379")
    theirs = StatusEndpoint(lambda detail: PoolStatus.of(slots, _Config, detail), "10.0.0.2:6379")
    ports = [asyncio.run_coroutine_threadsafe(e.start(status_ports(first)), loop).result(5) for e in (ours, theirs)]
    yield first, ports, slots
    for endpoint in (ours, theirs):
        loop.call_soon_threadsafe(endpoint.close)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def test_each_manager_takes_the_next_free_port_of_the_block(served):
    first, ports, _ = served
    assert ports == [first, first + 1]


def test_the_endpoint_serves_the_summary_with_the_keys_of_status_json_and_slots_only_on_request(served):
    first, _, slots = served
    summary, detail = _get(first, "/status", 2), _get(first, "/status?slots=1", 2)
    assert summary["cluster"] == "10.0.0.1:6379"
    assert summary["pool"].keys() == PoolStatus.of(slots, _Config).to_dict().keys()
    assert summary["pool"]["size"] == 3 and summary["pool"]["slots"] == []
    assert [slot["slot"] for slot in detail["pool"]["slots"]] == [0, 1, 2]


def test_a_reader_keeps_only_its_own_clusters_pools_and_rebuilds_their_status(served):
    first, _, slots = served
    found = read_statuses("10.0.0.1:6379", detail=True, ports=status_ports(first))
    assert len(found) == 1
    assert found[0].name == "demo" and found[0].counts == {"queued": 3} and len(found[0].slots) == 3
    assert read_statuses("10.9.9.9:6379", ports=status_ports(first)) == []


def test_an_address_of_this_machine_with_the_same_port_is_the_same_cluster():
    assert same_cluster("127.0.0.1:6379", "127.0.0.1:6379")
    assert same_cluster("127.0.0.1:6379", "localhost:6379")
    assert not same_cluster("127.0.0.1:6379", "127.0.0.1:6380")
    assert not same_cluster("127.0.0.1:6379", "203.0.113.7:6379")  # TEST-NET-3: no interface of this machine


def test_anything_but_get_status_is_not_found(served):
    first, _, _ = served
    with socket.create_connection(("127.0.0.1", first), timeout=2) as connection:
        connection.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        assert connection.recv(100).startswith(b"HTTP/1.0 404")


def test_a_full_block_leaves_the_pool_without_an_endpoint():
    first = free_status_block()
    holders = []
    for port in status_ports(first):
        holder = socket.socket()
        holder.bind(("127.0.0.1", port))
        holder.listen()
        holders.append(holder)
    try:
        endpoint = StatusEndpoint(lambda detail: None, "10.0.0.1:6379")
        assert asyncio.run(endpoint.start(status_ports(first))) is None
    finally:
        for holder in holders:
            holder.close()


@pytest.mark.slow
def test_rayenv_status_answers_from_the_endpoint_without_importing_ray(monkeypatch):
    import ray

    from rayenv.pool.config import PoolConfig
    from rayenv.tools.simfleet import SimBehaviour, start_sim_fleet

    first = free_status_block()
    monkeypatch.setenv("RAYENV_POOL_STATUS_PORT", str(first))  # the local Ray's raylet (and the manager) inherit it
    ray.init(num_cpus=1, include_dashboard=False, namespace="rayenv-tests", log_to_driver=False)
    try:
        node = ray.get_runtime_context().get_node_id()
        fleet = start_sim_fleet(PoolConfig(name="statusep", namespace="rayenv-tests", size=8, resource="rayenv_sim",
                                           health_interval=3600), [node], 2, SimBehaviour(death_rate=0))
        gcs = ray.get_runtime_context().gcs_address  # the node's IP: one asks as 127.0.0.1 on the head
        cluster = f"127.0.0.1:{gcs.rpartition(':')[2]}"
        command = [sys.executable, "-X", "importtime", "-m", "rayenv.cli.main", "--debug", "status",
                   "--address", cluster, "--json"]
        begun = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, env=os.environ)
        took = time.perf_counter() - begun
        assert done.returncode == 0, done.stderr[-2000:]
        imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
        assert "ray" not in imported and "rayenv.pool.manager" not in imported
        assert f"read 1 pool(s) of cluster {cluster}" in done.stderr
        [answer] = json.loads(done.stdout)
        via_ray = subprocess.run([sys.executable, "-m", "rayenv.cli.main", "status", "--address", cluster, "--json",
                                  "--ray"], capture_output=True, text=True, timeout=120, env=os.environ)
        [asked] = json.loads(via_ray.stdout)
        assert answer.keys() == asked.keys() and answer["healthy"] == asked["healthy"] == 8
        print(f"rayenv status from the endpoint: {took:.2f} s (importtime on)")
        fleet.shutdown()
        assert _get(first, "/status", 2) is None  # a pool shut down serves nothing
    finally:
        ray.shutdown()
