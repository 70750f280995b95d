"""A fork's saved state keeps the RAM its desktop wrote and drops the template's pages it did not.

QEMU's migration stream is built here the way its precopy save lays it out (a RAM section in parts, page records
naming their block once, then the devices), and read back the way a loading QEMU reads it: each page lands in
the block the last named record named. So a branch gets exactly the written pages of the template's block,
every page of other blocks, the devices byte for byte, whatever the chunks the stream arrives in.
"""

from __future__ import annotations

import mmap
import os
import socket
import threading
from io import BytesIO

import numpy as np
import pytest

from rayenv.providers import written as stream
from rayenv.providers.written import (CONTINUE, END, MEM_SIZE, PAGE, WHOLE, ZERO, StreamError, keep_written,
                                      receiving, written_pages)

SECTION = (7).to_bytes(4, "big")
DEVICES = b"\x04" + b"devices and their state, copied as they are" + b"\x1f" * 3000


def record(block: bytes | None, page: int, content: bytes | None) -> bytes:
    """One page record: a zero page (``content`` None) or a whole one; ``block`` named unless it continues."""
    flags = (ZERO if content is None else WHOLE) | (0 if block else CONTINUE)
    named = bytes([len(block)]) + block if block else b""
    return (page * PAGE | flags).to_bytes(8, "big") + named + (b"\x00" if content is None else content)


