"""What a pool reports about itself: frozen dataclasses of plain values (they cross Ray, and ``to_dict``
gives the JSON that ``rayenv status --json`` prints)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from .slots import Slot, Slots


@dataclass(frozen=True)
class SlotStatus:
    slot: int
    env_name: str
    state: str
    generation: int
    actor_id: str
    node_id: str
    host: str
    replacements: int
    leased_for: float | None
    unreachable_for: float | None
    lessee: dict[str, str] | None
    last_error: str | None

    @classmethod
    def of(cls, slot: Slot, now: float | None = None) -> SlotStatus:
        now = time.time() if now is None else now
        return cls(slot=slot.index, env_name=slot.env_name, state=slot.state, generation=slot.generation,
                   actor_id=slot.actor_id, node_id=slot.node_id, host=slot.host, replacements=slot.replacements,
                   leased_for=round(now - slot.leased_at, 1) if slot.leased_at else None,
                   unreachable_for=round(now - slot.unreachable_since, 1) if slot.unreachable_since else None,
                   lessee=dict(slot.lessee) if slot.lessee else None, last_error=slot.last_error)


@dataclass(frozen=True)
class PoolStatus:
    """A pool's state. ``healthy`` counts the slots whose desktop is healthy (:attr:`Slot.healthy
    <rayenv.pool.slots.Slot.healthy>`: up and answering), ``unreachable`` the silent ones."""

    name: str
    namespace: str
    size: int
    provider: str
    resource: str
    require_a11y_tree: bool
    healthy: int
    unreachable: int
    counts: dict[str, int]
    replacements: int
    closing: bool
    hosts: dict[str, dict[str, int]] = field(default_factory=dict)
    failed: dict[str, list[int]] = field(default_factory=dict)
    slots: tuple[SlotStatus, ...] = field(default=())

    @classmethod
    def of(cls, slots: Slots, config: Any, detail: bool = True) -> PoolStatus:
        """The status of ``slots`` under ``config`` (a :class:`~rayenv.pool.config.PoolConfig`): counts per
        state and per env host, the failed slots by error, and with ``detail`` one :class:`SlotStatus` per
        slot (a summary of a pool of thousands stays a few hundred bytes; the detail grows with it)."""
        now = time.time()
        counts: dict[str, int] = {}
        hosts: dict[str, dict[str, int]] = {}
        failed: dict[str, list[int]] = {}
        healthy = unreachable = replacements = 0
        for slot in slots:
            counts[slot.state] = counts.get(slot.state, 0) + 1
            per_host = hosts.setdefault(slot.host, {})
            per_host[slot.state] = per_host.get(slot.state, 0) + 1
            healthy += slot.healthy
            unreachable += slot.unreachable
            replacements += slot.replacements
            if slot.state == "failed" and slot.last_error:
                failed.setdefault(slot.last_error, []).append(slot.index)
        return cls(name=config.name, namespace=config.namespace, size=len(slots), provider=config.desktop.provider,
                   resource=config.resource, require_a11y_tree=config.env.require_a11y_tree, healthy=healthy,
                   unreachable=unreachable, counts=counts, replacements=replacements, closing=slots.closing,
                   hosts=hosts, failed=failed, slots=tuple(SlotStatus.of(s, now) for s in slots) if detail else ())

    def errors(self) -> str:
        """Each distinct boot error of the failed slots, with the slots it hit."""
        return "; ".join(f"slot(s) {', '.join(map(str, s))}: {e}" for e, s in self.failed.items()) or "no error recorded"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (the slots as a list of dicts)."""
        data = asdict(self)
        data["slots"] = list(data["slots"])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PoolStatus:
        """The status :meth:`to_dict` gave (as the status endpoint serves it, :mod:`rayenv.pool.status_endpoint`)."""
        return cls(**{**data, "slots": tuple(SlotStatus(**slot) for slot in data.get("slots", ()))})
