"""The one-SSH port plan: every Ray port pinned, each forwarded in the direction Ray dials it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rayenv.errors import ConfigError
from rayenv.tunnel.plan import PortPlan
from rayenv.tunnel.preflight import PreflightError, check_same_head_ports
from rayenv.tunnel.ssh import SshTarget, refused_remote_ports, session_marker

REPO = Path(__file__).resolve().parents[1]


def test_the_shipped_config_is_the_default_plan():
    assert PortPlan.load(REPO / "configs" / "tunnel.yaml") == PortPlan()


def test_the_env_host_reaches_the_heads_gcs_raylet_object_manager_and_workers():
    plan = PortPlan()
    head = plan.head
    assert {head.gcs, head.node_manager, head.object_manager} <= set(plan.local_forwards())
    assert set(head.worker_range) <= set(plan.local_forwards())


def test_the_head_reaches_the_env_hosts_raylet_object_manager_agent_and_workers():
    plan = PortPlan()
    env = plan.env_host
    assert {env.node_manager, env.object_manager, env.dashboard_agent_grpc, env.dashboard_agent_http} <= set(
        plan.remote_forwards())
    assert set(env.worker_range) <= set(plan.remote_forwards())


def test_local_only_ports_are_pinned_but_never_forwarded():
    plan = PortPlan()
    forwarded = set(plan.local_forwards()) | set(plan.remote_forwards())
    local_only = {plan.head.runtime_env_agent, plan.head.metrics_export, plan.head.dashboard, plan.head.client_server,
                  plan.env_host.runtime_env_agent}
    assert not local_only & forwarded


def test_the_env_hosts_metrics_port_reaches_the_head_for_prometheus():
    plan = PortPlan()
    assert plan.env_host.metrics_export in plan.remote_forwards()


def test_each_host_index_gets_a_disjoint_port_block():
    hosts = [PortPlan.load(REPO / "configs" / "tunnel.yaml", pool_size=96, host_index=k) for k in range(8)]
    blocks = [set(plan.remote_forwards()) | plan.env_host.all_ports() for plan in hosts]
    for k, block in enumerate(blocks):
        assert not block & hosts[k].head.all_ports()
        assert all(not block & other for other in blocks[k + 1:])
    assert (hosts[1].env_host.node_manager, hosts[1].env_host.min_worker_port) == (6400, 21200)
    assert hosts[0].env_host == PortPlan().sized_for(96).env_host


def test_more_desktops_than_a_host_block_holds_are_refused():
    with pytest.raises(ConfigError, match="at most 96 desktops per host"):
        PortPlan.load(None, pool_size=97, host_index=1)


def test_worker_ports_grow_with_the_pool():
    assert len(PortPlan().sized_for(40).env_host.worker_range) == 88
    assert len(PortPlan().sized_for(2).env_host.worker_range) == 24  # never below the configured floor


def test_overlapping_sides_are_refused():
    with pytest.raises(ValueError, match="overlap"):
        PortPlan(env_host={**PortPlan().env_host.model_dump(), "node_manager": 6379})


def test_a_broken_config_file_is_a_config_error(tmp_path):
    bad = tmp_path / "tunnel.yaml"
    bad.write_text("tunnel:\n  head: {gcs: 6390}\n")
    with pytest.raises(ConfigError, match="overlap"):
        PortPlan.load(bad)


def test_the_ssh_command_fails_fast_keeps_alive_and_binds_loopback_only():
    target = SshTarget(destination="me@gpu", port=2222, identity="~/.ssh/id", jump="bastion")
    command = target.tunnel_command(PortPlan())
    assert command[0] == "ssh" and command[-2] == "me@gpu" and command[-1] == session_marker(PortPlan())
    assert "ExitOnForwardFailure=yes" in command and "ServerAliveInterval=10" in command
    assert command[command.index("-p") + 1] == "2222" and command[command.index("-J") + 1] == "bastion"
    local = [command[i + 1] for i, word in enumerate(command) if word == "-L"]
    remote = [command[i + 1] for i, word in enumerate(command) if word == "-R"]
    assert local and all(spec.startswith("127.0.0.2:") and ":127.0.0.2:" in spec for spec in local)
    # sshd binds -R on 127.0.0.1 (GatewayPorts no), which is where the env host's node is (direct scheme)
    assert remote and all(spec.startswith("127.0.0.1:") and ":127.0.0.1:" in spec for spec in remote)


def test_the_direct_scheme_lets_ray_derive_the_env_hosts_address():
    """An explicit --node-ip-address=127.0.0.1 would be rewritten by Ray; none is passed."""
    plan = PortPlan()
    assert not plan.relayed
    assert not any(flag.startswith("--node-ip-address") for flag in plan.worker_start_flags(2))


def test_the_relay_scheme_advertises_its_address_and_relays_every_remote_forward():
    plan = PortPlan(env_ip="127.0.0.3")
    assert plan.relayed and "--node-ip-address=127.0.0.3" in plan.worker_start_flags(2)
    relay = plan.relay_command()
    for port in plan.remote_forwards():
        assert f"TCP-LISTEN:{port},bind=127.0.0.3," in relay and f"TCP:127.0.0.1:{port}" in relay


def test_the_head_outlasts_the_configured_outage_before_declaring_the_env_node_dead():
    env = PortPlan(outage_tolerance=120).head_env()
    assert int(env["RAY_health_check_period_ms"]) * int(env["RAY_health_check_failure_threshold"]) >= 120_000
    assert PortPlan(outage_tolerance=120).worker_env() == {"RAY_gcs_rpc_server_reconnect_timeout_s": "120"}


def test_a_refused_remote_forward_names_the_ports_held_by_a_stale_session():
    stderr = ("Warning: remote port forwarding failed for listen port 6390\n"
              "Error: remote port forwarding failed for listen port 6391\n")
    assert refused_remote_ports(stderr) == [6390, 6391]
    assert refused_remote_ports("Connection timed out") == []


def test_rayenv_tunnel_plan_prints_the_commands_as_json():
    rayenv = str(Path(sys.executable).with_name("rayenv"))
    done = subprocess.run([rayenv, "tunnel", "plan", "--size", "16", "--ssh", "me@gpu", "--json"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["commands"]["worker"][:4] == ["ray", "start", "--address=127.0.0.2:6379", "--num-cpus=0"]
    assert '--resources={"osworld_env": 16}' in out["commands"]["worker"]
    assert out["plan"]["env_host"]["worker_ports"] == 40


def test_a_big_env_host_raises_the_per_host_block_and_every_host_still_gets_its_own():
    hosts = [PortPlan(max_desktops_per_host=200).sized_for(200).for_host(k) for k in range(4)]
    assert len(hosts[0].env_host.worker_range) == 408
    ranges = [set(plan.env_host.worker_range) for plan in hosts]
    assert all(not ranges[k] & other for k in range(4) for other in ranges[k + 1:])
    assert hosts[1].env_host.min_worker_port == 21000 + 408


def test_a_host_bigger_than_the_block_names_the_setting_to_raise():
    with pytest.raises(ConfigError, match="max_desktops_per_host: 201"):
        PortPlan.load(None, pool_size=201, host_index=0)


def test_more_hosts_than_the_ports_hold_is_refused_with_the_limit(tmp_path):
    config = tmp_path / "tunnel.yaml"
    config.write_text(yaml.safe_dump({"tunnel": {"max_desktops_per_host": 200}}))
    with pytest.raises(ConfigError, match=r"at most 109 env hosts"):
        PortPlan.load(config, pool_size=200, host_index=109)
    assert PortPlan.load(config, pool_size=200, host_index=108).env_host.max_worker_port <= 65535


def test_the_heads_worker_ports_grow_with_its_driver_workers():
    assert len(PortPlan().sized_for().head.worker_range) == 64  # the shipped size: 48 drivers + spare
    big = PortPlan.load(None, driver_workers=128)
    assert len(big.head.worker_range) >= 128 + 16
    assert set(big.head.worker_range) <= set(big.local_forwards())
    with pytest.raises(ConfigError, match="overlap"):  # the head's range would run into the env hosts'
        PortPlan.load(None, driver_workers=1000)


def test_an_env_host_whose_plan_forwards_other_head_ports_than_the_head_has_is_refused():
    head, here = PortPlan.load(None, driver_workers=128), PortPlan.load(None)
    with pytest.raises(PreflightError, match="--drivers 128"):
        check_same_head_ports(head, here)
    check_same_head_ports(head, PortPlan.load(None, driver_workers=128, pool_size=8, host_index=3))

