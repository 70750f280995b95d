"""The osworld image profile keeps OSWorld's image contract: a desktop-lite container of that profile runs
the guest server as `user` in /home/user on :0 with the session bus where OSWorld's tasks look for it,
sudo takes the client password, gsettings, pulseaudio and gio work, and the apps answer where desktop-env's
getters ask (Chrome's DevTools on 9222 through socat, VLC's HTTP interface on 8080, LibreOffice saving xlsx).

One osworld desktop for the whole module; the image is built once (cold: see bench/results/image_profiles.md).
"""

from __future__ import annotations

import json

import pytest
import requests

from rayenv.env.guest_client import GuestClient
from rayenv.providers import DesktopSpec, Ownership, make_provider
from rayenv.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.docker]

PASSWORD = "a client password"


@pytest.fixture(scope="module")
def guest():
    from rayenv.desktop_lite.build import build_image

    build_image(profile="osworld")
    provider = make_provider(DesktopSpec(provider="lite", profile="osworld", client_password=PASSWORD,
                                         screen_width=1280, screen_height=720),
                             Ownership(owner="osworld-profile-tests", env_name="osworld-profile"))
    endpoint = provider.start()
    yield endpoint.url
    provider.stop()


def shell(guest: str, command: str, timeout: float = 60) -> dict:
    """Run ``command`` with bash in the desktop the way a task's ``execute`` step does; the guest's answer."""
    answer = requests.post(f"{guest}/execute", json={"command": command, "shell": True, "timeout": timeout},
                           timeout=timeout + 10)
    answer.raise_for_status()
    return answer.json()


def output(guest: str, command: str, timeout: float = 60) -> str:
    """``command``'s stdout; it must succeed."""
    result = shell(guest, command, timeout)
    assert result["returncode"] == 0, result
    return result["output"].strip()


def launch(guest: str, *command: str) -> None:
    """Start ``command`` in the background the way a task's ``launch`` step does."""
    requests.post(f"{guest}/setup/launch", json={"command": list(command)}, timeout=30).raise_for_status()


def answers(guest: str, command: str) -> str | None:
    """``command``'s stdout if it succeeded, else None (for waiting on a server to come up)."""
    result = shell(guest, command, timeout=20)
    return result["output"] if result["returncode"] == 0 else None


def test_the_guest_server_runs_as_user_in_its_home_on_display_0(guest):
    facts = output(guest, 'echo "$(id -un) $(id -u) $HOME $PWD $DISPLAY $DBUS_SESSION_BUS_ADDRESS"').split()
    assert facts == ["user", "1000", "/home/user", "/home/user", ":0", "unix:path=/run/user/1000/bus"]
    assert output(guest, "python --version").startswith("Python 3")
    assert output(guest, "ls -d ~/Desktop ~/Documents ~/Downloads").split() == [
        "/home/user/Desktop", "/home/user/Documents", "/home/user/Downloads"]


def test_sudo_takes_the_client_password_the_pool_passes(guest):
    assert output(guest, f"echo '{PASSWORD}' | sudo -S whoami") == "root"
    assert shell(guest, "echo wrong | sudo -S -k whoami")["returncode"] != 0


def test_gsettings_round_trip_through_dconf(guest):
    output(guest, "gsettings set org.gnome.desktop.interface text-scaling-factor 1.25")
    assert output(guest, "gsettings get org.gnome.desktop.interface text-scaling-factor") == "1.25"
    assert output(guest, "dconf read /org/gnome/desktop/interface/text-scaling-factor") == "1.25"


def test_pulseaudio_answers_pactl_and_keeps_a_volume(guest):
    assert "Default Sink: speakers" in output(guest, "pactl info")
    output(guest, "pactl set-sink-volume @DEFAULT_SINK@ 40%")
    assert "40%" in output(guest, "pactl get-sink-volume @DEFAULT_SINK@")


def test_gio_moves_a_file_to_the_trash(guest):
    output(guest, "echo x > ~/Desktop/old.txt && gio trash ~/Desktop/old.txt")
    assert output(guest, "ls ~/.local/share/Trash/files") == "old.txt"
    assert shell(guest, "test -e ~/Desktop/old.txt")["returncode"] != 0


