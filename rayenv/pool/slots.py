"""The pool's slots as a state machine: plain data and one transition, no Ray, no asyncio.

:class:`Slots` holds every slot of one pool; :meth:`Slots.apply` is the only code that changes a slot
(its state, generation, actor, lessee, errors, counters). It takes an event (a boot finished, a lease
was released, a ping went unanswered, ...) and returns the effects the shell
(:class:`~rayenv.pool.manager.PoolManager`) must perform next: boot a slot, retire an actor, revert a
desktop. The shell performs them and feeds what happened back as events. An event about a generation
that is gone, or one that does not fit the slot's state, changes nothing and asks for nothing.

    >>> slots = Slots("demo", size=1, boot_attempts=3, revert_on_release=True, unreachable_grace=60)
    >>> slots.apply(Start())
    [Boot(slot=0, delay=0.0)]
    >>> _ = slots.apply(BootStarted(0)); _ = slots.apply(Created(0, 1, "actor", "a1"))
    >>> slots[0].state, slots[0].env_name
    ('booting', 'demo-env-00-g1')
    >>> slots.apply(BootSucceeded(0, 1, node_id="n1", host="h1")), slots[0].state
    ([], 'idle')
    >>> slots.apply(Leased(0, lessee={"job_id": "01"})), slots.apply(Released(0, 1))
    ([], [Revert(slot=0, generation=1)])
    >>> slots.apply(Released(0, 1)), slots[0].state  # released twice: the second is a no-op
    ([], 'reverting')
"""

from __future__ import annotations

import collections
import itertools
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from .events import (Boot, BootFailed, BootStarted, BootSucceeded, Broken, Closing, Created,
                     Effect, Event, Grow, Leased, Leave, LesseeDied, PingOk, PingSilent, Released,
                     Retire, Retired, Retry, Revert, RevertDone, RevertFailed, RevertSilent, Start)

logger = logging.getLogger("rayenv.pool.slots")

SlotState = Literal["queued", "booting", "idle", "leased", "reverting", "replacing", "failed"]
STATES: tuple[SlotState, ...] = ("queued", "booting", "idle", "leased", "reverting", "replacing", "failed")
#: States whose desktop is up (counted healthy unless it is unreachable).
HEALTHY_STATES = ("idle", "leased", "reverting")
#: Slot state changes the pool remembers (``PoolManager.history``), newest last.
HISTORY_LENGTH = 1000


@dataclass
class Slot:
    """One place in the pool, holding at most one desktop (an env actor) at a time."""

    index: int
    state: SlotState = "queued"
    generation: int = 0
    handle: Any = None
    actor_id: str = ""
    node_id: str = ""
    host: str = ""
    env_name: str = ""
    attempt: int = 0
    leased_at: float | None = None
    lessee: dict[str, str] | None = None
    replacements: int = 0
    last_error: str | None = None
    unreachable_since: float | None = None

    @property
    def unreachable(self) -> bool:
        return self.unreachable_since is not None

    @property
    def healthy(self) -> bool:
        return self.state in HEALTHY_STATES and not self.unreachable

    @property
    def leasable(self) -> bool:
        return self.state == "idle" and not self.unreachable


