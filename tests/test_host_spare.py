"""Who owns a host spare: one adopter each, the reaper going by it, and a free spare outliving its maker a while.

A host spare's container is labelled with the actor that made it (labels cannot change); the desktop that
adopts it says so in the spare's work directory. Docker is faked here (the containers it would list); the real
thing runs in test_vm_host_spare.py.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from rayenv.engine import containers
from rayenv.engine.containers import LABEL_ACTOR, LABEL_OWNER, LABEL_WORKDIR
from rayenv.pool import reaper
from rayenv.pool.reaper import SPARE_GRACE, every_desktop, reap_containers
from rayenv.providers.host_spare import FREE, LABEL_SPARE, claim, making

OWNER = "pool-a"


@dataclass
class FakeContainer:
    name: str
    labels: dict[str, str]
    status: str = "running"


@pytest.fixture
def docker(monkeypatch, tmp_path):
    """A Docker engine holding whatever containers a test adds; removing one takes it off the list."""
    listed: list[FakeContainer] = []
    monkeypatch.setattr(containers, "owned", lambda owner=None: [c for c in listed if c.labels[LABEL_OWNER] == owner])
    monkeypatch.setattr(containers, "remove", listed.remove)
    monkeypatch.setattr(reaper, "reap_host", lambda going=None: [])
    return listed


def spare(tmp_path: Path, name: str, maker: str, key: str = "shape-1", free: bool = True) -> FakeContainer:
    work = tmp_path / name
    work.mkdir()
    if free:
        (work / FREE).touch()
    return FakeContainer(name, {LABEL_OWNER: OWNER, LABEL_ACTOR: maker, LABEL_SPARE: key, LABEL_WORKDIR: str(work)})


def test_each_free_spare_is_adopted_once_and_only_by_a_desktop_of_its_key(docker, tmp_path):
    docker += [spare(tmp_path, "warming", "maker", free=False), spare(tmp_path, "other-shape", "maker", key="shape-2"),
               spare(tmp_path, "one", "maker"), spare(tmp_path, "two", "maker")]
    adopted = [claim(OWNER, "shape-1", f"desktop-{index}") for index in range(3)]
    assert [c.name if c else None for c in adopted] == ["one", "two", None]
    assert (tmp_path / "one" / "adopter").read_text() == "desktop-0"


def test_an_adopted_spare_lives_and_dies_with_its_adopter_not_its_maker(docker, tmp_path):
    docker.append(spare(tmp_path, "adopted", "maker-gone"))
    claim(OWNER, "shape-1", "adopter-alive")
    assert reap_containers(OWNER, lambda actor: actor != "adopter-alive") == []
    assert reap_containers(OWNER, lambda actor: actor == "adopter-alive") == ["adopted"]


def test_a_free_spare_outlives_its_maker_for_a_while_unless_the_whole_pool_goes(docker, tmp_path):
    docker += [spare(tmp_path, "fresh", "maker-gone"), spare(tmp_path, "stale", "maker-gone"),
               spare(tmp_path, "half-made", "maker-gone", free=False)]
    long_ago = time.time() - SPARE_GRACE - 1
    os.utime(tmp_path / "stale" / FREE, (long_ago, long_ago))
    assert sorted(reap_containers(OWNER, lambda actor: True)) == ["half-made", "stale"]
    assert reap_containers(OWNER, every_desktop, spares_wait=False) == ["fresh"]


def test_only_one_desktop_makes_the_missing_spare(docker, tmp_path):
    with making(tmp_path, OWNER, "shape-1") as missing:
        assert missing
        docker.append(spare(tmp_path, "made", "maker"))
    with making(tmp_path, OWNER, "shape-1") as missing:
        assert not missing, "the next desktop finds it there"
