"""``python3 -m osworld_guest``: serve the guest API on this desktop's X display until killed."""

from __future__ import annotations

import argparse
import os
import sys
import threading
from pathlib import Path

from werkzeug.serving import make_server

from .app import create_app
from .state import GuestState
from .zygote import Zygote


def _start_zygote() -> Zygote | None:
    """The warm action zygote, or None (actions then run as plain subprocesses) if it cannot start."""
    try:
        return Zygote()
    except Exception as exc:
        print(f"guest server: actions run as plain subprocesses ({exc})", file=sys.stderr)
        return None


def _write_port(port_file: str, port: int) -> None:
    """Publish the bound port atomically: a reader sees no file or the whole number, never half of it."""
    staging = Path(port_file + ".tmp")
    staging.write_text(str(port))
    staging.rename(port_file)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python3 -m osworld_guest", description="OSWorld guest API server for desktop-lite")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--port-file", help="write the bound port here (for --port 0)")
    args = parser.parse_args()
    if "DISPLAY" not in os.environ:
        sys.exit("guest server: DISPLAY is not set; start it on the desktop's X display")
    # before any server thread exists: the zygote is forked from a single-threaded process
    state = GuestState(zygote=_start_zygote())
    server = make_server(args.host, args.port, create_app(state), threaded=True)
    if args.port_file:
        _write_port(args.port_file, server.server_port)
    threading.current_thread().name = "guest-server"
    server.serve_forever()


if __name__ == "__main__":
    main()
