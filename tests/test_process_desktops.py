"""Process desktops die with the process that started them, and the reaper cleans what is left (issue 12, item 7).

A child Python process plays the env actor's Ray worker: it starts a real desktop (Xvfb, openbox,
guest server) and is then killed with SIGKILL, which is what ``ray stop``, an OOM kill or a crash
does to a worker.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import psutil
import pytest

from test_guest_package import bare_x_server

from rayenv.desktop_lite.process import group_gone, reap_orphans, run_dir, start_desktop
from rayenv.env.guest_client import GuestClient
from rayenv.errors import ActionFailed
from rayenv.waiting import wait_until

pytestmark = [pytest.mark.slow]

OWNER = "process-tests"
WORKER = """
import json, sys
from rayenv.desktop_lite.process import start_desktop
desktop = start_desktop(owner=sys.argv[1], env_name=sys.argv[2], actor_id="", width=640, height=480, timeout=60)
print(json.dumps({"pgid": desktop.pgid, "watchdog": desktop.watchdog.pid, "workdir": str(desktop.workdir)}), flush=True)
sys.stdin.read()
"""


@pytest.fixture
def runs(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYENV_RUN_DIR", str(tmp_path / "run"))
    return tmp_path / "run"



def exited(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # re-parented: init reaps it
    except psutil.NoSuchProcess:
        return True


def start_in_worker(env_name: str) -> tuple[subprocess.Popen, dict]:
    worker = subprocess.Popen([sys.executable, "-c", WORKER, OWNER, env_name], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=os.environ)
    return worker, json.loads(worker.stdout.readline())


def test_a_desktop_dies_with_the_worker_that_started_it_and_leaves_no_files(runs):
    worker, desktop = start_in_worker("orphan-1")
    assert not group_gone(desktop["pgid"]) and Path(desktop["workdir"]).is_dir()
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    killed = time.monotonic()
    wait_until(lambda: group_gone(desktop["pgid"]), timeout=10, what="the desktop's process group to die",
               interval=0.1)
    assert time.monotonic() - killed < 3
    wait_until(lambda: not Path(desktop["workdir"]).exists(), timeout=10, what="its work directory to go")
    assert list((runs / OWNER).glob("*.json")) == []
    wait_until(lambda: exited(desktop["watchdog"]), timeout=5, what="the watchdog to exit", interval=0.1)


def test_the_reaper_stops_a_leftover_desktop_whose_watchdog_died_as_well(runs):
    worker, desktop = start_in_worker("orphan-2")
    os.kill(desktop["watchdog"], signal.SIGKILL)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    time.sleep(1.0)
    assert not group_gone(desktop["pgid"])  # nothing else ends it
    assert reap_orphans(OWNER, lambda actor_id: True) == ["orphan-2"]
    assert not Path(desktop["workdir"]).exists()
    # killed; gone once init has reaped them (its parent died: under load that can take longer than the kill's wait)
    wait_until(lambda: group_gone(desktop["pgid"]), timeout=10, what="the desktop's process group to go", interval=0.1)


def test_the_reaper_leaves_alone_a_process_that_reused_a_recorded_process_group(runs):
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        record = run_dir(OWNER) / "stale.json"
        record.parent.mkdir(parents=True)
        record.write_text(json.dumps({"env": "stale", "actor_id": "", "pgid": bystander.pid,
                                      "started": psutil.Process(bystander.pid).create_time() - 3600,
                                      "workdir": str(runs / "gone")}))
        assert reap_orphans(OWNER, lambda actor_id: True) == ["stale"]
        assert bystander.poll() is None and not record.exists()
    finally:
        bystander.kill()
        bystander.wait()


@pytest.mark.skipif(os.geteuid() != 0, reason="the session drops root only when the worker has it")
def test_a_process_desktops_action_cannot_write_to_roots_home(runs):
    desktop = start_desktop(owner=OWNER, env_name="unprivileged", actor_id="", width=640, height=480, timeout=60)
    guest = GuestClient(f"http://127.0.0.1:{desktop.port}", env="unprivileged")
    try:
        escape = Path.home() / f"rayenv-escape-{os.getpid()}"
        with pytest.raises(ActionFailed, match="PermissionError"):
            guest.run_action(f"open({str(escape)!r}, 'w').write('root?')", timeout=30)
        assert not escape.exists()
        guest.run_action("import os; open(os.path.expanduser('~/mine.txt'), 'w').write('ok')", timeout=30)
        mine = desktop.workdir / "home" / "mine.txt"
        assert mine.read_text() == "ok" and mine.stat().st_uid != 0
    finally:
        guest.close()
        desktop.stop()


@pytest.mark.netns
def test_a_desktop_in_another_network_namespace_on_the_same_display_number_leaves_each_its_own_screen(runs):
    """/tmp/.X11-unix is one directory for every network namespace of a host (an env host's desktops under
    test, containers that mount it), but each namespace numbers its displays from 0: a desktop's clients
    (the guest's screenshots, pyautogui in actions) must still reach its own X server."""
    mine = start_desktop(owner=OWNER, env_name="here", actor_id="", width=640, height=480, timeout=60)
    guest = GuestClient(f"http://127.0.0.1:{mine.port}", env="here")
    namespace = f"rayenv-x-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    other, below = None, ExitStack()
    try:
        subprocess.run(["ip", "netns", "exec", namespace, "ip", "link", "set", "lo", "up"], check=True)
        # the numbers below this desktop's are taken there too, so the other desktop gets the same number
        for number in range(int(mine.display.lstrip(":"))):
            below.enter_context(bare_x_server(f":{number}", namespace))
        other = subprocess.Popen(["ip", "netns", "exec", namespace, sys.executable, "-c",
                                  WORKER.replace("width=640, height=480", "width=320, height=200"), OWNER, "there"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=os.environ)
        there = json.loads(other.stdout.readline())
        assert Path(there["workdir"], "display").read_text().strip() == mine.display  # the case in question
        assert guest.screen_size() == (640, 480)
        sized = guest.run_action("import pyautogui; print(tuple(pyautogui.size()))", timeout=30)
        assert sized.output.strip() == "(640, 480)"
    finally:
        if other is not None:
            other.stdin.close()
            other.wait()
        below.close()
        subprocess.run(["ip", "netns", "del", namespace], check=False)
        guest.close()
        mine.stop()
