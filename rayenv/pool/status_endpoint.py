"""A pool's status over HTTP on the head's loopback: what ``rayenv status`` reads without starting a Ray driver.

A command that talks to Ray pays for a fresh Python importing Ray and ``ray.init`` (3.6 s at 1,024 slots
on the bench machine, ``bench/results/scale.md``), though the status itself takes the manager 7 ms.
So each pool manager also answers ``GET /status`` (``?slots=1``: one entry per slot too) with the JSON
of :meth:`PoolStatus.to_dict <rayenv.pool.status.PoolStatus.to_dict>` and the address of its cluster's
GCS, on ``127.0.0.1`` only (secure by default: the summary names lessees and errors, and nothing off
the head needs it; the sidecar's ``/health`` is the remote view).

Ports: a block of :data:`STATUS_PORTS` from the head's port plan (``head.pool_status``, 6386 by
default; ``rayenv head start`` passes it to the head's Ray as ``$RAYENV_POOL_STATUS_PORT``). Each manager
on the head takes the first free port of the block, so several pools (and several clusters on one
machine) each get one; a reader asks every port of the block and keeps the answers of its own cluster.
A manager that finds the block full serves no endpoint (it says so in its log); ``rayenv status`` then
falls back to asking Ray, as it does when no endpoint of its cluster answers.

No Ray import here: the CLI reads the endpoint with nothing but the standard library.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

from .status import PoolStatus

logger = logging.getLogger("rayenv.pool.status_endpoint")

#: The environment variable that moves the block (the head's Ray passes it to the managers it runs).
PORT_ENV = "RAYENV_POOL_STATUS_PORT"
#: The block's first port by default (between the head's Ray ports and the first env host's, see the port plan).
DEFAULT_PORT = 6386
#: Ports in the block: pools with an endpoint at once on one head (more pools fall back to the Ray path).
STATUS_PORTS = 4
#: Longest request line and headers a client may send (a status request is one short line).
MAX_REQUEST = 8192


def first_port() -> int:
    """The block's first port: ``$RAYENV_POOL_STATUS_PORT`` if set, else :data:`DEFAULT_PORT`."""
    return int(os.environ.get(PORT_ENV) or DEFAULT_PORT)


def status_ports(first: int | None = None) -> range:
    first = first_port() if first is None else first
    return range(first, first + STATUS_PORTS)


def free_status_block(attempts: int = 50) -> int:
    """The first port of :data:`STATUS_PORTS` consecutive loopback ports nothing listens on: a block of its own
    for a cluster that runs beside others on one machine (the tests, the scale bench), set as
    ``$RAYENV_POOL_STATUS_PORT`` before its Ray starts."""
    for _ in range(attempts):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first = probe.getsockname()[1]
        if first + STATUS_PORTS <= 65536 and all(_free(port) for port in status_ports(first)):
            return first
    raise OSError(f"no {STATUS_PORTS} consecutive free ports on 127.0.0.1")


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class StatusEndpoint:
    """Serves ``status(detail)`` of one pool (its manager's) on the manager's own event loop."""

    def __init__(self, status: Callable[[bool], PoolStatus], cluster: str) -> None:
        self._status, self._cluster = status, cluster
        self._server: asyncio.AbstractServer | None = None
        self.port: int | None = None

    async def start(self, ports: range | None = None, host: str = "127.0.0.1") -> int | None:
        """Listen on the first free port of ``ports`` (default: the block); the port, or None if all are taken."""
        block = status_ports() if ports is None else ports
        for port in block:
            try:
                self._server = await asyncio.start_server(self._answer, host, port, reuse_address=True)
            except OSError:
                continue
            self.port = port
            return port
        logger.warning("no free status port in %d..%d: `rayenv status` asks Ray for this pool", block[0], block[-1])
        return None

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            method, target, *_ = head[:MAX_REQUEST].decode("latin-1").split(" ", 2)
            path, _, query = target.partition("?")
            if method != "GET" or path != "/status":
                writer.write(_response(404, {"error": "only GET /status (?slots=1 for every slot)"}))
            else:
                detail = "slots=1" in query.split("&")
                writer.write(_response(200, {"cluster": self._cluster, "pool": self._status(detail).to_dict()}))
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ValueError,
                ConnectionError):
            pass  # a client that hung up or sent garbage gets nothing
        finally:
            with contextlib.suppress(Exception):
                writer.close()


def _response(code: int, body: dict[str, Any]) -> bytes:
    payload = json.dumps(body).encode()
    reason = {200: "OK", 404: "Not Found"}[code]
    return (f"HTTP/1.0 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
            f"Connection: close\r\n\r\n").encode() + payload


def read_statuses(cluster: str, detail: bool = False, ports: range | None = None,
                  timeout: float = 2.0) -> list[PoolStatus]:
    """Every pool of ``cluster`` (its GCS address) whose manager serves an endpoint on this machine's block."""
    found: list[PoolStatus] = []
    for port in status_ports() if ports is None else ports:
        answer = _get(port, "/status?slots=1" if detail else "/status", timeout)
        if answer is not None and same_cluster(cluster, str(answer.get("cluster", ""))):
            found.append(PoolStatus.from_dict(answer["pool"]))
    return found


def same_cluster(asked: str, served: str) -> bool:
    """Whether the GCS address a reader was given and the one an endpoint serves name one cluster. The endpoint
    is on this machine, so its GCS is too: an address of this machine with the same port is the same GCS
    (``ray start`` advertises the node's IP while one connects as 127.0.0.1)."""
    if asked == served:
        return True
    asked_host, _, asked_port = asked.rpartition(":")
    served_host, _, served_port = served.rpartition(":")
    return asked_port == served_port and _is_local(asked_host) and _is_local(served_host)


def _is_local(host: str) -> bool:
    if host == "localhost" or host.startswith("127."):
        return True
    import psutil  # here: only a reader comparing a non-loopback address needs it

    return any(address.address == host for addresses in psutil.net_if_addrs().values() for address in addresses)


def _get(port: int, target: str, timeout: float) -> dict[str, Any] | None:
    """One ``GET`` on ``127.0.0.1:port``: its JSON body, or None when nothing (or something else) answers."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
            connection.sendall(f"GET {target} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
            chunks = []
            while chunk := connection.recv(1 << 16):
                chunks.append(chunk)
    except OSError:
        return None
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.0 200"):
        return None
    try:
        answer = json.loads(body)
    except ValueError:
        return None
    return answer if isinstance(answer, dict) else None
