"""A trainer-side driver for the tunnel tests, run on the "cluster" side as the unprivileged user.

``episode``: lease a desktop of the pool on the env host, solve a sample task, print the score.
``inflight SECONDS TIMEOUT``: keep stepping one desktop for at most SECONDS, each call bounded by TIMEOUT;
prints every call's outcome (ok, or the error's type) and duration, so a test can check that calls
across a tunnel outage complete or fail typed, never hang. It stops early, after its next call that
succeeds, that starts after its standard input is closed: the test closes it when the tunnel has recovered.
A desktop that cannot even be reset is released as broken and another leased, as a trainer does (at most
twice, each said on stderr): the outage, not the desktop, is what the calls measure.
"""

from __future__ import annotations

import json
import select
import sys
import time
from pathlib import Path

import ray
from ray.exceptions import RayError

from rayenv import EnvPool
from rayenv.env.tasks import load_tasks
from rayenv.errors import DesktopUnavailable, RayEnvError

REPO = Path(__file__).resolve().parents[1]


def episode() -> dict:
    task = next(t for t in load_tasks(REPO / "OSWorld" / "tasks") if t["id"] == "mousepad-save-hello")
    pool = EnvPool.connect("default")
    with pool.lease(timeout=120) as leased:
        env = leased.env
        nodes = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}
        obs = ray.get(env.reset.remote(task))
        for action in list(task["rayenv_solution"]) + ["DONE"]:
            result = ray.get(env.step.remote(action))
        score = ray.get(env.evaluate.remote())
        where = ray.get(env.status.remote())
    return {"score": score, "screenshot_bytes": len(obs["screenshot"]), "done": result["done"], "nodes": nodes,
            "env_status": str(where)[:300]}


def _closed(stream, wait: float) -> bool:
    """Whether ``stream`` reached end of file, waiting at most ``wait`` seconds (the pause between calls)."""
    readable, _, _ = select.select([stream], [], [], wait)
    return bool(readable) and stream.buffer.read1(4096) == b""


def _reset_desktop(pool: EnvPool, tries: int = 3):
    """A lease whose desktop answered ``reset``; desktops that did not are released as broken."""
    for attempt in range(1, tries + 1):
        lease = pool.acquire(timeout=120)
        try:
            ray.get(lease.env.reset.remote(None))
            return lease
        except DesktopUnavailable as exc:  # Ray's task error is also an instance of its cause
            print(f"reset attempt {attempt}: {exc}; releasing it as broken", file=sys.stderr, flush=True)
            pool.release(lease, broken=True)
            if attempt == tries:
                raise


def inflight(seconds: float, timeout: float) -> list[dict]:
    pool = EnvPool.connect("default")
    calls = []
    lease = _reset_desktop(pool)
    try:
        deadline, stop_after = time.monotonic() + seconds, None
        while time.monotonic() < deadline and not (stop_after and calls[-1]["at"] >= stop_after
                                                   and calls[-1]["outcome"] == "ok"):
            start = time.monotonic()
            try:
                ray.get(lease.env.step.remote("pyautogui.moveTo(20, 20)", 0), timeout=timeout)
                outcome, typed = "ok", True
            except Exception as exc:  # the point: which *type* of error, and how fast
                outcome, typed = f"{type(exc).__name__}: {str(exc)[:200]}", isinstance(exc, (RayError, RayEnvError))
            calls.append({"at": round(start, 2), "outcome": outcome, "typed": typed,
                          "seconds": round(time.monotonic() - start, 2)})
            print(json.dumps(calls[-1]), flush=True)
            if stop_after is None and _closed(sys.stdin, wait=0.2):
                stop_after = time.monotonic()
    finally:
        pool.release(lease)
    return calls


if __name__ == "__main__":
    ray.init(address=sys.argv[1], namespace="rayenv", log_to_driver=False)
    if sys.argv[2] == "episode":
        print(json.dumps(episode()))
    else:
        inflight(float(sys.argv[3]), float(sys.argv[4]))
