"""The env host joins the cluster over one ssh and survives a flaky link (issue 4's acceptance).

Two network namespaces: "cluster" (sshd with GatewayPorts no; `rayenv head start` as a non-root
user; the trainer-side driver) and "envhost" (root; firewalled so it can open only TCP to that
sshd; `rayenv worker start --ssh ...`). Every scenario reports its recovery time to
``tunnel_recovery.json`` in ``$RAYENV_RESULTS_DIR`` (default ``~/.cache/rayenv/results``, so a test
run leaves the checkout as it was); ``RAYENV_RESULTS_DIR=bench/results`` refreshes the committed record.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from rayenv.tools import netns
from rayenv.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.netns]

REPO = Path(__file__).resolve().parents[1]
PYTHON = str(Path(sys.executable).absolute())
#: the rayenv command; override to try an unreleased CLI layout
RAYENV = os.environ.get("RAYENV_CLI", f"{PYTHON} -m rayenv.cli.main").split()
PORTS = netns.pinned_ports(21000)
HEAD = f"127.0.0.2:{PORTS['head']['gcs']}"
SIDECAR = 21082
CALL_TIMEOUT = 20.0
RESULTS = Path(os.environ.get("RAYENV_RESULTS_DIR", Path.home() / ".cache" / "rayenv" / "results")).resolve() \
    / "tunnel_recovery.json"


@pytest.fixture(scope="module")
def bed():
    python_home = Path(os.path.realpath(PYTHON)).parent
    verl_venv = (REPO / ".venv-verl").resolve()  # the smoke run's trainer side
    with netns.testbed(traverse=[python_home, Path(sys.prefix).resolve(), REPO, verl_venv]) as tb:
        tmp = tb.tmp
        tb.tag = secrets.token_hex(3)
        (tmp / "tunnel.yaml").write_text(yaml.safe_dump({"tunnel": {**PORTS, "keepalive_interval": 5,
                                                                    "outage_tolerance": 240}}))
        (tmp / "pool.yaml").write_text(yaml.safe_dump({"pool": {"health_interval": 2.0, "desktop": {
            "screen_width": 1024, "screen_height": 768, "boot_timeout": 120}}}))
        for path in (tmp / "tunnel.yaml", tmp / "pool.yaml"):
            path.chmod(0o644)
        yield tb


def user_env(tb) -> list[str]:
    return ["env", "-i", f"HOME={tb.home}", "PATH=/usr/bin:/bin", f"PYTHONPATH={REPO}:{REPO / 'tests'}",
            "RAY_USAGE_STATS_ENABLED=0"]


def driver_env(tb) -> list[str]:
    return [*user_env(tb), "RAY_AUTH_MODE=token", f"RAY_AUTH_TOKEN_PATH={tb.home}/.ray/auth_token"]


def root_env(tb) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    return {**keep, "HOME": str(tb.root_home), "RAY_USAGE_STATS_ENABLED": "0"}


def worker_start(tb, *extra: str):
    return tb.run(tb.envhost, [*RAYENV, "worker", "start", "--ssh", tb.ssh_destination, "--size", "2",
                               "--provider", "process", "--config", str(tb.tmp / "tunnel.yaml"),
                               "--pool-config", str(tb.tmp / "pool.yaml"), "--temp-dir", f"/tmp/rv-w-{tb.tag}",
                               "--sidecar-port", str(SIDECAR), "--timeout", "90", *tb.ssh_options(), *extra],
                  env=root_env(tb), timeout=900)


def health(tb) -> dict:
    done = tb.run(tb.envhost, [PYTHON, "-c", f"import urllib.request;print(urllib.request.urlopen("
                                             f"'http://127.0.0.1:{SIDECAR}/health', timeout=30).read().decode())"])
    return json.loads(done.stdout) if done.returncode == 0 else {}


def tunnel_status(tb) -> dict:
    return json.loads((tb.root_home / ".cache" / "rayenv" / "worker" / "status.json").read_text())


def worker_logs(tb) -> str:
    """The supervisor's and ssh's own words, for a failure message."""
    directory = tb.root_home / ".cache" / "rayenv" / "worker"
    return "\n".join(f"--- {name}\n{(directory / name).read_text()[-3000:]}" for name in ("supervisor.log", "ssh.log")
                     if (directory / name).exists())


def pool_full(tb) -> bool:
    h = health(tb)
    return h.get("tunnel") == "up" and h.get("healthy") == 2 and h.get("pool_size") == 2


def record(scenario: str, **numbers) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[scenario] = numbers
    RESULTS.write_text(json.dumps(results, indent=2))


@pytest.fixture(scope="module")
def head(bed):
    done = bed.run(bed.cluster, [*user_env(bed), *RAYENV, "head", "start", "--config", str(bed.tmp / "tunnel.yaml"),
                                 "--temp-dir", f"/tmp/rv-h-{bed.tag}"], as_user=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"RAY_ADDRESS={HEAD}" in done.stdout
    yield bed
    bed.run(bed.cluster, [*user_env(bed), *RAYENV, "head", "stop"], as_user=True)


def test_a_ray_version_other_than_the_heads_is_refused_with_the_fix(head):
    info_path = head.home / ".cache" / "rayenv" / "head" / "head.json"
    original = info_path.read_text()
    info_path.write_text(json.dumps({**json.loads(original), "ray": "2.0.0"}))
    try:
        done = worker_start(head)
    finally:
        info_path.write_text(original)
    assert done.returncode == 2
    text = " ".join(done.stderr.split())
    assert "The head runs Ray 2.0.0" in text and "ray[default]==2.0.0" in text
    assert not (head.root_home / ".cache" / "rayenv" / "worker" / "supervisor.pid").exists()


def test_a_taken_port_is_refused_naming_the_port_and_the_fix(head):
    squatter = head.popen(head.envhost, [PYTHON, "-c", "import socket,time;s=socket.socket();"
                                                      "s.bind(('127.0.0.1', 21391));s.listen();time.sleep(600)"])
    try:
        time.sleep(1.5)
        done = worker_start(head)
    finally:
        squatter.kill()
        squatter.wait()
    assert done.returncode == 2
    text = " ".join(done.stderr.split())
    assert "127.0.0.1:21391" in text and "object manager" in text and "rayenv worker stop" in text


@pytest.fixture(scope="module")
def worker(head):
    done = worker_start(head)
    assert done.returncode == 0, done.stdout + done.stderr
    yield head
    stop = head.run(head.envhost, [*RAYENV, "worker", "stop"], env=root_env(head), timeout=180)
    assert stop.returncode == 0, stop.stderr


def drive(tb, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return tb.run(tb.cluster, [*driver_env(tb), PYTHON, str(REPO / "tests" / "tunnel_driver.py"), HEAD, *args],
                  as_user=True, timeout=timeout)


def test_a_driver_on_the_cluster_scores_a_task_on_desktops_of_the_env_host(worker):
    done = drive(worker, "episode")
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["score"] == 1.0 and result["done"] is True
    # the env host is 127.0.0.1 as Ray sees it: the direct scheme, no localhost rewrite, no relay
    assert sorted(result["nodes"].values()) == ["127.0.0.1", "127.0.0.2"]


def test_health_on_the_env_host_reports_the_pool_the_node_and_the_tunnel(worker):
    h = health(worker)
    assert {"status", "provider", "observation_type", "screenshot_source", "kvm_available", "kvm_device",
            "env_status", "message"} <= h.keys()
    assert (h["status"], h["env_status"], h["provider"]) == ("ok", "initialized", "process")
    assert (h["pool_size"], h["healthy"], h["ray_connected"], h["tunnel"]) == (2, 2, True, "up")
    assert h["node_id"]


def test_rayenv_status_on_the_cluster_lists_the_env_hosts_pool(worker):
    done = worker.run(worker.cluster, [*driver_env(worker), *RAYENV, "status", "--json", "--address", HEAD],
                      as_user=True)
    assert done.returncode == 0, done.stderr[-2000:]
    pools = {p["name"]: p for p in json.loads(done.stdout)}
    assert pools["default"]["size"] == 2 and pools["default"]["healthy"] == 2


def test_the_verl_smoke_dry_run_on_the_cluster_uses_the_pool_worker_start_made(worker):
    verl_python = REPO / ".venv-verl" / "bin" / "python"
    assert verl_python.exists(), "run scripts/verl-venv.sh to create the verl trainer virtualenv"
    data = worker.tmp / "smoke-data"
    data.mkdir(mode=0o777, exist_ok=True)
    data.chmod(0o777)
    done = worker.run(worker.cluster, [*driver_env(worker), f"RAY_ADDRESS={HEAD}", "RAYENV_SMOKE_POOL_TIMEOUT=120",
                                       str(verl_python), "-m", "rayenv.verl.smoke", "--dry-run",
                                       f"data.train_files={data}/train.parquet", f"data.val_files={data}/train.parquet"],
                      as_user=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "pool 'default' found in namespace 'rayenv'" in done.stderr
    assert "2 of 2 desktops healthy" in done.stderr
    assert done.stdout.strip().startswith(f"RAY_ADDRESS={HEAD} ") and "verl.trainer.main_ppo" in done.stdout


def _outage(tb, scenario: str, cause) -> None:
    """Keep stepping a desktop from the cluster while ``cause`` breaks the tunnel; check calls and recovery."""
    before = tunnel_status(tb)
    node_before = health(tb)["node_id"]
    calls = subprocess.Popen(tb.argv(tb.cluster, [*driver_env(tb), PYTHON, str(REPO / "tests" / "tunnel_driver.py"),
                                                  HEAD, "inflight", "300", str(CALL_TIMEOUT)], as_user=True),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(12)
    cause()
    started = time.monotonic()  # recovery counts from the end of the fault: ssh killed, link back up
    wait_until(lambda: tunnel_status(tb)["reconnects"] > before["reconnects"], 120, what="the supervisor noticing",
               explain=lambda: worker_logs(tb))
    tunnel_back = wait_until(lambda: tunnel_status(tb)["tunnel"] == "up", 300, what="the tunnel coming back",
                             explain=lambda: worker_logs(tb))
    wait_until(lambda: pool_full(tb), 300, what="the pool back to full size",
               explain=lambda: f"{health(tb)}\n{worker_logs(tb)}")
    recovered = round(time.monotonic() - started, 1)
    out, err = calls.communicate(timeout=CALL_TIMEOUT * 4)  # closes its stdin: it stops after its next good call
    outcomes = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert outcomes, err[-3000:]
    assert all(c["seconds"] <= CALL_TIMEOUT + 5 for c in outcomes), outcomes
    failures = [c for c in outcomes if c["outcome"] != "ok"]
    assert all(c["typed"] for c in failures), failures  # a Ray error or a rayenv error, never a bare one
    assert outcomes[-1]["outcome"] == "ok" and outcomes[-1]["at"] > started, outcomes[-5:]  # calls work again
    after = tunnel_status(tb)
    record(scenario, recovered_s=recovered, tunnel_back_s=tunnel_back, outage_s=after["last_outage_s"],
           calls=len(outcomes), failed_calls=len(failures), errors=sorted({c["outcome"].split(":")[0] for c in failures}),
           same_node=health(tb)["node_id"] == node_before, stale_cleanups=after["stale_cleanups"])


def test_killing_the_ssh_process_is_repaired_and_calls_never_hang(worker):
    _outage(worker, "ssh killed", lambda: os.kill(tunnel_status(worker)["ssh_pid"], 9))


def test_a_link_down_for_60s_is_survived_with_the_same_node(worker):
    def link_down_60s():
        worker.set_link(False)
        time.sleep(60)
        worker.set_link(True)

    _outage(worker, "link down 60 s", link_down_60s)
    assert json.loads(RESULTS.read_text())["link down 60 s"]["same_node"]


def test_a_stale_remote_listener_on_the_head_is_cleaned_up(worker):
    before = tunnel_status(worker)["stale_cleanups"]

    def rebind():  # the NAT forgets us: our side dies, the head's sshd never hears of it
        ssh_pid = tunnel_status(worker)["ssh_pid"]
        worker.set_link(False)
        worker.forget_connection(ssh_pid)
        os.kill(ssh_pid, 9)
        time.sleep(3)
        worker.set_link(True)

    _outage(worker, "stale -R listener", rebind)
    assert tunnel_status(worker)["stale_cleanups"] > before


def test_worker_stop_leaves_nothing_running_on_the_env_host(worker):
    stop = worker.run(worker.envhost, [*RAYENV, "worker", "stop"], env=root_env(worker), timeout=180)
    assert stop.returncode == 0, stop.stderr
    survivors = [pid for pid in worker.pids(worker.envhost)]
    assert survivors == [], [Path(f"/proc/{p}/cmdline").read_bytes()[:200] for p in survivors]
