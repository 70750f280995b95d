"""The guest server is the ``osworld_guest`` package: one ``GuestState`` per app, run with ``-m``, shipped whole.

Most need no X display: they use Flask's test client on routes that do not touch the screen; the
screen's own tests start a bare Xvfb of their own.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

GUEST_DIR = Path(__file__).resolve().parents[1] / "OSWorld" / "guest"


@pytest.fixture(scope="module")
def guest():
    """The package, imported from the checkout as desktop-session does (the guest dir on the path)."""
    sys.path.insert(0, str(GUEST_DIR))
    try:
        import osworld_guest

        yield osworld_guest
    finally:
        sys.path.remove(str(GUEST_DIR))


def test_two_apps_with_two_states_share_no_wallpaper(guest, tmp_path):
    picture = tmp_path / "wallpaper.png"
    picture.write_bytes(b"not really a png")
    from osworld_guest.state import Wallpaper

    first, second = guest.GuestState(wallpaper=Wallpaper(path=picture)), guest.GuestState()
    first_client, second_client = guest.create_app(first).test_client(), guest.create_app(second).test_client()
    assert first_client.post("/wallpaper").data == b"not really a png"
    assert second_client.post("/wallpaper").status_code == 404
    assert second.wallpaper is None


def test_ending_a_recording_returns_its_file_and_clears_only_that_apps_recording(guest, tmp_path):
    from osworld_guest.state import Recording

    video = tmp_path / "recording.mp4"
    video.write_bytes(b"an mp4")
    recorder = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)  # stands in for ffmpeg
    recording, idle = guest.GuestState(recording=Recording(process=recorder, path=video)), guest.GuestState()
    idle_response = guest.create_app(idle).test_client().post("/end_recording")
    response = guest.create_app(recording).test_client().post("/end_recording")
    assert (idle_response.status_code, idle_response.json["message"]) == (400, "not recording")
    assert (response.status_code, response.data) == (200, b"an mp4")
    assert recording.recording is None and recorder.poll() == 0


def test_an_action_without_a_zygote_runs_as_a_subprocess_with_osworlds_result_keys(guest):
    client = guest.create_app(guest.GuestState(zygote=None)).test_client()
    result = client.post("/execute", json={"command": ["python", "-c", "print('hi'); raise SystemExit(3)"]}).json
    assert (result["status"], result["output"], result["returncode"]) == ("success", "hi\n", 3)  # it ran: OSWorld's "success"


def test_the_server_runs_as_a_module_from_the_guest_dir_and_refuses_to_start_without_a_display():
    environment = {key: value for key, value in os.environ.items() if key != "DISPLAY"}
    environment["PYTHONPATH"] = str(GUEST_DIR)
    started = subprocess.run([sys.executable, "-m", "osworld_guest", "--port", "0"], env=environment,
                             capture_output=True, text=True, timeout=60, cwd="/")
    assert started.returncode == 1 and "DISPLAY is not set" in started.stderr, started.stderr


def free_display() -> str:
    """The lowest display number that no X server of this network namespace listens on and no socket file in
    /tmp/.X11-unix names (a killed server's file outlives it, and python-xlib tries the file first), as
    desktop-session picks one."""
    unix = Path("/proc/net/unix").read_text().split()
    taken = {word.rsplit("X", 1)[1] for word in unix if word.startswith("@/tmp/.X11-unix/X")}
    return f":{next(n for n in itertools.count() if str(n) not in taken and not Path(f'/tmp/.X11-unix/X{n}').exists())}"


@contextmanager
def bare_x_server(display: str | None = None, namespace: str | None = None):
    """An Xvfb alone (no session), on ``display`` or a free one, in network namespace ``namespace`` or this one;
    yields its display name once it accepts. Only its abstract socket, as desktop-session's: a socket file would be
    found by a process desktop of the same number in another network namespace (a test's env host), whose
    python-xlib clients look for the file first."""
    reader, writer = os.pipe()
    inside = ["ip", "netns", "exec", namespace] if namespace else []
    server = subprocess.Popen([*inside, "Xvfb", display or free_display(), "-displayfd", str(writer), "-screen", "0",
                               "640x480x24", "-nolisten", "tcp", "-nolisten", "unix", "-noreset"], pass_fds=(writer,),
                              stderr=subprocess.DEVNULL)
    os.close(writer)
    try:
        with os.fdopen(reader) as ready:  # Xvfb writes its display number when it accepts connections
            yield f":{ready.readline().strip()}"
    finally:
        server.kill()
        server.wait()


def test_a_route_that_fails_answers_with_its_cause_not_flasks_html_page(guest, monkeypatch):
    from osworld_guest import screen

    monkeypatch.setattr(screen, "_connection", None)
    monkeypatch.setenv("DISPLAY", ":9999")  # no X server there
    response = guest.create_app(guest.GuestState()).test_client().get("/screenshot")
    assert response.status_code == 500
    assert response.json["status"] == "error" and "/screenshot failed: DisplayConnectionError" in response.json["message"]


def test_the_clock_route_sets_the_clock_in_the_server_and_says_when_it_may_not(guest, monkeypatch):
    from osworld_guest import clock

    asked = []
    monkeypatch.setattr(clock.time, "clock_settime", lambda which, seconds: asked.append((which, seconds)))
    client = guest.create_app(guest.GuestState()).test_client()
    assert client.post("/setup/set_clock", json={"seconds": 1_800_000_000.5}).json == {"status": "success"}
    assert asked == [(clock.time.CLOCK_REALTIME, 1_800_000_000.5)]
    assert client.post("/setup/set_clock", json={"seconds": "noon"}).status_code == 400

    def refused(which, seconds):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(clock.time, "clock_settime", refused)
    answer = client.post("/setup/set_clock", json={"seconds": 1_800_000_000})
    assert answer.status_code == 403 and "may not set the clock" in answer.json["message"]


@pytest.mark.slow
def test_screenshots_go_on_after_the_x_server_restarts(guest, monkeypatch):
    from osworld_guest import screen

    monkeypatch.setattr(screen, "_connection", None)
    client = guest.create_app(guest.GuestState()).test_client()
    with bare_x_server() as display:
        monkeypatch.setenv("DISPLAY", display)
        assert client.get("/screenshot").status_code == 200
    with bare_x_server(display):  # the same display, a new server: the cached connection is dead
        again = client.get("/screenshot")
    assert again.status_code == 200 and again.data.startswith(b"\x89PNG")


@pytest.mark.parametrize("profile", ["small", "osworld"])
def test_the_lite_image_and_the_vm_disk_ship_the_whole_package(tmp_path, profile):
    from rayenv.desktop_lite.profiles import get_profile
    from rayenv.desktop_vm import build as vm

    package = {path.relative_to(GUEST_DIR) for path in (GUEST_DIR / "osworld_guest").glob("*.py")}
    assert Path("osworld_guest/__main__.py") in package
    for files in (get_profile(profile).layer_files(), vm._disk_files(profile)):
        shipped = {path.relative_to(GUEST_DIR) for path in files if path.is_relative_to(GUEST_DIR)}
        assert shipped == package
    get_profile(profile).fill_context(tmp_path / "lite")
    guest_dir = tmp_path / "lite" / "guest"
    assert {path.relative_to(guest_dir) for path in guest_dir.rglob("*.py")} == package
    assert not list(guest_dir.rglob("__pycache__"))
