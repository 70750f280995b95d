"""Which PNG encoder and level for screenshots taken outside the guest?

One desktop-lite desktop at 1920x1080 with a terminal listing a folder, a text editor and a calculator
open: its screen is read from Xvfb's framebuffer file (as the trainer's observation reads it), then
encoded ``--rounds`` times by each candidate: Pillow's encoder at level 1 (what the guest's
``/screenshot`` uses: zlib with adaptive row filters), zlib level 1 on unfiltered rows, and ISA-L's
deflate (python ``isal``) at levels 0-3 on unfiltered rows. Reports p50 milliseconds and KiB of each,
the read of the framebuffer file, and the host's load average. Results: ``bench/results/screens.{md,json}``.

    .venv/bin/python bench/screens.py [--rounds 30]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import time
import zlib
from pathlib import Path
from typing import Any, Callable

from isal import isal_zlib

from rayenv.desktop_lite.build import build_image
from rayenv.env.desktop import Desktop
from rayenv.providers import DesktopSpec, Ownership
from rayenv.providers.screens import COMPRESS_LEVEL, Frame, encode_png
from rayenv.waiting import wait_until

RESULTS = Path(__file__).resolve().parent / "results"
APPS = ("import subprocess; subprocess.Popen(['xterm', '-geometry', '100x40+40+40', '-e', 'ls -la /usr/bin; sleep 600'])",
        "import subprocess; subprocess.Popen(['mousepad', '/etc/services'])",
        "import subprocess; subprocess.Popen(['galculator'])")


def timed(call: Callable[[], Any], rounds: int) -> tuple[float, Any]:
    """p50 milliseconds of ``rounds`` calls, and the last result."""
    seconds, result = [], None
    for _ in range(rounds):
        begun = time.perf_counter()
        result = call()
        seconds.append(time.perf_counter() - begun)
    return 1000 * statistics.median(seconds), result


def with_level(deflate: Callable[[bytes, int], bytes], level: int) -> Callable[[Frame], bytes]:
    """``encode_png`` with another deflate or level (the same unfiltered rows and chunks)."""
    return lambda frame: encode_png(frame, deflate=deflate, level=level)


def pillow_level_1(frame: Frame) -> bytes:
    buffer = io.BytesIO()
    frame.image().save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    desktop = Desktop(DesktopSpec(provider="lite", lite_image=build_image()), Ownership("bench", "bench-screens"))
    results: dict[str, Any] = {"load_average_before": os.getloadavg()[0]}
    try:
        desktop.start()
        for app in APPS:
            desktop.step(app, pause=0)
        display = desktop.provider.display()
        assert display is not None, "the lite desktop's framebuffer file is missing"
        sizes: list[int] = []

        def painted() -> bool:
            """The apps' windows are up and the screen stopped changing (two equal PNG sizes in a row)."""
            sizes.append(len(encode_png(display.grab())))
            return len(sizes) > 1 and sizes[-1] == sizes[-2] and sizes[-1] > 40 * 1024

        wait_until(painted, timeout=60, interval=1.0, what="the three apps painted", explain=lambda: f"PNG sizes {sizes}")
        results["read_framebuffer_ms"], frame = timed(display.grab, args.rounds)
        candidates = {"Pillow level 1 (the guest's)": pillow_level_1,
                      "zlib level 1": with_level(zlib.compress, 1),
                      **{f"ISA-L level {level}": with_level(isal_zlib.compress, level) for level in range(4)}}
        results["encoders"] = {}
        for name, encode in candidates.items():
            milliseconds, encoded = timed(lambda: encode(frame), args.rounds)
            results["encoders"][name] = {"p50_ms": milliseconds, "kib": len(encoded) / 1024}
    finally:
        desktop.close()
    results["load_average_after"] = os.getloadavg()[0]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "screens.json").write_text(json.dumps(results, indent=2))
    lines = ["# PNG encoding of a 1920x1080 desktop screenshot", "",
             f"A desktop-lite screen with a terminal, a text editor and a calculator open; {args.rounds} rounds each. "
             f"Host load average (2 cores): {results['load_average_before']:.1f} before, "
             f"{results['load_average_after']:.1f} after. Reading Xvfb's framebuffer file into RGB rows: "
             f"**{results['read_framebuffer_ms']:.1f} ms** p50.", "",
             "| encoder | p50 ms | KiB |", "| --- | ---: | ---: |"]
    for name, r in results["encoders"].items():
        lines.append(f"| {name} | {r['p50_ms']:.1f} | {r['kib']:.0f} |")
    lines += ["", f"Chosen: ISA-L level {COMPRESS_LEVEL} (`rayenv.providers.screens.COMPRESS_LEVEL`)."]
    (RESULTS / "screens.md").write_text("\n".join(lines) + "\n")
    print((RESULTS / "screens.md").read_text())


if __name__ == "__main__":
    main()
