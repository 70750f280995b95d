"""Nothing of a VM pool outlives ``pool.shutdown()`` when it lands right after a release, while the released
desktop reverts to its golden snapshot (issue 22; the lite half is in test_pool_leaks.py). One VM boot under TCG:
run it under ``flock /tmp/rayenv-vm.lock``."""

from __future__ import annotations

import pytest

from test_pool_leaks import assert_nothing_left
from vm_guest import snapshot_pool

pytestmark = [pytest.mark.slow, pytest.mark.docker, pytest.mark.vm]

OWNER = "leakvm"


def test_a_shutdown_while_a_released_vm_desktop_reverts_leaves_nothing(tmp_path_factory):
    from rayenv.desktop_vm.build import build_vm_desktop

    vm = build_vm_desktop()
    # snapshot_pool shuts the pool down as its block ends, and checks no container, golden state or overlay is left
    with snapshot_pool(tmp_path_factory.mktemp("leakvm"), 25200, OWNER, "rayenv-leakvm", vm.image, vm.qcow2,
                       revert_on_release=True) as pool:
        with pool.lease(timeout=900) as lease:
            lease.call("step", "pyautogui.moveTo(5, 5)", timeout=120)  # dirty: the release reverts it
        assert pool.status().slots[0].state == "reverting"
    assert_nothing_left(OWNER)
