"""``rayenv desktop``: build the desktop-lite image and try one desktop by hand."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

app = typer.Typer(help="Build and try the desktop-lite desktop.", no_args_is_help=True)
console = Console(stderr=True)


@app.command()
def build(force: bool = typer.Option(False, "--force", help="rebuild even if the image exists")) -> None:
    """Build rayenv/desktop-lite from Debian packages (debootstrap; cached, seconds when unchanged)."""
    from ..desktop_lite.build import build_image

    started = time.perf_counter()
    tag = build_image(force=force, console=console)
    console.print(f"[green]{tag}[/] ready in {time.perf_counter() - started:.1f}s")
    print(tag)


@app.command()
def run(
    provider: str = typer.Option("lite", help="lite (container) or process (host Xvfb)"),
    width: int = typer.Option(1920, help="screen width"),
    height: int = typer.Option(1080, help="screen height"),
    screenshot: Optional[Path] = typer.Option(None, help="save one screenshot here, then stop the desktop"),
) -> None:
    """Start one desktop and print its guest API URL; Ctrl-C (or --screenshot) stops and removes it."""
    from ..guest_client import GuestClient
    from ..providers import DesktopSpec, Ownership, make_provider

    if provider == "lite":
        from ..desktop_lite.build import build_image

        build_image(console=console)
    desktop = make_provider(DesktopSpec(provider=provider, screen_width=width, screen_height=height),
                            Ownership(owner="cli", env_id=f"try-{int(time.time())}"))
    try:
        with console.status(f"starting a {provider} desktop ..."):
            endpoint = desktop.start()
        print(endpoint.url)
        console.print(f"guest API at {endpoint.url} ({desktop.describe()})")
        if screenshot is not None:
            screenshot.write_bytes(GuestClient(endpoint.url, env="cli").screenshot())
            console.print(f"saved {screenshot}")
            return
        console.print("Ctrl-C to stop")
        while desktop.is_alive():
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        desktop.stop()
