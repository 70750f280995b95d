"""VM desktops in tests: a one-desktop snapshot pool that must leave nothing behind, and a look into a desktop
through desktop-env's own controller on its guest port."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import docker
import ray

from rayenv import EnvPool
from rayenv.engine.containers import LABEL_OWNER, LABEL_WORKDIR
from rayenv.providers.docker import GUEST_PORT
from rayenv.providers.golden import LABEL_GOLDEN, GoldenStore
from rayenv.tools.localcluster import ray_cluster
from rayenv.waiting import wait_until


def container_name(env) -> str:
    return ray.get(env.status.remote())["details"]["container_name"]


def container_id(env) -> str:
    return ray.get(env.status.remote())["details"]["container_id"]


def guest(env):
    """desktop-env's PythonController on the desktop's published guest port."""
    from desktop_env.controllers.python import PythonController

    container = docker.from_env().containers.get(container_name(env))
    return PythonController(vm_ip="127.0.0.1", server_port=int(container.ports[f"{GUEST_PORT}/tcp"][0]["HostPort"]))


def bash(env, script: str) -> str:
    done = guest(env).run_bash_script(script, timeout=30)
    assert done and done["status"] == "success", done
    return done["output"]


def episode_windows(env) -> str:
    """Titles of the windows an episode opened (see :func:`reset_after_an_episode`)."""
    return bash(env, "xdotool search --name episode-window getwindowname %@ || true")


def reset_after_an_episode(env, task: dict) -> float:
    """Leave a file and a window behind as an episode would, then reset to ``task``: the reset's seconds. The
    caller checks that :func:`episode_left_a_trace` is then False."""
    ray.get(env.step.remote("import subprocess; subprocess.run(['touch', '/root/left-by-the-episode']); "
                            "subprocess.Popen(['xterm', '-T', 'episode-window'])"))
    wait_until(lambda: "episode-window" in episode_windows(env), timeout=60, what="the episode's window")
    assert episode_left_a_trace(env)
    started = time.monotonic()
    ray.get(env.reset.remote(task))
    return time.monotonic() - started


def episode_left_a_trace(env) -> bool:
    """Whether the file or the window of :func:`reset_after_an_episode` is there."""
    return "left-by-the-episode" in bash(env, "ls /root") or "episode-window" in episode_windows(env)


def owned_containers(owner: str) -> list:
    return docker.from_env().containers.list(all=True, filters={"label": f"{LABEL_OWNER}={owner}"})


@contextlib.contextmanager
def snapshot_pool(temp_dir: Path, base_port: int, owner: str, namespace: str, image: str, qcow2: Path,
                  revert_on_release: bool = False, size: int = 1, **desktop: Any) -> Iterator[EnvPool]:
    """A docker pool of ``size`` desktops of one VM disk at 800x600 (every observation is a PNG encoded under TCG) on
    its own local Ray cluster; afterwards nothing of it may be left: no container, golden state (overlay or template
    RAM) or desktop overlay."""
    with ray_cluster(temp_dir, base_port=base_port, head_python=sys.executable, env_python=sys.executable,
                     env_units=size) as cluster:
        ray.init(address=cluster.address, namespace=namespace, log_to_driver=False)
        pool = EnvPool.create(name=owner, size=size, namespace=namespace, health_interval=2.0,
                              revert_on_release=revert_on_release,
                              desktop={"provider": "docker", "docker_image": image, "vm_path": str(qcow2),
                                       "docker_memory": "2G", "docker_cpus": 2, "screen_width": 800,
                                       "screen_height": 600, **desktop},
                              env={"default_pause": 0})
        labels = [c.labels for c in owned_containers(owner)]
        work_dirs = {label[LABEL_WORKDIR] for label in labels if LABEL_WORKDIR in label}
        goldens = {label[LABEL_GOLDEN] for label in labels if LABEL_GOLDEN in label}
        try:
            yield pool
        finally:
            work_dirs |= {c.labels[LABEL_WORKDIR] for c in owned_containers(owner) if LABEL_WORKDIR in c.labels}
            pool.shutdown()
            ray.shutdown()
    assert owned_containers(owner) == []
    assert goldens, "the desktop started from a golden state"
    assert not any(GoldenStore().overlay(digest).exists() for digest in goldens), "no golden state outlives the pool"
    assert not any(GoldenStore().ram_directory(digest).exists() for digest in goldens), "nor its template's RAM"
    assert not [d for d in work_dirs if os.path.exists(d)], "no desktop overlay outlives the pool"
