"""Turn a model's reply into desktop actions: pyautogui code blocks or UI-TARS-style calls.

A parser maps ``(reply, screen size)`` to a :class:`ParsedReply`: a list of actions the env actor
accepts as they are (pyautogui code strings or the control words ``WAIT``/``DONE``/``FAIL``) plus
the model's free-text thought. An unusable reply raises :class:`ReplyFormatError`; the agent loop
counts it and tells the model, the desktop is never touched. Parsers are pure Python (no verl, no
desktop-env) so the trainer and unit tests import them anywhere.

Two formats ship, chosen by name with :func:`make_parser` (or ``module:Class`` for your own):

* ``pyautogui``: OSWorld's pyautogui agents. Code goes in fenced blocks; a block (or a line)
  holding only ``WAIT``, ``DONE`` or ``FAIL`` is that control word.
* ``uitars``: UI-TARS' computer-use action space, written from its public description::

      Thought: the editor is open, I type the text
      Action: click(start_box='(512,384)')

  Calls: ``click``, ``left_double``, ``right_single``, ``drag``/``select`` (``start_box``,
  ``end_box``), ``hotkey(key='ctrl s')``, ``press(key=...)``, ``type(content=...)`` (a trailing
  ``\\n`` presses Enter), ``scroll(start_box=..., direction='down')``, ``wait()``,
  ``finished(content=...)`` (DONE) and ``call_user()`` (FAIL). A box is ``(x,y)`` or
  ``(x1,y1,x2,y2)`` (its centre), optionally wrapped in ``<|box_start|>``/``<|box_end|>``.
  Coordinates are either on a 0..1000 grid (``coordinates="relative"``, UI-TARS 1.0) or pixels of
  the image the model saw (``coordinates="absolute"``, UI-TARS 1.5 on Qwen2.5-VL; pass that
  image's size when the screenshot was resized for the model).
"""

from __future__ import annotations

import ast
import importlib
import re
from dataclasses import dataclass, field
from typing import Callable, Literal, Protocol

CONTROL_WORDS = ("WAIT", "DONE", "FAIL")
_FENCE = re.compile(r"```(?:[A-Za-z0-9_+-]*)?\s*\n?(.*?)```", re.DOTALL)


class ReplyFormatError(ValueError):
    """The reply holds no action this parser understands. Nothing was sent to the desktop."""


@dataclass(frozen=True)
class ParsedReply:
    """What one model reply asks the desktop to do, in order."""

    actions: list[str]
    thought: str = ""

    @property
    def terminal(self) -> str | None:
        """``DONE`` or ``FAIL`` when the reply ends the episode, else None."""
        return next((a for a in self.actions if a in ("DONE", "FAIL")), None)


class ActionParser(Protocol):
    def __call__(self, reply: str, screen: tuple[int, int]) -> ParsedReply: ...


# -- pyautogui code blocks ---------------------------------------------------------------------
@dataclass(frozen=True)
class PyAutoGUIParser:
    """Fenced code blocks are actions; bare control words anywhere on their own line count too."""

    def __call__(self, reply: str, screen: tuple[int, int]) -> ParsedReply:
        blocks = [block.strip() for block in _FENCE.findall(reply)]
        thought = _FENCE.sub("", reply).strip()
        actions = [block for block in blocks if block]
        if not actions:
            words = [line.strip().strip("`").upper() for line in reply.splitlines()]
            actions = [word for word in words if word in CONTROL_WORDS][-1:]
        if not actions:
            raise ReplyFormatError("no ```python code block``` and no WAIT/DONE/FAIL in the reply")
        for code in actions:
            if code.upper() in CONTROL_WORDS:
                continue
            try:
                ast.parse(code)
            except SyntaxError as exc:
                raise ReplyFormatError(f"code block is not valid Python: {exc.msg} (line {exc.lineno})") from None
        return ParsedReply([code.upper() if code.upper() in CONTROL_WORDS else code for code in actions], thought)


# -- UI-TARS -----------------------------------------------------------------------------------
_ACTION_SPLIT = re.compile(r"^\s*Action\s*:\s*", re.MULTILINE)
_THOUGHT = re.compile(r"^\s*(?:Thought|Reflection|Action_Summary)\s*:\s*(.*?)(?=^\s*Action\s*:|\Z)",
                      re.MULTILINE | re.DOTALL)
_BOX_TOKENS = re.compile(r"<\|box_(?:start|end)\|>|<\|/?point\|>|<point>|</point>")
_NUMBERS = re.compile(r"-?\d+(?:\.\d+)?")
_SCROLL_CLICKS = 5


