"""QEMU's monitor of one VM desktop, over the QMP unix socket its container keeps in the desktop's work dir.

What the ``docker`` provider needs from a running VM: save and load a snapshot of RAM + disk (the
sub-second reset), list the snapshots an overlay holds, and quit cleanly. Each call opens its own
connection (QEMU's QMP socket serves one client at a time, and a connection kept across a
``loadvm`` would be the only long-lived state here) and is bounded by a timeout; failures raise
:class:`~rayenv.errors.SnapshotError` naming the desktop and the command.

``savevm``/``loadvm`` are the human monitor's commands, sent through QMP's
``human-monitor-command``: QEMU 7.2's QMP job equivalents (``snapshot-save``/``snapshot-load``)
need every block node spelled out, and HMP reports failure as text, which is checked here.

Templates (copy-on-write RAM, :mod:`rayenv.providers.golden`) move device state only: a migration
with the ``x-ignore-shared`` capability skips RAM that lives in a shared file, so saving the golden
VM's devices and loading them into a clone that maps the same file privately are each a
sub-MiB stream (``exec:cat``: QEMU 7.2 has no ``file:`` URI), run on one connection while polled.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from pathlib import Path
from typing import Any, Awaitable, Callable

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
        return await self._session(lambda client: client.execute(command, arguments))

    async def _session(self, work: Callable[[QMPClient], Awaitable[Any]]) -> Any:
        client = QMPClient(self.env)
        await client.connect(str(self.socket_path))
        try:
            return await work(client)
        finally:
            await client.disconnect()

    def _run(self, what: str, work: Callable[[QMPClient], Awaitable[Any]], timeout: float) -> Any:
        """``work`` on one connection, bounded by ``timeout``; errors typed as :meth:`execute`'s."""
        try:
            return asyncio.run(asyncio.wait_for(self._session(work), timeout))
        except asyncio.TimeoutError:
            raise SnapshotError(f"QEMU did not finish {what} within {timeout:.0f}s", env=self.env, phase="snapshot",
                                hint="the VM is stuck or gone; the desktop is restarted") from None
        except (QMPError, OSError, EOFError) as exc:
            raise SnapshotError(f"QEMU's monitor refused {what}: {exc}", env=self.env, phase="snapshot",
                                hint=f"is QEMU running? its monitor socket is {self.socket_path}") from None

    def save_devices(self, path: str, *, timeout: float | None = None) -> None:
        """Write the stopped VM's state except RAM in a shared file to ``path`` (QEMU's view): the device state
        of a template's golden VM. QEMU says the migration completed before ``cat`` has drained the pipe:
        ``path`` appears (renamed) only once it has."""
        self.send(f"exec:cat > {path}.part && mv {path}.part {path}", timeout=timeout)

    def send(self, uri: str, *, timeout: float | None = None) -> None:
        """Migrate the stopped VM's state except RAM in a shared file to ``uri``: devices and all RAM of a clone
        (its mapping is private), which a fork's receiver filters (:mod:`rayenv.providers.written`)."""
        async def work(client: QMPClient) -> None:
            await client.execute("migrate-set-capabilities", IGNORE_SHARED)
            await client.execute("migrate-set-parameters", UNTHROTTLED)
            await client.execute("migrate", {"uri": uri})
            await _migrated(client, self.env)

        self._run("saving the VM's state", work, timeout or self.timeout)

    def load_devices(self, path: str, *, timeout: float | None = None) -> None:
        """Load ``path`` into a VM started with ``-incoming defer`` over a copy of the template's RAM, and run it."""
        async def work(client: QMPClient) -> None:
            await client.execute("migrate-set-capabilities", IGNORE_SHARED)
            await client.execute("migrate-incoming", {"uri": f"exec:cat {path}"})
            await _migrated(client, self.env)
            await client.execute("cont")  # the template was saved stopped, and a migration keeps the run state

        self._run("loading the device state", work, timeout or self.timeout)

    def listening(self) -> bool:
        """A QEMU listens on the socket (a bare connect: it does not take the one QMP session)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(self.socket_path))
            except OSError:
                return False
            return True

    def pid(self) -> int:
        """QEMU's process id as this host sees it (the kernel's credentials of the socket's other end)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(self.socket_path))
                credentials = probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            except OSError as exc:
                raise SnapshotError(f"QEMU's monitor does not answer: {exc}", env=self.env, phase="snapshot",
                                    hint=f"is QEMU running? its monitor socket is {self.socket_path}") from None
        return struct.unpack("3i", credentials)[0]

    def human(self, command_line: str, *, timeout: float | None = None) -> str:
        """A human-monitor command; its output is empty on success, an error message otherwise."""
        output = str(self.execute("human-monitor-command", {"command-line": command_line}, timeout=timeout)).strip()
        self._check_human(command_line, output)
        return output

    def _check_human(self, command_line: str, output: str, said: str = "") -> None:
        """HMP reports failure as text: anything but nothing (or a line ending in ``said``) is a refusal."""
        if output and not (said and output.endswith(said)):
            raise SnapshotError(f"QEMU refused `{command_line}`: {output}", env=self.env, phase="snapshot",
                                hint="the desktop falls back to a restart")

    async def _human(self, client: QMPClient, command_line: str, said: str = "") -> None:
        output = str(await client.execute("human-monitor-command", {"command-line": command_line})).strip()
        self._check_human(command_line, output, said)

    def let_go(self, forwards: list[str], *, timeout: float | None = None) -> None:
        """Pause the VM and drop its guest port forwards (``hostfwd`` rules as QEMU's ``-netdev user`` takes
        them, on netdev ``net0``), in one session: the first half of swapping a warm spare in."""
        async def work(client: QMPClient) -> None:
            await client.execute("stop")
            for rule in forwards:
                await self._human(client, f"hostfwd_remove net0 {rule.split('-')[0]}", said="removed")

        self._run("letting go of the guest's ports", work, timeout or self.timeout)

    def take_over(self, forwards: list[str], *, timeout: float | None = None) -> None:
        """Add the guest port forwards and run the (paused, loaded) VM: the second half of a swap."""
        async def work(client: QMPClient) -> None:
            for rule in forwards:
                await self._human(client, f"hostfwd_add net0 {rule}")
            await client.execute("cont")

        self._run("taking over the guest's ports", work, timeout or self.timeout)

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


IGNORE_SHARED = {"capabilities": [{"capability": "x-ignore-shared", "state": True}]}
#: QEMU 7.2 throttles a migration to 32 MiB/s; a stopped VM saved to a file has no link to spare.
UNTHROTTLED = {"max-bandwidth": 1 << 40}


async def _migrated(client: QMPClient, env: str, interval: float = 0.005) -> None:
    """Poll ``query-migrate`` until the migration completed; raise if it failed."""
    while True:
        state = await client.execute("query-migrate")
        status = state.get("status")
        if status == "completed":
            return
        if status in ("failed", "cancelled"):
            raise SnapshotError(f"QEMU's migration {status}: {state.get('error-desc', 'no reason given')}", env=env,
                                phase="snapshot", hint="the golden state is discarded and made anew")
        await asyncio.sleep(interval)
