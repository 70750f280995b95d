"""``rayenv desktop``: build the desktop-lite image and try one desktop by hand."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from .common import RayenvTyper, console, flag, json_option, print_json

if TYPE_CHECKING:
    from ..providers import DesktopSpec

app = RayenvTyper(help="Build and try the desktop-lite desktop.")


@app.command()
def build(
    force: bool = flag("--force", "rebuild even if the image exists"),
    profile: str = typer.Option("small", help="small (fast tests) or osworld (OSWorld's user, session and apps)"),
    as_json: bool = json_option("{'image': ..., 'seconds': ...}"),
) -> None:
    """Build the desktop-lite image of a profile from Debian packages (cached, seconds when unchanged)."""
    from ..desktop_lite.build import build_image

    started = time.perf_counter()
    tag = build_image(force=force, console=console, profile=profile)
    seconds = round(time.perf_counter() - started, 1)
    if as_json:
        print_json({"image": tag, "seconds": seconds})
        return
    console.print(f"[green]{tag}[/] ready in {seconds}s")
    print(tag)


@app.command()
def run(
    provider: str = typer.Option("lite", help="lite (container) or process (host Xvfb)"),
    width: int = typer.Option(1920, min=320, max=7680, help="screen width"),
    height: int = typer.Option(1080, min=240, max=4320, help="screen height"),
    screenshot: Optional[Path] = typer.Option(None, help="save one screenshot here, then stop the desktop"),
    as_json: bool = json_option("{'url': ..., 'seconds': ..., 'screenshot': ...}"),
    profile: str = typer.Option("small", help="lite: the image profile, small or osworld"),
) -> None:
    """Start one desktop and print its guest API URL; Ctrl-C (or --screenshot) stops and removes it."""
    from ..providers import DesktopSpec

    spec = DesktopSpec(provider=provider, screen_width=width, screen_height=height, profile=profile)  # refuses a bad flag first
    if provider == "lite":
        from ..desktop_lite.build import build_image

        build_image(console=console, profile=profile)
    run_one(spec, f"try-{int(time.time())}", screenshot, f"starting a {provider} desktop ...", as_json)


def run_one(spec: "DesktopSpec", env_name: str, screenshot: Optional[Path], waiting: str, as_json: bool) -> None:
    """Start one desktop of ``spec``, print its guest URL, then save a screenshot or wait for Ctrl-C; always remove it."""
    from ..env.guest_client import GuestClient
    from ..providers import Ownership, make_provider

    desktop = make_provider(spec, Ownership(owner="cli", env_name=env_name))
    try:
        started = time.perf_counter()
        with console.status(waiting):
            endpoint = desktop.start()
        seconds = round(time.perf_counter() - started, 1)
        console.print(f"guest API at {endpoint.url} after {seconds}s ({desktop.describe()})")
        if screenshot is not None:
            screenshot.write_bytes(GuestClient(endpoint.url, env=env_name).screenshot())
            console.print(f"saved {screenshot}")
        if as_json:
            print_json({"url": endpoint.url, "seconds": seconds, "screenshot": screenshot and str(screenshot)})
        else:
            print(endpoint.url)
        if screenshot is not None:
            return
        console.print("Ctrl-C to stop")
        while desktop.is_alive():
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        desktop.stop()
