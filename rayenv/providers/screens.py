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
pixels stay one buffer of RGB rows from the read to the encoder: at 1920x1080 every extra pass
over its 6 MB costs milliseconds.
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
#: ISA-L's deflate level for the PNG, chosen by measurement (bench/results/screens.md): at 1920x1080 levels 0-2
#: take ~2 ms, level 3 fifteen times that; 1 and 2 make the same size, a quarter smaller than 0.
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
    """What a screen shows: ``width`` x ``height`` pixels as 8-bit RGB rows without padding, writable in place."""

    width: int
    height: int
    rgb: bytearray | memoryview

    def image(self) -> Image.Image:
        return Image.frombuffer("RGB", (self.width, self.height), bytes(self.rgb), "raw", "RGB", 0, 1)


class Display(Protocol):
    """A desktop's screen, readable from the host."""

    def grab(self) -> Frame:
        """What the screen shows now, without a pointer."""


def draw_pointer(frame: Frame, position: tuple[int, int]) -> None:
    """Draw OSWorld's guest's arrow with its tip at ``position``, in place: on the few rows it covers only, as a
    patch with the same pixels as the arrow drawn on the whole screen (the polygon is moved by whole pixels)."""
    x, y = position
    left, top = max(x, 0), max(y, 0)
    right, bottom = min(x + POINTER_SIZE[0], frame.width), min(y + POINTER_SIZE[1], frame.height)
    if right <= left or bottom <= top:
        return
    span = (right - left) * 3
    starts = [(row * frame.width + left) * 3 for row in range(top, bottom)]
    patch = Image.frombytes("RGB", (right - left, bottom - top), b"".join(frame.rgb[start:start + span] for start in starts))
    ImageDraw.Draw(patch).polygon([(x - left + dx, y - top + dy) for dx, dy in POINTER], fill="white", outline="black")
    drawn = patch.tobytes()
    for index, start in enumerate(starts):
        frame.rgb[start:start + span] = drawn[index * span:(index + 1) * span]


def encode_png(frame: Frame) -> bytes:
    """The frame as PNG: rows unfiltered, deflated by ISA-L at :data:`COMPRESS_LEVEL` (one pass over 6 MB at
    1920x1080 in ~2 ms, where zlib's level 1, Pillow's encoder, takes 20-60 ms)."""
    stride = frame.width * 3
    pixels = memoryview(frame.rgb)
    rows = b"\0" + b"\0".join(pixels[offset:offset + stride] for offset in range(0, stride * frame.height, stride))
    header = struct.pack(">IIBBBBB", frame.width, frame.height, 8, 2, 0, 0, 0)  # 8-bit RGB, deflate, no interlace
    return PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", isal_zlib.compress(rows, COMPRESS_LEVEL)) + _chunk(b"IEND", b"")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def screenshot_png(display: Display, pointer: Callable[[], tuple[int, int]], helper: ThreadPoolExecutor) -> bytes:
    """The screen with the pointer drawn in, as PNG: the pointer's position is asked (``pointer``, a guest call)
    on ``helper`` while the screen is read, so the slower of the two sets the latency, not their sum."""
    position = helper.submit(pointer)
    frame = display.grab()
    draw_pointer(frame, position.result())
    return encode_png(frame)


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
                screen = Image.frombuffer("RGB", (width, height), mapped[offset:offset + bytes_per_line * height],
                                          "raw", "BGRX", bytes_per_line, 1)
        except (OSError, ValueError, struct.error) as exc:
            raise DesktopUnavailable(f"cannot read the desktop's framebuffer {self.path}: {exc}", env=self.env,
                                     phase="observe", hint="its X server is gone; the pool replaces the desktop") from None
        return Frame(width, height, bytearray(screen.tobytes()))


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
    with open(path, "rb") as file:
        data = bytearray(os.fstat(file.fileno()).st_size)
        file.readinto(data)
    fields = bytes(data[:32]).split(maxsplit=4)
    if len(fields) < 4 or fields[0] != b"P6" or fields[3] != b"255":
        raise ValueError(f"not an 8-bit binary PPM (it starts {bytes(data[:16])!r})")
    width, height = int(fields[1]), int(fields[2])
    offset = len(data) - width * height * 3
    return Frame(width, height, memoryview(data)[offset:])
