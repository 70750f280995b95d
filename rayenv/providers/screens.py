"""Screenshots taken outside the guest: the pixels a desktop's display shows, read where they already are.

Asking the guest (``GET /screenshot``) costs an X grab and a PNG encode inside it: ~50 ms on
desktop-lite, ~600 ms in a VM under TCG, where every instruction of that encode is emulated. The
pixels exist outside the guest already:

* desktop-lite: Xvfb keeps its screen in a memory-mapped XWD file (``-fbdir``) in a directory the
  host shares (on tmpfs), so a screenshot is a read of that file (:class:`XwdFramebuffer`);
* a VM desktop on rayenv's image: its Xorg draws on QEMU's emulated card, and QMP ``screendump``
  writes QEMU's display as PPM into a directory the host shares (:class:`QemuDisplay`). PPM, not
  PNG: QEMU 7.2's PNG output swaps red and blue (qemu#1622).

Neither X server draws a pointer (both run with ``-nocursor``); :func:`encode_png` draws it as
OSWorld's guest draws it (the arrow of ``OSWorld/guest/osworld_guest/screen.py``) and encodes the
screen once as PNG: where a step's action reported leaving the pointer, or where the guest says it is
(:func:`screenshot_png`, asked while the display is read).

The pixels are read straight into the rows the PNG deflates (a :class:`Frame`: each row a filter byte,
then RGB), and that buffer is kept across screenshots, one per thread and screen size
(:func:`reused_frame`): on this host a fresh 6 MB buffer costs ~5 ms of page faults each time it is
written, which made three quarters of a 1920x1080 screenshot (bench/results/vm_desktop.md). The PPM's
rows are read into it by one ``preadv``; Xvfb's BGRX pixels are unpacked into a kept Pillow image, then
packed row by row into it; the pointer is drawn on the rows it covers, in place.
"""

from __future__ import annotations

import mmap
import os
import struct
import tempfile
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
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
_SMALLEST_PPM_HEADER = b"P6\n1 1\n255\n"
#: The most buffers one ``preadv`` fills (Linux: 1024).
_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024


class Frame:
    """What a screen shows, ``width`` x ``height`` pixels of 8-bit RGB, laid out as a PNG's rows before deflate:
    each row a filter byte (0: none) then its RGB, in one buffer (``lines``) the PNG encoder deflates as it is.
    ``rows`` are writable views of each row's RGB."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.stride = width * 3
        self.lines = bytearray(height * (self.stride + 1))
        view = memoryview(self.lines)
        self.rows = [view[row * (self.stride + 1) + 1:(row + 1) * (self.stride + 1)] for row in range(height)]
        self._canvas: Image.Image | None = None

    @classmethod
    def of(cls, image: Image.Image) -> "Frame":
        """A new frame holding ``image``'s pixels."""
        frame = cls(image.width, image.height)
        frame.pack(image.convert("RGB"))
        return frame

    def pack(self, image: Image.Image) -> None:
        """Copy an RGB image of this frame's size into the rows, one row per encoder call: small chunks that
        reuse the allocator's memory, where ``tobytes`` would fault in a fresh 6 MB at 1920x1080."""
        encoder = Image._getencoder("RGB", "raw", ("RGB", 0, 1))  # Pillow's own tobytes packer, row by row
        encoder.setimage(image.im)
        for row in self.rows:
            row[:] = encoder.encode(self.stride)[2]

    def unpack(self, pixels: memoryview, rawmode: str, bytes_per_line: int) -> None:
        """Fill the rows from raw pixels in Pillow's ``rawmode`` (Xvfb's ``BGRX``), through an RGB image kept
        with the frame (decoded in place, so no new buffer either)."""
        if self._canvas is None:
            self._canvas = Image.new("RGB", (self.width, self.height))
        self._canvas.frombytes(pixels, "raw", (rawmode, bytes_per_line, 1))
        self.pack(self._canvas)

    def draw_pointer(self, position: tuple[int, int]) -> None:
        """Draw OSWorld's guest's arrow with its tip at ``position`` on the rows it covers, in place: drawn on
        that band of rows alone, which gives the same pixels as drawing on the whole screen (the polygon only
        moves up by whole rows)."""
        x, y = position
        top, bottom = max(y, 0), min(y + POINTER_SIZE[1], self.height)
        if bottom <= top:
            return
        band = Image.frombytes("RGB", (self.width, bottom - top), b"".join(self.rows[top:bottom]))
        ImageDraw.Draw(band).polygon([(x + dx, y - top + dy) for dx, dy in POINTER], fill="white", outline="black")
        drawn = band.tobytes()
        for index, row in enumerate(self.rows[top:bottom]):
            row[:] = drawn[index * self.stride:(index + 1) * self.stride]

    def image(self) -> Image.Image:
        """A copy of the pixels as a Pillow image."""
        return Image.frombytes("RGB", (self.width, self.height), b"".join(self.rows))


