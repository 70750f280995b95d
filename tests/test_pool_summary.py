"""What a big pool keeps cheap (no Ray): which idle slot a lease takes, and the status summary that
``rayenv status`` prints without one entry per slot."""

from __future__ import annotations

from rayenv.pool.config import PoolConfig
from rayenv.pool.events import (BootFailed, BootStarted, BootSucceeded, Created, Leased, Leave, Released,
                                RevertDone, Start)
from rayenv.pool.slots import Slots
from rayenv.pool.status import PoolStatus


def booted(size: int, hosts: list[str]) -> Slots:
    slots = Slots("p", size, boot_attempts=1, revert_on_release=True, unreachable_grace=60)
    slots.apply(Start())
    for i in range(size):
        slots.apply(BootStarted(i))
        slots.apply(Created(i, 1, f"actor-{i}", f"id-{i}"))
        slots.apply(BootSucceeded(i, 1, node_id=f"node-{hosts[i % len(hosts)]}", host=hosts[i % len(hosts)]))
    return slots


def test_a_lease_takes_the_slot_idle_longest():
    slots = booted(3, ["a"])
    slots.apply(Leased(0, lessee={"job_id": "01"}))
    slots.apply(Released(0, 1))
    slots.apply(RevertDone(0, 1))  # slot 0 is idle again, after 1 and 2
    taken = []
    while (slot := slots.leasable()) is not None:
        taken.append(slot.index)
        slots.apply(Leased(slot.index))
    assert taken == [1, 2, 0]


def test_slots_of_a_host_that_left_are_never_leased_nor_found():
    slots = booted(4, ["a", "b"])
    slots.apply(Leave("node-a"))
    assert [s.index for s in slots] == [1, 3] and slots[0] is None
    assert {slots.leasable().index} <= {1, 3}


def test_the_summary_counts_per_host_and_groups_failed_slots_by_error_without_a_row_per_slot():
    slots = booted(4, ["a", "b"])
    slots.apply(Leased(1))
    grown = Slots("p", 2, boot_attempts=1, revert_on_release=True, unreachable_grace=60)
    grown.apply(Start())
    for i in range(2):
        grown.apply(BootStarted(i))
        grown.apply(BootFailed(i, 1, "no image", permanent=True))
    config = PoolConfig(name="p", size=4)
    summary = PoolStatus.of(slots, config, detail=False)
    assert summary.slots == () and summary.healthy == 4
    assert summary.hosts == {"a": {"idle": 2}, "b": {"idle": 1, "leased": 1}}
    failed = PoolStatus.of(grown, config, detail=False)
    assert failed.failed == {"boot attempt 1: no image": [0, 1]}
    assert failed.errors() == "slot(s) 0, 1: boot attempt 1: no image"
    assert len(PoolStatus.of(slots, config).slots) == 4
