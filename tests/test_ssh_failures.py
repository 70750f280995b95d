"""``rayenv worker start`` fails at once, with the fix, on an ssh failure no retry can cure (issue 12, item 10).

A real sshd in a network namespace (rayenv/tools/netns.py) that the env host reaches with a key it does not
accept, or whose host key the env host does not know; before, each cost the whole 120 s timeout.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from rayenv.tools import netns

pytestmark = [pytest.mark.slow, pytest.mark.netns]

REPO = Path(__file__).resolve().parents[1]
PYTHON = str(Path(sys.executable).absolute())
#: Far less than the 120 s the retries used to take; ssh itself answers within a second here.
PROMPTLY = 20.0


@pytest.fixture(scope="module")
def bed():
    with netns.testbed(ssh_port=22122, traverse=[Path(os.path.realpath(PYTHON)).parent, Path(sys.prefix).resolve(),
                                                 REPO]) as tb:
        (tb.tmp / "tunnel.yaml").write_text(yaml.safe_dump({"tunnel": netns.pinned_ports(27700)}))
        yield tb


def worker_start(tb, *ssh_options: str) -> tuple[subprocess.CompletedProcess, float]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("RAY_")}, "HOME": str(tb.root_home)}
    started = time.monotonic()
    done = tb.run(tb.envhost, [PYTHON, "-m", "rayenv.cli.main", "worker", "start", "--ssh", tb.ssh_destination,
                               "--size", "1", "--provider", "process", "--config", str(tb.tmp / "tunnel.yaml"),
                               "--temp-dir", str(tb.tmp / "ray-w"), "--ssh-port", str(tb.ssh_port), *ssh_options],
                  env=env, timeout=300)
    return done, time.monotonic() - started


def test_a_key_the_head_refuses_fails_at_once_saying_where_to_add_it(bed):
    stranger = bed.tmp / "stranger"
    netns.sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger))
    done, took = worker_start(bed, "--identity", str(stranger), "--ssh-option", f"UserKnownHostsFile={bed.known_hosts}")
    output = " ".join((done.stdout + done.stderr).split())
    assert done.returncode != 0 and took < PROMPTLY, (took, output)
    assert "Permission denied (publickey)" in output
    assert "add its public key to ~/.ssh/authorized_keys of that user on the head" in output


def test_an_unknown_host_key_fails_at_once_saying_how_to_accept_it(bed):
    empty = bed.tmp / "empty_known_hosts"
    empty.write_text("")
    done, took = worker_start(bed, "--identity", str(bed.key), "--ssh-option", f"UserKnownHostsFile={empty}",
                              "--ssh-option", "StrictHostKeyChecking=yes")
    output = " ".join((done.stdout + done.stderr).split())
    assert done.returncode != 0 and took < PROMPTLY, (took, output)
    assert "Host key verification failed" in output
    assert f"run `ssh {bed.ssh_destination}` once by hand, check and accept the key" in output
