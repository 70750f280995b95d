"""An env host joined to a test head, as the multi-host tests see it: its namespace, the home its supervisor keeps
its state in, its Ray node."""

from __future__ import annotations

import json
import os
from pathlib import Path

import psutil


class Host:
    """One env host: where it runs (``ns``), its root's home and the temp dir its Ray node writes to."""

    def __init__(self, ns: str, root_home: Path, temp_dir: str) -> None:
        self.ns, self.root_home, self.temp_dir = ns, root_home, temp_dir

    @property
    def dir(self) -> Path:
        return self.root_home / ".cache" / "rayenv" / "worker"

    def env(self) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        return {**keep, "HOME": str(self.root_home), "RAY_USAGE_STATS_ENABLED": "0"}

    def status(self) -> dict:
        return json.loads((self.dir / "status.json").read_text())

    @property
    def host_id(self) -> str:
        return (self.root_home / ".cache" / "rayenv" / "host_id").read_text().strip()

    def raylet(self) -> psutil.Process:
        needle = f"{self.temp_dir}/session"
        return next(p for p in psutil.process_iter(["name", "cmdline"])
                    if p.info["name"] == "raylet" and any(needle in a for a in p.info["cmdline"] or ()))

    def logs(self) -> str:
        return "\n".join(f"--- {self.ns} {p.name}\n{p.read_text()[-2000:]}" for p in sorted(self.dir.glob("*.log")))
