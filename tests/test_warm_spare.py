"""Warm spares (``desktop.warm_spare``): a reset swaps to a desktop already booted beside the used one.

On real desktop-lite containers: the swap leaves no trace of the episode and scores what was earned, the used
container goes, a spare that died never fails a reset, and closing while a spare boots leaves no container.
"""

from __future__ import annotations

from pathlib import Path

import docker
import pytest

from rayenv.engine.containers import LABEL_OWNER
from rayenv.env.desktop import Desktop
from rayenv.env.tasks import load_tasks
from rayenv.providers import DesktopSpec, Ownership
from rayenv.waiting import wait_until

REPO = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.slow, pytest.mark.docker]

OWNER = "warm-spare"
TASK = next(task for task in load_tasks(REPO / "OSWorld" / "tasks") if task["id"] == "mousepad-save-hello")
SPEC = DesktopSpec(provider="lite", warm_spare=True, screen_width=1280, screen_height=720)


def owned(owner: str = OWNER) -> dict[str, str]:
    """Name → short id of the owner's containers, from one listing (docker-py's ``containers.list`` inspects each
    container after listing it, and fails on one the spare's background removal took meanwhile)."""
    listed = docker.from_env().api.containers(all=True, filters={"label": f"{LABEL_OWNER}={owner}"})
    return {container["Names"][0].lstrip("/"): container["Id"][:12] for container in listed}


def spare_ready(desktop: Desktop) -> bool:
    return desktop.provider.describe().get("warm_spare") == "ready"


@pytest.fixture(scope="module")
def desktop():
    from rayenv.desktop_lite.build import build_image

    build_image()
    started = Desktop(SPEC, Ownership(owner=OWNER, env_name="spare-0"))
    started.start()
    yield started
    started.close()
    assert owned() == {}


def episode(desktop: Desktop, solved: bool) -> float:
    desktop.reset(TASK)
    for action in [*(TASK["rayenv_solution"] if solved else []), "DONE"]:
        desktop.step(action, pause=0)
    return desktop.evaluate()


def test_a_reset_swaps_to_the_spare_which_carries_nothing_of_the_episode(desktop):
    assert episode(desktop, solved=True) == 1.0
    used = desktop.provider.describe()["container_name"]
    wait_until(lambda: spare_ready(desktop), 120, what="the warm spare booting")
    assert episode(desktop, solved=False) == 0.0  # hello.txt of the solved episode is not on the spare
    assert desktop.provider.describe()["container_name"] != used
    wait_until(lambda: used not in owned(), 30, what="the used desktop removed")
    wait_until(lambda: len(owned()) == 2, 30, what="the desktop and its next spare, only")


def test_a_spare_that_died_is_replaced_and_the_reset_restarts_instead(desktop):
    wait_until(lambda: spare_ready(desktop), 120, what="the warm spare booting")
    before = set(owned().values())
    spare = next(short for short in before if short != desktop.provider.describe()["container_id"])
    docker.from_env().api.kill(spare)
    assert episode(desktop, solved=True) == 1.0
    assert desktop.provider.describe()["container_id"] not in before  # restarted, not swapped to the dead spare
    wait_until(lambda: spare_ready(desktop), 120, what="a new warm spare booting")
    wait_until(lambda: len(owned()) == 2, 30, what="the dead spare removed")


def test_closing_while_the_spare_boots_leaves_no_container():
    closing = Desktop(SPEC, Ownership(owner=f"{OWNER}-close", env_name="spare-1"))
    closing.start()
    assert closing.provider.describe()["warm_spare"] == "booting"
    closing.close()
    assert owned(f"{OWNER}-close") == {}
