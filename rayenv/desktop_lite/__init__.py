"""desktop-lite: a light, real desktop speaking OSWorld's guest API (image build and process mode)."""

from pathlib import Path

#: What runs inside a desktop (image recipe, VM init, guest server, tasks): the checkout's ``OSWorld/``.
OSWORLD_DIR = Path(__file__).resolve().parents[2] / "OSWorld"
#: Holds the ``osworld_guest`` package (``desktop-session`` runs it with ``python3 -m``).
GUEST_DIR = OSWORLD_DIR / "guest"
