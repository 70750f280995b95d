"""A docker pool on our own ``rayenv/osworld-vm`` image boots the qcow2 built with it (issue 19).

Without ``vm_path`` the docker provider used to ask for OSWorld's Ubuntu.qcow2 (``rayenv vm fetch``,
10 GB) even when the image was ours and its disk sat next to it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rayenv.desktop_vm import build as vm_build
from rayenv.desktop_vm.build import VmDesktop
from rayenv.providers import Ownership
from rayenv.providers.base import DesktopSpec
from rayenv.providers.docker import DockerProvider
from rayenv.providers.vm_image import QCOW2_MAGIC, locate_vm_image


@pytest.fixture
def our_build(tmp_path, monkeypatch) -> VmDesktop:
    """A stand-in for `rayenv vm build`'s result: a qcow2 on disk and the image tag built with it."""
    qcow2 = tmp_path / "System.qcow2"
    qcow2.write_bytes(QCOW2_MAGIC + bytes(512))
    desktop = VmDesktop(f"{vm_build.REPOSITORY}:0123abcd", qcow2, "6.1.0")
    monkeypatch.setattr(vm_build, "built", lambda: desktop)
    return desktop


def test_our_image_without_vm_path_finds_the_qcow2_built_with_it(our_build):
    assert locate_vm_image(None, image=our_build.image) == our_build.qcow2


def test_an_explicit_vm_path_still_wins(our_build, tmp_path):
    other = tmp_path / "other.qcow2"
    other.write_bytes(QCOW2_MAGIC + bytes(512))
    assert locate_vm_image(str(other), image=our_build.image) == other


def test_another_build_of_our_image_or_osworld_s_image_still_asks_for_a_fetch(our_build, tmp_path, monkeypatch):
    monkeypatch.setenv("RAYENV_VM_DIR", str(tmp_path / "empty"))
    for image in (f"{vm_build.REPOSITORY}:older", "happysixd/osworld-docker"):
        with pytest.raises(Exception, match="rayenv vm fetch"):
            locate_vm_image(None, image=image)


@pytest.mark.slow
@pytest.mark.docker
def test_a_docker_desktop_given_only_the_built_image_mounts_its_qcow2():
    """On a host where `rayenv vm build` ran: the provider resolves the pair without booting anything."""
    built = vm_build.built()
    if built is None:
        pytest.skip("no `rayenv vm build` result on this host (tests/test_vm_desktop.py builds it)")
    spec = DesktopSpec(provider="docker", docker_image=built.image)
    assert DockerProvider(spec, Ownership(owner="test", env_name="pairing"))._vm_path() == Path(built.qcow2)
