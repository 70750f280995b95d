"""Screenshots taken outside the guest (rayenv.providers.screens): the same pixels as the guest's own ``/screenshot``.

The fast tests read a framebuffer file laid out as Xvfb lays it out, encode PNGs and compare the pointer with
the guest's; the slow one starts a desktop-lite container with a window open and finds the screenshot a trainer
gets (read from Xvfb's framebuffer file on the host) equal, pixel for pixel, to what the guest's route grabs.
"""

from __future__ import annotations

import io
import random
import struct
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageDraw

from rayenv.errors import DesktopUnavailable
from rayenv.providers.screens import POINTER, Frame, XwdFramebuffer, encode_png, read_ppm

GUEST_DIR = Path(__file__).resolve().parents[1] / "OSWorld" / "guest"


def noise(width: int, height: int, seed: int = 7) -> Image.Image:
    generator = random.Random(seed)
    return Image.frombytes("RGB", (width, height), bytes(generator.getrandbits(8) for _ in range(width * height * 3)))


def frame_of(image: Image.Image) -> Frame:
    return Frame.of(image)


def same_pixels(first: Image.Image, second: Image.Image) -> bool:
    return first.size == second.size and ImageChops.difference(first.convert("RGB"), second.convert("RGB")).getbbox() is None


def xvfb_file(path: Path, image: Image.Image, depth: int = 24) -> None:
    """``image`` as Xvfb's ``-fbdir`` file: a big-endian XWD header, its window name, 256 colormap entries, then
    32-bit pixels (B, G, R, unused) least significant byte first, rows padded to 32 bits."""
    width, height = image.size
    name = b"Xvfb test:0.0\0"
    header_size = 100 + len(name)
    fields = [header_size, 7, 2, depth, width, height, 0, 0, 32, 0, 32, 32, width * 4, 4,
              0xFF0000, 0xFF00, 0xFF, 8, 256, 256, width, height, 0, 0, 0]
    pixels = image.tobytes("raw", "BGRX")
    path.write_bytes(struct.pack(">25I", *fields) + name + bytes(256 * 12) + pixels)


def test_a_framebuffer_file_reads_as_the_screen_it_holds(tmp_path):
    screen = noise(64, 48)
    xvfb_file(tmp_path / "Xvfb_screen0", screen)
    assert same_pixels(XwdFramebuffer(tmp_path / "Xvfb_screen0", env="env-0").grab().image(), screen)


def test_a_ppm_screendump_reads_as_the_screen_it_holds(tmp_path):
    screen = noise(31, 17)
    screen.save(tmp_path / "screen.ppm")
    assert same_pixels(read_ppm(tmp_path / "screen.ppm").image(), screen)
    (tmp_path / "text.ppm").write_bytes(b"P3\n1 1\n255\n0 0 0\n")
    with pytest.raises(ValueError, match="not an 8-bit binary PPM"):
        read_ppm(tmp_path / "text.ppm")
    (tmp_path / "short.ppm").write_bytes(b"P6\n31 17\n255\n" + bytes(10))
    with pytest.raises(ValueError, match="too short for 31x17 RGB rows"):
        read_ppm(tmp_path / "short.ppm")


def test_each_read_overwrites_the_kept_frame_so_no_pointer_or_old_screen_stays_in_it(tmp_path):
    first, second = noise(64, 48, seed=1), noise(64, 48, seed=2)
    framebuffer = XwdFramebuffer(tmp_path / "Xvfb_screen0", env="env-0")
    xvfb_file(framebuffer.path, first)
    encode_png(framebuffer.grab(), (10, 10))  # draws the pointer on the kept frame
    xvfb_file(framebuffer.path, second)
    assert same_pixels(framebuffer.grab().image(), second)
    first.save(tmp_path / "first.ppm")
    second.save(tmp_path / "second.ppm")
    kept = read_ppm(tmp_path / "first.ppm")
    encode_png(kept, (20, 5))
    assert read_ppm(tmp_path / "second.ppm") is kept and same_pixels(kept.image(), second)


def test_a_framebuffer_of_another_depth_or_none_is_refused_in_one_sentence(tmp_path):
    xvfb_file(tmp_path / "Xvfb_screen0", noise(8, 8), depth=16)
    with pytest.raises(DesktopUnavailable, match="16-bit screen") as refused:
        XwdFramebuffer(tmp_path / "Xvfb_screen0", env="env-0").grab()
    assert refused.value.env == "env-0" and refused.value.phase == "observe"
    with pytest.raises(DesktopUnavailable, match="cannot read the desktop's framebuffer"):
        XwdFramebuffer(tmp_path / "gone", env="env-0").grab()


