"""Several env hosts, one head (issue 13): each joins over its own ssh with the shipped tunnel config
plus only ``--host-index``; one pool spans them; the head scrapes every host's metrics.

Three network namespaces: "cluster" (sshd with GatewayPorts no, `rayenv head start` as a non-root
user, the trainer-side driver) and two env hosts, each firewalled so it can open only TCP to that
sshd. Ports are the shipped defaults (each namespace has its own loopback); the sshd port and the
namespaces are this module's own, so it never collides with tests/test_tunnel_e2e.py.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
import yaml

from rayenv.tools import netns
from rayenv.waiting import wait_until

from env_hosts import Host

pytestmark = [pytest.mark.slow, pytest.mark.netns]

REPO = Path(__file__).resolve().parents[1]
PYTHON = str(Path(sys.executable).absolute())
RAYENV = [PYTHON, "-m", "rayenv.cli.main"]
HEAD = "127.0.0.2:6379"  # the shipped plan's head address
SSH_PORT = 22122


@pytest.fixture(scope="module")
def bed():
    python_home = Path(os.path.realpath(PYTHON)).parent
    with netns.testbed(ssh_port=SSH_PORT, traverse=[python_home, Path(sys.prefix).resolve(), REPO]) as tb:
        tb.tag = secrets.token_hex(3)
        pool = tb.tmp / "pool.yaml"
        pool.write_text(yaml.safe_dump({"pool": {"health_interval": 2.0, "env": {"per_desktop_metrics": True}, "desktop": {
            "screen_width": 800, "screen_height": 600, "boot_timeout": 120}}}))
        pool.chmod(0o644)
        yield tb


def user_env(tb) -> list[str]:
    return ["env", "-i", f"HOME={tb.home}", "PATH=/usr/bin:/bin", f"PYTHONPATH={REPO}:{REPO / 'tests'}",
            "RAY_USAGE_STATS_ENABLED=0", "RAY_AUTH_MODE=token", f"RAY_AUTH_TOKEN_PATH={tb.home}/.ray/auth_token"]


def on_cluster(tb, *argv: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return tb.run(tb.cluster, [*user_env(tb), *argv], as_user=True, timeout=timeout)


def worker_start(tb, host: Host, index: int) -> subprocess.CompletedProcess:
    return tb.run(host.ns, [*RAYENV, "worker", "start", "--ssh", tb.ssh_destination, "--size", "2",
                            "--provider", "process", "--host-index", str(index), "--pool-config",
                            str(tb.tmp / "pool.yaml"), "--temp-dir", host.temp_dir, "--timeout", "120",
                            *tb.ssh_options()], env=host.env(), timeout=900)


def pool_status(tb) -> dict:
    done = on_cluster(tb, *RAYENV, "status", "--json", "--slots", "--address", HEAD, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return {p["name"]: p for p in json.loads(done.stdout)}.get("default", {})


def drive(tb, *args: str) -> list | dict:
    done = on_cluster(tb, PYTHON, str(REPO / "tests" / "multi_host_driver.py"), HEAD, *args)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def hosts(bed):
    done = on_cluster(bed, *RAYENV, "head", "start", "--temp-dir", f"/tmp/rv13-h-{bed.tag}")
    assert done.returncode == 0, done.stdout + done.stderr
    with ExitStack() as stack:
        second = stack.enter_context(netns.extra_envhost(bed, 1))
        joined = [Host(bed.envhost, bed.root_home, f"/tmp/rv13-w0-{bed.tag}"),
                  Host(second.ns, second.root_home, f"/tmp/rv13-w1-{bed.tag}")]
        try:
            for index, host in enumerate(joined):
                started = time.monotonic()
                done = worker_start(bed, host, index)
                assert done.returncode == 0, done.stdout + done.stderr + host.logs()
                host.join_s = round(time.monotonic() - started, 1)
            yield joined
        finally:
            for host in reversed(joined):
                bed.run(host.ns, [*RAYENV, "worker", "stop"], env=host.env(), timeout=180)
            on_cluster(bed, *RAYENV, "head", "stop")


def test_one_pool_spans_both_env_hosts_and_status_shows_each_hosts_desktops(bed, hosts):
    pool = pool_status(bed)
    assert (pool["size"], pool["healthy"]) == (4, 4)
    per_host = {}
    for slot in pool["slots"]:
        per_host[slot["host"]] = per_host.get(slot["host"], 0) + 1
    assert per_host == {hosts[0].host_id: 2, hosts[1].host_id: 2}
    table = on_cluster(bed, *RAYENV, "status", "--address", HEAD).stdout
    assert f"{hosts[0].host_id}: 2 idle" in table and f"{hosts[1].host_id}: 2 idle" in table


def test_each_host_has_its_own_port_block_and_session_records_on_the_head(bed, hosts):
    sessions = bed.home / ".cache" / "rayenv" / "tunnels"
    assert sorted(p.name for p in sessions.iterdir()) == sorted(h.host_id for h in hosts)
    listening = bed.run(bed.cluster, ["ss", "-Hltn"]).stdout
    for port in (6390, 6394, 21000, 6400, 6404, 21200):  # host 0's and host 1's node manager, metrics, workers
        assert f"127.0.0.1:{port} " in listening, port


def scrape_head(tb) -> str:
    """What the head's Prometheus scrapes: every target of Ray's service discovery file, fetched on the head."""
    discovery = next(Path(f"/tmp/rv13-h-{tb.tag}").rglob("prom_metrics_service_discovery.json"))
    targets = [t for group in json.loads(discovery.read_text()) for t in group["targets"]]
    fetch = ("import sys, urllib.request\nfor t in sys.argv[1:]:\n    try:\n"
             "        print(urllib.request.urlopen(f'http://{t}/metrics', timeout=20).read().decode())\n"
             "    except OSError as exc:\n        print(f'# {t}: {exc}')")
    return on_cluster(tb, PYTHON, "-c", fetch, *targets, timeout=120).stdout


def step_counts(text: str, host: str) -> dict[str, float]:
    """``rayenv_env_call_seconds_count`` of phase step per desktop of ``host``."""
    counts = {}
    for labels, value in re.findall(r'^ray_rayenv_env_call_seconds_count\{([^}]*)\} (\S+)$', text, re.M):
        tags = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if tags.get("phase") == "step" and tags.get("host") == host:
            counts[tags["env"]] = float(value)
    return counts


def test_the_head_scrapes_step_histograms_of_every_hosts_desktops(bed, hosts):
    envs = drive(bed, "steps", "3")
    assert sorted(envs.values()) == sorted([hosts[0].host_id] * 2 + [hosts[1].host_id] * 2)
    text = ""

    def histograms_arrived() -> bool:  # what the test asserts, not less: metrics arrive in pieces
        nonlocal text
        text = scrape_head(bed)
        counts = [step_counts(text, h.host_id) for h in hosts]
        return all(len(c) == 2 and all(n >= 3 for n in c.values()) for c in counts)

    waited = wait_until(histograms_arrived, 120, what="3 steps of each desktop of both hosts in the head's histograms",
                        explain=lambda: str({h.host_id: step_counts(text, h.host_id) for h in hosts}), interval=5)
    for series in ("ray_rayenv_env_call_seconds_bucket", "ray_rayenv_pool_desktops", "ray_rayenv_lease_wait_seconds",
                   "ray_rayenv_tunnel_reconnects"):
        assert series in text, series
    assert re.search(rf'ray_rayenv_pool_desktops\{{[^}}]*host="{hosts[1].host_id}"', text)
    print(f"metrics on the head {waited}s after the steps")


def test_killing_one_hosts_ssh_leaves_the_other_hosts_desktops_serving(bed, hosts):
    first, second = hosts
    reconnects = second.status()["reconnects"]
    os.kill(second.status()["ssh_pid"], 9)
    outcomes = drive(bed, "serve", first.host_id, "15")
    assert outcomes and set(outcomes) == {"ok"}, outcomes
    wait_until(lambda: second.status()["reconnects"] > reconnects and second.status()["tunnel"] == "up", 180,
               what="the second host's tunnel coming back", explain=second.logs)
    wait_until(lambda: pool_status(bed).get("healthy") == 4, 300, what="the pool back to 4",
               explain=lambda: str(pool_status(bed)))
    assert first.status()["reconnects"] == 0  # the other host's cleanup never touched this host's session


def test_one_host_leaving_shrinks_the_pool_to_the_others_desktops(bed, hosts):
    first, second = hosts
    stop = bed.run(second.ns, [*RAYENV, "worker", "stop"], env=second.env(), timeout=180)
    assert stop.returncode == 0, stop.stderr
    pool = pool_status(bed)
    assert (pool["size"], pool["healthy"]) == (2, 2)
    assert {slot["host"] for slot in pool["slots"]} == {first.host_id}
    assert drive(bed, "serve", first.host_id, "3")
