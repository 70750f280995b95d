"""Golden VM states on an env host: made once per VM shape, cloned per desktop, removed when unused.

The VM itself is exercised in test_vm_snapshot.py; here ``make`` writes a file, so the bookkeeping
(locking, keys, cleanup) is specified in milliseconds.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from rayenv.providers.golden import GoldenKey, GoldenStore


def key(base: Path, **changes) -> GoldenKey:
    fields = {"container_image": "sha256:abc", "memory": "2G", "cpus": 2, "screen": (1280, 720), "accelerator": "tcg"}
    return GoldenKey.for_vm(base, **{**fields, **changes})


@pytest.fixture
def base(tmp_path) -> Path:
    path = tmp_path / "System.qcow2"
    path.write_bytes(b"QFI\xfb base")
    return path


def test_a_state_is_only_reused_for_an_identical_vm(base):
    same = key(base)
    assert key(base).digest == same.digest
    assert len({same.digest, key(base, memory="4G").digest, key(base, cpus=4).digest,
                key(base, screen=(1920, 1080)).digest, key(base, accelerator="kvm").digest,
                key(base, boot="uefi").digest}) == 6
    base.write_bytes(b"QFI\xfb a new base image")  # a replaced qcow2 is a new base
    assert key(base).digest != same.digest


def workdir(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.mkdir()
    return path


def test_concurrent_desktops_make_the_golden_state_once_and_each_gets_a_private_copy(base, tmp_path):
    store, made = GoldenStore(tmp_path / "golden", tmp_path / "ram"), []

    def make(directory: Path, ram: Path) -> None:
        made.append(directory)
        time.sleep(0.3)  # a boot: the other desktops wait for it instead of booting too
        (directory / "boot.qcow2").write_bytes(b"overlay with a snapshot")

    workdirs = [workdir(tmp_path, f"env-{i}") for i in range(3)]
    copies: list[Path] = []
    threads = [threading.Thread(target=lambda w=w: copies.append(store.checkout(key(base), make, w))) for w in workdirs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(made) == 1 and sorted(c.parent for c in copies) == workdirs
    assert [c.read_bytes() for c in copies] == [b"overlay with a snapshot"] * 3
    copies[0].write_bytes(b"dirty")
    assert store.overlay(key(base).digest).read_bytes() == b"overlay with a snapshot"


def test_a_failed_make_leaves_nothing_and_the_next_desktop_tries_again(base, tmp_path):
    store = GoldenStore(tmp_path / "golden", tmp_path / "ram")

    def broken(directory: Path, ram: Path) -> None:
        (directory / "boot.qcow2").write_bytes(b"half")
        raise RuntimeError("the VM never answered")

    with pytest.raises(RuntimeError):
        store.checkout(key(base), broken, workdir(tmp_path, "env-0"))
    assert [p.name for p in (tmp_path / "golden").iterdir() if not p.name.endswith(".lock")] == []
    copy = store.checkout(key(base), lambda d, _: (d / "boot.qcow2").write_bytes(b"ok"), workdir(tmp_path, "env-1"))
    assert copy.read_bytes() == b"ok"


def test_the_reaper_removes_states_no_container_uses_and_spares_one_being_made(base, tmp_path):
    store = GoldenStore(tmp_path / "golden", tmp_path / "ram")
    store.checkout(key(base), lambda d, _: (d / "boot.qcow2").write_bytes(b"1"), workdir(tmp_path, "env-0"))
    store.checkout(key(base, memory="4G"), lambda d, _: (d / "boot.qcow2").write_bytes(b"2"), workdir(tmp_path, "env-1"))
    used, unused = store.overlay(key(base).digest), store.overlay(key(base, memory="4G").digest)
    making, release = threading.Event(), threading.Event()

    def slow(directory: Path, ram: Path) -> None:
        making.set()
        release.wait(10)
        (directory / "boot.qcow2").write_bytes(b"3")

    maker = threading.Thread(target=store.checkout, args=(key(base, cpus=4), slow, workdir(tmp_path, "env-2")))
    maker.start()
    making.wait(10)
    assert store.remove_unused(in_use=[key(base).digest]) == [key(base, memory="4G").digest]
    release.set()
    maker.join()
    assert used.exists() and not unused.exists() and store.overlay(key(base, cpus=4).digest).exists()
    assert sorted(store.remove_unused(in_use=[])) == sorted([key(base).digest, key(base, cpus=4).digest])
    assert not any(p.suffix == ".qcow2" for p in (tmp_path / "golden").rglob("*"))


def test_a_template_is_the_ram_file_and_device_state_of_one_make_and_goes_with_its_golden_state(base, tmp_path):
    store = GoldenStore(tmp_path / "golden", tmp_path / "ram")

    def make(directory: Path, ram: Path) -> None:
        (directory / "boot.qcow2").write_bytes(b"overlay")
        (directory / "devices.state").write_bytes(b"devices")
        (ram / "memory").write_bytes(b"guest RAM")

    with store.held(key(base), make) as golden:
        assert (golden / "boot.qcow2").read_bytes() == b"overlay"
        assert store.has_template(key(base).digest)
        assert store.remove_unused(in_use=[]) == [], "held: the reaper waits for the container to be labelled"
    (store.ram_directory(key(base).digest) / "memory").unlink()  # a reboot cleared the tmpfs
    assert not store.has_template(key(base).digest), "the snapshot in the overlay is then the fallback"
    assert store.remove_unused(in_use=[]) == [key(base).digest]
    assert not store.directory(key(base).digest).exists() and not store.ram_directory(key(base).digest).exists()


def test_a_failed_make_leaves_no_ram_file_behind(base, tmp_path):
    store = GoldenStore(tmp_path / "golden", tmp_path / "ram")

    def broken(directory: Path, ram: Path) -> None:
        (ram / "memory").write_bytes(b"half a RAM")
        raise RuntimeError("the migration failed")

    with pytest.raises(RuntimeError):
        with store.held(key(base), broken):
            pass
    assert list((tmp_path / "ram").iterdir()) == []
