"""Action parsers: model replies in, env actions out; unusable replies are rejected before any desktop call."""

from __future__ import annotations

import pytest

from rayenv.rollout.parsers import ParsedReply, PyAutoGUIParser, ReplyFormatError, UITarsParser, make_parser

SCREEN = (1920, 1080)


def test_pyautogui_code_blocks_become_actions_and_the_prose_the_thought():
    reply = "I click the button.\n```python\npyautogui.click(10, 20)\n```"
    assert PyAutoGUIParser()(reply, SCREEN) == ParsedReply(["pyautogui.click(10, 20)"], "I click the button.")


def test_pyautogui_control_words_in_blocks_or_alone_on_a_line():
    assert PyAutoGUIParser()("```DONE```", SCREEN).terminal == "DONE"
    assert PyAutoGUIParser()("It cannot be done.\nFAIL", SCREEN).actions == ["FAIL"]
    assert PyAutoGUIParser()("```WAIT```", SCREEN).terminal is None


def test_pyautogui_rejects_replies_without_code_and_code_that_does_not_parse():
    with pytest.raises(ReplyFormatError, match="no ```python"):
        PyAutoGUIParser()("I would click somewhere", SCREEN)
    with pytest.raises(ReplyFormatError, match="not valid Python"):
        PyAutoGUIParser()("```python\npyautogui.click((\n```", SCREEN)


def test_uitars_relative_boxes_scale_from_the_1000_grid_to_the_screen():
    reply = "Thought: open the menu\nAction: click(start_box='<|box_start|>(500,500)<|box_end|>')"
    parsed = UITarsParser()(reply, SCREEN)
    assert parsed == ParsedReply(["pyautogui.click(960, 540, button='left')"], "open the menu")


def test_uitars_absolute_boxes_scale_from_the_image_the_model_saw():
    parser = UITarsParser(coordinates="absolute", image_size=(960, 540))
    assert parser("Action: right_single(start_box='(100,50,300,150)')", SCREEN).actions == [
        "pyautogui.click(400, 200, button='right')"]


@pytest.mark.parametrize("call, code", [
    ("left_double(start_box='(0,0)')", "pyautogui.doubleClick(0, 0, button='left')"),
    ("hotkey(key='ctrl s')", "pyautogui.hotkey('ctrl', 's')"),
    ("press(key='Return')", "pyautogui.press('enter')"),
    ("type(content='hello\\n')", "pyautogui.write('hello', interval=0.01); pyautogui.press('enter')"),
    ("scroll(start_box='(500,500)', direction='down')", "pyautogui.moveTo(960, 540); pyautogui.scroll(-5)"),
    ("drag(start_box='(0,0)', end_box='(1000,1000)')",
     "pyautogui.moveTo(0, 0); pyautogui.dragTo(1920, 1080, duration=0.5, button='left')"),
    ("wait()", "WAIT"), ("finished(content='ok')", "DONE"), ("call_user()", "FAIL"),
])
def test_uitars_action_space(call, code):
    assert UITarsParser()(f"Thought: t\nAction: {call}", SCREEN).actions == [code]


def test_uitars_several_actions_stop_at_the_first_terminal_one():
    reply = "Thought: t\nAction: hotkey(key='ctrl s')\n\nfinished()\n\nclick(start_box='(1,1)')"
    assert UITarsParser()(reply, SCREEN).actions == ["pyautogui.hotkey('ctrl', 's')", "DONE"]


@pytest.mark.parametrize("reply, message", [
    ("Thought: nothing to do", "no 'Action:'"),
    ("Action: teleport(start_box='(1,1)')", "unknown action 'teleport'"),
    ("Action: click(start_box='(1)')", "2 or 4 numbers"),
    ("Action: scroll(direction='sideways')", "scroll direction"),
    ("Action: click(", "not a call"),
])
def test_uitars_rejects_what_it_cannot_turn_into_an_action(reply, message):
    with pytest.raises(ReplyFormatError, match=message):
        UITarsParser()(reply, SCREEN)


def test_parsers_are_chosen_by_name_or_by_module_path():
    assert isinstance(make_parser("uitars", coordinates="absolute"), UITarsParser)
    assert isinstance(make_parser("rayenv.rollout.parsers:PyAutoGUIParser"), PyAutoGUIParser)
    with pytest.raises(ValueError, match="unknown action parser"):
        make_parser("nope")
