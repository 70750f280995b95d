"""`kvm_available` means a VM boots with KVM: the device is checked first, then a real kernel's boot decides."""

from __future__ import annotations

import os
import threading
import time

from rayenv.engine import kvm
from rayenv.engine.kvm import BootTrace, KvmStatus, judge_boot, kvm_status, probe_device

WORKING_DEVICE = KvmStatus(True, "/dev/kvm", "KVM_CREATE_VM works on /dev/kvm")
BOOTED = """SeaBIOS (version 1.16.2-debian-1.16.2-1)
Probing EDD (edd=off to disable)... ok
[    0.000000] Linux version 6.1.0-37-amd64 (debian-kernel@lists.debian.org)
[    1.204511] Run /init as init process
"""
HUNG_AFTER_EDD = "SeaBIOS (version 1.16.2-debian-1.16.2-1)\nBooting from ROM...\nProbing EDD (edd=off to disable)... ok\n"


def test_a_kernel_that_boots_to_userspace_under_kvm_means_kvm_is_available():
    status = judge_boot(WORKING_DEVICE, BootTrace(BOOTED, timed_out=False, seconds=2.5))
    assert status.available and "KVM hardware acceleration enabled" in status.message


def test_a_working_ioctl_with_a_kernel_that_hangs_after_probing_edd_means_unavailable_and_says_why():
    status = judge_boot(WORKING_DEVICE, BootTrace(HUNG_AFTER_EDD, timed_out=True, seconds=20.3))
    assert not status.available
    assert "KVM_CREATE_VM works" in status.message and "hung before the kernel proper started" in status.message
    assert "Probing EDD" in status.message and "TCG" in status.message


def test_a_kernel_that_starts_but_never_reaches_userspace_is_unavailable():
    started = HUNG_AFTER_EDD + "[    0.000000] Linux version 6.1.0-37-amd64\n"
    status = judge_boot(WORKING_DEVICE, BootTrace(started, timed_out=True, seconds=20.0))
    assert not status.available and "did not reach userspace" in status.message


def test_without_a_kernel_to_boot_a_working_ioctl_alone_does_not_claim_kvm():
    status = judge_boot(WORKING_DEVICE, None)
    assert not status.available and "rayenv vm build" in status.message


def test_a_missing_device_says_how_to_enable_virtualization_and_boots_nothing(tmp_path):
    def must_not_boot(image: str, device: str) -> BootTrace:
        raise AssertionError("no boot without a device")

    status = kvm_status(device=str(tmp_path / "kvm"), boot=must_not_boot)
    assert not status.available and "does not exist" in status.message and "virtualization" in status.message


def test_a_device_that_is_not_kvm_is_unavailable_not_a_crash():
    status = probe_device("/dev/null")
    assert not status.available and "not a KVM device" in status.message


def test_the_device_check_creates_a_vm_where_dev_kvm_opens():
    status = probe_device("/dev/kvm")
    can_open = os.path.exists("/dev/kvm") and os.access("/dev/kvm", os.R_OK | os.W_OK)
    assert status.available is can_open or (not status.available and "KVM_CREATE_VM failed" in status.message)


def test_processes_that_ask_at_once_share_one_boots_verdict(tmp_path, monkeypatch):
    """Two boots of a half-working KVM can stop on different console lines; every asker on a host gets one answer."""
    monkeypatch.setenv("RAYENV_KVM_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(kvm, "probe_device", lambda device: WORKING_DEVICE)
    monkeypatch.setattr(kvm, "_image_with_kernel", lambda image: "sha256:kernel")
    boots = []

    def boot(image: str, device: str) -> BootTrace:
        boots.append(image)
        time.sleep(0.2)  # long enough for every asker to arrive while it runs
        return BootTrace(HUNG_AFTER_EDD + f"boot {len(boots)}\n", timed_out=True, seconds=0.2)

    answers = []
    askers = [threading.Thread(target=lambda: answers.append(kvm_status("image", boot=boot))) for _ in range(3)]
    for asker in askers:
        asker.start()
    for asker in askers:
        asker.join()
    assert len(boots) == 1 and len({answer.message for answer in answers}) == 1
