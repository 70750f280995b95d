"""What a step costs through rayenv, against a direct guest call and the old HTTP bridge.

One run, one desktop, three paths to the same action + screenshot:

* **direct**: the guest API called straight from this process (the floor);
* **rayenv**: ``env.step.remote(action)`` through the Ray actor that owns the desktop;
* **bridge**: an HTTP server in the shape of the old bridge (FastAPI, screenshot as base64 inside
  JSON, the whole episode history re-sent by the client on every step).

Twice: on the desktop as built (flat colours: ~30 KB PNGs) and with OSWorld-sized screenshots (a
photo-like wallpaper set through the guest API, so that every real screenshot weighs ~1.5 MB like one
of the Ubuntu VM).

Then pool throughput (steps/s) with 1, 2, 4 and 8 desktops stepping as fast as they can.
Results: ``bench/results/step_overhead.{md,json,png}``.

    .venv/bin/python bench/step_overhead.py --provider lite --steps 90   # (--provider process without Docker)
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import statistics
import threading
import time
from pathlib import Path
from typing import Any, Callable

import ray
import requests
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

from rayenv import EnvPool
from rayenv.env.guest_client import GuestClient
from rayenv.waiting import wait_until

RESULTS = Path(__file__).resolve().parent / "results"
EPISODE = 15  # the bridge's history grows within an episode, as it did in training


def action(i: int) -> str:
    return f"pyautogui.moveTo({100 + (i % 50) * 10}, {100 + (i % 30) * 10})"


class BridgeStep(BaseModel):
    action: str
    history: list[dict[str, str]]


def start_bridge(guest_url: str, port: int) -> uvicorn.Server:
    """The old wire format: base64 PNG in JSON; the client re-sends all previous turns every step."""
    app = FastAPI()
    client = GuestClient(guest_url, env="bridge")

    @app.post("/env/step")
    def step(request: BridgeStep) -> dict[str, Any]:
        client.run_action(request.action, timeout=60)
        shot = base64.b64encode(client.screenshot()).decode()
        return {"observation": {"screenshot": shot, "accessibility_tree": None}, "reward": 0.0, "done": False,
                "info": {"history_len": len(request.history)}}

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    wait_until(lambda: server.started, 60, interval=0.05, what="the bridge's HTTP server starting")
    return server


def interleaved(steps: int, paths: dict[str, Callable[[int], int]]) -> dict[str, dict[str, Any]]:
    """Time every path on every step, in rotating order, so background load hits all paths alike."""
    latencies: dict[str, list[float]] = {name: [] for name in paths}
    sizes: dict[str, list[int]] = {name: [] for name in paths}
    names = list(paths)
    for name in names:
        paths[name](-1)  # warm up connections and caches
    for i in range(steps):
        for name in names[i % len(names):] + names[: i % len(names)]:
            started = time.perf_counter()
            sizes[name].append(paths[name](i))
            latencies[name].append(time.perf_counter() - started)
    results = {}
    for name in names:
        ordered = sorted(latencies[name])
        results[name] = {"p50_ms": 1000 * statistics.median(ordered), "p95_ms": 1000 * ordered[int(0.95 * (len(ordered) - 1))],
                         "bytes_per_step": statistics.mean(sizes[name])}
    return results


def photo_like_wallpaper(width: int, height: int) -> bytes:
    """A gradient with a little noise: PNG-compresses like a photo, so screenshots weigh what the VM's do."""
    import numpy as np
    from PIL import Image

    rows = np.linspace(40, 180, height)[:, None, None]
    columns = np.linspace(0, 60, width)[None, :, None]
    noise = np.random.default_rng(0).integers(0, 2, (height, width, 3))
    pixels = np.clip(rows + columns + np.array([0, 20, 50]) + noise, 0, 255).astype(np.uint8)
    png = io.BytesIO()
    Image.fromarray(pixels).save(png, "PNG")
    return png.getvalue()


def set_wallpaper(url: str, picture: bytes) -> None:
    requests.post(f"{url}/setup/upload", data={"file_path": "~/bench-wallpaper.png"},
                  files={"file_data": ("bench-wallpaper.png", picture)}, timeout=60).raise_for_status()
    requests.post(f"{url}/setup/change_wallpaper", json={"path": "~/bench-wallpaper.png"}, timeout=60).raise_for_status()


def measure_paths(pool: EnvPool, steps: int, bridge_port: int, wallpaper: bytes | None = None) -> dict[str, Any]:
    env = next(iter(pool.envs().values()))
    ray.get(env.reset.remote(None))
    url = ray.get(env.status.remote())["url"]
    if wallpaper is not None:
        set_wallpaper(url, wallpaper)
    direct = GuestClient(url, env="direct")

    def via_direct(i: int) -> int:
        direct.run_action(action(i), timeout=60)
        return len(direct.screenshot())

    def via_rayenv(i: int) -> int:
        return len(ray.get(env.step.remote(action(i), 0))["observation"]["screenshot"])

    bridge = start_bridge(url, bridge_port)
    history: list[dict[str, str]] = []
    session = requests.Session()

    def via_bridge(i: int) -> int:
        if i % EPISODE == 0:
            history.clear()
        body = json.dumps({"action": action(i), "history": history}).encode()
        response = session.post(f"http://127.0.0.1:{bridge_port}/env/step", data=body,
                                headers={"Content-Type": "application/json"}, timeout=120)
        response.raise_for_status()
        history.append({"action": action(i), "screenshot": response.json()["observation"]["screenshot"]})
        return len(body) + len(response.content)

    results: dict[str, Any] = interleaved(steps, {"direct": via_direct, "rayenv": via_rayenv, "bridge": via_bridge})
    bridge.should_exit = True
    results["rayenv_overhead_vs_direct_p50"] = results["rayenv"]["p50_ms"] / results["direct"]["p50_ms"] - 1
    results["bridge_over_rayenv_p50"] = results["bridge"]["p50_ms"] / results["rayenv"]["p50_ms"]
    results["bridge_over_rayenv_bytes"] = results["bridge"]["bytes_per_step"] / results["rayenv"]["bytes_per_step"]
    return results


