"""Screenshots taken outside the guest: the pixels a desktop's display shows, read where they already are.

Asking the guest (``GET /screenshot``) costs an X grab and a PNG encode inside it: ~50 ms on
desktop-lite, ~600 ms in a VM under TCG, where every instruction of that encode is emulated. The
pixels exist outside the guest already:

* desktop-lite: Xvfb keeps its screen in a memory-mapped XWD file (``-fbdir``) in a directory the
  host shares (on tmpfs), so a screenshot is a read of that file (:class:`XwdFramebuffer`);
* a VM desktop on rayenv's image: its Xorg draws on QEMU's emulated card, and QMP ``screendump``
  writes QEMU's display as PPM into a directory the host shares (:class:`QemuDisplay`). PPM, not
  PNG: QEMU 7.2's PNG output swaps red and blue (qemu#1622).

Neither X server draws a pointer (both run with ``-nocursor``); :func:`screenshot_png` draws it
where the guest says the pointer is, as OSWorld's guest draws it (the arrow of
``OSWorld/guest/osworld_guest/screen.py``), and encodes it once as PNG (:func:`encode_png`). The
pixels stay one buffer of RGB rows from the read to the encoder, which draws the pointer on a copy
of the rows it covers: at 1920x1080 every extra pass over the screen's 6 MB costs milliseconds.
"""

from __future__ import annotations

import mmap
import os
import struct
import tempfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from isal import isal_zlib
from PIL import Image, ImageDraw

from ..errors import DesktopUnavailable, SnapshotError
from .qmp import Monitor

#: The guest's pointer: a classic arrow, 12x19 pixels, tip at (0, 0), white with a black outline. The same
#: polygon as ``OSWorld/guest/osworld_guest/screen.py`` draws (tests/test_screens.py holds them equal).
POINTER = [(0, 0), (0, 16), (4, 12), (7, 18), (9, 17), (6, 11), (11, 11)]
POINTER_SIZE = (max(x for x, _ in POINTER) + 1, max(y for _, y in POINTER) + 1)
#: ISA-L's deflate level for the PNG, chosen by measurement (bench/results/screens.md, a desktop with three apps at
#: 1920x1080): levels 0-2 take ~2 ms, level 3 37 ms; 1 and 2 make 103 KiB, 0 makes 144 (Pillow's level 1, the
#: guest's encoder: 44 ms, 94 KiB).
COMPRESS_LEVEL = 1
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Where a desktop's screen file is, inside its container: Xvfb's ``-fbdir`` (``FRAMEBUFFER_DIR``), QEMU's dump.
SCREEN_MOUNT = "/run/rayenv/screen"
#: The file Xvfb makes in ``-fbdir`` for screen 0.
XVFB_SCREEN_FILE = "Xvfb_screen0"
#: The XWD header: 25 big-endian 32-bit fields (Xvfb writes it most significant byte first).
_XWD_HEADER = struct.Struct(">25I")
_XWD_COLOR_SIZE = 12


@dataclass
class Frame:
    """What a screen shows: ``width`` x ``height`` pixels as 8-bit RGB rows without padding."""

    width: int
    height: int
    rgb: bytes | memoryview

    def image(self) -> Image.Image:
        return Image.frombuffer("RGB", (self.width, self.height), bytes(self.rgb), "raw", "RGB", 0, 1)


class Display(Protocol):
    """A desktop's screen, readable from the host."""

    def grab(self) -> Frame:
        """What the screen shows now, without a pointer."""


def pointer_rows(frame: Frame, position: tuple[int, int]) -> dict[int, bytes]:
    """The rows of ``frame`` the pointer covers, by index, with OSWorld's guest's arrow drawn in with its tip at
    ``position``: drawn on that band of rows alone, which gives the same pixels as drawing on the whole screen
    (the polygon only moves up by whole rows)."""
    x, y = position
    top, bottom = max(y, 0), min(y + POINTER_SIZE[1], frame.height)
    if bottom <= top:
        return {}
    stride = frame.width * 3
    band = Image.frombytes("RGB", (frame.width, bottom - top), bytes(frame.rgb[top * stride:bottom * stride]))
    ImageDraw.Draw(band).polygon([(x + dx, y - top + dy) for dx, dy in POINTER], fill="white", outline="black")
    drawn = band.tobytes()
    return {top + index: drawn[index * stride:(index + 1) * stride] for index in range(bottom - top)}