class Slots:
    """Every slot of one pool, changed only by :meth:`apply`."""

    def __init__(self, pool: str, size: int, *, boot_attempts: int, revert_on_release: bool, unreachable_grace: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.pool = pool
        self.slots = [Slot(index=i) for i in range(size)]
        self._by_index = {slot.index: slot for slot in self.slots}
        self._idle: dict[int, None] = {}  # indices of idle slots, oldest idle first (an ordered set)
        self.boot_attempts, self.revert_on_release, self.unreachable_grace = boot_attempts, revert_on_release, unreachable_grace
        self.clock = clock
        self.closing = False
        self.history: collections.deque[tuple[float, int, str]] = collections.deque(maxlen=HISTORY_LENGTH)

    def __iter__(self) -> Iterator[Slot]:
        return iter(self.slots)

    def __len__(self) -> int:
        return len(self.slots)

    def __getitem__(self, index: int) -> Slot | None:
        """The slot with this index (indices stay put when other slots leave), else None."""
        return self._by_index.get(index)

    def leasable(self) -> Slot | None:
        """The idle slot idle longest that answers its pings: found among the idle ones only, so a lease
        costs the same in a pool of 8 slots and of 4,000."""
        return next((slot for index in self._idle if (slot := self._by_index[index]).leasable), None)

    def leasable_many(self, count: int) -> list[Slot]:
        """Up to ``count`` of the idle slots that answer their pings, idle longest first."""
        return list(itertools.islice((slot for index in self._idle if (slot := self._by_index[index]).leasable), count))

    def idle_count(self) -> int:
        return len(self._idle)

    def apply(self, event: Event) -> list[Effect]:
        """Apply one event; return the effects to perform, in order. Events that do not fit are no-ops."""
        handler = getattr(self, f"_on_{type(event).__name__}")
        return handler(event)

    # -- helpers -------------------------------------------------------------------------------
    def _set(self, slot: Slot, state: SlotState) -> None:
        slot.state = state
        if state == "idle":
            self._idle[slot.index] = None
        else:
            self._idle.pop(slot.index, None)
        self.history.append((self.clock(), slot.index, state))

    def _current(self, index: int, generation: int, *states: SlotState) -> Slot | None:
        slot = self[index]
        if slot is None or slot.generation != generation or (states and slot.state not in states):
            return None
        return slot

    def _replace(self, slot: Slot, reason: str, *, close: bool = True) -> list[Effect]:
        """Retire ``slot``'s desktop and boot its successor; ``close=False`` skips asking a desktop that has not
        answered for the whole grace to close (it would not answer that either: its successor would wait
        ``close_timeout`` for nothing, and the reaper removes what it left)."""
        if slot.state not in HEALTHY_STATES or self.closing:
            return []
        logger.warning("slot %d: replacing %s: %s", slot.index, slot.env_name, reason)
        retire = Retire(slot.handle, slot.actor_id, close=close, reap=True, slot=slot.index,
                        generation=slot.generation)
        self._set(slot, "replacing")
        slot.last_error, slot.leased_at, slot.lessee, slot.unreachable_since = reason, None, None, None
        slot.replacements += 1
        slot.handle, slot.actor_id, slot.attempt = None, "", 0
        return [retire]

    def _give_back(self, slot: Slot, revert: bool = True) -> list[Effect]:
        slot.leased_at, slot.lessee = None, None
        if revert and self.revert_on_release:
            self._set(slot, "reverting")
            return [Revert(slot.index, slot.generation, slot.handle)]
        self._set(slot, "idle")
        return []

    def _silent(self, slot: Slot, error: str) -> list[Effect]:
        now = self.clock()
        if slot.unreachable_since is None:
            slot.unreachable_since, slot.last_error = now, f"unreachable: {error}"
            logger.warning("slot %d: %s is %s; replaced if still silent in %.0fs", slot.index, slot.env_name,
                           slot.last_error, self.unreachable_grace)
        elif now - slot.unreachable_since >= self.unreachable_grace:
            return self._replace(slot, f"unreachable for {now - slot.unreachable_since:.0f}s", close=False)
        return []

    # -- the pool's life ------------------------------------------------------------------------
    def _on_Start(self, event: Start) -> list[Effect]:
        return self._queue([s for s in self.slots if s.state == "queued" and s.generation == 0])

    def _on_Grow(self, event: Grow) -> list[Effect]:
        first = max((s.index for s in self.slots), default=-1) + 1
        new = [Slot(index=i) for i in range(first, first + event.count)]
        self.slots += new
        self._by_index.update((slot.index, slot) for slot in new)
        return self._queue(new)

    def _queue(self, slots: list[Slot]) -> list[Effect]:
        """New slots wait for a boot permit; the history shows each one queued."""
        for slot in slots:
            self._set(slot, "queued")
        return [Boot(s.index) for s in slots]

    def _on_Leave(self, event: Leave) -> list[Effect]:
        leaving = [s for s in self.slots if s.node_id == event.node_id]
        self.slots = [s for s in self.slots if s.node_id != event.node_id]
        for slot in leaving:
            del self._by_index[slot.index]
            self._idle.pop(slot.index, None)
        return [Retire(s.handle, s.actor_id) for s in leaving if s.handle is not None]

    def _on_Closing(self, event: Closing) -> list[Effect]:
        self.closing = True
        effects: list[Effect] = [Retire(s.handle, s.actor_id) for s in self.slots if s.handle is not None]
        for slot in self.slots:
            slot.handle = None
            self._set(slot, "failed")
        return effects

    def _on_Retired(self, event: Retired) -> list[Effect]:
        slot = self._current(event.slot, event.generation, "replacing")
        if slot is None or self.closing:
            return []
        self._set(slot, "queued")
        return [Boot(slot.index)]

    # -- booting -----------------------------------------------------------------------------------
    def _on_BootStarted(self, event: BootStarted) -> list[Effect]:
        slot = self[event.slot]
        if slot is None or self.closing or slot.state != "queued":
            return []
        slot.generation += 1
        slot.attempt += 1
        slot.env_name = f"{self.pool}-env-{slot.index:02d}-g{slot.generation}"
        self._set(slot, "booting")
        return []

    def _on_Created(self, event: Created) -> list[Effect]:
        slot = self._current(event.slot, event.generation, "booting")
        if slot is None or self.closing:
            return [Retire(event.handle, event.actor_id, close=False)]
        slot.handle, slot.actor_id = event.handle, event.actor_id
        return []

    def _on_BootSucceeded(self, event: BootSucceeded) -> list[Effect]:
        slot = self._current(event.slot, event.generation, "booting")
        if slot is None:
            return []
        if self.closing:  # shut down while this desktop booted: it must not outlive the pool
            retire = Retire(slot.handle, slot.actor_id)
            slot.handle = None
            return [retire] if retire.handle is not None else []
        slot.node_id, slot.host, slot.attempt = event.node_id, event.host, 0
        self._set(slot, "idle")
        logger.info("slot %d: %s ready on node %s", slot.index, slot.env_name, slot.node_id[:8])
        return []

    def _on_BootFailed(self, event: BootFailed) -> list[Effect]:
        slot = self._current(event.slot, event.generation, "booting")
        if slot is None:
            return []
        slot.last_error = f"boot attempt {slot.attempt}: {event.error}"
        logger.warning("slot %d: %s", slot.index, slot.last_error)
        effects: list[Effect] = [Retire(slot.handle, slot.actor_id, close=False)] if slot.handle is not None else []
        slot.handle, slot.actor_id = None, ""
        if self.closing:
            return effects
        if event.permanent or slot.attempt >= self.boot_attempts:
            self._set(slot, "failed")  # permanent: this host cannot run it; trying again only waits
            return effects
        self._set(slot, "queued")
        return effects + [Boot(slot.index, delay=min(2 ** slot.attempt, 30))]

    def _on_Retry(self, event: Retry) -> list[Effect]:
        slot = self[event.slot]
        if slot is None or slot.state != "failed" or self.closing:
            return []
        slot.attempt = 0
        self._set(slot, "queued")
        return [Boot(slot.index)]

    # -- leasing ----------------------------------------------------------------------------------
    def _on_Leased(self, event: Leased) -> list[Effect]:
        slot = self[event.slot]
        if slot is None or not slot.leasable or self.closing:
            return []
        self._set(slot, "leased")
        slot.leased_at, slot.lessee = self.clock(), event.lessee
        return []

    def _on_Released(self, event: Released) -> list[Effect]:
        slot = self._current(event.slot, event.generation, "leased")
        if slot is None:
            return []  # this desktop was already replaced (or its host left the pool): nothing to give back
        if event.broken:
            return self._replace(slot, "released as broken")
        return self._give_back(slot, revert=not event.unused)

    def _on_LesseeDied(self, event: LesseeDied) -> list[Effect]:
        return self._on_Released(Released(event.slot, event.generation))

    def _on_RevertDone(self, event: RevertDone) -> list[Effect]:
        slot = self._current(event.slot, event.generation, "reverting")
        if slot is not None:
            self._set(slot, "idle")
        return []

    def _on_RevertFailed(self, event: RevertFailed) -> list[Effect]:
        slot = self._current(event.slot, event.generation)
        return self._replace(slot, f"revert failed: {event.error}") if slot is not None else []

    def _on_RevertSilent(self, event: RevertSilent) -> list[Effect]:
        slot = self._current(event.slot, event.generation, "reverting")
        if slot is None:
            return []
        effects = self._silent(slot, event.error)
        if slot.state == "reverting":
            self._set(slot, "idle")
        return effects

    # -- health ------------------------------------------------------------------------------------
    def _on_PingOk(self, event: PingOk) -> list[Effect]:
        slot = self._current(event.slot, event.generation, *HEALTHY_STATES)
        if slot is not None and slot.unreachable_since is not None:
            logger.info("slot %d: %s answers again after %.0fs", slot.index, slot.env_name,
                        self.clock() - slot.unreachable_since)
            slot.unreachable_since = None
        return []

    def _on_PingSilent(self, event: PingSilent) -> list[Effect]:
        slot = self._current(event.slot, event.generation, *HEALTHY_STATES)
        return self._silent(slot, event.error) if slot is not None else []

    def _on_Broken(self, event: Broken) -> list[Effect]:
        slot = self._current(event.slot, event.generation, *HEALTHY_STATES)
        return self._replace(slot, event.reason) if slot is not None else []
