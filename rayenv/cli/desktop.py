"""``rayenv desktop``: build the desktop-lite image and try one desktop by hand."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.console import Console

from ..errors import RayEnvError

if TYPE_CHECKING:
    from ..providers import DesktopSpec

app = typer.Typer(help="Build and try the desktop-lite desktop.", no_args_is_help=True)
console = Console(stderr=True)


@app.command()
def build(
    force: bool = typer.Option(False, "--force", help="rebuild even if the image exists"),
    profile: str = typer.Option("small", help="small (fast tests) or osworld (OSWorld's user, session and apps)"),
) -> None:
    """Build the desktop-lite image of a profile from Debian packages (cached, seconds when unchanged)."""
    from ..desktop_lite.build import build_image

    started = time.perf_counter()
    try:
        tag = build_image(force=force, console=console, profile=profile)
    except RayEnvError as exc:
        console.print(str(exc), style="red", markup=False, soft_wrap=True)
        raise typer.Exit(2) from None
    console.print(f"[green]{tag}[/] ready in {time.perf_counter() - started:.1f}s")
    print(tag)


@app.command()
def run(
    provider: str = typer.Option("lite", help="lite (container) or process (host Xvfb)"),
    width: int = typer.Option(1920, help="screen width"),
    height: int = typer.Option(1080, help="screen height"),
    screenshot: Optional[Path] = typer.Option(None, help="save one screenshot here, then stop the desktop"),
    profile: str = typer.Option("small", help="lite: the image profile, small or osworld"),
) -> None:
    """Start one desktop and print its guest API URL; Ctrl-C (or --screenshot) stops and removes it."""
    from ..providers import DesktopSpec

    if provider == "lite":
        from ..desktop_lite.build import build_image

        build_image(console=console, profile=profile)
    run_one(DesktopSpec(provider=provider, screen_width=width, screen_height=height, profile=profile),
            f"try-{int(time.time())}",
            screenshot, f"starting a {provider} desktop ...")


def run_one(spec: "DesktopSpec", env_id: str, screenshot: Optional[Path], waiting: str) -> None:
    """Start one desktop of ``spec``, print its guest URL, then save a screenshot or wait for Ctrl-C; always remove it."""
    from ..env.guest_client import GuestClient
    from ..providers import Ownership, make_provider

    desktop = make_provider(spec, Ownership(owner="cli", env_id=env_id))
    try:
        started = time.perf_counter()
        with console.status(waiting):
            endpoint = desktop.start()
        print(endpoint.url)
        console.print(f"guest API at {endpoint.url} after {time.perf_counter() - started:.1f}s ({desktop.describe()})")
        if screenshot is not None:
            screenshot.write_bytes(GuestClient(endpoint.url, env=env_id).screenshot())
            console.print(f"saved {screenshot}")
            return
        console.print("Ctrl-C to stop")
        while desktop.is_alive():
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    except RayEnvError as exc:
        console.print(str(exc), style="red", markup=False, soft_wrap=True)
        raise typer.Exit(2) from None
    finally:
        desktop.stop()
