"""Chat messages for a desktop episode: system prompt, the task with its first screenshot, later observations.

Images are content parts ``{"type": "image", "image": ...}``, the form Qwen-VL chat templates,
``qwen_vl_utils``, verl's Continuous Token builders and ARPO's env worker all read. The image is
whatever the caller shows the model: the agent loop passes the PIL image it also hands verl as
``multi_modal_data`` (so every render of the conversation expands the same image into the same
tokens), the ARPO worker a ``data:image/png;base64,...`` URI (:func:`png_data_uri`). Models without
an image processor (text-only checkpoints) get a text stand-in for each screenshot instead, plus the
accessibility tree when the pool sends one. No verl import: the ARPO worker uses this too.
"""

from __future__ import annotations

import base64
from typing import Any

from ..types import Observation
from .episode import Turn, png_size

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


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def observation_parts(observation: Observation, *, image: Any = None) -> list[dict[str, Any]]:
    """Content parts for one observation: ``image`` (None: a text stand-in for the screenshot), the a11y tree."""
    if image is not None:
        parts: list[dict[str, Any]] = [{"type": "image", "image": image}]
    else:
        width, height = png_size(observation["screenshot"])
        parts = [{"type": "text", "text": f"[screenshot {width}x{height}]"}]
    if observation.get("accessibility_tree"):
        parts.append({"type": "text", "text": "Accessibility tree:\n" + observation["accessibility_tree"]})
    return parts


def first_messages(instruction: str, observation: Observation, *, parser: str, image: Any = None,
                   system: str | None = None) -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": system_prompt(parser, system)},
        {"role": "user", "content": [{"type": "text", "text": f"Task: {instruction}"},
                                     *observation_parts(observation, image=image)]},
    ]


def observation_message(observation: Observation, *, image: Any = None, note: str = "") -> dict[str, Any]:
    """The user turn after an action: an optional note (an action's error) and the new screen."""
    parts = [{"type": "text", "text": note}] if note else []
    return {"role": "user", "content": parts + observation_parts(observation, image=image)}


def feedback_message(note: str) -> dict[str, Any]:
    """A user turn with text only (the reply could not be parsed; nothing changed on screen)."""
    return {"role": "user", "content": [{"type": "text", "text": note}]}


def turn_message(turn: Turn, observation: Observation, *, image: Any = None) -> dict[str, Any]:
    """The user turn answering one reply: the note alone when it could not be parsed, else the screen."""
    if turn.format_error:
        return feedback_message(turn.note)
    return observation_message(observation, image=image, note=turn.note)
