"""A trainer-side driver for the multi-host tests, run on the "cluster" side as the unprivileged user.

``steps N``: lease every desktop of the pool, reset each and take N steps on each; prints
``{env: host}``. ``serve HOST SECONDS``: lease the desktops on env host HOST and keep stepping them for
SECONDS, each call bounded; prints the outcomes (``ok`` or the error type) as JSON.
"""

from __future__ import annotations

import json
import sys
import time

import ray

from rayenv import EnvPool


def leases_on(pool: EnvPool, host: str | None) -> list:
    """Lease every desktop (on ``host`` only, if given), giving back the others."""
    status = pool.status()
    wanted = [s for s in status.slots if host is None or s.host == host]
    leases, others = [], []
    while len(leases) < len(wanted):
        lease = pool.acquire(timeout=120)
        mine = any(s.slot == lease.slot for s in wanted)
        (leases if mine else others).append(lease)
    for lease in others:
        pool.release(lease)
    return leases


def steps(count: int) -> dict[str, str]:
    pool = EnvPool.connect("default")
    leases = leases_on(pool, None)
    try:
        ray.get([lease.env.reset.remote(None) for lease in leases])
        for _ in range(count):
            ray.get([lease.env.step.remote("pyautogui.moveTo(30, 30)", 0) for lease in leases])
    finally:
        for lease in leases:
            pool.release(lease)
    hosts = {s.env_name: s.host for s in pool.status().slots}
    return {lease.env_name: hosts.get(lease.env_name, "") for lease in leases}


def serve(host: str, seconds: float) -> list[str]:
    pool = EnvPool.connect("default")
    leases = leases_on(pool, host)
    outcomes = []
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for lease in leases:
                try:
                    ray.get(lease.env.step.remote("pyautogui.moveTo(40, 40)", 0), timeout=15)
                    outcomes.append("ok")
                except Exception as exc:  # the point: which error, if any
                    outcomes.append(type(exc).__name__)
    finally:
        for lease in leases:
            pool.release(lease)
    return outcomes


if __name__ == "__main__":
    ray.init(address=sys.argv[1], namespace="rayenv", log_to_driver=False)
    if sys.argv[2] == "steps":
        print(json.dumps(steps(int(sys.argv[3]))))
    else:
        print(json.dumps(serve(sys.argv[3], float(sys.argv[4]))))
