"""What happens to a pool's slots (events) and what the manager must do about it (effects): plain,
frozen dataclasses, the vocabulary of :meth:`rayenv.pool.slots.Slots.apply`. No Ray, no asyncio."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


# -- events: what happened (to the pool, or to the desktop of one slot's generation) --------------------
@dataclass(frozen=True)
class Start:
    """The pool starts: boot every slot."""


@dataclass(frozen=True)
class Closing:
    """The pool shuts down: retire every desktop, boot nothing more."""


@dataclass(frozen=True)
class Grow:
    """``count`` new slots join (an env host joined with that many units)."""

    count: int


@dataclass(frozen=True)
class Leave:
    """The slots on ``node_id`` leave (their env host is leaving)."""

    node_id: str


@dataclass(frozen=True)
class BootStarted:
    """A boot of ``slot`` got its permit: a new generation begins."""

    slot: int


@dataclass(frozen=True)
class Retry:
    """A health round retries a failed slot."""

    slot: int


@dataclass(frozen=True)
class Leased:
    slot: int
    lessee: dict[str, str] | None = None


@dataclass(frozen=True)
class SlotEvent:
    """Something happened to the desktop of ``slot``'s ``generation`` (a no-op once that generation is gone)."""

    slot: int
    generation: int


@dataclass(frozen=True)
class Created(SlotEvent):
    """The generation's actor exists (it has not booted yet)."""

    handle: Any = field(default=None, repr=False)
    actor_id: str = ""


@dataclass(frozen=True)
class BootSucceeded(SlotEvent):
    node_id: str = ""
    host: str = ""


@dataclass(frozen=True)
class BootFailed(SlotEvent):
    """``permanent``: a retry on this host cannot fix it (no image, bad config)."""

    error: str = ""
    permanent: bool = False


@dataclass(frozen=True)
class Released(SlotEvent):
    """The lessee gave the desktop back; ``broken``: it found the desktop gone; ``unused``: it was never lent to
    a rollout (granted to a waiter that had left), so it needs no revert."""

    broken: bool = False
    unused: bool = False


class LesseeDied(SlotEvent):
    """The lessee died without releasing the desktop: it comes back as if released."""


class Retired(SlotEvent):
    """The replaced actor is gone (closed, killed, reaped): boot its successor."""


class RevertDone(SlotEvent):
    """The released desktop is clean again."""


class PingOk(SlotEvent):
    """The desktop answered a ping (an unreachable one is reachable again)."""


@dataclass(frozen=True)
class RevertFailed(SlotEvent):
    error: str = ""


@dataclass(frozen=True)
class RevertSilent(SlotEvent):
    """The revert went unanswered (the env host's link is down): its next reset reverts it."""

    error: str = ""


@dataclass(frozen=True)
class PingSilent(SlotEvent):
    """A ping went unanswered: unreachable now, replaced once silent for the grace."""

    error: str = ""


@dataclass(frozen=True)
class Broken(SlotEvent):
    """The desktop is gone (a failed ping, a down desktop, a dead actor in a lessee's outcome): replace it."""

    reason: str = ""


Event = Start | Closing | Grow | Leave | BootStarted | Retry | Leased | SlotEvent


# -- effects: what the shell must do next -----------------------------------------------------------------
@dataclass(frozen=True)
class Boot:
    """Boot ``slot`` after ``delay`` seconds (holding a boot permit while booting); report what happened."""

    slot: int
    delay: float = 0.0


@dataclass(frozen=True)
class Retire:
    """Close (``close``) and kill the actor; with ``reap``, remove what it left on its env host; for a
    replacement (``slot`` given) report :class:`Retired`."""

    handle: Any = field(repr=False)
    actor_id: str
    close: bool = True
    reap: bool = False
    slot: int | None = None
    generation: int = 0


@dataclass(frozen=True)
class Revert:
    """Revert the released desktop so its next lease starts clean; report how it went."""

    slot: int
    generation: int
    handle: Any = field(repr=False)


Effect = Boot | Retire | Revert