def encode_png(frame: Frame, pointer: tuple[int, int] | None = None, *,
               deflate: Callable[[bytes, int], bytes] = isal_zlib.compress, level: int = COMPRESS_LEVEL) -> bytes:
    """The frame as PNG, with the pointer drawn at ``pointer`` if given: rows unfiltered, deflated by ISA-L at
    :data:`COMPRESS_LEVEL` (one pass over 6 MB at 1920x1080 in ~2 ms, where zlib's level 1, Pillow's encoder,
    takes 20-60 ms; ``deflate`` and ``level`` are for benches comparing). The rows are gathered once, the
    pointer's from their drawn copies."""
    stride = frame.width * 3
    pixels = memoryview(frame.rgb)
    drawn = pointer_rows(frame, pointer) if pointer is not None else {}
    rows = b"\0" + b"\0".join(drawn.get(row) or pixels[row * stride:(row + 1) * stride] for row in range(frame.height))
    header = struct.pack(">IIBBBBB", frame.width, frame.height, 8, 2, 0, 0, 0)  # 8-bit RGB, deflate, no interlace
    return PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", deflate(rows, level)) + _chunk(b"IEND", b"")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def screenshot_png(display: Display, pointer: Callable[[], tuple[int, int]], helper: ThreadPoolExecutor) -> bytes:
    """The screen with the pointer drawn in, as PNG: the pointer's position is asked (``pointer``, a guest call)
    on ``helper`` while the screen is read, so the slower of the two sets the latency, not their sum."""
    position = helper.submit(pointer)
    frame = display.grab()
    return encode_png(frame, position.result())


def screen_dir_root() -> Path:
    """Parent of the desktops' screen directories: tmpfs (``/dev/shm``), so the screen never reaches a disk
    (``$RAYENV_SCREEN_DIR`` overrides)."""
    configured = os.environ.get("RAYENV_SCREEN_DIR")
    if configured:
        return Path(configured)
    return Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())


def make_screen_dir(owner: str, env_name: str) -> Path:
    """A new host directory for one desktop's screen file, writable by the guest's user whoever it is (the osworld
    profile's Xvfb runs as ``user``); mounted at :data:`SCREEN_MOUNT` and labelled ``rayenv.screendir``."""
    screen_dir_root().mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix=f"rayenv-screen-{owner}-{env_name}-", dir=screen_dir_root()))
    directory.chmod(0o777)
    return directory


class XwdFramebuffer:
    """Xvfb's screen as the XWD file it maps (``Xvfb -fbdir``): 32-bit TrueColor pixels, least significant byte
    first, after a header and a colormap. ``env`` names the desktop in errors."""

    def __init__(self, path: Path, *, env: str) -> None:
        self.path = path
        self.env = env

    def available(self) -> bool:
        return self.path.is_file()

    def grab(self) -> Frame:
        try:
            with open(self.path, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                fields = _XWD_HEADER.unpack_from(mapped)
                header_size, depth, width, height = fields[0], fields[3], fields[4], fields[5]
                bits_per_pixel, bytes_per_line, colors = fields[11], fields[12], fields[19]
                if depth != 24 or bits_per_pixel != 32:
                    raise DesktopUnavailable(f"{self.path} holds a {depth}-bit screen at {bits_per_pixel} bits per "
                                             "pixel; only 24-bit screens are read", env=self.env, phase="observe",
                                             hint="start Xvfb with -screen 0 WxHx24")
                offset = header_size + colors * _XWD_COLOR_SIZE
                view = memoryview(mapped)  # released before the mapping closes
                try:
                    screen = Image.frombuffer("RGB", (width, height), view[offset:offset + bytes_per_line * height],
                                              "raw", "BGRX", bytes_per_line, 1)
                finally:
                    view.release()
        except (OSError, ValueError, struct.error) as exc:
            raise DesktopUnavailable(f"cannot read the desktop's framebuffer {self.path}: {exc}", env=self.env,
                                     phase="observe", hint="its X server is gone; the pool replaces the desktop") from None
        return Frame(width, height, screen.tobytes())


class QemuDisplay:
    """A VM's display, dumped by QEMU (QMP ``screendump``) to ``dump_path`` as QEMU's container sees it, which
    is ``host_path`` on the host."""

    def __init__(self, monitor: Monitor, dump_path: str, host_path: Path) -> None:
        self.monitor = monitor
        self.dump_path = dump_path
        self.host_path = host_path

    def grab(self) -> Frame:
        try:
            self.monitor.execute("screendump", {"filename": self.dump_path}, timeout=10)
        except SnapshotError as exc:
            raise DesktopUnavailable(f"QEMU did not dump its display: {exc.message}", env=self.monitor.env,
                                     phase="observe", hint="the VM is stuck or gone; the pool replaces it") from None
        try:
            return read_ppm(self.host_path)
        except (OSError, ValueError) as exc:
            raise DesktopUnavailable(f"cannot read QEMU's screendump {self.host_path}: {exc}", env=self.monitor.env,
                                     phase="observe", hint="the VM's container is gone; the pool replaces it") from None


def read_ppm(path: Path) -> Frame:
    """A binary PPM (``P6``, 8-bit) as QEMU writes it: ``P6\\n<width> <height>\\n255\\n`` and RGB rows."""
    data = path.read_bytes()
    fields = data[:32].split(maxsplit=4)
    if len(fields) < 4 or fields[0] != b"P6" or fields[3] != b"255":
        raise ValueError(f"not an 8-bit binary PPM (it starts {data[:16]!r})")
    width, height = int(fields[1]), int(fields[2])
    offset = len(data) - width * height * 3
    return Frame(width, height, memoryview(data)[offset:])
