"""A reset that finishes in the background (a VM swapped to its warm spare sets its guest's clock after the reset
returned): the reset returns with its observation from the host-side display, every later request to the guest
waits until the reset's last work is done, and a desktop whose guest did not come back from it is broken.

Fast tests with a fake guest whose "clock" is an event the test sets (the real swap: tests/test_vm_template.py).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from fakes import FakeProvider
from rayenv.env.desktop import Desktop
from rayenv.env.options import EnvOptions
from rayenv.errors import DesktopUnavailable, SnapshotError
from rayenv.providers import DesktopSpec, Ownership
from rayenv.providers.screens import Frame

WAIT = 30.0


class SettlingProvider(FakeProvider):
    """Reverts in place at once and, once ``deferred``, finishes the reset when the test sets ``finished``."""

    reverts_whole_machine = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.finished, self.waiting = threading.Event(), threading.Event()
        self.failure: SnapshotError | None = None
        self.deferred = False
        self.finished.set()

    def revert(self) -> bool:
        if self.deferred:
            self.finished.clear()
        return True

    def settle(self) -> None:
        if not self.finished.is_set():
            self.waiting.set()
            assert self.finished.wait(WAIT), "the test never finished the reset"
        if self.failure is not None:
            raise self.failure

    def display(self) -> "BlankScreen":
        return BlankScreen()


class BlankScreen:
    def grab(self) -> Frame:
        return Frame(4, 4)


@pytest.fixture
def desktop():
    one = Desktop(DesktopSpec(provider="test_settle:SettlingProvider"), Ownership(owner="settle", env_name="settle-0"),
                  EnvOptions(default_pause=0))
    one.start()
    one.step("pyautogui.moveTo(5, 5)")
    one.reset()  # finished at once: the first reset asks the guest where the golden state's pointer is
    one.step("pyautogui.moveTo(5, 5)")  # used: the next reset reverts
    one.provider.deferred = True
    yield one
    one.provider.finished.set()
    one.close()


def test_a_reset_returns_before_its_last_work_and_the_next_step_waits_for_it(desktop):
    observation = desktop.reset()  # returns although the provider has not finished: the screen is the host's
    assert observation["screenshot"].startswith(b"\x89PNG")
    with ThreadPoolExecutor(1) as lessee:
        step = lessee.submit(desktop.step, "pyautogui.moveTo(7, 7)")
        assert desktop.provider.waiting.wait(WAIT), "the step asked the guest without waiting"
        assert not step.done()
        desktop.provider.finished.set()
        assert step.result(timeout=WAIT)["done"] is False


def test_a_desktop_whose_guest_did_not_come_back_from_its_reset_is_broken(desktop):
    desktop.reset()
    desktop.provider.failure = SnapshotError("could not set the guest's clock: the guest does not answer",
                                             env="settle-0", phase="snapshot")
    desktop.provider.finished.set()
    with pytest.raises(DesktopUnavailable, match="did not come back from its reset: could not set the guest's clock"):
        desktop.step("pyautogui.moveTo(7, 7)")
    assert desktop.state == "broken"
