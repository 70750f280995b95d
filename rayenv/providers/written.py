"""A fork's state is its devices and the RAM its desktop wrote, not all of its RAM.

A clone's RAM is a private mapping of its template's file: every page it has not written is still the
template's page, which every desktop of the shape maps already. So a fork needs only the pages the
desktop wrote (~100 MiB after an episode's steps, against the ~530 MiB of non-zero RAM of a 2 GB VM that
QEMU's own migration stream carries): the kernel says which they are (``/proc/PID/pagemap``: a page of a private file
mapping is the file's until written, then anonymous), and :func:`keep_written` drops every other page of
the template's RAM block from QEMU's stream while it is being saved. A branch maps the template privately
like any clone and migrates that stream in: the written pages land over the template's, the rest it shares.

The stream is QEMU's precopy migration format (its ``ram`` section's page records, rayenv's image's QEMU,
``x-ignore-shared`` on); anything else in it is copied as it is, and a stream this module does not know
raises :class:`StreamError` rather than guess.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import queue
import socket
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np  # the env host has it through desktop-env (the osworld extra)

PAGE = 4096
#: The RAM block a clone maps from its template's file (QEMU's id of ``-machine memory-backend=pc.ram``).
TEMPLATE_BLOCK = b"pc.ram"
#: QEMU's RAM page record flags (the low bits of each record's page offset).
ZERO, MEM_SIZE, WHOLE, END, CONTINUE = 0x02, 0x04, 0x08, 0x10, 0x20
#: QEMU's section markers: the ram section's later parts and the footer after each section.
SECTION_START, SECTION_PART, SECTION_END, FOOTER = 0x01, 0x02, 0x03, 0x7E
RAM_SECTION = b"\x03ram"
#: Bytes read from the stream at once.
CHUNK = 8 << 20
#: After this many records of one kind in a row (zero pages, or whole ones) the filter looks for the end of their run
#: at once: most of a VM's RAM is long runs of pages it never touched or the template filled; RUN_MOST at a time.
RUN, RUN_MOST = 8, 1 << 14


class StreamError(ValueError):
    """QEMU's migration stream is not what this module reads (another QEMU, a capability it does not know)."""