@pytest.mark.parametrize("size", [(1, 1), (13, 7), (320, 240)])
def test_the_png_decodes_to_the_pixels_it_was_made_of(size):
    image = noise(*size)
    decoded = Image.open(io.BytesIO(encode_png(frame_of(image))))
    assert decoded.format == "PNG" and decoded.mode == "RGB" and same_pixels(decoded, image)


def test_the_pointer_is_the_arrow_the_guest_draws():
    sys.path.insert(0, str(GUEST_DIR))
    try:
        from osworld_guest import screen
    finally:
        sys.path.remove(str(GUEST_DIR))
    assert POINTER == screen._ARROW


@pytest.mark.parametrize("position", [(10, 5), (0, 0), (35, 30), (39, 39), (-5, -3)])
def test_the_pointer_drawn_on_its_rows_alone_is_the_arrow_drawn_on_the_whole_screen(position):
    screen = noise(40, 40)
    whole = screen.copy()
    ImageDraw.Draw(whole).polygon([(position[0] + dx, position[1] + dy) for dx, dy in POINTER], fill="white",
                                  outline="black")
    drawn = Image.open(io.BytesIO(encode_png(frame_of(screen), position)))
    assert same_pixels(drawn, whole)
    if min(position) >= 0:
        assert drawn.getpixel(position) == (0, 0, 0)  # the tip is on the outline

def test_the_reaper_takes_only_screen_directories_no_container_names_once_old(tmp_path, monkeypatch):
    import os

    from rayenv.providers.screens import make_screen_dir, unnamed_screen_dirs

    monkeypatch.setenv("RAYENV_SCREEN_DIR", str(tmp_path))
    left, named, starting = (make_screen_dir("pool", f"env-{n}") for n in range(3))
    for old in (left, named):
        os.utime(old, (0, 0))
    assert unnamed_screen_dirs({str(named)}, older_than=600) == [left]  # `starting` may be a start under way


def test_the_reaper_takes_vm_work_directories_no_container_names_once_old_or_when_their_pool_goes(tmp_path, monkeypatch):
    import os

    from rayenv.providers.docker import unnamed_work_dirs

    monkeypatch.setenv("RAYENV_VM_WORK_DIR", str(tmp_path))
    left, named, starting, going = (tmp_path / name for name in ("a-a-env-0-x", "a-a-env-1-y", "b-b-env-0-z",
                                                                  "pool-pool-env-0-w"))
    for directory in (left, named, starting, going):
        directory.mkdir()
    for old in (left, named):
        os.utime(old, (0, 0))
    assert sorted(unnamed_work_dirs({str(named)}, older_than=600)) == [left]
    assert sorted(unnamed_work_dirs({str(named)}, older_than=600, owner="pool")) == [left, going]


@pytest.mark.slow
@pytest.mark.docker
def test_a_lite_desktops_screenshot_is_the_guests_pixel_for_pixel():
    from rayenv.desktop_lite.build import build_image
    from rayenv.env.desktop import Desktop
    from rayenv.providers import DesktopSpec, Ownership

    desktop = Desktop(DesktopSpec(provider="lite", lite_image=build_image()), Ownership("screens-test", "lite-screens"))
    try:
        desktop.start()
        framebuffer = desktop.provider.screen_dir
        assert desktop.status()["details"]["screenshots"] == "Xvfb's framebuffer file"
        desktop.step("import subprocess; subprocess.Popen(['xterm', '-geometry', '80x20+200+150'])", pause=0)
        stepped = Image.open(io.BytesIO(desktop.step("pyautogui.moveTo(400, 300)", pause=1.0)["observation"]["screenshot"]))
        trainer = Image.open(io.BytesIO(desktop.observe()["screenshot"]))
        guest = Image.open(io.BytesIO(desktop._client.screenshot()))
        assert trainer.size == (1920, 1080) and same_pixels(trainer, guest)
        assert same_pixels(stepped, guest), "the pointer the action reported is where the guest draws it"
        assert trainer.getpixel((401, 310)) == (255, 255, 255)  # the pointer, drawn where the guest says it is
        assert len(set(trainer.crop((200, 150, 600, 400)).getdata())) > 2  # the xterm's text is on screen
    finally:
        desktop.close()
    assert not framebuffer.exists(), "the framebuffer directory goes with the desktop"
