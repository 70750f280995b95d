"""Labelled containers on the local Docker engine: start, find the ports Docker chose, remove completely.

Shared by the ``lite`` and ``docker`` providers and the reaper. Host ports are never chosen by us:
each container port is published on 127.0.0.1 with an ephemeral host port that Docker assigns
atomically, then read back, so concurrent actors cannot race and nothing listens beyond loopback.
"""

from __future__ import annotations

import functools
import shutil
from typing import Any, Iterable

from ..errors import ProviderUnavailable

#: Docker label keys. ``rayenv.owner`` is what shutdown, the reaper and humans filter on.
LABEL_OWNER = "rayenv.owner"
LABEL_ENV = "rayenv.env"
LABEL_NODE = "rayenv.node"
LABEL_ACTOR = "rayenv.actor"
LABEL_PROVIDER = "rayenv.provider"
#: A host directory a container uses and owns (a VM's overlay and monitor socket): removed with it.
LABEL_WORKDIR = "rayenv.workdir"
#: A host directory on tmpfs where the desktop's screen is read (see rayenv.providers.screens), removed with it.
LABEL_SCREENDIR = "rayenv.screendir"


@functools.lru_cache(maxsize=1)
def client() -> Any:
    """The Docker engine of this host, or :class:`ProviderUnavailable` saying how to get one."""
    try:
        import docker

        engine = docker.from_env(timeout=120)
        engine.ping()
    except Exception as exc:
        raise ProviderUnavailable(f"no Docker engine answers here ({type(exc).__name__}: {exc})", phase="boot",
                                  hint="install docker.io and start dockerd (scripts/bootstrap.sh does both), "
                                       "or use the 'process' provider") from None
    return engine


def image_exists(tag: str) -> bool:
    import docker.errors

    try:
        client().images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


def require_image(image: str, env: str) -> None:
    """Raise :class:`ProviderUnavailable` saying how to get ``image`` when this host does not have it."""
    if not image_exists(image):
        raise ProviderUnavailable(f"image {image} is not on this host", env=env, phase="boot",
                                  hint="for desktop-lite run `rayenv desktop build`; for OSWorld's image "
                                       "`docker pull` it (or `docker load` it from a machine that can)")


def run_labelled(*, image: str, name: str, labels: dict[str, str], ports: Iterable[int], env: str,
                 environment: dict[str, str] | None = None, **options: Any) -> Any:
    """Start a detached container publishing ``ports`` on 127.0.0.1 (host ports chosen by Docker). Created and
    started in two calls (``containers.run`` does both): one whose start fails is removed here, as nothing else
    would remove a container that never ran."""
    import docker.errors

    require_image(image, env)
    try:
        container = client().containers.create(image, name=name, labels=labels, environment=environment or {},
                                               ports={f"{port}/tcp": ("127.0.0.1", None) for port in ports}, **options)
    except docker.errors.APIError as exc:
        raise ProviderUnavailable(f"Docker refused to create {name}: {exc.explanation or exc}", env=env, phase="boot",
                                  hint="see `docker ps -a --filter label=rayenv.owner`; a stale container of the "
                                       "same name is removed by the pool's reaper") from None
    try:
        container.start()
    except docker.errors.APIError as exc:
        remove(container)
        raise ProviderUnavailable(f"Docker refused to start {name}: {exc.explanation or exc}", env=env, phase="boot",
                                  hint="the Docker daemon's log says why; the pool retries the boot") from None
    return container


def published_ports(container: Any) -> dict[int, int]:
    """Container port → host port, as Docker assigned them."""
    container.reload()
    mapping = {}
    for key, bindings in (container.ports or {}).items():
        if bindings:
            mapping[int(key.split("/")[0])] = int(bindings[0]["HostPort"])
    return mapping


def is_running(container: Any) -> bool:
    import docker.errors

    try:
        container.reload()
    except docker.errors.NotFound:
        return False
    return container.status == "running"


def remove(container: Any) -> None:
    """Remove the container, its anonymous volumes and its work and screen directories, whatever state it is in,
    also when another caller is removing it at the same moment (a desktop closed while its revert restarts it):
    the directories go either way."""
    import docker.errors

    try:
        container.remove(force=True, v=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        if exc.status_code != 409:  # 409: its removal is already in progress
            raise
    finally:
        for label in (LABEL_WORKDIR, LABEL_SCREENDIR):
            directory = (container.labels or {}).get(label)
            if directory:
                shutil.rmtree(directory, ignore_errors=True)


def owned(owner: str | None = None) -> list[Any]:
    """Containers labelled by rayenv (of one owner, or all). One removed between the listing and its inspection
    (another actor's stop, the reaper) is left out, not an error."""
    label = f"{LABEL_OWNER}={owner}" if owner else LABEL_OWNER
    return client().containers.list(all=True, filters={"label": label}, ignore_removed=True)
