"""The per-host and head limits, really started: an env host planned for 200 desktops and a head planned for
128 driver-side workers, each a `ray start` with the plan's flags, joined (over loopback, no ssh: the ports
are what is under test), with a pool of a few process desktops on the big host.

The ports are this module's own block (a tunnel file moving every port), so it runs beside the other
cluster tests of the machine.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

import psutil
import pytest
import ray
import yaml

from rayenv import EnvPool
from rayenv.cluster_state import init_on_this_node
from rayenv.tunnel.plan import PortPlan
from rayenv.tunnel.raynode import node_processes, ray_env, ray_start, stop_node

pytestmark = pytest.mark.slow

DESKTOPS, DRIVERS, HOST_INDEX = 200, 128, 1
TUNNEL = {"max_desktops_per_host": DESKTOPS, "driver_workers": DRIVERS,
          "head": {"gcs": 27379, "node_manager": 27380, "object_manager": 27381, "dashboard_agent_grpc": 27382,
                   "dashboard_agent_http": 27383, "metrics_export": 27384, "runtime_env_agent": 27385,
                   "dashboard": 27365, "client_server": 27301, "min_worker_port": 28000},
          "env_host": {"node_manager": 27390, "object_manager": 27391, "dashboard_agent_grpc": 27392,
                       "dashboard_agent_http": 27393, "metrics_export": 27394, "runtime_env_agent": 27395,
                       "min_worker_port": 29000}}


def raylet_worker_ports(temp_dir: Path) -> range:
    """The worker-port range the node's raylet was really started with."""
    raylet = next(p for p in node_processes(temp_dir) if p.name() == "raylet")
    flags = dict(re.findall(r"--(min_worker_port|max_worker_port)=(\d+)", " ".join(raylet.cmdline())))
    return range(int(flags["min_worker_port"]), int(flags["max_worker_port"]) + 1)


def listening_ports(pid: int) -> set[int]:
    return {c.laddr.port for c in psutil.Process(pid).connections(kind="tcp") if c.status == psutil.CONN_LISTEN}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fleet-limits")
    config = tmp / "tunnel.yaml"
    config.write_text(yaml.safe_dump({"tunnel": TUNNEL}))
    head = PortPlan.load(config, driver_workers=DRIVERS)
    env_host = PortPlan.load(config, pool_size=DESKTOPS, host_index=HOST_INDEX)
    token = Path(os.environ["RAY_AUTH_TOKEN_PATH"])
    head_dir, env_dir = Path(f"/tmp/rv21-h-{secrets.token_hex(3)}"), Path(f"/tmp/rv21-w-{secrets.token_hex(3)}")
    try:
        done = ray_start(head.head_start_flags(), head_dir, ray_env(token, head.head_env()))
        assert done.returncode == 0, done.stderr[-2000:]
        done = ray_start(env_host.worker_start_flags(DESKTOPS), env_dir, ray_env(token, env_host.worker_env()))
        assert done.returncode == 0, done.stderr[-2000:]
        init_on_this_node(head.head_address, str(head_dir), namespace=f"limits-{secrets.token_hex(3)}",
                          log_to_driver=False)
        yield head, env_host, head_dir, env_dir
    finally:
        ray.shutdown()
        stop_node(env_dir)
        stop_node(head_dir)


def test_the_plans_give_a_200_desktop_host_and_a_128_worker_head_their_ports(cluster):
    head, env_host, _, _ = cluster
    assert len(env_host.env_host.worker_range) == 2 * DESKTOPS + 8
    assert len(head.head.worker_range) >= DRIVERS + 16
    assert set(head.head.worker_range) <= set(env_host.local_forwards())  # the env host forwards all of them
    assert not set(env_host.env_host.worker_range) & set(PortPlan.load(None, host_index=0).env_host.all_ports())


def test_both_nodes_run_with_their_planned_worker_ports_and_the_env_host_offers_200_desktops(cluster):
    head, env_host, head_dir, env_dir = cluster
    assert raylet_worker_ports(head_dir) == head.head.worker_range
    assert raylet_worker_ports(env_dir) == env_host.env_host.worker_range
    units = [n["Resources"].get("osworld_env", 0) for n in ray.nodes() if n["Alive"]]
    assert sorted(units) == [0, DESKTOPS]


def test_a_pool_on_the_big_host_serves_and_its_env_actors_listen_in_the_hosts_block(cluster):
    _, env_host, _, _ = cluster
    pool = EnvPool.create(name="limits", size=3, provider="process", namespace=ray.get_runtime_context().namespace,
                          desktop={"provider": "process", "screen_width": 800, "screen_height": 600},
                          max_concurrent_boots=3)
    try:
        assert pool.status(detail=False).healthy == 3
        with pool.lease(timeout=60) as lease:
            assert ray.get(lease.env.step.remote("pyautogui.moveTo(1, 1)", 0))["observation"]["screenshot"]
        for env in pool.envs().values():
            pid = ray.get(env.status.remote())["details"]["worker_pid"]
            assert listening_ports(pid) & set(env_host.env_host.worker_range), listening_ports(pid)
    finally:
        pool.shutdown()
