"""``rayenv vm``: the VM desktops of the ``docker`` provider (OSWorld's qcow2, our own VM image)."""

from __future__ import annotations

import json
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
    from ..config import PoolConfig
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