def written_pages(pid: int, mapping: str) -> np.ndarray:
    """For each page of process ``pid``'s private mapping of file ``mapping`` (its path as the process sees it):
    whether the process has written it (an anonymous page, in RAM or swapped out) instead of still mapping
    the file's. Read while the VM is stopped, so no page changes meanwhile."""
    start, end = _mapped(pid, mapping)
    with open(f"/proc/{pid}/pagemap", "rb") as pagemap:
        pagemap.seek(start // PAGE * 8)
        entries = np.frombuffer(pagemap.read((end - start) // PAGE * 8), dtype="<u8")
    present, swapped, file = (entries >> 63) & 1, (entries >> 62) & 1, (entries >> 61) & 1
    return ((present == 1) & (file == 0)) | (swapped == 1)


def _mapped(pid: int, mapping: str) -> tuple[int, int]:
    """The address range of ``pid``'s one private, writable mapping of ``mapping``."""
    ranges = [line.split()[0] for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
              if line.endswith(f" {mapping}") and line.split()[1] == "rw-p"]
    if len(ranges) != 1:
        raise StreamError(f"process {pid} maps {mapping} privately {len(ranges)} times, not once")
    start, end = (int(address, 16) for address in ranges[0].split("-"))
    return start, end


@dataclass
class Kept:
    """What :func:`keep_written` let through: the pages it kept (the template's written ones, every other block's),
    the template's pages it dropped, the bytes of the stream it wrote."""

    pages: int = 0
    dropped: int = 0
    bytes: int = 0


def keep_written(source: BinaryIO, target: BinaryIO, written: np.ndarray) -> Kept:
    """Copy QEMU's migration stream from ``source`` to ``target`` without the template block's pages that
    ``written`` (one flag a page) says were not written. Records of a block are named once and then marked
    as continuing it; where a dropped record named it, the next kept one names it instead."""
    return _Filter(source, target, written).run()


@contextlib.contextmanager
def receiving(path: Path, target: Path, written: np.ndarray | None,
              timeout: float) -> Iterator[concurrent.futures.Future]:
    """Listen on unix socket ``path`` for one QEMU's migration stream (``migrate unix:...``) and write it to
    ``target`` through :func:`keep_written` (or whole, without ``written``), in a thread: the filter reads while
    QEMU writes. Yields the future of its :class:`Kept` (``target`` is there, whole, once it is done); ``timeout``
    bounds the wait for QEMU to connect and each read. On the way out a receiver still waiting is woken and the socket removed."""
    path.unlink(missing_ok=True)
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    address = f"/proc/self/fd/{directory}/{path.name}"  # a unix socket's path has at most 107 bytes; a work dir's can
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(address)
        server.listen(1)
        server.settimeout(timeout)
        worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="fork-stream")
        received = worker.submit(_receive, server, target, written, timeout)
        try:
            yield received
        finally:
            if not received.done():  # QEMU never connected, or the caller gave up: an empty stream ends the wait
                with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as waker:
                    waker.connect(address)
            worker.shutdown(wait=True)
    finally:
        server.close()
        os.close(directory)
        path.unlink(missing_ok=True)


def _receive(server: socket.socket, target: Path, written: np.ndarray | None, timeout: float) -> Kept:
    connection, _ = server.accept()
    part = target.with_name(target.name + ".part")
    with connection, open(part, "wb") as out:
        connection.settimeout(None)  # blocking, bounded by the kernel: Python's own timeout would make MSG_WAITALL moot
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", int(timeout), 0))
        chunks = _Chunks(connection)
        try:
            kept = keep_written(chunks, out, written) if written is not None else _copy(chunks, out, Kept())
        finally:
            chunks.close()
    os.replace(part, target)
    return kept


def _copy(source: BinaryIO | "_Chunks", target: BinaryIO, kept: Kept) -> Kept:
    """The rest of the stream as it is (the devices after the RAM; all of it where no one can tell which pages
    were written), its bytes counted in ``kept``."""
    while chunk := source.read(CHUNK):
        target.write(chunk)
        kept.bytes += len(chunk)
    return kept


class _Chunks:
    """A socket read a chunk ahead, in a thread: QEMU goes on writing while the filter (Python, holding the GIL)
    works through the last chunk. Each chunk is one ``recv`` with ``MSG_WAITALL``, which waits in the kernel,
    not for the GIL, so QEMU is never held up by the socket's small buffer."""

    def __init__(self, connection: socket.socket) -> None:
        self._chunks: queue.Queue[bytes | bytearray | BaseException] = queue.Queue(maxsize=4)
        self._closed = False
        threading.Thread(target=self._read, args=(connection,), name="fork-stream-read", daemon=True).start()

    def _read(self, connection: socket.socket) -> None:
        try:
            while not self._closed:
                chunk = bytearray(CHUNK)
                count = connection.recv_into(chunk, CHUNK, socket.MSG_WAITALL)
                if not count:
                    break
                del chunk[count:]
                self._chunks.put(chunk)
            self._chunks.put(b"")
        except OSError as exc:
            self._chunks.put(exc)

    def close(self) -> None:
        """Stop reading (the filter is done, or gave up): a reader waiting for room in the queue is let go."""
        self._closed = True
        with contextlib.suppress(queue.Empty):
            while True:
                self._chunks.get_nowait()

    def read(self, _size: int = -1) -> bytes | bytearray:
        """The next chunk (any size), or nothing at the end of the stream."""
        chunk = self._chunks.get()
        if isinstance(chunk, BaseException):
            raise chunk
        if not chunk:
            self._chunks.put(b"")  # the end stays the end for any later read
        return chunk


class _Filter:
    def __init__(self, source: BinaryIO, target: BinaryIO, written: np.ndarray) -> None:
        self.source, self.target = source, target
        self.flags, self.written = written, bytes(written.astype(np.uint8))  # for a run's pages; for one page
        self.buffer, self.section, self.kept = b"", b"", Kept()

    def run(self) -> Kept:
        position = self._head()
        self._out(self.buffer[:position])
        self._records(position)
        return _copy(self.source, self.target, self.kept)

    def _head(self) -> int:
        """Where the RAM section's first record starts (the bytes before it are copied as they are)."""
        self.buffer = self.source.read(1 << 16)
        found = self.buffer.find(RAM_SECTION + b"\x00" * 4)
        if found < 5 or self.buffer[found - 5] != SECTION_START:
            raise StreamError("no RAM section at the start of QEMU's migration stream")
        self.section = self.buffer[found - 4:found]
        return found + len(RAM_SECTION) + 8  # instance and version

    def _out(self, data: bytes) -> None:
        self.target.write(data)
        self.kept.bytes += len(data)

    def _fill(self, position: int, need: int) -> int:
        """Where ``need`` bytes from ``position`` are readable now: where they are not, the buffer before
        ``position`` (written out already) is dropped and the stream read until they are or it ends."""
        if len(self.buffer) - position >= need:
            return position
        self.buffer = self.buffer[position:]
        while len(self.buffer) < need and (more := self.source.read(CHUNK)):
            self.buffer += more
        return 0

    def _take(self, position: int, count: int) -> tuple[int, bytes]:
        """``count`` bytes from ``position`` (everything before it written out already), written out too."""
        position = self._fill(position, count)
        data = self.buffer[position:position + count]
        if len(data) < count:
            raise StreamError("QEMU's migration stream ended inside its RAM section")
        self._out(data)
        return position + count, data

    def _records(self, position: int) -> None:
        """Parse RAM records from ``position`` until the RAM section's last part ends."""
        most = 8 + 1 + 255 + PAGE  # the longest record: its offset and flags, its block named, a whole page
        block = named = b""  # the block of the records now, and the one the loading QEMU last saw named
        template = False  # block is the template's
        buffer, span = self.buffer, position  # kept bytes not written out yet start at span
        written, kept = self.written, self.kept
        streak, kind, page = 0, 0, 0  # records of one kind in a row, their flags, the last one's page
        while True:
            if len(buffer) - position < most:
                self._out(buffer[span:position])
                position = span = self._fill(position, most)
                buffer = self.buffer
            if streak >= RUN and template:  # pages come in long runs of one kind: the rest of this one at once
                size = 9 if kind & ZERO else 8 + PAGE
                run = _run(buffer, position, page + 1, len(written), size, kind)
                if run:
                    self._out(buffer[span:position])
                    stay = np.flatnonzero(self.flags[page + 1:page + 1 + run])  # the written ones
                    for index in stay:
                        at = position + int(index) * size
                        header = int.from_bytes(buffer[at:at + 8], "big")
                        self._out(self._named(header, block) if named != block else buffer[at:at + 8])
                        self._out(buffer[at + 8:at + size])
                        named = block
                    kept.pages += len(stay)
                    kept.dropped += run - len(stay)
                    position = span = position + size * run
                    page += run
                streak = 0
                continue
            record = position
            header = int.from_bytes(buffer[position:position + 8], "big")
            flags = header & (PAGE - 1)
            if flags & (MEM_SIZE | END):
                self._out(buffer[span:position + 8])
                position = (self._blocks(position + 8, header & ~(PAGE - 1)) if flags & MEM_SIZE
                            else self._next(position + 8))
                if position < 0:
                    return
                buffer, span, named, streak = self.buffer, position, b"", 0
                continue
            if flags & ~(ZERO | WHOLE | CONTINUE) or not flags & (ZERO | WHOLE):
                raise StreamError(f"QEMU's migration stream has RAM records with flags {flags:#x}, which "
                                  "rayenv does not read")
            position += 8
            if not flags & CONTINUE:
                length = buffer[position]
                block = buffer[position + 1:position + 1 + length]
                template = block == TEMPLATE_BLOCK
                position += 1 + length
            position += PAGE if flags & WHOLE else 1
            if position > len(buffer):
                raise StreamError("QEMU's migration stream ended inside its RAM section")
            streak = streak + 1 if flags | CONTINUE == kind else 1
            kind = flags | CONTINUE
            if template:
                page = header >> 12
                if page >= len(written):
                    raise StreamError(f"page {page} of the template's RAM is beyond its {len(written)} pages")
                if not written[page]:
                    if span != record:
                        self._out(buffer[span:record])
                    span = position
                    kept.dropped += 1
                    continue
            kept.pages += 1
            if named != block and flags & CONTINUE:  # the block was named by a record dropped: name it here
                self._out(buffer[span:record])
                self._out(self._named(header, block))
                span = record + 8
            named = block

    @staticmethod
    def _named(header: int, block: bytes) -> bytes:
        """A record's offset and flags, its block named in it."""
        return (header & ~CONTINUE).to_bytes(8, "big") + bytes([len(block)]) + block

    def _blocks(self, position: int, total: int) -> int:
        """Copy the RAM section's list of blocks (name, size, address: ``x-ignore-shared``), ``total`` bytes of
        RAM in all; where the records start."""
        while total > 0:
            position, length = self._take(position, 1)
            position, _ = self._take(position, length[0])
            position, sizes = self._take(position, 16)
            total -= int.from_bytes(sizes[:8], "big")
        if total:
            raise StreamError("QEMU's list of RAM blocks does not add up to its RAM size")
        return position

    def _next(self, position: int) -> int:
        """After a part of the RAM section: where its next part's records start, or -1 where the rest of the
        stream (the devices) was written out as it is."""
        position, kind = self._take(position, 1)
        if kind[0] == FOOTER:
            position, _ = self._take(position, 4)
            position, kind = self._take(position, 1)
        if kind[0] in (SECTION_PART, SECTION_END):
            position, section = self._take(position, 4)
            if section != self.section:
                raise StreamError("QEMU's migration stream has a second iterable section, which rayenv does not read")
            return position
        self._out(self.buffer[position:])
        return -1


def _run(buffer: bytes | bytearray, position: int, page: int, pages: int, size: int, flags: int) -> int:
    """How many records from ``position`` are ``size``-byte records with ``flags`` of the template's pages ``page``,
    ``page + 1``, ... (of its ``pages``), their offsets compared in one go with the ones they would have. Each
    record's offset is read where the records before it, all matching, put it: the first mismatch ends the run,
    and nothing after it is trusted."""
    count = min(RUN_MOST, (len(buffer) - position) // size, pages - page)
    if count <= 0:
        return 0
    found = np.ndarray((count,), ">u8", buffer, position, (size,))
    expected = (np.arange(page, page + count, dtype=np.uint64) << np.uint64(12)) | np.uint64(flags)
    differ = np.flatnonzero(found != expected)
    return int(differ[0]) if len(differ) else count
