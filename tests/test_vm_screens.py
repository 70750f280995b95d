"""A VM desktop's screen from outside the guest (issue 20's screenshot acceptance): what noVNC shows is the desktop.

One VM desktop of rayenv's own image (TCG here, 1920x1080, started from its golden snapshot as a pool starts
it) serves the module. With a window open, three readers outside the guest see the same pixels: QEMU's VNC
server (the one noVNC on port 8006 shows, read by a small RFB client inside the container), QMP
``screendump``, and the screenshot a trainer gets from ``step`` and ``reset`` (the pointer drawn in where the
guest says it is). Run it under ``flock /tmp/rayenv-vm.lock`` beside other VM tests.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import docker
import pytest
import requests
from PIL import Image, ImageChops

from rayenv.env.desktop import Desktop
from rayenv.providers import DesktopSpec, Ownership
from rayenv.providers.qmp import Monitor
from rayenv.providers.screens import SCREEN_MOUNT, Frame, encode_png, read_ppm
from rayenv.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.docker, pytest.mark.vm]

VIEWER = Path(__file__).with_name("rfb_view.py")
WINDOW = (200, 150, 800, 500)  # where the test's xterm is: left, top, right, bottom
BACKGROUND = (0x3B, 0x42, 0x52)  # the session's root colour


@pytest.fixture(scope="module")
def desktop():
    from rayenv.desktop_vm.build import build_vm_desktop

    vm = build_vm_desktop()
    desktop = Desktop(DesktopSpec(provider="docker", docker_image=vm.image, vm_path=str(vm.qcow2), docker_memory="2G",
                                  docker_cpus=2), Ownership("vm-screens-test", "vm-screens"))
    try:
        desktop.start()
        yield desktop
    finally:
        desktop.close()
    assert not docker.from_env().containers.list(all=True, filters={"name": "rayenv-vm-screens"})


def vnc_view(desktop: Desktop) -> Image.Image:
    """What QEMU's VNC server shows, read inside the desktop's container (its socket is in the work dir)."""
    screen_dir = desktop.provider.screen_dir
    shutil.copy(VIEWER, screen_dir / VIEWER.name)
    container = docker.from_env().containers.get(desktop.status()["details"]["container_name"])
    done = container.exec_run(["python3", f"{SCREEN_MOUNT}/{VIEWER.name}", f"{SCREEN_MOUNT}/vnc.ppm"])
    assert done.exit_code == 0, done.output.decode(errors="replace")
    return read_ppm(screen_dir / "vnc.ppm").image()


def screendump(desktop: Desktop) -> Image.Image:
    Monitor(desktop.provider.qmp_socket, env="test").execute("screendump", {"filename": f"{SCREEN_MOUNT}/test.ppm"})
    return read_ppm(desktop.provider.screen_dir / "test.ppm").image()


def with_pointer(screen: Image.Image, position: tuple[int, int]) -> Image.Image:
    return png(encode_png(Frame.of(screen), position))


def same(first: Image.Image, second: Image.Image) -> bool:
    return first.size == second.size and ImageChops.difference(first.convert("RGB"), second.convert("RGB")).getbbox() is None


def png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return image.convert("RGB")


def window_shown(screen: Image.Image) -> bool:
    return any(pixel != BACKGROUND for pixel in screen.crop(WINDOW).getdata())


def test_vnc_screendump_and_the_trainers_screenshot_show_the_same_open_window(desktop):
    assert desktop.status()["details"]["screenshots"] == "QEMU's display (QMP screendump)"
    desktop.step("import subprocess; subprocess.Popen(['xterm', '-geometry', '80x24+200+150', '-e', "
                 "'echo the screen is read outside the guest; sleep 600'])", pause=0)
    desktop.step("pyautogui.moveTo(1500, 900)", pause=0)
    wait_until(lambda: window_shown(vnc_view(desktop)), timeout=60, interval=1.0, what="the xterm on QEMU's display")
    views = [vnc_view(desktop)]
    wait_until(lambda: same(views[-1], views.append(vnc_view(desktop)) or views[-1]), timeout=60, interval=0.5,
               what="the display to stop changing")
    trainer = png(desktop.step("pyautogui.moveTo(1500, 900)", pause=0)["observation"]["screenshot"])
    view, dumped = vnc_view(desktop), screendump(desktop)
    assert view.size == dumped.size == trainer.size == (1920, 1080)
    assert same(view, dumped), "noVNC's server and QMP screendump show one display"
    assert window_shown(view) and view.getpixel((1501, 910)) == BACKGROUND  # the X server draws no pointer
    assert same(with_pointer(view, (1500, 900)), trainer), "the trainer sees the display, with the guest's arrow"
    assert same(trainer, png(desktop._client.screenshot())), "and what the guest's own /screenshot grabs"


def test_after_reset_the_screenshot_is_still_the_display_and_the_window_is_gone(desktop):
    trainer = png(desktop.reset(None)["screenshot"])
    position = desktop._client.cursor_position()
    view = vnc_view(desktop)
    assert not window_shown(view), "the reverted desktop has no xterm"
    assert same(with_pointer(view, position), trainer)


def test_novnc_serves_its_viewer_on_the_published_port(desktop):
    page = requests.get(f"http://127.0.0.1:{desktop._runner.endpoint.extra_ports['vnc']}/vnc.html", timeout=10)
    assert page.ok and "noVNC" in page.text
