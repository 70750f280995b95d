"""Screen capture straight from the X server, with the pointer drawn in.

Xvfb has no hardware cursor, so a raw grab would show no pointer; agents need to see where it is.
Capturing through python-xlib avoids a subprocess per screenshot, and PNG compression level 1 keeps
encoding cheap at 1920x1080 (it runs on every RL step). The server keeps one X connection for all its
request threads (each request may come on a new thread, and opening a connection costs ~0.1 s in a
VM under TCG, where ``/cursor_position`` is asked for every screenshot the host takes), used under a
lock: python-xlib connections are not thread-safe. A connection the X server dropped is opened anew
once, so one broken socket does not fail every later screenshot of a desktop that is otherwise fine.
"""

from __future__ import annotations

import io
import threading
from typing import Callable, TypeVar

from PIL import Image, ImageDraw
from Xlib import X, Xatom, display, error

T = TypeVar("T")
_lock = threading.RLock()
_connection: display.Display | None = None

# A classic arrow, 12x19 pixels, tip at (0, 0).
_ARROW = [(0, 0), (0, 16), (4, 12), (7, 18), (9, 17), (6, 11), (11, 11)]


def _display() -> display.Display:
    """The server's X connection; call with ``_lock`` held."""
    global _connection
    if _connection is None:
        _connection = display.Display()
    return _connection


def _on_display(call: Callable[[display.Display], T]) -> T:
    """``call(connection)`` under the lock; on a connection the X server closed, once more on a new one."""
    global _connection
    with _lock:
        try:
            return call(_display())
        except (error.ConnectionClosedError, ConnectionError):
            _connection = None
            return call(_display())


def screen_size() -> tuple[int, int]:
    def size(connection: display.Display) -> tuple[int, int]:
        screen = connection.screen()
        return screen.width_in_pixels, screen.height_in_pixels

    return _on_display(size)


def pointer_position() -> tuple[int, int]:
    def position(connection: display.Display) -> tuple[int, int]:
        pointer = connection.screen().root.query_pointer()
        return pointer.root_x, pointer.root_y

    return _on_display(position)


def grab() -> Image.Image:
    width, height = screen_size()
    raw = _on_display(lambda connection: connection.screen().root.get_image(0, 0, width, height, X.ZPixmap, 0xFFFFFFFF))
    image = Image.frombytes("RGB", (width, height), raw.data, "raw", "BGRX")
    x, y = pointer_position()
    draw = ImageDraw.Draw(image)
    arrow = [(x + dx, y + dy) for dx, dy in _ARROW]
    draw.polygon(arrow, fill="white", outline="black")
    return image


def screenshot_png() -> bytes:
    buffer = io.BytesIO()
    grab().save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def paint_wallpaper(path: str) -> int:
    """Show the image at ``path``, scaled to the screen, as the desktop background.

    The pixmap goes to the root window's background on a connection of its own whose resources
    outlive it (``RetainPermanent``), and ``_XROOTPMAP_ID`` names it, as wallpaper setters do, so the
    picture stays after this call and appears in every later screenshot. Returns the pixmap's id.
    """
    connection = display.Display()
    try:
        screen = connection.screen()
        root = screen.root
        size = (screen.width_in_pixels, screen.height_in_pixels)
        picture = Image.open(path).convert("RGB").resize(size)
        pixmap = root.create_pixmap(size[0], size[1], screen.root_depth)
        pixmap.put_pil_image(pixmap.create_gc(), 0, 0, picture)
        root.change_attributes(background_pixmap=pixmap)
        root.change_property(connection.intern_atom("_XROOTPMAP_ID"), Xatom.PIXMAP, 32, [pixmap.id])
        root.clear_area(0, 0, size[0], size[1])
        connection.set_close_down_mode(X.RetainPermanent)
        connection.sync()
        return pixmap.id
    finally:
        connection.close()


def root_pixmap() -> int | None:
    """The pixmap the desktop's background shows (``_XROOTPMAP_ID``), or None when none is set."""
    prop = _on_display(lambda connection: connection.screen().root.get_full_property(
        connection.intern_atom("_XROOTPMAP_ID"), Xatom.PIXMAP))
    return int(prop.value[0]) if prop is not None and len(prop.value) else None


def pixmap_png(pixmap_id: int) -> bytes:
    """A root-sized pixmap's pixels as PNG."""
    width, height = screen_size()
    raw = _on_display(lambda connection: connection.create_resource_object("pixmap", pixmap_id).get_image(
        0, 0, width, height, X.ZPixmap, 0xFFFFFFFF))
    buffer = io.BytesIO()
    Image.frombytes("RGB", (width, height), raw.data, "raw", "BGRX").save(buffer, format="PNG")
    return buffer.getvalue()
