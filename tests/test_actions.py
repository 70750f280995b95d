"""Actions are validated on the host: malformed ones are refused before anything runs in the desktop."""

from __future__ import annotations

import pickle
import subprocess
import sys

import pytest

from rayenv.env.actions import parse_action
from rayenv.env.guest_client import REPORT_POINTER, reported_pointer
from rayenv.errors import ActionFailed, DesktopUnavailable, InvalidAction
from rayenv.rollout.episode import EpisodeFailed


@pytest.mark.parametrize("word", ["WAIT", "FAIL", "DONE", {"action_type": "DONE"}])
def test_control_words_run_no_code(word):
    parsed = parse_action(word)
    assert parsed.code is None and parsed.control in ("WAIT", "FAIL", "DONE")


def test_pyautogui_code_passes_through_unchanged():
    code = "pyautogui.click(10, 20)\npyautogui.write('hi')"
    assert parse_action(code).code == code
    assert parse_action({"command": code}).code == code


@pytest.mark.parametrize("action, expected", [
    ({"action_type": "CLICK", "parameters": {"x": 5, "y": 6}}, "pyautogui.click(x=5, y=6, button='left', clicks=1)"),
    ({"action_type": "DOUBLE_CLICK"}, "pyautogui.click(button='left', clicks=2)"),
    ({"action_type": "TYPING", "parameters": {"text": "a'b"}}, "pyautogui.typewrite(\"a'b\", interval=0.01)"),
    ({"action_type": "HOTKEY", "parameters": {"keys": ["ctrl", "s"]}}, "pyautogui.hotkey('ctrl', 's')"),
    ({"action_type": "SCROLL", "parameters": {"dy": -3}}, "pyautogui.vscroll(-3)"),
])
def test_computer_13_actions_become_pyautogui_code(action, expected):
    assert parse_action(action).code == expected


@pytest.mark.parametrize("action, message", [
    ("pyautogui.click(", "not valid Python"),
    ("", "empty action"),
    (42, "must be a str or dict"),
    ({"action_type": "TELEPORT"}, "unknown action_type"),
    ({"action_type": "CLICK", "parameters": {"x": 1}}, "bad parameters for CLICK"),
    ({"action_type": "CLICK", "parameters": {"button": "fourth"}}, "bad parameters for CLICK"),
    ({"action_type": "HOTKEY", "parameters": {"keys": []}}, "bad parameters for HOTKEY"),
])
def test_malformed_actions_raise_invalid_action_with_advice(action, message):
    with pytest.raises(InvalidAction, match=message) as error:
        parse_action(action, env="env-7")
    assert error.value.env == "env-7" and error.value.hint


def test_errors_survive_pickling_with_their_fields():
    error = pickle.loads(pickle.dumps(ActionFailed("boom", traceback="Traceback ...", env="e", phase="step", hint="h")))
    assert (error.traceback, error.env, error.phase, error.hint) == ("Traceback ...", "e", "step", "h")
    assert "env=e" in str(error) and "-> h" in str(error)
    failed = pickle.loads(pickle.dumps(EpisodeFailed(DesktopUnavailable("gone", env="e", phase="evaluate"))))
    assert failed.reason == "DesktopUnavailable in evaluate: gone" and failed.error.env == "e"


@pytest.mark.parametrize("output, own, pointer", [
    ("\nrayenv-pointer-after-action 640 360\n", "", (640, 360)),
    ("hello\n\nrayenv-pointer-after-action 0 -1\n", "hello\n", (0, -1)),
    ("no newline\nrayenv-pointer-after-action 3 4\n", "no newline", (3, 4)),
    ("hello\n", "hello\n", None),  # exited before reporting: the screenshot asks the guest
    ("\nrayenv-pointer-after-action 640\n", "\nrayenv-pointer-after-action 640\n", None),
    ("", "", None),
])
def test_the_pointer_an_action_reports_is_split_from_its_own_output(output, own, pointer):
    assert reported_pointer(output) == (own, pointer)


def test_the_pointer_report_runs_after_the_action_and_fails_none(tmp_path):
    fake = tmp_path / "pyautogui.py"
    fake.write_text("def position():\n    raise OSError('no display')\n")
    code = f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import pyautogui\nprint('acted', end='')" + REPORT_POINTER
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert reported_pointer(completed.stdout) == ("acted", None)
    fake.write_text("def position():\n    return 12, 34\n")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert reported_pointer(completed.stdout) == ("acted", (12, 34))