def throughput(pool: EnvPool, count: int, seconds: float) -> float:
    envs = list(pool.envs().values())[:count]
    done, deadline, i = 0, time.monotonic() + seconds, 0
    inflight = {env.step.remote(action(i), 0): env for env in envs}
    started = time.monotonic()
    while inflight:
        ready, _ = ray.wait(list(inflight), num_returns=1)
        env = inflight.pop(ready[0])
        ray.get(ready[0])
        done += 1
        i += 1
        if time.monotonic() < deadline:
            inflight[env.step.remote(action(i), 0)] = env
    return done / (time.monotonic() - started)


def write_report(results: dict[str, Any], args: argparse.Namespace) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "step_overhead.json").write_text(json.dumps(results, indent=2))
    lines = [f"# Step overhead ({args.provider} desktop, {args.width}x{args.height}, {args.steps} steps per path)", "",
             "Each step: an action (`pyautogui.moveTo`, no pause) and the screenshot after it. The bridge runs on",
             f"loopback here; its client re-sends the episode's history (episodes of {EPISODE} steps).", ""]
    for scenario, paths in results["paths"].items():
        lines += [f"## {scenario}", "", "| path | p50 ms | p95 ms | bytes/step |", "| --- | ---: | ---: | ---: |"]
        lines += [f"| {name} | {paths[name]['p50_ms']:.1f} | {paths[name]['p95_ms']:.1f} | "
                  f"{paths[name]['bytes_per_step']:,.0f} |" for name in ("direct", "rayenv", "bridge")]
        lines += ["", f"rayenv adds **{100 * paths['rayenv_overhead_vs_direct_p50']:+.1f}%** to a direct guest call's "
                      f"p50 (goal < 5%). The old bridge takes **{paths['bridge_over_rayenv_p50']:.2f}x** rayenv's p50 "
                      f"and moves **{paths['bridge_over_rayenv_bytes']:.1f}x** the bytes per step.", ""]
    lines += ["## Pool throughput (desktop as built)", "", "| desktops | steps/s |", "| ---: | ---: |"]
    lines += [f"| {n} | {rate:.1f} |" for n, rate in results["throughput"].items()]
    (RESULTS / "step_overhead.md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    names, scenarios = ["direct", "rayenv", "bridge"], list(results["paths"])
    width = 0.8 / len(scenarios)
    for k, scenario in enumerate(scenarios):
        paths = results["paths"][scenario]
        xs = [i + k * width for i in range(len(names))]
        left.bar(xs, [paths[n]["p50_ms"] for n in names], width, label=f"{scenario} p50")
        left.scatter(xs, [paths[n]["p95_ms"] for n in names], color="black", s=12, zorder=3)
    left.set_xticks([i + width * (len(scenarios) - 1) / 2 for i in range(len(names))], names)
    left.set_ylabel("ms per step (action + screenshot); dots: p95")
    left.legend(fontsize="small")
    sizes = list(results["throughput"])
    right.plot([int(n) for n in sizes], list(results["throughput"].values()), marker="o")
    right.set_xlabel("desktops")
    right.set_ylabel("steps/s")
    figure.suptitle(f"{args.provider} desktops at {args.width}x{args.height}")
    figure.tight_layout()
    figure.savefig(RESULTS / "step_overhead.png", dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--provider", default="process")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--sizes", default="1,2,4,8")
    parser.add_argument("--seconds", type=float, default=15.0, help="duration of each throughput run")
    parser.add_argument("--bridge-port", type=int, default=28080)
    args = parser.parse_args()
    sizes = [int(n) for n in args.sizes.split(",")]
    ray.init(resources={"osworld_env": max(sizes)}, include_dashboard=False, log_to_driver=False)
    pool = EnvPool.create(name="bench", size=max(sizes), provider=args.provider, env={"default_pause": 0},
                          desktop={"provider": args.provider, "screen_width": args.width, "screen_height": args.height})
    try:
        results = {"paths": {"desktop as built": measure_paths(pool, args.steps, args.bridge_port)},
                   "throughput": {str(n): throughput(pool, n, args.seconds) for n in sizes}}
        results["paths"]["OSWorld-sized screenshots"] = measure_paths(
            pool, args.steps, args.bridge_port + 1, wallpaper=photo_like_wallpaper(args.width, args.height))
    finally:
        pool.shutdown()
        ray.shutdown()
    write_report(results, args)
    print((RESULTS / "step_overhead.md").read_text())


if __name__ == "__main__":
    main()
