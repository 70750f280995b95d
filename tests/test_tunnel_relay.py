"""The alternative scheme, tried with the same tools: the env host advertises 127.0.0.3 and a socat
relay on the head maps it to the ssh -R listeners on 127.0.0.1. It works too; the direct scheme is the
default because it needs nothing on the head (see docs/remote-env-host.md)."""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path

import pytest
import yaml

from rayenv.tools import netns
import test_tunnel_e2e as e2e

pytestmark = [pytest.mark.slow, pytest.mark.netns, pytest.mark.exclusive]  # its task waits 20 s for a dialog: see pyproject


@pytest.fixture
def relayed_head():
    with netns.testbed(traverse=[Path(os.path.realpath(e2e.PYTHON)).parent, Path(sys.prefix).resolve(),
                                 e2e.REPO]) as tb:
        tb.tag = secrets.token_hex(3)
        (tb.tmp / "tunnel.yaml").write_text(yaml.safe_dump({"tunnel": {**e2e.PORTS, "env_ip": "127.0.0.3"}}))
        (tb.tmp / "pool.yaml").write_text(yaml.safe_dump({"pool": {"desktop": {"screen_width": 800,
                                                                               "screen_height": 600}}}))
        done = tb.run(tb.cluster, [*e2e.user_env(tb), *e2e.RAYENV, "head", "start", "--config",
                                   str(tb.tmp / "tunnel.yaml"), "--temp-dir", f"/tmp/rv-rh-{tb.tag}"], as_user=True)
        assert done.returncode == 0, done.stdout + done.stderr
        yield tb
        tb.run(tb.envhost, [*e2e.RAYENV, "worker", "stop"], env=e2e.root_env(tb), timeout=180)
        tb.run(tb.cluster, [*e2e.user_env(tb), *e2e.RAYENV, "head", "stop"], as_user=True)


def test_the_relay_scheme_scores_a_task_with_the_env_host_at_127_0_0_3(relayed_head):
    done = e2e.worker_start(relayed_head)
    assert done.returncode == 0, done.stdout + done.stderr
    episode = e2e.drive(relayed_head, "episode")
    assert episode.returncode == 0, episode.stderr[-3000:]
    result = json.loads(episode.stdout.strip().splitlines()[-1])
    assert result["score"] == 1.0
    assert sorted(result["nodes"].values()) == ["127.0.0.2", "127.0.0.3"]
