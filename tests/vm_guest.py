"""Looking into a VM desktop of a pool from a test: desktop-env's own controller on its guest port."""

from __future__ import annotations

import docker
import ray

from rayenv.providers.docker import GUEST_PORT


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
