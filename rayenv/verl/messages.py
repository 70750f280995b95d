"""Chat messages for a desktop episode: system prompt, the task with its first screenshot, later observations.

Images are content parts ``{"type": "image", "image": "data:image/png;base64,..."}``, the form
Qwen-VL chat templates, ``qwen_vl_utils`` and ARPO's env worker all read. Models without an image
processor (text-only checkpoints, CPU tests) get a text stand-in for each screenshot instead, plus
the accessibility tree when the pool sends one. No verl import: the ARPO worker uses this too.
"""

from __future__ import annotations

import base64
from typing import Any

from ..types import Observation
from .episode import png_size

SYSTEM_PROMPTS = {
    "pyautogui": (
        "You are an agent operating a Linux desktop. Each turn you see a screenshot. Reply with your "
        "reasoning, then the next action as Python code using pyautogui in one ```python``` block. Reply "
        "```WAIT``` to wait, ```DONE``` when the task is complete, ```FAIL``` if it cannot be done."),
    "uitars": (
        "You are a GUI agent. You are given a task and screenshots. Reply as\nThought: ...\nAction: ...\n"
        "Actions: click(start_box='(x,y)'), left_double(start_box='(x,y)'), right_single(start_box='(x,y)'), "
        "drag(start_box='(x1,y1)', end_box='(x2,y2)'), hotkey(key='ctrl c'), type(content='text'), "
        "scroll(start_box='(x,y)', direction='down'), wait(), finished(content='...'), call_user()."),
}


def system_prompt(parser: str, override: str | None = None) -> str:
    return override or SYSTEM_PROMPTS.get(parser, SYSTEM_PROMPTS["pyautogui"])


def observation_parts(observation: Observation, *, with_image: bool) -> list[dict[str, Any]]:
    """Content parts for one observation: the screenshot (or its text stand-in) and the a11y tree."""
    png = observation["screenshot"]
    if with_image:
        parts: list[dict[str, Any]] = [{"type": "image", "image": "data:image/png;base64," + base64.b64encode(png).decode()}]
    else:
        width, height = png_size(png)
        parts = [{"type": "text", "text": f"[screenshot {width}x{height}]"}]
    if observation.get("accessibility_tree"):
        parts.append({"type": "text", "text": "Accessibility tree:\n" + observation["accessibility_tree"]})
    return parts


def first_messages(instruction: str, observation: Observation, *, parser: str, with_image: bool,
                   system: str | None = None) -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": system_prompt(parser, system)},
        {"role": "user", "content": [{"type": "text", "text": f"Task: {instruction}"},
                                     *observation_parts(observation, with_image=with_image)]},
    ]


def observation_message(observation: Observation, *, with_image: bool, note: str = "") -> dict[str, Any]:
    """The user turn after an action: an optional note (an action's error) and the new screen."""
    parts = [{"type": "text", "text": note}] if note else []
    return {"role": "user", "content": parts + observation_parts(observation, with_image=with_image)}


def feedback_message(note: str) -> dict[str, Any]:
    """A user turn with text only (the reply could not be parsed; nothing changed on screen)."""
    return {"role": "user", "content": [{"type": "text", "text": note}]}
