"""desktop-lite speaks OSWorld's guest API: desktop-env's own PythonController drives it unmodified.

Every test runs twice: on a desktop-lite container and on a process-mode desktop (host Xvfb).
"""

from __future__ import annotations

import io
import time
import xml.etree.ElementTree as ET

import pytest
import requests
from desktop_env.controllers.python import PythonController
from PIL import Image

from rayenv.providers import DesktopSpec, Ownership, make_provider

WIDTH, HEIGHT = 1280, 720
TEXT = "written by PythonController"


@pytest.fixture(scope="module", params=[pytest.param("lite", marks=[pytest.mark.docker, pytest.mark.slow]), "process"])
def desktop(request):
    if request.param == "lite":
        from rayenv.desktop_lite.build import build_image

        build_image()
    provider = make_provider(DesktopSpec(provider=request.param, screen_width=WIDTH, screen_height=HEIGHT),
                             Ownership(owner="guest-tests", env_id=f"guest-{request.param}"))
    endpoint = provider.start()
    yield endpoint
    provider.stop()


@pytest.fixture(scope="module")
def controller(desktop):
    return PythonController(vm_ip=desktop.host, server_port=desktop.port)


def test_a_screenshot_is_a_png_of_the_configured_size(controller):
    image = Image.open(io.BytesIO(controller.get_screenshot()))
    assert image.format == "PNG" and image.size == (WIDTH, HEIGHT)


def test_the_screen_size_matches_the_configuration(controller):
    assert controller.get_vm_screen_size() == {"width": WIDTH, "height": HEIGHT}
    assert controller.get_vm_platform() == "Linux"


def test_typing_into_the_editor_and_saving_produces_the_file(controller):
    controller.execute_python_command("import subprocess; subprocess.Popen(['mousepad'])")
    controller.execute_python_command(
        "import subprocess; subprocess.run(['xdotool', 'search', '--sync', '--onlyvisible', '--class', 'mousepad'], timeout=30)")
    time.sleep(0.5)
    controller.execute_python_command(f"pyautogui.typewrite({TEXT!r}, interval=0.01); pyautogui.hotkey('ctrl', 's')")
    controller.execute_python_command(
        "import subprocess; subprocess.run(['xdotool', 'search', '--sync', '--onlyvisible', '--name', 'Save As'], timeout=30)")
    time.sleep(0.5)
    controller.execute_python_command("import os; pyautogui.typewrite(os.path.expanduser('~/saved.txt'), interval=0.01); "
                                      "time.sleep(0.8); pyautogui.press('enter'); time.sleep(1.5)")
    home = controller.run_bash_script("echo $HOME")["output"].strip()
    assert controller.get_file(f"{home}/saved.txt") == TEXT.encode()


def test_the_accessibility_tree_is_xml_that_contains_the_editor_window(controller):
    tree = controller.get_accessibility_tree()
    root = ET.fromstring(tree)
    frames = [e.get("name") for e in root.iter("frame")]
    assert any("Mousepad" in (name or "") for name in frames), frames
    assert root.find(".//menu-bar") is not None


def test_a_bash_script_returns_its_output_and_exit_code(controller):
    result = controller.run_bash_script("echo out; echo err >&2; exit 3")
    assert (result["output"], result["returncode"]) == ("out\n", 3) and "err" in result["error"]


@pytest.mark.parametrize("code, error", [("pyautogui.click(", "SyntaxError"), ("1 / 0", "ZeroDivisionError")])
def test_a_broken_action_returns_its_traceback_and_the_desktop_keeps_serving(desktop, controller, code, error):
    result = controller.execute_python_command(code)
    assert result["status"] == "error" and result["returncode"] != 0 and error in result["error"]
    assert controller.get_screenshot().startswith(b"\x89PNG")


def test_an_endless_action_is_stopped_by_its_timeout_and_the_desktop_keeps_serving(desktop, controller):
    started = time.monotonic()
    result = requests.post(f"{desktop.url}/execute", json={"command": ["python3", "-c", "while True: pass"],
                                                           "timeout": 2}, timeout=30).json()
    assert time.monotonic() - started < 10
    assert result["status"] == "error" and "TimeoutError" in result["error"]
    assert controller.get_screenshot().startswith(b"\x89PNG")


def test_files_can_be_uploaded_listed_and_read_back(desktop, controller):
    requests.post(f"{desktop.url}/setup/upload", data={"file_path": "~/up/a.txt"},
                  files={"file_data": ("a.txt", b"payload")}, timeout=10).raise_for_status()
    home = controller.run_bash_script("echo $HOME")["output"].strip()
    tree = controller.get_vm_directory_tree(f"{home}/up")
    assert tree["children"] == [{"type": "file", "name": "a.txt"}]
    assert controller.get_file(f"{home}/up/a.txt") == b"payload"


def test_a_changed_wallpaper_shows_on_the_screen_and_is_read_back(desktop, controller):
    magenta = (200, 30, 90)
    picture = io.BytesIO()
    Image.new("RGB", (64, 36), magenta).save(picture, "PNG")
    requests.post(f"{desktop.url}/setup/upload", data={"file_path": "~/wallpaper.png"},
                  files={"file_data": ("wallpaper.png", picture.getvalue())}, timeout=10).raise_for_status()
    requests.post(f"{desktop.url}/setup/change_wallpaper", json={"path": "~/wallpaper.png"},
                  timeout=30).raise_for_status()
    screen = Image.open(io.BytesIO(controller.get_screenshot())).convert("RGB")
    shown = sum(count for count, colour in screen.getcolors(WIDTH * HEIGHT) if colour == magenta)
    assert shown > 0.2 * WIDTH * HEIGHT  # everywhere no window covers it
    assert controller.get_vm_wallpaper() == picture.getvalue()


def test_a_screen_recording_is_an_mp4(desktop, controller, tmp_path):
    controller.start_recording()
    time.sleep(1.5)
    controller.end_recording(str(tmp_path / "r.mp4"))
    assert (tmp_path / "r.mp4").read_bytes()[4:8] == b"ftyp"
