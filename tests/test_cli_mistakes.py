"""A new user's usual mistakes, made through the real ``rayenv`` command in a subprocess (issue 19).

Each ends in one or two sentences that name the fix, exit code 2 for a usage or config mistake and 1
for a run that failed, and no traceback unless ``--debug`` asks for one. None of them starts Ray,
Docker or a desktop: every mistake is caught before anything would start (or fails at once where
the thing it needs is not there), so the whole file is fast.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from rayenv.errors import ConfigError
from rayenv.pool.config import PoolConfig

REPO = Path(__file__).resolve().parents[1]
#: A mistake caught before anything starts is reported this fast (the issue saw 30 s+ hangs), load included.
PROMPTLY = 30.0


def rayenv(*args: str, cwd: Path = REPO, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rayenv.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def said(done: subprocess.CompletedProcess) -> str:
    return " ".join(done.stderr.split())


def assert_refused(done: subprocess.CompletedProcess, code: int, *phrases: str) -> None:
    """Exit ``code``, no traceback, and every phrase in what the user reads."""
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.returncode == code, (done.returncode, done.stderr[-2000:])
    for phrase in phrases:
        assert phrase in said(done), (phrase, done.stderr[-2000:])


@pytest.fixture
def pool_yaml(tmp_path):
    def write(text: str, name: str = "pool.yaml") -> str:
        path = tmp_path / name
        path.write_text(text)
        return str(path)
    return write


# -- config typos are refused by name, with the nearest valid key and the file --------------------

def test_a_misspelt_pool_key_is_refused_with_the_nearest_key_and_the_file(pool_yaml):
    path = pool_yaml("pool:\n  szie: 4\n")
    done = rayenv("pool", "create", "--pool-config", path, "--show-config")
    assert_refused(done, 2, path, "unknown key 'pool.szie'", "did you mean 'size'?")


def test_a_misspelt_desktop_key_is_refused_where_it_sits(pool_yaml):
    path = pool_yaml("pool:\n  size: 2\n  desktop:\n    provider: process\n    screen_widht: 800\n")
    done = rayenv("pool", "create", "--pool-config", path, "--show-config")
    assert_refused(done, 2, "unknown key 'pool.desktop.screen_widht'", "did you mean 'screen_width'?")


def test_a_misspelt_env_option_is_refused(pool_yaml):
    done = rayenv("pool", "create", "--pool-config", pool_yaml("pool:\n  env:\n    step_timout: 5\n"), "--show-config")
    assert_refused(done, 2, "unknown key 'pool.env.step_timout'", "did you mean 'step_timeout'?")


def test_a_misspelt_tunnel_key_is_refused(pool_yaml):
    path = pool_yaml("tunnel:\n  outage_tolerence: 100\n", "tunnel.yaml")
    done = rayenv("tunnel", "plan", "--tunnel-config", path)
    assert_refused(done, 2, path, "unknown key 'tunnel.outage_tolerence'", "did you mean 'outage_tolerance'?")


def test_the_tunnel_file_given_as_the_pool_file_is_refused():
    done = rayenv("pool", "create", "--pool-config", "configs/tunnel.yaml", "--show-config")
    assert_refused(done, 2, "configs/tunnel.yaml", "unknown key 'tunnel'")


def test_malformed_yaml_names_the_file_and_the_line(pool_yaml):
    path = pool_yaml("pool:\n  size: [4\n")
    done = rayenv("pool", "create", "--pool-config", path, "--show-config")
    assert_refused(done, 2, path, "malformed YAML", "line 3")


def test_a_yaml_list_instead_of_keys_is_refused(pool_yaml):
    done = rayenv("pool", "create", "--pool-config", pool_yaml("- size: 4\n"), "--show-config")
    assert_refused(done, 2, "expected a mapping of keys")


def test_a_misspelt_provider_flag_is_refused_with_the_nearest_provider():
    done = rayenv("pool", "create", "--provider", "dokcer", "--show-config")
    assert_refused(done, 2, "unknown provider 'dokcer'", "did you mean 'docker'?")


def test_a_misspelt_provider_of_one_desktop_is_refused_before_anything_starts():
    started = time.monotonic()
    done = rayenv("desktop", "run", "--provider", "dokcer")
    assert_refused(done, 2, "unknown provider 'dokcer'", "did you mean 'docker'?")
    assert time.monotonic() - started < PROMPTLY


def test_the_demo_refuses_a_misspelt_provider():
    assert_refused(rayenv("demo", "--provider", "proces"), 2, "did you mean 'process'?")


def test_a_pool_name_with_a_space_says_what_a_name_may_be():
    done = rayenv("pool", "create", "--pool", "my pool", "--show-config")
    assert_refused(done, 2, "pool name 'my pool' must be letters, digits, '_' and '-'")


def test_a_zero_screen_width_is_refused_by_the_flag():
    assert_refused(rayenv("desktop", "run", "--width", "0"), 2, "--width")


def test_a_misspelt_flag_suggests_the_right_one():
    assert_refused(rayenv("pool", "create", "--szie", "4"), 2, "--size")


def test_too_many_desktops_for_one_host_s_port_block_says_the_most_it_holds():
    assert_refused(rayenv("tunnel", "plan", "--size", "97"), 2, "at most 96 desktops per host")


def test_old_flag_spellings_still_work_but_two_that_disagree_are_refused(pool_yaml):
    old = rayenv("pool", "create", "-c", "configs/pool.yaml", "--name", "old-style", "--show-config")
    assert old.returncode == 0 and yaml.safe_load(old.stdout)["pool"]["name"] == "old-style", old.stderr
    both = rayenv("pool", "create", "--pool", "a", "--name", "b", "--show-config")
    assert_refused(both, 2, "--pool and --name (its old name) disagree", "give only --pool")


# -- task files ------------------------------------------------------------------------------------

def test_a_malformed_task_json_names_the_file(tmp_path):
    (tmp_path / "broken.json").write_text('{"id": "x", "instruction": ')
    done = rayenv("demo", "--provider", "process", "--tasks", str(tmp_path / "broken.json"))
    assert_refused(done, 2, "broken.json", "not a readable task JSON")


def test_a_task_without_an_evaluator_names_the_file_and_the_missing_key(tmp_path):
    (tmp_path / "task.json").write_text(json.dumps({"id": "t1", "instruction": "do it", "config": []}))
    done = rayenv("demo", "--provider", "process", "--tasks", str(tmp_path / "task.json"))
    assert_refused(done, 2, "task.json", "evaluator")


# -- no cluster, no server, no file: fail at once with the fix -------------------------------------

@pytest.mark.parametrize("command", [("status",), ("pool", "create"), ("pool", "shutdown")])
def test_no_ray_at_the_address_fails_at_once_saying_how_to_start_one(command):
    started = time.monotonic()
    done = rayenv(*command, "--address", f"127.0.0.1:{closed_port()}")
    assert_refused(done, 1, "nothing answers at 127.0.0.1:", "rayenv head start")
    assert time.monotonic() - started < PROMPTLY


def test_an_address_without_a_port_is_a_usage_mistake():
    assert_refused(rayenv("status", "--address", "my-head"), 2, "'my-head' is not HOST:PORT")


def test_fetching_a_local_file_url_says_to_use_vm_path_and_leaves_no_lock(tmp_path):
    done = rayenv("vm", "fetch", "--url", "file:///nonexistent/Ubuntu.qcow2", "--dir", str(tmp_path / "vm"))
    assert_refused(done, 2, "only http(s) URLs are downloaded", "desktop.vm_path")
    assert not (tmp_path / "vm").exists() or not any((tmp_path / "vm").iterdir())


def test_fetching_from_a_server_that_refuses_fails_at_once(tmp_path):
    started = time.monotonic()
    done = rayenv("vm", "fetch", "--url", f"http://127.0.0.1:{closed_port()}/Ubuntu.qcow2", "--dir", str(tmp_path))
    assert_refused(done, 1, "cannot reach http://127.0.0.1:", "check the URL")
    assert time.monotonic() - started < PROMPTLY


def test_a_refused_ssh_fails_the_worker_at_once_before_anything_starts(tmp_path):
    started = time.monotonic()
    done = rayenv("worker", "start", "--ssh", "nobody@127.0.0.1", "--ssh-port", str(closed_port()), "--size", "1",
                  "--provider", "process", "--temp-dir", str(tmp_path / "ray"))
    assert_refused(done, 1, "ssh nobody@127.0.0.1 failed before anything started", "Connection refused")
    assert time.monotonic() - started < PROMPTLY


def test_a_missing_config_file_is_a_usage_mistake():
    assert_refused(rayenv("pool", "create", "--pool-config", "configs/nope.yaml"), 2, "does not exist")


# -- the escape hatch and the basics ---------------------------------------------------------------

def test_debug_shows_the_traceback_behind_the_sentence(pool_yaml):
    done = rayenv("--debug", "pool", "create", "--pool-config", pool_yaml("pool:\n  szie: 4\n"), "--show-config")
    assert done.returncode == 2 and "Traceback" in done.stderr and "did you mean 'size'?" in done.stderr


def test_version_prints_the_installed_version():
    done = rayenv("--version")
    assert done.returncode == 0 and done.stdout.startswith("rayenv ")


def test_flags_show_no_value_placeholder_in_help():
    out = rayenv("pool", "create", "--help").stdout
    line = next(line for line in out.splitlines() if "--show-config" in line)
    assert "<bool>" not in line


def test_a_misspelt_key_passed_from_python_is_refused_too():
    with pytest.raises(ConfigError, match=r"unknown key 'desktop.screen_widht' \(did you mean 'screen_width'\?\)"):
        PoolConfig.load(None, desktop={"provider": "process", "screen_widht": 800})
