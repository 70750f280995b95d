"""The ``docker`` provider's container plumbing, on a real engine.

OSWorld's QEMU image cannot be pulled here (no registry), so the desktop-lite image stands in for it:
it ignores the VM settings but proves what the provider owns: working KVM passed through, the qcow2
mounted read-only, ports published on loopback by Docker, labels, and complete removal.
"""

from __future__ import annotations

import docker
import pytest

from rayenv.desktop_lite.build import build_image
from rayenv.errors import ProviderUnavailable
from rayenv.guest_client import GuestClient
from rayenv.kvm import probe_kvm
from rayenv.providers import DesktopSpec, Ownership, make_provider


def test_kvm_is_judged_by_creating_a_vm():
    assert probe_kvm().available, f"this machine's KVM works (KVM_CREATE_VM succeeds): {probe_kvm().message}"
    missing = probe_kvm("/dev/no-such-kvm")
    assert not missing.available and "nested virtualization" in missing.message


@pytest.mark.slow
@pytest.mark.docker
def test_the_docker_provider_passes_working_kvm_mounts_the_vm_read_only_and_leaves_nothing(tmp_path):
    qcow2 = tmp_path / "Ubuntu.qcow2"
    qcow2.write_bytes(b"stand-in")
    spec = DesktopSpec(provider="docker", docker_image=build_image(), vm_path=str(qcow2), boot_timeout=60,
                       screen_width=800, screen_height=600)
    provider = make_provider(spec, Ownership(owner="docker-test", env_id="qemu-0"))
    endpoint = provider.start()
    try:
        container = docker.from_env().containers.get(provider.describe()["container_name"])
        host = container.attrs["HostConfig"]
        assert [d["PathOnHost"] for d in host["Devices"]] == ["/dev/kvm"]
        assert "KVM=N" not in container.attrs["Config"]["Env"]
        mount = next(m for m in container.attrs["Mounts"] if m["Destination"] == "/System.qcow2")
        assert mount["Source"] == str(qcow2) and mount["RW"] is False
        bindings = [b for port in container.ports.values() for b in port]
        assert {b["HostIp"] for b in bindings} == {"127.0.0.1"} and len(bindings) == 4
        assert container.labels["rayenv.owner"] == "docker-test" and container.labels["rayenv.provider"] == "docker"
        assert endpoint.extra_ports.keys() == {"chromium", "vnc", "vlc"}
        assert GuestClient(endpoint.url, env="qemu-0").screenshot().startswith(b"\x89PNG")
    finally:
        provider.stop()
    assert docker.from_env().containers.list(all=True, filters={"label": "rayenv.owner=docker-test"}) == []
    assert not provider.is_alive()


@pytest.mark.docker
def test_a_missing_osworld_image_is_refused_with_how_to_get_it(tmp_path):
    qcow2 = tmp_path / "Ubuntu.qcow2"
    qcow2.write_bytes(b"stand-in")
    provider = make_provider(DesktopSpec(provider="docker", docker_image="rayenv/no-such-image:1", vm_path=str(qcow2)),
                             Ownership(owner="docker-test", env_id="qemu-1"))
    with pytest.raises(ProviderUnavailable, match="not on this host") as error:
        provider.start()
    assert "docker pull" in error.value.hint
