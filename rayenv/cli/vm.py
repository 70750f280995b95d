"""``rayenv vm``: the VM desktops of the ``docker`` provider (OSWorld's qcow2, our own VM image)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from ..errors import RayEnvError

app = typer.Typer(help="Get and build the VM images the docker provider boots.", no_args_is_help=True)
console = Console(stderr=True)


@app.command()
def fetch(
    url: Optional[str] = typer.Option(None, help="archive or qcow2 to download [default: OSWorld's Ubuntu.qcow2.zip, "
                                                 "or desktop.vm_url of --config]"),
    sha256: Optional[str] = typer.Option(None, help="expected SHA-256 of the download [default: desktop.vm_sha256]"),
    dest: Optional[Path] = typer.Option(None, "--dir", help="where to keep it [default: $RAYENV_VM_DIR or "
                                                            "~/.cache/rayenv/vm, where the docker provider looks]"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", exists=True, help="pool YAML to read vm_url/vm_sha256 from"),
    as_json: bool = typer.Option(False, "--json", help="print {'path': ..., 'bytes': ...} on stdout"),
) -> None:
    """Download the OSWorld qcow2 once per env host (resumable, locked, checked), before any pool needs it."""
    from ..pool.config import PoolConfig
    from ..providers.vm_image import OSWORLD_UBUNTU_URL, fetch_vm_image

    desktop = PoolConfig.load(config).desktop
    try:
        path = fetch_vm_image(url or desktop.vm_url or OSWORLD_UBUNTU_URL, dest, sha256 or desktop.vm_sha256,
                              show_progress=not as_json)
    except RayEnvError as exc:
        console.print(str(exc), style="red", markup=False, soft_wrap=True)
        raise typer.Exit(2) from None
    if as_json:
        print(json.dumps({"path": str(path), "bytes": path.stat().st_size}))
    else:
        console.print(f"[green]{path}[/] ({path.stat().st_size / 2**30:.1f} GiB): the docker provider boots it "
                      "when desktop.vm_path is unset")
        print(path)


@app.command()
def build(
    force: bool = typer.Option(False, "--force", help="rebuild every part even if it exists"),
    as_json: bool = typer.Option(False, "--json", help="print {'image', 'qcow2', 'kernel', 'profile', 'seconds'} on stdout"),
    profile: str = typer.Option("small", help="small (fast tests) or osworld (OSWorld's user, session and apps)"),
) -> None:
    """Build our VM desktop from Debian packages: a qcow2 guest and the rayenv/osworld-vm image that boots it.

    Cached by content (seconds when nothing changed). Use the two together as desktop.docker_image
    and desktop.vm_path of a pool with provider: docker.
    """
    from ..desktop_vm.build import build_vm_desktop

    started = time.perf_counter()
    try:
        desktop = build_vm_desktop(force=force, console=console, profile=profile)
    except RayEnvError as exc:
        console.print(str(exc), style="red", markup=False, soft_wrap=True)
        raise typer.Exit(2) from None
    seconds = round(time.perf_counter() - started, 1)
    if as_json:
        print(json.dumps({**desktop.as_dict(), "seconds": seconds}))
        return
    console.print(f"[green]{desktop.image}[/] boots [green]{desktop.qcow2}[/] (guest kernel {desktop.kernel}), "
                  f"ready in {seconds}s")
    console.print(f"pool config: desktop: {{provider: docker, docker_image: {desktop.image}, vm_path: {desktop.qcow2}}}")


@app.command()
def run(
    memory: str = typer.Option("2G", help="the VM's RAM"),
    cpus: int = typer.Option(2, help="the VM's vCPUs"),
    screenshot: Optional[Path] = typer.Option(None, help="save one screenshot here, then stop the VM"),
) -> None:
    """Boot one VM desktop (built if needed) and print its guest API URL; Ctrl-C (or --screenshot) removes it."""
    from ..desktop_vm.build import build_vm_desktop
    from ..providers import DesktopSpec
    from .desktop import run_one

    built = build_vm_desktop(console=console)
    spec = DesktopSpec(provider="docker", docker_image=built.image, vm_path=str(built.qcow2), docker_memory=memory,
                       docker_cpus=cpus)
    run_one(spec, f"vm-{int(time.time())}", screenshot, "booting the VM (a minute or more without KVM) ...")
