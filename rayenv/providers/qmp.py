"""QEMU's monitor of one VM desktop, over the QMP unix socket its container keeps in the desktop's work dir.

What the ``docker`` provider needs from a running VM: save and load a snapshot of RAM + disk (the
sub-second reset), list the snapshots an overlay holds, and quit cleanly. Each call opens its own
connection (QEMU's QMP socket serves one client at a time, and a connection kept across a
``loadvm`` would be the only long-lived state here) and is bounded by a timeout; failures raise
:class:`~rayenv.errors.SnapshotError` naming the desktop and the command.

``savevm``/``loadvm`` are the human monitor's commands, sent through QMP's
``human-monitor-command``: QEMU 7.2's QMP job equivalents (``snapshot-save``/``snapshot-load``)
need every block node spelled out, and HMP reports failure as text, which is checked here.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from qemu.qmp import QMPClient, QMPError

from ..errors import SnapshotError


class Monitor:
    """The QMP monitor of one VM; ``env`` names the desktop in every error."""

    def __init__(self, socket_path: Path, *, env: str, timeout: float = 30.0) -> None:
        self.socket_path = socket_path
        self.env = env
        self.timeout = timeout

    def execute(self, command: str, arguments: dict[str, Any] | None = None, *, timeout: float | None = None) -> Any:
        """One QMP command's ``return`` value."""
        limit = timeout or self.timeout
        try:
            return asyncio.run(asyncio.wait_for(self._execute(command, arguments), limit))
        except asyncio.TimeoutError:
            raise SnapshotError(f"QEMU's monitor did not answer {command} within {limit:.0f}s", env=self.env,
                                phase="snapshot", hint="the VM is stuck or gone; the desktop is restarted") from None
        except (QMPError, OSError, EOFError) as exc:  # EOFError: QEMU closed the connection mid-command
            raise SnapshotError(f"QEMU's monitor refused {command}: {exc}", env=self.env, phase="snapshot",
                                hint=f"is QEMU running? its monitor socket is {self.socket_path}") from None

    async def _execute(self, command: str, arguments: dict[str, Any] | None) -> Any:
        client = QMPClient(self.env)
        await client.connect(str(self.socket_path))
        try:
            return await client.execute(command, arguments)
        finally:
            await client.disconnect()

    def human(self, command_line: str, *, timeout: float | None = None) -> str:
        """A human-monitor command; its output is empty on success, an error message otherwise."""
        output = str(self.execute("human-monitor-command", {"command-line": command_line}, timeout=timeout)).strip()
        if output:
            raise SnapshotError(f"QEMU refused `{command_line}`: {output}", env=self.env, phase="snapshot",
                                hint="the desktop falls back to a restart")
        return output

    def save_snapshot(self, name: str, *, timeout: float | None = None) -> None:
        """Save RAM, devices and disk as ``name`` inside the VM's qcow2 overlay (the VM keeps running)."""
        self.human(f"savevm {name}", timeout=timeout)

    def load_snapshot(self, name: str, *, timeout: float | None = None) -> None:
        """Put the VM back to ``name``: RAM, devices and disk as they were when it was saved."""
        self.human(f"loadvm {name}", timeout=timeout)

    def snapshots(self) -> list[str]:
        """Names of the snapshots in the VM's disk (the first block device with a medium)."""
        for device in self.execute("query-block"):
            image = device.get("inserted", {}).get("image")
            if image is not None:
                return [snapshot["name"] for snapshot in image.get("snapshots", [])]
        return []

    def running(self) -> bool:
        return bool(self.execute("query-status", timeout=5).get("running"))

    def quit(self) -> None:
        """Ask QEMU to exit (its container then ends); a monitor gone before it answers means it did."""
        try:
            self.execute("quit", timeout=10)
        except SnapshotError:
            if self.socket_path.exists():
                raise
