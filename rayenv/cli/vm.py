"""``rayenv vm``: the VM desktops of the ``docker`` provider (OSWorld's qcow2, our own VM image)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from .common import RayenvTyper, console, either, flag, hidden_alias, json_option, print_json

app = RayenvTyper(help="Get and build the VM images the docker provider boots.")


@app.command()
def fetch(
    url: Optional[str] = typer.Option(None, help="archive or qcow2 to download (default: OSWorld's Ubuntu.qcow2.zip, "
                                                 "or desktop.vm_url of --pool-config)"),
    sha256: Optional[str] = typer.Option(None, help="expected SHA-256 of the download (default: desktop.vm_sha256)"),
    dest: Optional[Path] = typer.Option(None, "--dir", help="where to keep it (default: $RAYENV_VM_DIR or "
                                                            "~/.cache/rayenv/vm, where the docker provider looks)"),
    pool_config: Optional[Path] = typer.Option(None, "--pool-config", exists=True,
                                               help="pool YAML to read vm_url/vm_sha256 from"),
    as_json: bool = json_option("{'path': ..., 'bytes': ...}"),
    config: Optional[Path] = hidden_alias("--config", exists=True),
    short_config: Optional[Path] = hidden_alias("-c", exists=True),
) -> None:
    """Download the OSWorld qcow2 once per env host (resumable, locked, checked), before any pool needs it."""
    from ..pool.config import PoolConfig
    from ..providers.vm_image import OSWORLD_UBUNTU_URL, fetch_vm_image

    desktop = PoolConfig.load(either(pool_config, either(config, short_config, "--config", "-c"),
                                     "--pool-config", "--config")).desktop
    path = fetch_vm_image(url or desktop.vm_url or OSWORLD_UBUNTU_URL, dest, sha256 or desktop.vm_sha256,
                          show_progress=not as_json)
    if as_json:
        print_json({"path": str(path), "bytes": path.stat().st_size}, indent=None)
    else:
        console.print(f"[green]{path}[/] ({path.stat().st_size / 2**30:.1f} GiB): the docker provider boots it "
                      "when desktop.vm_path is unset")
        print(path)


@app.command()
def build(
    force: bool = flag("--force", "rebuild every part even if it exists"),
    as_json: bool = json_option("{'image', 'qcow2', 'kernel', 'profile', 'seconds'}"),
    profile: str = typer.Option("small", help="small (fast tests) or osworld (OSWorld's user, session and apps)"),
) -> None:
    """Build our VM desktop from Debian packages: a qcow2 guest and the rayenv/osworld-vm image that boots it.

    Cached by content (seconds when nothing changed). Use the two together as desktop.docker_image
    and desktop.vm_path of a pool with provider: docker.
    """
    from ..desktop_vm.build import build_vm_desktop

    started = time.perf_counter()
    desktop = build_vm_desktop(force=force, console=console, profile=profile)
    seconds = round(time.perf_counter() - started, 1)
    if as_json:
        print_json({**desktop.as_dict(), "seconds": seconds}, indent=None)
        return
    console.print(f"[green]{desktop.image}[/] boots [green]{desktop.qcow2}[/] (guest kernel {desktop.kernel}), "
                  f"ready in {seconds}s")
    console.print(f"pool config: desktop: {{provider: docker, docker_image: {desktop.image}}} (it boots the qcow2 "
                  "built with it)", markup=False)


@app.command()
def standin(
    force: bool = flag("--force", "rebuild the disk even if it exists"),
    as_json: bool = json_option("{'qcow2', 'seconds'}"),
) -> None:
    """Build the stand-in for OSWorld's Ubuntu image: a whole disk (GRUB, systemd, user 'user', the guest server
    as a service) that rayenv/osworld-vm boots from its own boot loader, as it boots OSWorld's. Cached by content."""
    from ..desktop_vm.standin import build_standin

    started = time.perf_counter()
    qcow2 = build_standin(force=force, console=console)
    seconds = round(time.perf_counter() - started, 1)
    if as_json:
        print_json({"qcow2": str(qcow2), "seconds": seconds})
        return
    console.print(f"[green]{qcow2}[/] ready in {seconds}s; use it as desktop.vm_path with the image of `rayenv vm build`")


@app.command()
def run(
    memory: str = typer.Option("2G", help="the VM's RAM"),
    cpus: int = typer.Option(2, help="the VM's vCPUs"),
    screenshot: Optional[Path] = typer.Option(None, help="save one screenshot here, then stop the VM"),
    as_json: bool = json_option("{'url': ..., 'seconds': ..., 'screenshot': ...}"),
) -> None:
    """Boot one VM desktop (built if needed) and print its guest API URL; Ctrl-C (or --screenshot) removes it."""
    from ..desktop_vm.build import build_vm_desktop
    from ..providers import DesktopSpec
    from .desktop import run_one

    built = build_vm_desktop(console=console)
    spec = DesktopSpec(provider="docker", docker_image=built.image, vm_path=str(built.qcow2), docker_memory=memory,
                       docker_cpus=cpus)
    run_one(spec, f"vm-{int(time.time())}", screenshot, "booting the VM (a minute or more without KVM) ...", as_json)
