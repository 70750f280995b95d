"""Actions are validated on the host: malformed ones are refused before anything runs in the desktop."""

from __future__ import annotations

import pickle

import pytest

from rayenv.env.actions import parse_action
from rayenv.env.guest_client import reported_pointer
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
    ("rayenv-pointer-after-action 640 360\n", "", (640, 360)),
    ("hello\nrayenv-pointer-after-action 0 -1\n", "hello\n", (0, -1)),
    ("hello\n", "hello\n", None),  # exited before reporting: the screenshot asks the guest
    ("rayenv-pointer-after-action 640\n", "rayenv-pointer-after-action 640\n", None),
    ("", "", None),
])
def test_the_pointer_an_action_reports_is_split_from_its_own_output(output, own, pointer):
    assert reported_pointer(output) == (own, pointer)
