"""The desktop's top-level windows as a window manager lists them (EWMH), and what ``wmctrl`` does to them.

OSWorld's server drives windows with ``wmctrl``: ``-l`` to list titles, ``-a`` to activate, ``-c`` to
close, ``-x`` to match ``WM_CLASS`` as ``instance.class`` (``Mail.thunderbird``) and ``-F`` for an exact,
case-sensitive match instead of a case-insensitive substring. The same requests are spoken here
straight to the X server with python-xlib (already the screenshot's library), so every profile
behaves the same whether or not the ``wmctrl`` package is installed. Closing asks the window manager
(``_NET_CLOSE_WINDOW``), which asks the app: an app saves its state and may show a "save changes?"
dialog, exactly as with ``wmctrl -c``; nothing is destroyed.
"""

from __future__ import annotations

import select
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

from Xlib import X, Xatom, display, error
from Xlib.protocol import event

#: "Source indication" of a pager (EWMH): the window manager honours it without focus-stealing checks.
FROM_PAGER = 2
#: Longest wait between two looks at the windows while :func:`wait_for` waits: a title set after its window was
#: listed changes a property of that window, not of the root window the wait listens to.
LOOK_AGAIN = 0.25
#: Longest wait for the window manager to confirm an activation; past it the activation stands as asked (``wmctrl
#: -a`` does not wait at all).
CONFIRM_WAIT = 2.0

T = TypeVar("T")


@dataclass(frozen=True)
class Window:
    """One managed window: its X id, title and ``WM_CLASS`` (instance name, class name)."""

    id: int
    title: str
    classes: tuple[str, ...]

    @property
    def wm_class(self) -> str:
        """``instance.class``, as ``wmctrl -lx`` shows it and ``-x`` matches it."""
        return ".".join(self.classes)

    def matches(self, pattern: str, strict: bool, by_class: bool) -> bool:
        """``wmctrl``'s match: exact and case-sensitive with ``strict``, else a case-insensitive substring."""
        value = self.wm_class if by_class else self.title
        return value == pattern if strict else pattern.casefold() in value.casefold()


def _text(connection: display.Display, window, name: str, kind: int) -> str | None:
    prop = window.get_full_property(connection.intern_atom(name), kind)
    if prop is None or not prop.value:
        return None
    value = prop.value
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _describe(connection: display.Display, window_id: int) -> Window | None:
    window = connection.create_resource_object("window", window_id)
    try:
        title = (_text(connection, window, "_NET_WM_NAME", connection.intern_atom("UTF8_STRING"))
                 or _text(connection, window, "WM_NAME", Xatom.STRING) or "")
        wm_class = window.get_wm_class()
    except error.XError:  # closed while we looked
        return None
    return Window(window_id, title, tuple(wm_class or ()))


def _listed(connection: display.Display) -> list[Window]:
    prop = connection.screen().root.get_full_property(connection.intern_atom("_NET_CLIENT_LIST"), X.AnyPropertyType)
    found = (_describe(connection, window_id) for window_id in (prop.value if prop is not None else []))
    return [window for window in found if window is not None]


def windows() -> list[Window]:
    """Every window the window manager manages (``_NET_CLIENT_LIST``), oldest first; [] before one runs."""
    connection = display.Display()
    try:
        return _listed(connection)
    finally:
        connection.close()


def _watching(connection: display.Display, check: Callable[[], T | None], timeout: float) -> T | None:
    """``check()`` once it is not None, or None after ``timeout``: looked at again whenever a property of the root
    window changes (the connection listens for that) and at least every :data:`LOOK_AGAIN` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        while connection.pending_events():  # what has changed until now is in the next look
            connection.next_event()
        found = check()
        left = deadline - time.monotonic()
        if found is not None or left <= 0:
            return found
        select.select([connection.fileno()], [], [], min(left, LOOK_AGAIN))


def _listening(connection: display.Display) -> display.Display:
    connection.screen().root.change_attributes(event_mask=X.PropertyChangeMask)
    return connection


def wait_for(pick: Callable[[list[Window]], T | None], timeout: float) -> T | None:
    """``pick(windows)`` once it is not None, or None after ``timeout`` seconds.

    It looks again as soon as the window manager changes its list (a property of the root window), not on a fixed
    poll: a task's setup waits for its app's window on every reset, and a poll's interval was added to each one."""
    connection = _listening(display.Display())
    try:
        return _watching(connection, lambda: pick(_listed(connection)), timeout)
    finally:
        connection.close()


def find(pattern: str, strict: bool = False, by_class: bool = False) -> Window | None:
    """The first window ``wmctrl`` would pick for ``pattern`` (it acts on the first match only), or None."""
    return next((window for window in windows() if window.matches(pattern, strict, by_class)), None)


def _ask_window_manager(connection: display.Display, window_id: int, message: str, data: list[int]) -> None:
    root = connection.screen().root
    request = event.ClientMessage(window=connection.create_resource_object("window", window_id),
                                  client_type=connection.intern_atom(message), data=(32, (data + [0] * 5)[:5]))
    root.send_event(request, event_mask=X.SubstructureRedirectMask | X.SubstructureNotifyMask)


def activate(window_id: int) -> None:
    """What ``wmctrl -a`` does: switch to the window's workspace, then raise and focus it; and then wait (at most
    :data:`CONFIRM_WAIT`) until the window manager says it is the active window, so keys a task's first action
    types right after its setup reach it (an app just started may be listed before the window manager focuses it)."""
    connection = _listening(display.Display())
    try:
        window = connection.create_resource_object("window", window_id)
        workspace = window.get_full_property(connection.intern_atom("_NET_WM_DESKTOP"), X.AnyPropertyType)
        if workspace is not None and workspace.value and workspace.value[0] != 0xFFFFFFFF:
            _ask_window_manager(connection, connection.screen().root.id, "_NET_CURRENT_DESKTOP",
                                [int(workspace.value[0]), X.CurrentTime])
        _ask_window_manager(connection, window_id, "_NET_ACTIVE_WINDOW", [FROM_PAGER, X.CurrentTime])
        window.map()
        connection.sync()
        active = connection.intern_atom("_NET_ACTIVE_WINDOW")

        def focused() -> bool | None:
            prop = connection.screen().root.get_full_property(active, X.AnyPropertyType)
            return True if prop is not None and len(prop.value) and prop.value[0] == window_id else None

        _watching(connection, focused, CONFIRM_WAIT)
    finally:
        connection.close()


def close(window_id: int) -> None:
    """What ``wmctrl -c`` does: ask the window manager to close the window gracefully."""
    connection = display.Display()
    try:
        _ask_window_manager(connection, window_id, "_NET_CLOSE_WINDOW", [X.CurrentTime, FROM_PAGER])
        connection.sync()
    finally:
        connection.close()


def size(window_id: int) -> tuple[int, int]:
    connection = display.Display()
    try:
        geometry = connection.create_resource_object("window", window_id).get_geometry()
        return geometry.width, geometry.height
    finally:
        connection.close()