@dataclass(frozen=True)
class UITarsParser:
    """UI-TARS computer-use replies. See the module docstring for the action space."""

    coordinates: Literal["relative", "absolute"] = "relative"
    #: Size (width, height) of the image the model saw, for ``absolute`` coordinates; None = the screen.
    image_size: tuple[int, int] | None = None
    _calls: dict[str, Callable[..., list[str]]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_calls", {
            "click": self._click, "left_single": self._click, "left_double": self._double,
            "right_single": self._right, "drag": self._drag, "select": self._drag, "hotkey": self._hotkey,
            "press": self._press, "type": self._type, "scroll": self._scroll,
            "wait": lambda screen: ["WAIT"], "finished": lambda screen, content="": ["DONE"],
            "call_user": lambda screen: ["FAIL"],
        })

    def __call__(self, reply: str, screen: tuple[int, int]) -> ParsedReply:
        parts = _ACTION_SPLIT.split(reply, maxsplit=1)
        if len(parts) < 2:
            raise ReplyFormatError("no 'Action:' line in the reply")
        thought = " ".join(m.strip() for m in _THOUGHT.findall(parts[0])) or parts[0].strip()
        calls = [line.strip() for line in re.split(r"\n\s*\n", parts[1].strip()) if line.strip()]
        actions: list[str] = []
        for call in calls:
            actions += self._one(call, screen)
            if actions[-1] in ("DONE", "FAIL"):
                break
        return ParsedReply(actions, thought)

    def _one(self, call: str, screen: tuple[int, int]) -> list[str]:
        try:
            node = ast.parse(_BOX_TOKENS.sub("", call), mode="eval").body
        except SyntaxError:
            raise ReplyFormatError(f"action is not a call: {call!r}") from None
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
            raise ReplyFormatError(f"action is not a call: {call!r}")
        handler = self._calls.get(node.func.id)
        if handler is None:
            raise ReplyFormatError(f"unknown action {node.func.id!r}; known: {', '.join(sorted(self._calls))}")
        try:
            kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords if kw.arg}
            args = [ast.literal_eval(arg) for arg in node.args]
            return handler(screen, *args, **kwargs)
        except (TypeError, ValueError) as exc:
            raise ReplyFormatError(f"bad arguments in {call!r}: {exc}") from None

    # Each handler returns pyautogui code (or a control word) for one call.
    def _point(self, box: object, screen: tuple[int, int]) -> tuple[int, int]:
        numbers = [float(n) for n in _NUMBERS.findall(str(box))]
        if len(numbers) not in (2, 4):
            raise ValueError(f"a box needs 2 or 4 numbers, got {box!r}")
        x, y = (numbers[0], numbers[1]) if len(numbers) == 2 else ((numbers[0] + numbers[2]) / 2,
                                                                   (numbers[1] + numbers[3]) / 2)
        width, height = screen
        if self.coordinates == "relative":
            return round(x / 1000 * width), round(y / 1000 * height)
        seen_w, seen_h = self.image_size or screen
        return round(x * width / seen_w), round(y * height / seen_h)

    def _click(self, screen, start_box, **_) -> list[str]:
        x, y = self._point(start_box, screen)
        return [f"pyautogui.click({x}, {y}, button='left')"]

    def _double(self, screen, start_box, **_) -> list[str]:
        x, y = self._point(start_box, screen)
        return [f"pyautogui.doubleClick({x}, {y}, button='left')"]

    def _right(self, screen, start_box, **_) -> list[str]:
        x, y = self._point(start_box, screen)
        return [f"pyautogui.click({x}, {y}, button='right')"]

    def _drag(self, screen, start_box, end_box, **_) -> list[str]:
        (x1, y1), (x2, y2) = self._point(start_box, screen), self._point(end_box, screen)
        return [f"pyautogui.moveTo({x1}, {y1}); pyautogui.dragTo({x2}, {y2}, duration=0.5, button='left')"]

    def _hotkey(self, screen, key="", hotkey="", **_) -> list[str]:
        keys = [_key_name(k) for k in (key or hotkey).split()]
        if not keys:
            raise ValueError("hotkey needs key='ctrl c'")
        return [f"pyautogui.hotkey({', '.join(map(repr, keys))})"]

    def _press(self, screen, key="", press="", **_) -> list[str]:
        name = _key_name((key or press).strip())
        if not name:
            raise ValueError("press needs key='enter'")
        return [f"pyautogui.press({name!r})"]

    def _type(self, screen, content="", **_) -> list[str]:
        text = str(content)
        submit = text.endswith("\n")
        code = f"pyautogui.write({text.rstrip(chr(10))!r}, interval=0.01)"
        return [code + ("; pyautogui.press('enter')" if submit else "")]

    def _scroll(self, screen, direction="down", start_box=None, point=None, **_) -> list[str]:
        where = start_box or point
        move = ""
        if where is not None:
            x, y = self._point(where, screen)
            move = f"pyautogui.moveTo({x}, {y}); "
        direction = str(direction).lower()
        if direction in ("up", "down"):
            clicks = _SCROLL_CLICKS if direction == "up" else -_SCROLL_CLICKS
            return [f"{move}pyautogui.scroll({clicks})"]
        if direction in ("left", "right"):
            clicks = _SCROLL_CLICKS if direction == "right" else -_SCROLL_CLICKS
            return [f"{move}pyautogui.hscroll({clicks})"]
        raise ValueError(f"scroll direction must be up, down, left or right, not {direction!r}")


def _key_name(key: str) -> str:
    """UI-TARS key names to pyautogui's (``arrowleft`` → ``left``, ``ctrl`` stays)."""
    key = key.strip().lower()
    return {"arrowleft": "left", "arrowright": "right", "arrowup": "up", "arrowdown": "down",
            "space": "space", "return": "enter", "escape": "esc", "cmd": "command"}.get(key, key)


# -- choosing a parser -------------------------------------------------------------------------
PARSERS: dict[str, Callable[..., ActionParser]] = {"pyautogui": PyAutoGUIParser, "uitars": UITarsParser}


def make_parser(name: str, **options: object) -> ActionParser:
    """A parser by name (``pyautogui``, ``uitars``) or by ``package.module:Class``, built with ``options``."""
    if ":" in name:
        module, _, attr = name.partition(":")
        factory = getattr(importlib.import_module(module), attr)
    elif name in PARSERS:
        factory = PARSERS[name]
    else:
        raise ValueError(f"unknown action parser {name!r}; use one of {sorted(PARSERS)} or 'module:Class'")
    return factory(**options)
