"""The ``docker`` provider's container plumbing, on a real engine.

The desktop-lite image stands in for a VM image here (it ignores the VM settings): it proves what
the provider owns: /dev/kvm passed exactly when a kernel boots with it, the qcow2 mounted read-only,
a work directory of its own, ports published on loopback by Docker, labels, and complete removal.
The real VM is booted by tests/test_vm_desktop.py.
"""

from __future__ import annotations

from pathlib import Path

import docker
import pytest

from rayenv.desktop_lite.build import build_image
from rayenv.engine.containers import LABEL_WORKDIR
from rayenv.engine.kvm import kvm_status, probe_device
from rayenv.env.guest_client import GuestClient
from rayenv.errors import ProviderUnavailable
from rayenv.providers import DesktopSpec, Ownership, make_provider
from rayenv.providers.docker import WORK_MOUNT
from rayenv.providers.vm_image import QCOW2_MAGIC


@pytest.mark.slow
@pytest.mark.docker
def test_kvm_is_judged_by_booting_a_kernel_not_by_creating_a_vm():
    from rayenv.desktop_vm.build import build_vm_desktop

    device, status = probe_device(), kvm_status(build_vm_desktop().image)
    assert not status.available or device.available
    if device.available and not status.available:  # this machine: KVM_CREATE_VM works, a kernel hangs
        assert "KVM_CREATE_VM works" in status.message and "does not run" in status.message
    missing = kvm_status(device="/dev/no-such-kvm")
    assert not missing.available and "nested virtualization" in missing.message


@pytest.mark.slow
@pytest.mark.docker
def test_the_docker_provider_passes_kvm_only_if_it_boots_mounts_the_vm_read_only_and_leaves_nothing(tmp_path):
    qcow2 = tmp_path / "Ubuntu.qcow2"
    qcow2.write_bytes(QCOW2_MAGIC + b"stand-in")
    spec = DesktopSpec(provider="docker", docker_image=build_image(), vm_path=str(qcow2), boot_timeout=60,
                       screen_width=800, screen_height=600)
    provider = make_provider(spec, Ownership(owner="docker-test", env_name="qemu-0"))
    endpoint = provider.start()
    try:
        facts = provider.describe()
        container = docker.from_env().containers.get(facts["container_name"])
        host = container.attrs["HostConfig"]
        kvm = facts["kvm_available"]
        assert [d["PathOnHost"] for d in host["Devices"] or []] == (["/dev/kvm"] if kvm else [])
        assert ("KVM=N" in container.attrs["Config"]["Env"]) is not kvm
        mounts = {m["Destination"]: m for m in container.attrs["Mounts"]}
        assert mounts["/System.qcow2"]["Source"] == str(qcow2) and mounts["/System.qcow2"]["RW"] is False
        work_dir = mounts[WORK_MOUNT]["Source"]
        assert mounts[WORK_MOUNT]["RW"] and container.labels[LABEL_WORKDIR] == work_dir == facts["work_dir"]
        bindings = [b for port in container.ports.values() for b in port]
        assert {b["HostIp"] for b in bindings} == {"127.0.0.1"} and len(bindings) == 4
        assert container.labels["rayenv.owner"] == "docker-test" and container.labels["rayenv.provider"] == "docker"
        assert endpoint.extra_ports.keys() == {"chromium", "vnc", "vlc"}
        assert GuestClient(endpoint.url, env="qemu-0").screenshot().startswith(b"\x89PNG")
    finally:
        provider.stop()
    assert docker.from_env().containers.list(all=True, filters={"label": "rayenv.owner=docker-test"}) == []
    assert not provider.is_alive() and not Path(work_dir).exists()


@pytest.mark.docker
def test_a_missing_osworld_image_is_refused_with_how_to_get_it(tmp_path):
    qcow2 = tmp_path / "Ubuntu.qcow2"
    qcow2.write_bytes(QCOW2_MAGIC + b"stand-in")
    provider = make_provider(DesktopSpec(provider="docker", docker_image="rayenv/no-such-image:1", vm_path=str(qcow2)),
                             Ownership(owner="docker-test", env_name="qemu-1"))
    with pytest.raises(ProviderUnavailable, match="not on this host") as error:
        provider.start()
    assert "docker pull" in error.value.hint


@pytest.mark.slow
@pytest.mark.docker
def test_require_kvm_refuses_with_the_boot_checks_reason_and_leaves_nothing():
    from rayenv.desktop_vm.build import build_vm_desktop

    vm = build_vm_desktop()
    kvm = kvm_status(vm.image)
    if kvm.available:
        pytest.skip(f"KVM boots a kernel on this host, nothing to refuse: {kvm.message}")
    provider = make_provider(DesktopSpec(provider="docker", docker_image=vm.image, vm_path=str(vm.qcow2),
                                         require_kvm=True), Ownership(owner="docker-test", env_name="qemu-2"))
    with pytest.raises(ProviderUnavailable, match="KVM does not work here") as error:
        provider.start()
    assert kvm.message in str(error.value) and "nested virtualization" in error.value.hint
    assert docker.from_env().containers.list(all=True, filters={"label": "rayenv.owner=docker-test"}) == []


@pytest.mark.slow
@pytest.mark.docker
def test_a_container_docker_creates_but_cannot_start_is_removed_with_its_directory(tmp_path):
    from rayenv.engine.containers import LABEL_OWNER, run_labelled

    given = tmp_path / "screen"
    given.mkdir()
    with pytest.raises(ProviderUnavailable, match="Docker refused to start rayenv-unstartable"):
        run_labelled(image=build_image(), name="rayenv-unstartable", ports=[5000], env="unstartable",
                     labels={LABEL_OWNER: "unstartable", "rayenv.screendir": str(given)},
                     devices=["/dev/rayenv-no-such-device:/dev/nothing:rwm"])  # checked at start, not at create
    assert docker.from_env().containers.list(all=True, filters={"label": f"{LABEL_OWNER}=unstartable"}) == []
    assert not given.exists()