_reused = threading.local()


def reused_frame(width: int, height: int) -> Frame:
    """This thread's frame of that size, made on first use and overwritten by each later read: a display's
    frame stays valid until the same thread reads a screen of that size again."""
    frames: dict[tuple[int, int], Frame] = _reused.__dict__.setdefault("frames", {})
    frame = frames.get((width, height))
    if frame is None:
        frame = frames[(width, height)] = Frame(width, height)
    return frame


class Display(Protocol):
    """A desktop's screen, readable from the host."""

    def grab(self) -> Frame:
        """What the screen shows now, without a pointer (this thread's :func:`reused_frame`)."""


def encode_png(frame: Frame, pointer: tuple[int, int] | None = None, *,
               deflate: Callable[[bytes, int], bytes] = isal_zlib.compress, level: int = COMPRESS_LEVEL) -> bytes:
    """The frame as PNG, with the pointer drawn at ``pointer`` if given (on the frame itself): rows unfiltered,
    deflated by ISA-L at :data:`COMPRESS_LEVEL` (one pass over 6 MB at 1920x1080 in ~2 ms, where zlib's
    level 1, Pillow's encoder, takes 20-60 ms; ``deflate`` and ``level`` are for benches comparing)."""
    if pointer is not None:
        frame.draw_pointer(pointer)
    header = struct.pack(">IIBBBBB", frame.width, frame.height, 8, 2, 0, 0, 0)  # 8-bit RGB, deflate, no interlace
    return PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", deflate(frame.lines, level)) + _chunk(b"IEND", b"")


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


def unnamed_screen_dirs(named: set[str], older_than: float) -> list[Path]:
    """Screen directories no container names (``named``: the ``rayenv.screendir`` labels on this host) that were
    made over ``older_than`` seconds ago: left by a start cut short between making its directory and its container
    (an actor killed mid-revert, a Docker daemon restart). A younger one may belong to a start under way."""
    root, now = screen_dir_root(), time.time()
    if not root.is_dir():
        return []
    return [path for path in root.glob("rayenv-screen-*")
            if path.is_dir() and str(path) not in named and now - path.stat().st_mtime > older_than]


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
                frame = reused_frame(width, height)
                with memoryview(mapped) as view, view[offset:offset + bytes_per_line * height] as pixels:
                    frame.unpack(pixels, "BGRX", bytes_per_line)  # the views go before the mapping closes
        except (OSError, ValueError, struct.error) as exc:
            raise DesktopUnavailable(f"cannot read the desktop's framebuffer {self.path}: {exc}", env=self.env,
                                     phase="observe", hint="its X server is gone; the pool replaces the desktop") from None
        return frame


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
    """A binary PPM (``P6``, 8-bit) as QEMU writes it, ``P6\\n<width> <height>\\n255\\n`` and RGB rows, read
    into this thread's :func:`reused_frame`: the rows go from the file straight into the PNG's rows."""
    with open(path, "rb", buffering=0) as file:
        head = file.read(32)
        fields = head.split(maxsplit=4)
        if len(fields) < 4 or fields[0] != b"P6" or fields[3] != b"255":
            raise ValueError(f"not an 8-bit binary PPM (it starts {head[:16]!r})")
        width, height = int(fields[1]), int(fields[2])
        frame = reused_frame(width, height)
        size, file_size = height * frame.stride, os.fstat(file.fileno()).st_size
        offset = file_size - size
        if offset < len(_SMALLEST_PPM_HEADER):
            raise ValueError(f"the PPM is {file_size} bytes: too short for {width}x{height} RGB rows")
        read = sum(os.preadv(file.fileno(), frame.rows[first:first + _IOV_MAX], offset + first * frame.stride)
                   for first in range(0, height, _IOV_MAX))
    if read != size:
        raise ValueError(f"the PPM ended after {read} of its {size} bytes of RGB rows")
    return frame