def test_the_tools_tasks_call_are_on_path(guest):
    tools = "google-chrome gnome-terminal soffice gimp vlc thunderbird git unzip xsel sar xz socat wmctrl gio"
    assert shell(guest, f"for tool in {tools}; do command -v $tool >/dev/null || echo missing $tool; done")[
        "output"].strip() == ""


def test_office_files_open_in_libreoffice(guest):
    query = "xdg-mime query default application/vnd.openxmlformats-officedocument.{}"
    assert output(guest, query.format("spreadsheetml.sheet")) == "libreoffice-calc.desktop"
    assert output(guest, query.format("wordprocessingml.document")) == "libreoffice-writer.desktop"
    assert output(guest, query.format("presentationml.presentation")) == "libreoffice-impress.desktop"


def test_libreoffice_converts_and_saves_xlsx(guest):
    output(guest, "printf 'name,score\\nada,3\\n' > ~/scores.csv && cd ~ && "
                  "soffice --headless --convert-to xlsx scores.csv", timeout=180)
    assert "xl/workbook.xml" in output(guest, "unzip -l ~/scores.xlsx")


def test_calc_saves_a_new_sheet_as_xlsx_without_asking(guest):
    """Ctrl+S on a new Calc document opens Save As with xlsx chosen; Enter saves xlsx, no keep-format question."""
    actions = GuestClient(guest, env="osworld-profile")
    launch(guest, "soffice", "--calc")
    wait_until(lambda: "libreoffice-calc" in (answers(guest, "wmctrl -lx") or ""), 120, interval=1,
               what="a LibreOffice Calc window")

    def save_dialog() -> bool:  # a Calc still starting drops keys: press Ctrl+S until its dialog shows
        if any(line.endswith(" Save") for line in (answers(guest, "wmctrl -l") or "").splitlines()):
            return True
        actions.run_action("pyautogui.hotkey('ctrl', 's')", timeout=30)
        return False

    wait_until(save_dialog, 120, interval=3, what="Calc's Save dialog after Ctrl+S")
    actions.run_action("pyautogui.typewrite('profile-book', interval=0.02); pyautogui.press('enter')", timeout=30)
    saved = "unzip -l ~/Documents/profile-book.xlsx | grep -q xl/workbook.xml && echo xlsx"
    wait_until(lambda: answers(guest, saved), 60, interval=1, what="~/Documents/profile-book.xlsx saved as xlsx")
    assert "profile-book.xlsx - LibreOffice Calc" in output(guest, "wmctrl -l")


def test_chrome_devtools_answer_on_guest_port_9222_through_socat(guest):
    launch(guest, "google-chrome", "--remote-debugging-port=1337")
    launch(guest, "socat", "tcp-listen:9222,fork", "tcp:localhost:1337")
    wait_until(lambda: answers(guest, "curl -sf http://localhost:9222/json/version"), 120, interval=1,
               what="chromium's DevTools on guest port 9222")
    version = json.loads(output(guest, "curl -sf http://localhost:9222/json/version"))
    assert "Chrome" in version["Browser"] and version["webSocketDebuggerUrl"]
    wait_until(lambda: answers(guest, "test -d ~/.config/google-chrome/Default && echo present"), 60, interval=1,
               what="chromium's profile in ~/.config/google-chrome")


def test_vlc_http_status_answers_with_the_password(guest):
    launch(guest, "vlc")
    status = "curl -s -o /dev/null -w '%{http_code}' http://localhost:8080/requests/status.xml"
    wait_until(lambda: answers(guest, status + " -u :password") == "200", 120, interval=1,
               what="VLC's HTTP interface on guest port 8080")
    assert output(guest, status) == "401"  # no password, no status


def test_ctrl_alt_t_opens_gnome_terminal(guest):
    output(guest, "xdotool key ctrl+alt+t")
    wait_until(lambda: "gnome-terminal" in (answers(guest, "wmctrl -lx") or "").lower(), 60, interval=1,
               what="a gnome-terminal window after Ctrl+Alt+T")
