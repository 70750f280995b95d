"""Env hosts that join the head directly (issue 21): ``rayenv worker start --address HEAD:PORT``, no ssh.

Three network namespaces joined by routed links (what a LAN or a WireGuard/Tailscale overlay gives):
"cluster" runs `rayenv head start --node-ip` as a non-root user and the trainer-side driver; two env hosts
each bring a copy of the head's token and join with process desktops. One pool spans both; when one
host's Ray node dies, the other host's desktops keep serving, and the supervisor's re-join brings the
lost host's slots back. The fast tests check the refusals that need no cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import psutil
import pytest
import yaml

from rayenv.tools import netns
from rayenv.waiting import wait_until

from env_hosts import Host

REPO = Path(__file__).resolve().parents[1]
PYTHON = str(Path(sys.executable).absolute())
RAYENV = [PYTHON, "-m", "rayenv.cli.main"]
SSH_PORT = 22222  # the testbed's sshd, unused by a direct join; this module's own port
GCS = 6379


def test_a_direct_join_to_a_head_that_does_not_answer_fails_at_once_with_the_fix(tmp_path):
    started = time.monotonic()
    done = subprocess.run([*RAYENV, "worker", "start", "--address", "127.0.0.1:1", "--size", "1",
                           "--provider", "process", "--temp-dir", str(tmp_path / "ray")], capture_output=True,
                          text=True, env={**os.environ, "HOME": str(tmp_path)}, timeout=120)
    assert done.returncode != 0
    said = " ".join((done.stdout + done.stderr).split())
    assert "does not answer from this env host" in said and "rayenv head start --node-ip" in said, said
    assert not (tmp_path / ".cache" / "rayenv" / "worker" / "supervisor.pid").exists()
    assert time.monotonic() - started < 60


def test_a_worker_start_needs_exactly_one_way_to_reach_the_head(tmp_path):
    env = {**os.environ, "HOME": str(tmp_path)}
    neither = subprocess.run([*RAYENV, "worker", "start", "--size", "1"], capture_output=True, text=True, env=env)
    both = subprocess.run([*RAYENV, "worker", "start", "--size", "1", "--ssh", "u@h", "--address", "h:6379"],
                          capture_output=True, text=True, env=env)
    for done in (neither, both):
        assert done.returncode != 0
        assert "exactly one of --ssh" in " ".join((done.stdout + done.stderr).split())


def user_env(tb) -> list[str]:
    return ["env", "-i", f"HOME={tb.home}", "PATH=/usr/bin:/bin", f"PYTHONPATH={REPO}:{REPO / 'tests'}",
            "RAY_USAGE_STATS_ENABLED=0", "RAY_AUTH_MODE=token", f"RAY_AUTH_TOKEN_PATH={tb.home}/.ray/auth_token"]


def on_cluster(tb, *argv: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return tb.run(tb.cluster, [*user_env(tb), *argv], as_user=True, timeout=timeout)


def pool_status(tb) -> dict:
    done = on_cluster(tb, *RAYENV, "status", "--json", "--slots", "--address", tb.head, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return {p["name"]: p for p in json.loads(done.stdout)}.get("default", {})


def slots_per_host(pool: dict) -> dict[str, int]:
    counts: dict[str, int] = {}
    for slot in pool.get("slots", []):
        if slot["state"] in ("idle", "leased"):
            counts[slot["host"]] = counts.get(slot["host"], 0) + 1
    return counts


def serve(tb, host: Host, seconds: int) -> list[str]:
    done = on_cluster(tb, PYTHON, str(REPO / "tests" / "multi_host_driver.py"), tb.head, "serve", host.host_id,
                      str(seconds))
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def bed():
    python_home = Path(os.path.realpath(PYTHON)).parent
    with netns.testbed(ssh_port=SSH_PORT, traverse=[python_home, Path(sys.prefix).resolve(), REPO],
                       routed=True) as tb:
        tb.head = f"{tb.cluster_ip}:{GCS}"
        # a node whose raylet died is declared dead in 15 s (not the ssh path's 180): it never comes back as itself
        (tb.tmp / "tunnel.yaml").write_text(yaml.safe_dump({"tunnel": {"outage_tolerance": 15}}))
        (tb.tmp / "pool.yaml").write_text(yaml.safe_dump({"pool": {"health_interval": 2.0, "unreachable_grace": 5.0,
                                                                   "desktop": {"screen_width": 800,
                                                                               "screen_height": 600}}}))
        for name in ("tunnel.yaml", "pool.yaml"):
            (tb.tmp / name).chmod(0o644)
        yield tb


def worker_start(tb, host: Host) -> subprocess.CompletedProcess:
    return tb.run(host.ns, [*RAYENV, "worker", "start", "--address", tb.head, "--token-file",
                            str(tb.home / ".ray" / "auth_token"), "--size", "2", "--provider", "process",
                            "--pool-config", str(tb.tmp / "pool.yaml"), "--tunnel-config", str(tb.tmp / "tunnel.yaml"),
                            "--temp-dir", host.temp_dir, "--timeout", "120"], env=host.env(), timeout=600)


@pytest.fixture(scope="module")
def hosts(bed):
    done = on_cluster(bed, *RAYENV, "head", "start", "--node-ip", bed.cluster_ip, "--tunnel-config",
                      str(bed.tmp / "tunnel.yaml"), "--temp-dir", f"/tmp/rv21-h-{os.getpid()}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"--address {bed.head}" in done.stdout  # the head prints the direct join's command
    with ExitStack() as stack:
        second = stack.enter_context(netns.extra_envhost(bed, 1, routed=True))
        joined = [Host(bed.envhost, bed.root_home, f"/tmp/rv21-w0-{os.getpid()}"),
                  Host(second.ns, second.root_home, f"/tmp/rv21-w1-{os.getpid()}")]
        try:
            for host in joined:
                done = worker_start(bed, host)
                assert done.returncode == 0, done.stdout + done.stderr + host.logs()
            yield joined
        finally:
            for host in reversed(joined):
                bed.run(host.ns, [*RAYENV, "worker", "stop", "--keep-pool"], env=host.env(), timeout=180)
            on_cluster(bed, *RAYENV, "head", "stop")


@pytest.mark.slow
@pytest.mark.netns
def test_two_env_hosts_join_directly_and_one_pool_spans_both(bed, hosts):
    assert all(h.status()["tunnel"] == "direct" and h.status()["ray_joined"] for h in hosts)
    assert not [p for h in hosts for p in bed.pids(h.ns) if psutil.Process(p).name() == "ssh"]
    pool = pool_status(bed)
    assert (pool["size"], pool["healthy"]) == (4, 4)
    assert slots_per_host(pool) == {hosts[0].host_id: 2, hosts[1].host_id: 2}


@pytest.mark.slow
@pytest.mark.netns
def test_a_lost_hosts_node_leaves_the_other_serving_and_its_slots_return_when_it_rejoins(bed, hosts):
    first, second = hosts
    second.raylet().kill()  # the host's Ray node dies (its desktops' actors with it)
    outcomes = serve(bed, first, 15)
    assert outcomes and set(outcomes) == {"ok"}, outcomes
    wait_until(lambda: second.status()["rejoins"] >= 1, 120, what="the second host's supervisor re-joining Ray",
               explain=second.logs)

    def both_hosts_back() -> bool:
        pool = pool_status(bed)
        return pool.get("healthy") == 4 and slots_per_host(pool) == {first.host_id: 2, second.host_id: 2}

    wait_until(both_hosts_back, 150, interval=3, what="the lost host's two slots back in the pool",
               explain=lambda: json.dumps(slots_per_host(pool_status(bed))) + second.logs())
    assert set(serve(bed, second, 3)) == {"ok"}
