"""`kvm_available` means a VM can be created, not that a file exists."""

from __future__ import annotations

import os

from rayenv.kvm import probe_kvm


def test_kvm_is_available_only_if_creating_a_vm_works():
    status = probe_kvm("/dev/kvm")
    can_open = os.path.exists("/dev/kvm") and os.access("/dev/kvm", os.R_OK | os.W_OK)
    assert status.available is can_open or (not status.available and "KVM_CREATE_VM failed" in status.message)
    assert status.device == "/dev/kvm" and status.message


def test_a_missing_device_says_how_to_enable_virtualization(tmp_path):
    status = probe_kvm(str(tmp_path / "kvm"))
    assert not status.available and "does not exist" in status.message and "virtualization" in status.message


def test_a_device_that_is_not_kvm_is_unavailable_not_a_crash():
    status = probe_kvm("/dev/null")
    assert not status.available and "not a KVM device" in status.message
