"""Our guest server answers every route desktop-env 1.0.2 calls as OSWorld's own server does.

Each route is called the way desktop-env calls it: through its unmodified ``PythonController``,
``SetupController`` and getters where they exist, else with the exact request they send. The
assertions are OSWorld's response shapes and semantics (keys, status codes, ``wmctrl``'s window
matching, graceful closing, the accessibility XML). One desktop serves the whole module: the lite
container, and, marked slow, one VM booted from ``rayenv vm build``.
"""

from __future__ import annotations

import functools
import http.server
import io
import threading
import time
import xml.etree.ElementTree as ET
from types import SimpleNamespace

import pytest
import requests
from desktop_env.controllers.python import PythonController
from desktop_env.controllers.setup import SetupController
from desktop_env.evaluators.getters.general import get_vm_command_error, get_vm_command_line
from desktop_env.evaluators.getters.info import get_list_directory, get_vm_wallpaper, get_vm_window_size
from PIL import Image

from rayenv.providers import DesktopSpec, Ownership, make_provider
from rayenv.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.docker]

WIDTH, HEIGHT = 1280, 720
ST = "{https://accessibility.ubuntu.example.org/ns/state}"
ACT = "{https://accessibility.ubuntu.example.org/ns/action}"
CP = "{https://accessibility.ubuntu.example.org/ns/component}"


def _lite_spec() -> DesktopSpec:
    from rayenv.desktop_lite.build import build_image

    return DesktopSpec(provider="lite", lite_image=build_image(), screen_width=WIDTH, screen_height=HEIGHT)


def _vm_spec() -> DesktopSpec:
    from rayenv.desktop_vm.build import build_vm_desktop

    vm = build_vm_desktop()
    return DesktopSpec(provider="docker", docker_image=vm.image, vm_path=str(vm.qcow2), snapshot_reset=False,
                       docker_memory="2G", docker_cpus=2, screen_width=WIDTH, screen_height=HEIGHT)


@pytest.fixture(scope="module", params=["lite", pytest.param("vm", marks=pytest.mark.vm)])
def desktop(request):
    spec = {"lite": _lite_spec, "vm": _vm_spec}[request.param]()
    provider = make_provider(spec, Ownership(owner="guest-parity", env_name=f"parity-{request.param}"))
    endpoint = provider.start()
    yield endpoint
    provider.stop()


@pytest.fixture(scope="module")
def controller(desktop):
    return PythonController(vm_ip=desktop.host, server_port=desktop.port)


@pytest.fixture(scope="module")
def setup(desktop, tmp_path_factory):
    return SetupController(vm_ip=desktop.host, server_port=desktop.port, chromium_port=desktop.extra_ports["chromium"],
                           vlc_port=desktop.extra_ports["vlc"], cache_dir=str(tmp_path_factory.mktemp("cache")),
                           screen_width=WIDTH, screen_height=HEIGHT)


@pytest.fixture(scope="module")
def env(desktop, controller, setup):
    """What desktop-env's getters read off a ``DesktopEnv``."""
    return SimpleNamespace(vm_ip=desktop.host, server_port=desktop.port, controller=controller,
                           setup_controller=setup, cache_dir=setup.cache_dir)


@pytest.fixture(scope="module")
def home(controller) -> str:
    return controller.run_bash_script("printf %s \"$HOME\"")["output"]


def titles(desktop) -> list[str]:
    """Titles of the desktop's visible windows."""
    done = requests.post(f"{desktop.url}/execute", json={"command": "xdotool search --onlyvisible --name . getwindowname %@",
                                                         "shell": True}, timeout=30).json()
    return done["output"].splitlines()


def wait_for_title(desktop, part: str, present: bool = True, timeout: float = 60) -> None:
    wait_until(lambda: any(part in title for title in titles(desktop)) is present, timeout,
               what=f"a window titled with {part!r} to {'appear' if present else 'go'}",
               explain=lambda: f"windows: {titles(desktop)}")


def open_editor(desktop, setup, name: str, text: str = "some text") -> None:
    """Mousepad on a new text file ``~/name`` (created by setup's ``execute``), opened by setup's ``open``:
    xdg-open picks the desktop's default app for text/plain."""
    setup.setup([{"type": "execute", "parameters": {"command": f"printf %s {text!r} > ~/{name}", "shell": True}},
                 {"type": "open", "parameters": {"path": f"~/{name}"}}])
    wait_for_title(desktop, name)


