"""OSWorld's own kind of image on `rayenv/osworld-vm` (issue 18): a whole disk that boots itself, reset by snapshot.

No registry reaches OSWorld's ``Ubuntu.qcow2`` from here, so the slow tests boot a stand-in made the
same way (:mod:`rayenv.desktop_vm.standin`: partition table, GRUB, systemd, ``user`` and the guest
server as a systemd service on port 5000 as that user). One pool of one desktop, one golden state:
the desktop boots from its own disk (QEMU runs without ``-kernel``), starts from its golden state,
and every ``reset()`` loads that snapshot back: files, windows and the clipboard of an episode are
gone, the guest's clock is the host's (set through ``/setup/execute`` with sudo, as OSWorld's own
server allows), a task scores 1.0 twenty times in a row, a snapshot that cannot be loaded falls back
to a restart, and the accelerator reported is what a real KVM probe with the container's own kernel says.

The fast tests specify how the container picks a boot mode from a disk's first sectors.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import struct
import time
import uuid
from pathlib import Path

import docker
import pytest
import ray

from rayenv.desktop_vm import standin
from rayenv.engine.kvm import kvm_status
from rayenv.env.tasks import load_tasks
from rayenv.providers.golden import RAM_FILE, GoldenStore
from rayenv.providers.qmp import Monitor
from rayenv.waiting import wait_until

from vm_guest import bash, container_id, container_name, snapshot_pool

#: A cold TCG boot of a systemd guest plus its golden state (made in the first test's setup) takes minutes.
pytestmark = pytest.mark.timeout(1200)

REPO = Path(__file__).resolve().parents[1]
OWNER = "osworld-image"
NAMESPACE = "rayenv-osworld-image"
TASK = next(t for t in load_tasks(REPO / "OSWorld" / "tasks") if t["id"] == "terminal-make-directory")


def _boot_mode_module():
    loader = importlib.machinery.SourceFileLoader("boot_mode", str(REPO / "OSWorld" / "vm" / "boot-mode"))
    spec = importlib.util.spec_from_loader("boot_mode", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


boot_mode = _boot_mode_module().boot_mode
GRUB_CODE = b"\xeb\x63\x90" + bytes(range(1, 200)) + bytes(238)  # any non-zero boot code


def mbr(code: bytes, *types: int) -> bytes:
    entries = b"".join(struct.pack("<B3sB3sII", 0, b"\0\0\0", kind, b"\0\0\0", 2048 * (i + 1), 2048)
                       for i, kind in enumerate(types))
    return code[:440] + bytes(6) + entries.ljust(64, b"\0") + b"\x55\xaa"


def gpt(*types: uuid.UUID) -> bytes:
    """A protective MBR, a GPT header at LBA 1 and its partition entries from LBA 2."""
    header = b"EFI PART" + bytes(64) + struct.pack("<QII", 2, 128, 128)
    entries = b"".join(kind.bytes_le + bytes(112) for kind in types)
    return mbr(bytes(440), 0xEE) + header.ljust(512, b"\0") + entries.ljust(32 * 512, b"\0")


def test_a_bare_filesystem_boots_with_the_containers_kernel():
    assert boot_mode(bytes(34 * 512)) == "kernel"


def test_an_mbr_disk_with_boot_code_boots_with_bios():
    assert boot_mode(mbr(GRUB_CODE, 0x83)) == "bios"


def test_an_mbr_disk_whose_only_way_to_boot_is_an_efi_partition_boots_with_uefi():
    assert boot_mode(mbr(bytes(440), 0xEF, 0x83)) == "uefi"


def test_a_gpt_disk_with_a_bios_boot_partition_boots_with_bios_even_beside_an_efi_one():
    bios_boot, esp = uuid.UUID("21686148-6449-6e6f-744e-656564454649"), uuid.UUID("c12a7328-f81f-11d2-ba4b-00a0c93ec93b")
    assert boot_mode(gpt(bios_boot, esp)) == "bios"
    assert boot_mode(gpt(esp, uuid.uuid4())) == "uefi"


def test_the_standins_boot_sector_is_an_mbr_disk_with_one_bootable_linux_partition_from_1_mib():
    sector = standin.boot_sector(GRUB_CODE + bytes(72), 4 << 30)
    status, kind, first, count = struct.unpack_from("<B3xB3xII", sector, 446)
    assert (status, kind, first, count) == (0x80, 0x83, 2048, (4 << 30) // 512 - 2048)
    assert sector[:0x5C] == GRUB_CODE[:0x5C] and len(sector) == 512, "GRUB's boot code"
    assert struct.unpack_from("<Q", sector, 0x5C)[0] == 1, "GRUB's core image follows in sector 1"
    assert boot_mode(sector) == "bios"


@pytest.fixture(scope="module")
def image_and_pool(tmp_path_factory):
    from rayenv.desktop_vm.build import build_vm_desktop

    image, qcow2 = build_vm_desktop().image, standin.build_standin()
    with snapshot_pool(tmp_path_factory.mktemp("osi"), 24600, OWNER, NAMESPACE, image, qcow2,
                       boot_timeout=900) as pool:
        yield image, pool


@pytest.fixture
def env(image_and_pool):
    with image_and_pool[1].lease(timeout=900) as leased:
        yield leased.env


def episode_windows(env) -> str:
    return bash(env, "xdotool search --name episode-window getwindowname %@ || true")


@pytest.mark.slow
@pytest.mark.docker
@pytest.mark.vm
def test_the_disk_boots_itself_as_user_with_systemd_and_starts_from_its_golden_state(env):
    ray.get(env.reset.remote(TASK))
    container = docker.from_env().containers.get(container_name(env))
    qemu = container.exec_run(["pgrep", "-a", "qemu-system"]).output.decode()
    assert "qemu-system-x86_64" in qemu and "-kernel" not in qemu, qemu
    path = ray.get(env.status.remote())["details"]["reset_path"]  # a copy-on-write clone or the golden snapshot
    assert {"template": "-incoming defer", "loadvm": "-loadvm golden"}[path] in qemu, "started from the golden state"
    assert "booting /System.qcow2 (bios)" in container.logs().decode()
    assert bash(env, "id -un; cat /proc/1/comm; systemctl is-active rayenv-guest").split() == ["user", "systemd",
                                                                                               "active"]


@pytest.mark.slow
@pytest.mark.docker
@pytest.mark.vm
def test_a_reset_takes_back_the_episodes_file_window_and_clipboard_without_restarting_the_vm(env):
    ray.get(env.reset.remote(TASK))
    booted = container_id(env)
    # xterm runs a command, not a shell: user's ~/.bashrc (Debian's /etc/skel) would retitle it with the prompt
    ray.get(env.step.remote("import subprocess; subprocess.run(['touch', '/home/user/left-by-the-episode']); "
                            "subprocess.run(['xclip', '-selection', 'clipboard'], input=b'episode-clip'); "
                            "subprocess.Popen(['xterm', '-T', 'episode-window', '-e', 'sleep', '600'])"))
    wait_until(lambda: "episode-window" in episode_windows(env), timeout=60, what="the episode's window")
    assert "left-by-the-episode" in bash(env, "ls ~")
    ray.get(env.reset.remote(TASK))
    assert container_id(env) == booted, "the VM was reverted in place, not restarted"
    assert "left-by-the-episode" not in bash(env, "ls ~")
    assert "episode-window" not in episode_windows(env)
    assert "episode-clip" not in bash(env, "timeout 5 xclip -o -selection clipboard 2>/dev/null || true")


@pytest.mark.slow
@pytest.mark.docker
@pytest.mark.vm
def test_the_guest_clock_after_a_revert_is_the_hosts(env):
    ray.get(env.reset.remote(TASK))
    ray.get(env.step.remote("WAIT"))
    ray.get(env.reset.remote(TASK))  # a revert: the snapshot's clock is minutes old
    before = time.time()
    guest_time = float(bash(env, "date +%s.%N"))
    after = time.time()
    assert before - 2 <= guest_time <= after + 2, f"guest {guest_time:.2f}, host {before:.2f}..{after:.2f}"


@pytest.mark.slow
@pytest.mark.docker
@pytest.mark.vm
def test_twenty_consecutive_cycles_of_a_sample_task_all_score_one(env):
    scores = []
    for _ in range(20):
        ray.get(env.reset.remote(TASK))
        for action in TASK["rayenv_solution"]:
            ray.get(env.step.remote(action))
        scores.append(ray.get(env.evaluate.remote()))
    assert scores == [1.0] * 20


@pytest.mark.slow
@pytest.mark.docker
@pytest.mark.vm
def test_the_accelerator_reported_is_what_a_kvm_probe_with_the_containers_own_kernel_says(image_and_pool, env):
    image = image_and_pool[0]
    probed = kvm_status(image)
    status = ray.get(env.status.remote())["details"]
    assert status["kvm_available"] is probed.available and status["kvm"] == probed.message
    assert "no kernel has been booted" not in probed.message, "the probe had a kernel to boot"


@pytest.mark.slow
@pytest.mark.docker
@pytest.mark.vm
def test_a_snapshot_that_cannot_be_loaded_falls_back_to_a_restart_and_the_episode_still_works(env):
    """Last: without the template's RAM file (a host reboot clears /dev/shm) a clone falls back to the golden
    snapshot; without that snapshot too, to a restart."""
    ray.get(env.reset.remote(TASK))
    details = ray.get(env.status.remote())["details"]
    if details["reset_path"] == "template":
        (GoldenStore().ram_directory(details["golden_state"]) / RAM_FILE).unlink()
        ray.get(env.reset.remote(TASK))
        details = ray.get(env.status.remote())["details"]
        assert details["reset_path"] == "loadvm"
    Monitor(Path(details["work_dir"]) / "qmp.sock", env="test").human("delvm golden")  # gone under the desktop
    ray.get(env.reset.remote(TASK))
    status = ray.get(env.status.remote())
    assert status["details"]["container_id"] != details["container_id"], "restarted in a new container"
    assert "snapshot revert failed, restarted instead" in status["last_error"] and "golden" in status["last_error"]
    for action in TASK["rayenv_solution"]:
        ray.get(env.step.remote(action))
    assert ray.get(env.evaluate.remote()) == 1.0
