"""Screen capture straight from the X server, with the pointer drawn in.

Xvfb has no hardware cursor, so a raw grab would show no pointer; agents need to see where it is.
Capturing through python-xlib avoids a subprocess per screenshot, and PNG compression level 1 keeps
encoding cheap at 1920x1080 (it runs on every RL step).
"""

from __future__ import annotations

import io
import threading

from PIL import Image, ImageDraw
from Xlib import X, display

_local = threading.local()

# A classic arrow, 12x19 pixels, tip at (0, 0).
_ARROW = [(0, 0), (0, 16), (4, 12), (7, 18), (9, 17), (6, 11), (11, 11)]


def _display() -> display.Display:
    """One X connection per server thread (python-xlib connections are not thread-safe)."""
    if getattr(_local, "display", None) is None:
        _local.display = display.Display()
    return _local.display


def screen_size() -> tuple[int, int]:
    screen = _display().screen()
    return screen.width_in_pixels, screen.height_in_pixels


def pointer_position() -> tuple[int, int]:
    pointer = _display().screen().root.query_pointer()
    return pointer.root_x, pointer.root_y


def grab() -> Image.Image:
    root = _display().screen().root
    width, height = screen_size()
    raw = root.get_image(0, 0, width, height, X.ZPixmap, 0xFFFFFFFF)
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