def quit_editor(desktop, controller) -> None:
    """Stop this desktop's mousepad and wait until its process is gone (a new one would hand its files to a
    dying one). Found by its windows: a process desktop shares the host's process list."""
    controller.run_bash_script("pids=$(xdotool search --class mousepad getwindowpid %@ 2>/dev/null | sort -u)\n"
                               "[ -n \"$pids\" ] && kill -9 $pids\n"
                               "while [ -n \"$pids\" ] && kill -0 $pids 2>/dev/null; do sleep 0.1; done")
    wait_until(lambda: controller.run_bash_script("xdotool search --class mousepad")["output"] == "", 60,
               what="mousepad's windows to go")


# PythonController ----------------------------------------------------------------------------------

def test_screenshot_screen_size_platform_and_cursor(desktop, controller):
    assert Image.open(io.BytesIO(controller.get_screenshot())).size == (WIDTH, HEIGHT)
    assert controller.get_vm_screen_size() == {"width": WIDTH, "height": HEIGHT}
    assert controller.get_vm_platform() == "Linux"
    position = requests.get(f"{desktop.url}/cursor_position", timeout=10)
    assert position.status_code == 200 and len(position.json()) == 2


def test_an_action_reports_osworlds_keys_and_a_non_zero_exit_is_still_a_success(controller):
    ran = controller.execute_python_command("import sys; print('moved'); sys.exit(4)")
    assert ran == {"status": "success", "output": "moved\n", "error": "", "returncode": 4}


def test_run_python_answers_return_code_need_more_and_a_message_with_both_streams(controller):
    done = controller.run_python_script("import sys\nprint('out')\nprint('err', file=sys.stderr)\nsys.exit(2)")
    assert done.keys() == {"status", "message", "need_more", "output", "error", "return_code"}
    assert (done["status"], done["return_code"], done["need_more"]) == ("error", 2, False)
    assert (done["output"], done["error"], done["message"]) == ("out\n", "err\n", "out\n\nerr\n")
    assert controller.run_python_script("print(6 * 7)")["message"] == "42\n"


def test_run_bash_script_merges_stderr_into_output_in_order(controller, home):
    done = controller.run_bash_script("echo one; echo two >&2; echo three; exit 3")
    assert done == {"status": "error", "output": "one\ntwo\nthree\n", "error": "", "returncode": 3}
    assert controller.run_bash_script("pwd", working_dir="~")["output"] == f"{home}\n"


def test_files_directories_and_the_desktop_path(env, desktop, controller, setup, home):
    setup.setup([{"type": "execute", "parameters": {"command": "rm -rf ~/tree && mkdir -p ~/tree/sub", "shell": True}},
                 {"type": "execute", "parameters": {"command": ["touch", "~/tree/sub/leaf.txt"]}}])
    tree = get_list_directory(env, {"path": f"{home}/tree"})
    assert tree == {"type": "directory", "name": "tree", "children": [
        {"type": "directory", "name": "sub", "children": [{"type": "file", "name": "leaf.txt"}]}]}
    assert controller.get_file(f"{home}/tree/sub/leaf.txt") == b""
    missing = requests.post(f"{desktop.url}/file", data={"file_path": f"{home}/tree/missing.txt"}, timeout=10)
    assert missing.status_code == 404  # get_file turns it into None, after its three tries five seconds apart
    assert controller.get_vm_desktop_path() == f"{home}/Desktop"


def test_command_getters_read_output_and_error_of_a_command_that_failed(env):
    assert get_vm_command_line(env, {"command": "echo seen; exit 1", "shell": True}) == "seen\n"
    assert "No such file" in get_vm_command_error(env, {"command": ["ls", "/no/such/dir"]})


def test_a_screen_recording_is_an_mp4(controller, tmp_path):
    controller.start_recording()
    time.sleep(1.5)  # the length of the recording, not a wait for something to happen
    controller.end_recording(str(tmp_path / "r.mp4"))
    assert (tmp_path / "r.mp4").read_bytes()[4:8] == b"ftyp"