def page_of(page: int, block: bytes = b"pc.ram") -> bytes:
    return (block + page.to_bytes(4, "big")) * (PAGE // (len(block) + 4)) + b"\x00" * (PAGE % (len(block) + 4))


def saved(parts: list[list[bytes]], blocks: dict[bytes, int]) -> bytes:
    """A stream: header and configuration, the RAM section's start (its blocks) and parts, then the devices."""
    sizes = b"".join(bytes([len(name)]) + name + (pages * PAGE).to_bytes(8, "big") + bytes(8)
                     for name, pages in blocks.items())
    total = sum(blocks.values()) * PAGE
    body = b"QEVM\x00\x00\x00\x03\x07\x00\x00\x00\x0dpc-i440fx-7.2"
    body += b"\x01" + SECTION + b"\x03ram" + bytes(4) + (4).to_bytes(4, "big") + (total | MEM_SIZE).to_bytes(8, "big")
    body += sizes
    eos = END.to_bytes(8, "big") + b"\x7e" + SECTION
    for index, part in enumerate(parts):
        if index:
            body += (b"\x02" if index < len(parts) - 1 else b"\x03") + SECTION
        body += b"".join(part) + eos
    return body + DEVICES


def loaded(data: bytes) -> tuple[dict[bytes, dict[int, bytes]], bytes]:
    """What a loading QEMU takes from ``data``: each block's pages as they land, and the devices' bytes."""
    position = data.index(b"\x03ram") + 12
    header = int.from_bytes(data[position:position + 8], "big")
    position, total = position + 8, header & ~(PAGE - 1)
    while total:
        length = data[position]
        total -= int.from_bytes(data[position + 1 + length:position + 9 + length], "big")
        position += 1 + length + 16
    pages: dict[bytes, dict[int, bytes]] = {}
    block = None
    while True:
        header = int.from_bytes(data[position:position + 8], "big")
        flags, position = header & (PAGE - 1), position + 8
        if flags & END:
            position += 5  # the footer
            if data[position] in (2, 3):
                position += 5
                continue
            return pages, data[position:]
        if not flags & CONTINUE:
            block = data[position + 1:position + 1 + data[position]]
            position += 1 + data[position]
        assert block is not None, "a record continues a block nobody named"
        content = data[position:position + PAGE] if flags & WHOLE else bytes([data[position]]) * PAGE
        position += PAGE if flags & WHOLE else 1
        pages.setdefault(block, {})[header >> 12] = content


def stream_of(pages: int, whole: set[int]) -> tuple[bytes, dict[int, bytes]]:
    """A VM's stream: the template's ``pages`` (whole where in ``whole``, else zero) in three parts, the video
    memory's between them (so the template's block is named again after it), then the devices."""
    ram = [record(b"pc.ram" if page in (0, pages // 3, 2 * pages // 3) else None, page,
                  page_of(page) if page in whole else None) for page in range(pages)]
    vga = [record(b"vga.vram", 0, page_of(0, b"vga.vram")), record(None, 1, None), record(None, 2, page_of(2, b"vga"))]
    parts = [ram[:pages // 3], vga + ram[pages // 3:2 * pages // 3], ram[2 * pages // 3:]]
    content = {page: page_of(page) if page in whole else bytes(PAGE) for page in range(pages)}
    return saved(parts, {b"pc.ram": pages, b"vga.vram": 3}), content


def filtered(data: bytes, written: np.ndarray) -> bytes:
    out = BytesIO()
    keep_written(BytesIO(data), out, written)
    return out.getvalue()


@pytest.mark.parametrize("chunk", [5000, 1 << 20])
def test_a_branch_gets_the_written_pages_of_the_template_every_other_page_and_the_devices(monkeypatch, chunk):
    monkeypatch.setattr(stream, "CHUNK", chunk)
    pages = 600
    whole = set(range(40, 200)) | set(range(300, 320)) | {401, 402, 555}  # runs of whole pages between zero ones
    written = np.zeros(pages, bool)
    written[[0, 41, 42, 150, 250, 251, 310, 401, 599]] = True  # zero and whole, inside runs and at their ends
    data, content = stream_of(pages, whole)

    ram, devices = loaded(filtered(data, written))

    assert ram[b"pc.ram"] == {page: content[page] for page in np.flatnonzero(written)}
    assert set(ram[b"vga.vram"]) == {0, 1, 2}
    assert devices == DEVICES


def test_a_record_that_continues_a_block_named_by_a_dropped_one_names_it_itself():
    data, content = stream_of(90, whole=set(range(10, 30)))
    written = np.zeros(90, bool)
    written[[31, 60]] = True  # page 30 named pc.ram after the video memory: it is dropped

    ram, _ = loaded(filtered(data, written))

    assert ram[b"pc.ram"] == {31: content[31], 60: content[60]}
    assert 31 not in ram[b"vga.vram"]


def test_a_desktop_that_wrote_nothing_saves_no_page_of_its_template():
    data, _ = stream_of(300, whole=set(range(0, 300, 2)))
    kept = keep_written(BytesIO(data), BytesIO(), np.zeros(300, bool))
    assert (kept.pages, kept.dropped) == (3, 300)


def test_a_stream_with_records_rayenv_does_not_read_is_refused():
    data, _ = stream_of(20, whole=set())
    compressed = data.replace(record(None, 5, None), (5 * PAGE | 0x100 | CONTINUE).to_bytes(8, "big") + b"\x00")
    with pytest.raises(StreamError, match="flags 0x120"):
        filtered(compressed, np.zeros(20, bool))
    with pytest.raises(StreamError, match="no RAM section"):
        filtered(b"QEVM" + bytes(100), np.zeros(20, bool))


def test_written_pages_are_the_private_mappings_pages_written_not_the_ones_only_read(tmp_path):
    path = tmp_path / "memory"
    path.write_bytes(b"\x01" * 16 * PAGE)
    with open(path, "r+b") as file, mmap.mmap(file.fileno(), 16 * PAGE, flags=mmap.MAP_PRIVATE) as ram:
        for page in range(16):
            assert ram[page * PAGE] == 1  # every page read
        for page in (3, 9):
            ram[page * PAGE] = 2
        assert list(np.flatnonzero(written_pages(os.getpid(), str(path)))) == [3, 9]
    with pytest.raises(StreamError, match="0 times"):
        written_pages(os.getpid(), str(path))


def test_the_stream_is_filtered_as_it_arrives_on_a_unix_socket_with_a_long_path(tmp_path):
    directory = tmp_path / ("a-work-directory-name-as-long-as-a-pools-owner-and-env-make-it" * 2)
    directory.mkdir()
    data, content = stream_of(200, whole=set(range(50, 150)))
    written = np.zeros(200, bool)
    written[[7, 77]] = True
    with receiving(directory / "stream.sock", directory / "state", written, timeout=30) as received:
        sender = threading.Thread(target=send, args=(directory / "stream.sock", data))
        sender.start()
        kept = received.result(timeout=30)
        sender.join()
    assert kept.pages == 2 + 3
    assert loaded((directory / "state").read_bytes())[0][b"pc.ram"] == {7: content[7], 77: content[77]}
    assert not (directory / "stream.sock").exists()


def test_where_no_one_can_tell_the_written_pages_the_stream_is_kept_whole(tmp_path):
    data, _ = stream_of(100, whole=set(range(10, 90)))
    with receiving(tmp_path / "stream.sock", tmp_path / "state", None, timeout=30) as received:
        sender = threading.Thread(target=send, args=(tmp_path / "stream.sock", data))
        sender.start()
        assert received.result(timeout=30).bytes == len(data)
        sender.join()
    assert (tmp_path / "state").read_bytes() == data


def test_a_receiver_nobody_sends_to_gives_up_without_a_state(tmp_path):
    with receiving(tmp_path / "stream.sock", tmp_path / "state", np.zeros(4, bool), timeout=30) as received:
        pass
    assert isinstance(received.exception(), StreamError)
    assert not (tmp_path / "state").exists()


def send(path, data: bytes) -> None:
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sender:
            sender.connect(f"/proc/self/fd/{directory}/{path.name}")
            sender.sendall(data)
    finally:
        os.close(directory)
