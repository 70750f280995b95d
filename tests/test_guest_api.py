"""desktop-lite speaks OSWorld's guest API: desktop-env's own PythonController drives it unmodified.

Every test runs twice: on a desktop-lite container and on a process-mode desktop (host Xvfb). Each
test sets up what it needs itself (no test relies on another having run first), and GUI steps wait
for what they need to see (a window active, a field filled, a file written), never a fixed time.
"""

from __future__ import annotations

import io
import time
import xml.etree.ElementTree as ET
from pathlib import PurePosixPath

import pytest
import requests
from desktop_env.controllers.python import PythonController
from PIL import Image

from rayenv.providers import DesktopSpec, Ownership, make_provider
from rayenv.waiting import wait_until

WIDTH, HEIGHT = 1280, 720
TEXT = "written by PythonController"


@pytest.fixture(scope="module", params=[pytest.param("lite", marks=[pytest.mark.docker, pytest.mark.slow]), pytest.param("process", marks=pytest.mark.slow)])
def desktop(request):
    if request.param == "lite":
        from rayenv.desktop_lite.build import build_image

        build_image()
    provider = make_provider(DesktopSpec(provider=request.param, screen_width=WIDTH, screen_height=HEIGHT),
                             Ownership(owner="guest-tests", env_name=f"guest-{request.param}"))
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


def shell(controller, command: str) -> str:
    return controller.execute_python_command(f"import subprocess; print(subprocess.run({command!r}, shell=True, "
                                             "capture_output=True, text=True).stdout, end='')")["output"]


def active_window(controller) -> str:
    return shell(controller, "xdotool getactivewindow getwindowname").strip()


def open_new_editor(controller) -> None:
    """A new mousepad window ("Untitled N"), active and ready for keys."""
    before = set(shell(controller, "xdotool search --onlyvisible --class mousepad getwindowname %@").splitlines())
    controller.execute_python_command("import subprocess; subprocess.Popen(['mousepad'])")
    wait_until(lambda: (title := active_window(controller)).endswith("Mousepad") and title not in before, 60,
               what="a new active mousepad window", explain=lambda: active_window(controller))


def typed_into_focus(controller, text: str) -> bool:
    """Whether the focused text field of the active window holds ``text`` (read through the accessibility tree)."""
    tree = ET.fromstring(controller.get_accessibility_tree())
    focused = "{https://accessibility.ubuntu.example.org/ns/state}focused"
    return any(element.get(focused) == "true" and (element.text or "") == text for element in tree.iter())


def test_typing_into_the_editor_and_saving_produces_the_file(controller):
    home = controller.run_bash_script("echo $HOME")["output"].strip()
    target = str(PurePosixPath(home) / "saved.txt")
    controller.run_bash_script(f"rm -f {target}")
    open_new_editor(controller)
    controller.execute_python_command(f"pyautogui.typewrite({TEXT!r}, interval=0.01); pyautogui.hotkey('ctrl', 's')")
    wait_until(lambda: active_window(controller) == "Save As", 60, what="the Save As dialog to be active",
               explain=lambda: active_window(controller))
    controller.execute_python_command(f"pyautogui.typewrite({target!r}, interval=0.01)")
    wait_until(lambda: typed_into_focus(controller, target), 60, what="the file name typed into the Save As dialog")
    controller.execute_python_command("pyautogui.press('enter')")
    wait_until(lambda: controller.get_file(target) == TEXT.encode(), 60, what=f"{target} written by the editor")


def test_the_accessibility_tree_is_xml_that_contains_the_editor_window(controller):
    open_new_editor(controller)
    tree = controller.get_accessibility_tree()
    root = ET.fromstring(tree)
    frames = [e.get("name") for e in root.iter("frame")]
    assert any("Mousepad" in (name or "") for name in frames), frames
    assert root.find(".//menu-bar") is not None


def test_a_bash_script_returns_its_output_with_stderr_merged_and_its_exit_code(controller):
    result = controller.run_bash_script("echo out; echo err >&2; exit 3")
    assert (result["output"], result["error"], result["returncode"]) == ("out\nerr\n", "", 3)


@pytest.mark.parametrize("code, error", [("pyautogui.click(", "SyntaxError"), ("1 / 0", "ZeroDivisionError")])
def test_a_broken_action_returns_its_traceback_and_the_desktop_keeps_serving(desktop, controller, code, error):
    result = controller.execute_python_command(code)
    assert result["status"] == "success" and result["returncode"] != 0 and error in result["error"]  # it ran, and failed
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
    """The picture covers the screen wherever no window does (windows of other tests cover well under half)."""
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
    time.sleep(1.5)  # the length of the recording, not a wait for something to happen
    controller.end_recording(str(tmp_path / "r.mp4"))
    assert (tmp_path / "r.mp4").read_bytes()[4:8] == b"ftyp"