# SetupController -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A host HTTP server on loopback serving one file, as a task's download URL."""
    root = tmp_path_factory.mktemp("served")
    (root / "data.csv").write_text("a,b\n1,2\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_download_and_upload_setup_put_files_where_the_task_says(controller, setup, served, home):
    setup.setup([{"type": "download", "parameters": {"files": [{"url": f"{served}/data.csv", "path": "~/in/data.csv"}]}}])
    assert controller.get_file(f"{home}/in/data.csv") == b"a,b\n1,2\n"


def test_download_file_fetches_inside_the_desktop_whole_or_not_at_all(desktop, controller, home):
    controller.run_bash_script("mkdir -p ~/site && printf payload > ~/site/p.bin")
    server = requests.post(f"{desktop.url}/setup/launch", timeout=30, json={
        "command": "cd ~/site && exec python3 -m http.server 8765 --bind 127.0.0.1", "shell": True})
    assert server.status_code == 200, server.text
    url = "http://127.0.0.1:8765/p.bin"
    wait_until(lambda: controller.run_bash_script(f"python3 -c 'import urllib.request; urllib.request.urlopen(\"{url}\")'")
               ["returncode"] == 0, 30, what="the desktop's own HTTP server answering")
    fetched = requests.post(f"{desktop.url}/setup/download_file", json={"url": url, "path": "~/got/p.bin"}, timeout=60)
    assert (fetched.status_code, fetched.text) == (200, "File downloaded successfully: 7 bytes")
    assert controller.get_file(f"{home}/got/p.bin") == b"payload"
    missing = requests.post(f"{desktop.url}/setup/download_file", json={"url": url + ".gone", "path": "~/got/x"},
                            timeout=60)
    assert missing.status_code == 500 and "404" in missing.text
    absent = requests.post(f"{desktop.url}/file", data={"file_path": f"{home}/got/x"}, timeout=30)
    assert absent.status_code == 404  # what desktop-env's get_file turns into None, after three tries 5 s apart
    assert requests.post(f"{desktop.url}/setup/download_file", json={"url": url}, timeout=10).status_code == 400


def test_open_waits_for_the_files_window_and_raises_it(desktop, setup):
    open_editor(desktop, setup, "parity-open.txt")
    active = requests.post(f"{desktop.url}/execute", json={"command": "xdotool getactivewindow getwindowname",
                                                           "shell": True}, timeout=10).json()["output"]
    assert "parity-open.txt" in active


def test_open_of_a_command_name_runs_it_and_a_missing_name_is_404(desktop, setup):
    setup.setup([{"type": "open", "parameters": {"path": "galculator"}}])
    wait_for_title(desktop, "galculator")
    missing = requests.post(f"{desktop.url}/setup/open_file", json={"path": "~/no-such-file.txt"}, timeout=10)
    assert missing.status_code == 404 and "not found" in missing.text


def test_launch_of_a_missing_program_is_an_error_and_a_real_one_starts(desktop, setup):
    for command, shell in ((["no-such-program"], False), ("no-such-program --flag", True)):
        refused = requests.post(f"{desktop.url}/setup/launch", json={"command": command, "shell": shell}, timeout=10)
        assert refused.status_code == 500 and "no-such-program" in refused.json()["message"]
    setup.setup([{"type": "launch", "parameters": {"command": ["xterm", "-T", "parity-xterm"]}}])
    wait_for_title(desktop, "parity-xterm")


def test_execute_with_verification_waits_for_its_window_and_fails_without_it(desktop, setup):
    setup.setup([{"type": "execute_with_verification", "parameters": {
        "command": "xterm -T verified-window &", "shell": True, "max_wait_time": 60, "check_interval": 0.5,
        "verification": {"window_exists": "VERIFIED-window", "command_success": "pgrep -f verified-window"}}}])
    assert any("verified-window" in title for title in titles(desktop))
    failed = requests.post(f"{desktop.url}/setup/execute_with_verification", timeout=30, json={
        "command": ["true"], "verification": {"window_exists": "never-there"}, "max_wait_time": 1, "check_interval": 0.2})
    assert failed.status_code == 500 and failed.json()["status"] == "verification_failed"


def active_title(desktop) -> str:
    return requests.post(f"{desktop.url}/execute", timeout=10, json={
        "command": "xdotool getactivewindow getwindowname", "shell": True}).json()["output"].strip()


def test_activate_window_matches_like_wmctrl_and_a_missing_window_is_not_an_error(desktop, setup):
    setup.setup([{"type": "launch", "parameters": {"command": ["xterm", "-T", "alpha-window"]}},
                 {"type": "launch", "parameters": {"command": ["xterm", "-T", "beta-window"]}}])
    wait_for_title(desktop, "alpha-window")
    wait_for_title(desktop, "beta-window")
    setup.setup([{"type": "activate_window", "parameters": {"window_name": "ALPHA-win"}}])  # a substring, any case
    wait_until(lambda: active_title(desktop) == "alpha-window", 30, what="alpha-window to be active",
               explain=lambda: active_title(desktop))
    setup.setup([{"type": "activate_window", "parameters": {"window_name": "beta-win", "strict": True}},  # not exact
                 {"type": "activate_window", "parameters": {"window_name": "beta.*"}},  # not a regex
                 {"type": "activate_window", "parameters": {"window_name": "no such window"}}])  # 200, as OSWorld's
    assert active_title(desktop) == "alpha-window"
    setup.setup([{"type": "activate_window", "parameters": {"window_name": "beta-window", "strict": True}}])
    wait_until(lambda: active_title(desktop) == "beta-window", 30, what="beta-window to be active")


def test_close_window_asks_the_app_to_close_and_matches_instance_dot_class(desktop, controller, setup):
    setup.setup([{"type": "launch", "parameters": {"command": ["xterm", "-T", "close-me"]}}])
    wait_for_title(desktop, "close-me")
    setup.setup([{"type": "close_window", "parameters": {"window_name": "close-me", "strict": True}}])
    wait_for_title(desktop, "close-me", present=False)
    open_editor(desktop, setup, "unsaved.txt")
    requests.post(f"{desktop.url}/execute", timeout=30, json={
        "command": ["python", "-c", "import pyautogui; pyautogui.typewrite('changed', interval=0.01)"]})
    wait_for_title(desktop, "*")  # mousepad marks the modified file
    setup.setup([{"type": "close_window", "parameters": {"window_name": "mousepad.Mousepad", "by_class": True}}])
    # asked, not destroyed: mousepad asks whether to save, and its window stays until answered
    wait_for_title(desktop, "Save Changes")
    assert any("unsaved.txt" in title for title in titles(desktop))
    quit_editor(desktop, controller)


def test_a_changed_wallpaper_is_read_back_by_the_getter(env, desktop, controller, setup):
    picture = io.BytesIO()
    Image.new("RGB", (64, 36), (200, 30, 90)).save(picture, "PNG")
    requests.post(f"{desktop.url}/setup/upload", data={"file_path": "~/parity-wallpaper.png"},
                  files={"file_data": ("w.png", picture.getvalue())}, timeout=10).raise_for_status()
    setup.setup([{"type": "change_wallpaper", "parameters": {"path": "~/parity-wallpaper.png"}}])
    assert open(get_vm_wallpaper(env, {"dest": "wallpaper.png"}), "rb").read() == picture.getvalue()


def test_window_size_getter_finds_a_window_by_either_class_name(env, desktop, setup):
    setup.setup([{"type": "launch", "parameters": {"command": ["xterm", "-T", "sized-window"]}}])
    wait_for_title(desktop, "sized-window")
    for name in ("xterm", "XTerm"):
        size = get_vm_window_size(env, {"app_class_name": name})
        assert size.keys() == {"width", "height"} and size["width"] > 0
    missing = requests.post(f"{desktop.url}/window_size", data={"app_class_name": "no-such-app"}, timeout=10)
    assert missing.status_code == 404  # the getter turns it into None, after its three tries five seconds apart


def test_the_accessibility_tree_is_osworlds_xml(desktop, controller, setup):
    open_editor(desktop, setup, "a11y.txt")
    root = ET.fromstring(controller.get_accessibility_tree())
    assert root.tag == "desktop-frame"
    states = {key for element in root.iter() for key in element.attrib if key.startswith(ST)}
    assert states and not [s for s in states if "-" in s], states  # OSWorld writes st:selectable_text, never -
    assert any("_" in s for s in states), states
    assert any(key.startswith(ACT) for element in root.iter() for key in element.attrib)
    frame = next(e for e in root.iter("frame") if "a11y.txt" in e.get("name", ""))
    assert frame.get(f"{CP}screencoord").startswith("(") and frame.get(f"{ST}showing") == "true"


def test_the_terminal_route_answers_osworlds_shape(desktop, controller):
    """The text itself needs a VTE terminal (gnome-terminal, OSWorld profile); without one active, null."""
    answer = requests.get(f"{desktop.url}/terminal", timeout=60)
    assert answer.status_code == 200 and answer.json().keys() == {"output", "status"}
    if controller.run_bash_script("command -v gnome-terminal")["returncode"] != 0:
        assert answer.json()["output"] is None
        return
    controller.run_bash_script("gnome-terminal -- bash -c 'echo parity-terminal-text; exec bash' &")
    wait_until(lambda: "parity-terminal-text" in (controller.get_terminal_output() or ""), 60,
               what="the terminal's text through /terminal")


def test_the_app_ports_are_published_on_loopback(desktop, controller):
    """Chrome's debugging port and VLC's HTTP port, where getters reach them: here a stand-in server on 9222."""
    requests.post(f"{desktop.url}/setup/launch", timeout=30, json={
        "command": "exec python3 -m http.server 9222 --bind 0.0.0.0 --directory /", "shell": True}).raise_for_status()
    assert desktop.extra_ports.keys() >= {"chromium", "vlc"}
    wait_until(lambda: _answers(f"http://127.0.0.1:{desktop.extra_ports['chromium']}/"), 60,
               what="the desktop's port 9222 through its published host port")


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=5).status_code == 200
    except requests.RequestException:
        return False
