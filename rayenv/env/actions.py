"""Turn what an agent says into code the desktop runs, rejecting malformed actions before they run.

Three action forms are accepted, as in ``desktop_env.DesktopEnv.step``:

* a pyautogui code string (``"pyautogui.click(10, 20)"``), or ``{"command": "<code>"}``;
* a ``computer_13`` dict (``{"action_type": "CLICK", "parameters": {"x": 10, "y": 20}}``);
* the control words ``"WAIT"``, ``"FAIL"``, ``"DONE"`` (or ``{"action_type": "DONE"}``).

Validation happens on the host, so a syntax error or an unknown action type costs no round trip
and changes nothing inside the desktop. The code is executed only by the guest server, inside the
desktop's own X display.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal

from ..errors import InvalidAction

Control = Literal["WAIT", "FAIL", "DONE"]
CONTROL_WORDS: frozenset[str] = frozenset({"WAIT", "FAIL", "DONE"})

#: Prepended to every pyautogui action, as desktop-env's controller does.
PYAUTOGUI_PRELUDE = "import pyautogui; import time; pyautogui.FAILSAFE = False\n"


@dataclass(frozen=True)
class ParsedAction:
    """An action ready to execute: either a control word or Python code for the guest."""

    control: Control | None
    code: str | None

    @property
    def history_entry(self) -> str:
        """What desktop-env's evaluators expect in ``action_history`` (they look for ``"FAIL"``)."""
        return self.control or self.code or ""


def _button(params: dict[str, Any]) -> str:
    button = params.get("button", "left")
    if button not in ("left", "right", "middle"):
        raise ValueError(f"button must be left, right or middle, not {button!r}")
    return button


def _xy(params: dict[str, Any]) -> tuple[int, int] | None:
    if "x" in params or "y" in params:
        return int(params["x"]), int(params["y"])
    return None


def _keys(params: dict[str, Any], field: str) -> list[str]:
    keys = params.get(field)
    if isinstance(keys, str):
        keys = [keys]
    if not keys or not all(isinstance(key, str) and key for key in keys):
        raise ValueError(f"{field!r} must be a key name or a non-empty list of key names")
    return keys


def _click(params: dict[str, Any], clicks: int = 1, default_button: str = "left") -> str:
    button = _button({"button": params.get("button", default_button)})
    clicks = int(params.get("num_clicks", clicks))
    at = _xy(params)
    where = f"x={at[0]}, y={at[1]}, " if at else ""
    return f"pyautogui.click({where}button={button!r}, clicks={clicks})"


def _move_to(params: dict[str, Any]) -> str:
    x, y = int(params["x"]), int(params["y"])
    return f"pyautogui.moveTo({x}, {y})"


def _drag_to(params: dict[str, Any]) -> str:
    x, y = int(params["x"]), int(params["y"])
    return f"pyautogui.dragTo({x}, {y}, duration=0.5, button='left')"


def _scroll(params: dict[str, Any]) -> str:
    dx, dy = int(params.get("dx", 0)), int(params.get("dy", 0))
    lines = []
    if dy:
        lines.append(f"pyautogui.vscroll({dy})")
    if dx:
        lines.append(f"pyautogui.hscroll({dx})")
    if not lines:
        raise ValueError("SCROLL needs a non-zero dx or dy")
    return "\n".join(lines)


def _typing(params: dict[str, Any]) -> str:
    text = params.get("text")
    if not isinstance(text, str):
        raise ValueError("TYPING needs a 'text' string")
    return f"pyautogui.typewrite({text!r}, interval=0.01)"


_COMPUTER_13: dict[str, Callable[[dict[str, Any]], str]] = {
    "MOVE_TO": _move_to,
    "CLICK": _click,
    "MOUSE_DOWN": lambda p: f"pyautogui.mouseDown(button={_button(p)!r})",
    "MOUSE_UP": lambda p: f"pyautogui.mouseUp(button={_button(p)!r})",
    "RIGHT_CLICK": lambda p: _click(p, default_button="right"),
    "DOUBLE_CLICK": lambda p: _click(p, clicks=2),
    "DRAG_TO": _drag_to,
    "SCROLL": _scroll,
    "TYPING": _typing,
    "PRESS": lambda p: f"pyautogui.press({_keys(p, 'key')[0]!r})",
    "KEY_DOWN": lambda p: f"pyautogui.keyDown({_keys(p, 'key')[0]!r})",
    "KEY_UP": lambda p: f"pyautogui.keyUp({_keys(p, 'key')[0]!r})",
    "HOTKEY": lambda p: f"pyautogui.hotkey({', '.join(repr(k) for k in _keys(p, 'keys'))})",
}


def _check_syntax(code: str, env: str | None) -> str:
    try:
        compile(code, "<action>", "exec")
    except SyntaxError as exc:
        raise InvalidAction(f"action is not valid Python: {exc.msg} (line {exc.lineno})", env=env,
                            phase="step", hint="send pyautogui code that compiles; nothing was executed") from None
    return code


def parse_action(action: Any, *, env: str | None = None) -> ParsedAction:
    """Validate ``action`` and return what to run. Raises :class:`InvalidAction`, executing nothing."""
    if isinstance(action, str):
        word = action.strip()
        if word in CONTROL_WORDS:
            return ParsedAction(control=word, code=None)  # type: ignore[arg-type]
        if not word:
            raise InvalidAction("empty action", env=env, phase="step",
                                hint="send pyautogui code, a computer_13 dict, or WAIT/FAIL/DONE")
        return ParsedAction(control=None, code=_check_syntax(action, env))
    if isinstance(action, dict):
        if "command" in action and "action_type" not in action:
            return parse_action(str(action["command"]), env=env)
        kind = action.get("action_type")
        if kind in CONTROL_WORDS:
            return ParsedAction(control=kind, code=None)
        translate = _COMPUTER_13.get(kind)  # type: ignore[arg-type]
        if translate is None:
            raise InvalidAction(f"unknown action_type {kind!r}", env=env, phase="step",
                                hint=f"use one of {sorted(_COMPUTER_13) + sorted(CONTROL_WORDS)}")
        try:
            code = translate(dict(action.get("parameters") or {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidAction(f"bad parameters for {kind}: {exc!r}", env=env, phase="step",
                                hint="see desktop_env.actions.ACTION_SPACE for each action's parameters") from None
        return ParsedAction(control=None, code=code)
    raise InvalidAction(f"action must be a str or dict, not {type(action).__name__}", env=env, phase="step",
                        hint="send pyautogui code, a computer_13 dict, or WAIT/FAIL/DONE")
