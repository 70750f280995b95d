"""The pool's slot state machine (rayenv.pool.slots), event by event: a specification, no Ray.

Each test names the state a slot is in, the event that arrives, and what follows (the new state and
the effects the manager must perform). Events that do not fit (an old generation, the wrong state,
a closing pool) change nothing and ask for nothing.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from rayenv.pool.events import (Boot, BootFailed, BootStarted, BootSucceeded, Broken,
                                Closing, Created, Grow, Leased, Leave, LesseeDied,
                                PingOk, PingSilent, Released, Retire, Retired, Retry,
                                Revert, RevertDone, RevertFailed, RevertSilent, Start)
from rayenv.pool.slots import Slots


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pool(size: int = 1, *, attempts: int = 3, revert: bool = True, grace: float = 60.0) -> Slots:
    return Slots("p", size, boot_attempts=attempts, revert_on_release=revert, unreachable_grace=grace, clock=Clock())


def booting(slots: Slots, index: int = 0) -> None:
    slots.apply(BootStarted(index))
    slots.apply(Created(index, slots[index].generation, f"actor-{index}-{slots[index].generation}", f"id{index}"))


def idle(slots: Slots, index: int = 0) -> None:
    booting(slots, index)
    slots.apply(BootSucceeded(index, slots[index].generation, node_id="node-a", host="host-a"))


def leased(slots: Slots, index: int = 0) -> None:
    idle(slots, index)
    slots.apply(Leased(index, lessee={"job_id": "01"}))


def reverting(slots: Slots, index: int = 0) -> None:
    leased(slots, index)
    slots.apply(Released(index, slots[index].generation))


def replacing(slots: Slots, index: int = 0) -> None:
    leased(slots, index)
    slots.apply(Released(index, slots[index].generation, broken=True))


def failed(slots: Slots, index: int = 0) -> None:
    booting(slots, index)
    slots.apply(BootFailed(index, slots[index].generation, "no image", permanent=True))


def unchanged(slots: Slots, event) -> bool:
    """Applying ``event`` asks for nothing and changes no slot."""
    before = [vars(s).copy() for s in slots]
    return slots.apply(event) == [] and [vars(s) for s in slots] == before


# -- starting and growing -----------------------------------------------------------------------------
def test_start_boots_every_new_slot_and_a_second_start_boots_nothing():
    slots = pool(2)
    assert slots.apply(Start()) == [Boot(0), Boot(1)]
    assert [s.state for s in slots] == ["queued", "queued"]
    idle(slots, 0), idle(slots, 1)
    assert unchanged(slots, Start())


def test_grow_adds_queued_slots_after_the_last_index_and_boots_them():
    slots = pool(2)
    assert slots.apply(Grow(2)) == [Boot(2), Boot(3)]
    assert [s.index for s in slots] == [0, 1, 2, 3] and slots[3].state == "queued"


def test_leave_drops_the_slots_on_that_node_and_retires_their_actors():
    slots = pool(2)
    idle(slots, 0), booting(slots, 1)
    assert slots.apply(Leave("node-a")) == [Retire("actor-0-1", "id0")]
    assert [s.index for s in slots] == [1] and slots[0] is None


# -- booting --------------------------------------------------------------------------------------------
def test_a_boot_that_starts_begins_a_new_generation_with_its_own_name():
    slots = pool()
    slots.apply(BootStarted(0))
    assert (slots[0].state, slots[0].generation, slots[0].env_name, slots[0].attempt) == ("booting", 1, "p-env-00-g1", 1)


@pytest.mark.parametrize("state", ["booting", "idle", "leased", "reverting", "replacing", "failed"])
def test_a_boot_starts_only_from_queued(state):
    slots = pool()
    {"booting": booting, "idle": idle, "leased": leased, "reverting": reverting, "replacing": replacing,
     "failed": failed}[state](slots)
    assert unchanged(slots, BootStarted(0))


def test_the_created_actor_is_recorded_on_its_booting_slot():
    slots = pool()
    slots.apply(BootStarted(0))
    assert slots.apply(Created(0, 1, "h", "id")) == [] and (slots[0].handle, slots[0].actor_id) == ("h", "id")


def test_an_actor_created_for_a_generation_no_longer_booting_is_killed_at_once():
    slots = pool()
    idle(slots)
    assert slots.apply(Created(0, 7, "stray", "id7")) == [Retire("stray", "id7", close=False)]


def test_a_booted_desktop_is_idle_and_placed():
    slots = pool()
    booting(slots)
    assert slots.apply(BootSucceeded(0, 1, "node-a", "host-a")) == []
    assert (slots[0].state, slots[0].node_id, slots[0].host) == ("idle", "node-a", "host-a")


def test_a_boot_success_of_an_old_generation_is_a_no_op():
    slots = pool()
    idle(slots)
    assert unchanged(slots, BootSucceeded(0, 0, "node-b", "host-b"))


def test_a_failed_boot_kills_the_actor_and_retries_after_a_growing_backoff():
    slots = pool(attempts=3)
    booting(slots)
    assert slots.apply(BootFailed(0, 1, "TimeoutError: slow")) == [Retire("actor-0-1", "id0", close=False), Boot(0, 2)]
    assert (slots[0].state, slots[0].handle, slots[0].last_error) == ("queued", None, "boot attempt 1: TimeoutError: slow")
    booting(slots)
    assert slots.apply(BootFailed(0, 2, "again"))[-1] == Boot(0, 4)


def test_a_slot_fails_after_its_last_boot_attempt():
    slots = pool(attempts=2)
    for generation in (1, 2):
        booting(slots)
        effects = slots.apply(BootFailed(0, generation, "nope"))
    assert effects == [Retire("actor-0-2", "id0", close=False)]
    assert (slots[0].state, slots[0].last_error) == ("failed", "boot attempt 2: nope")


def test_a_permanent_boot_failure_fails_the_slot_at_once():
    slots = pool(attempts=3)
    booting(slots)
    assert slots.apply(BootFailed(0, 1, "no image", permanent=True)) == [Retire("actor-0-1", "id0", close=False)]
    assert slots[0].state == "failed"


def test_a_boot_failure_of_an_old_generation_is_a_no_op():
    slots = pool()
    idle(slots)
    assert unchanged(slots, BootFailed(0, 0, "late"))


def test_a_health_round_retries_a_failed_slot_from_its_first_attempt():
    slots = pool()
    failed(slots)
    assert slots.apply(Retry(0)) == [Boot(0)]
    assert (slots[0].state, slots[0].attempt) == ("queued", 0)


@pytest.mark.parametrize("state", ["booting", "idle", "leased", "reverting", "replacing"])
def test_only_a_failed_slot_is_retried(state):
    slots = pool()
    {"booting": booting, "idle": idle, "leased": leased, "reverting": reverting, "replacing": replacing}[state](slots)
    assert unchanged(slots, Retry(0))


# -- leasing ------------------------------------------------------------------------------------------
def test_an_idle_desktop_is_leased_with_its_lessee_and_time():
    slots = pool()
    idle(slots)
    assert slots.leasable() is slots[0]
    assert slots.apply(Leased(0, {"actor_id": "a"})) == []
    assert (slots[0].state, slots[0].lessee, slots[0].leased_at) == ("leased", {"actor_id": "a"}, 1000.0)
    assert slots.leasable() is None


@pytest.mark.parametrize("state", ["queued", "booting", "leased", "reverting", "replacing", "failed"])
def test_only_an_idle_desktop_is_leased(state):
    slots = pool()
    {"queued": lambda s: None, "booting": booting, "leased": leased, "reverting": reverting,
     "replacing": replacing, "failed": failed}[state](slots)
    assert unchanged(slots, Leased(0))


def test_an_unreachable_idle_desktop_is_not_leased():
    slots = pool()
    idle(slots)
    slots.apply(PingSilent(0, 1, "ping timed out"))
    assert slots.leasable() is None and unchanged(slots, Leased(0))


def test_a_released_desktop_is_reverted_before_its_next_lease():
    slots = pool()
    leased(slots)
    assert slots.apply(Released(0, 1)) == [Revert(0, 1, "actor-0-1")]
    assert (slots[0].state, slots[0].lessee, slots[0].leased_at) == ("reverting", None, None)


def test_without_revert_on_release_a_released_desktop_is_idle_at_once():
    slots = pool(revert=False)
    leased(slots)
    assert slots.apply(Released(0, 1)) == [] and slots[0].state == "idle"


def test_a_desktop_released_as_broken_is_retired_reaped_and_replaced():
    slots = pool()
    leased(slots)
    assert slots.apply(Released(0, 1, broken=True)) == [Retire("actor-0-1", "id0", reap=True, slot=0, generation=1)]
    slot = slots[0]
    assert (slot.state, slot.handle, slot.lessee, slot.replacements, slot.last_error) == (
        "replacing", None, None, 1, "released as broken")


def test_releasing_a_replaced_generation_or_an_unleased_desktop_is_a_no_op():
    slots = pool()
    replacing(slots)
    assert unchanged(slots, Released(0, 1))
    idle_slots = pool()
    idle(idle_slots)
    assert unchanged(idle_slots, Released(0, 1))
    assert unchanged(idle_slots, Released(5, 1))  # a slot that left the pool


def test_a_lease_whose_lessee_died_goes_back_as_if_released():
    slots = pool()
    leased(slots)
    assert slots.apply(LesseeDied(0, 1)) == [Revert(0, 1, "actor-0-1")] and slots[0].lessee is None


def test_a_dead_lessee_of_a_replaced_generation_is_a_no_op():
    slots = pool()
    replacing(slots)
    assert unchanged(slots, LesseeDied(0, 1))


# -- reverting ----------------------------------------------------------------------------------------
def test_a_reverted_desktop_is_idle():
    slots = pool()
    reverting(slots)
    assert slots.apply(RevertDone(0, 1)) == [] and slots[0].state == "idle"


def test_a_revert_done_of_another_generation_or_state_is_a_no_op():
    slots = pool()
    reverting(slots)
    assert unchanged(slots, RevertDone(0, 0))
    slots.apply(RevertDone(0, 1))
    assert unchanged(slots, RevertDone(0, 1))


def test_a_failed_revert_replaces_the_desktop():
    slots = pool()
    reverting(slots)
    assert slots.apply(RevertFailed(0, 1, "SetupFailed: x")) == [Retire("actor-0-1", "id0", reap=True, slot=0,
                                                                          generation=1)]
    assert (slots[0].state, slots[0].last_error) == ("replacing", "revert failed: SetupFailed: x")


def test_a_failed_revert_of_a_replaced_generation_is_a_no_op():
    slots = pool()
    replacing(slots)
    assert unchanged(slots, RevertFailed(0, 1, "late"))


def test_an_unanswered_revert_marks_the_desktop_unreachable_and_idle():
    slots = pool()
    reverting(slots)
    assert slots.apply(RevertSilent(0, 1, "revert timed out")) == []
    assert (slots[0].state, slots[0].unreachable_since, slots[0].healthy) == ("idle", 1000.0, False)


def test_an_unanswered_revert_of_a_desktop_silent_past_the_grace_replaces_it():
    slots = pool(grace=60)
    reverting(slots)
    slots.apply(PingSilent(0, 1, "ping timed out"))
    slots.clock.now += 61
    assert slots.apply(RevertSilent(0, 1, "x"))[0].reap and slots[0].state == "replacing"


def test_an_unanswered_revert_of_another_generation_is_a_no_op():
    slots = pool()
    idle(slots)
    assert unchanged(slots, RevertSilent(0, 1, "x"))


# -- replacing --------------------------------------------------------------------------------------------
def test_once_the_old_actor_is_gone_the_replacement_queues_for_a_boot():
    slots = pool()
    replacing(slots)
    assert slots.apply(Retired(0, 1)) == [Boot(0)] and slots[0].state == "queued"
    idle(slots)
    assert (slots[0].generation, slots[0].env_name, slots[0].replacements) == (2, "p-env-00-g2", 1)


def test_retired_for_a_slot_not_replacing_is_a_no_op():
    slots = pool()
    idle(slots)
    assert unchanged(slots, Retired(0, 1))


@pytest.mark.parametrize("state", ["idle", "leased", "reverting"])
def test_a_broken_desktop_is_replaced_from_any_healthy_state(state):
    slots = pool()
    {"idle": idle, "leased": leased, "reverting": reverting}[state](slots)
    assert slots.apply(Broken(0, 1, "ping failed: ActorDiedError")) == [
        Retire("actor-0-1", "id0", reap=True, slot=0, generation=1)]
    assert (slots[0].state, slots[0].last_error, slots[0].lessee) == ("replacing", "ping failed: ActorDiedError", None)


@pytest.mark.parametrize("state", ["queued", "booting", "replacing", "failed"])
def test_a_slot_without_a_live_desktop_is_not_replaced(state):
    slots = pool()
    {"queued": lambda s: None, "booting": booting, "replacing": replacing, "failed": failed}[state](slots)
    assert unchanged(slots, Broken(0, slots[0].generation, "x"))


def test_a_broken_report_about_an_old_generation_is_a_no_op():
    slots = pool()
    idle(slots)
    assert unchanged(slots, Broken(0, 0, "x"))


# -- pings --------------------------------------------------------------------------------------------
def test_an_unanswered_ping_marks_the_desktop_unreachable_but_keeps_it():
    slots = pool()
    leased(slots)
    assert slots.apply(PingSilent(0, 1, "ping timed out")) == []
    slot = slots[0]
    assert (slot.state, slot.unreachable, slot.healthy, slot.last_error) == (
        "leased", True, False, "unreachable: ping timed out")


def test_a_desktop_silent_within_the_grace_is_kept_and_past_it_replaced():
    slots = pool(grace=60)
    idle(slots)
    slots.apply(PingSilent(0, 1, "ping timed out"))
    slots.clock.now += 59
    assert unchanged(slots, PingSilent(0, 1, "ping timed out"))
    slots.clock.now += 1
    assert slots.apply(PingSilent(0, 1, "ping timed out"))[0].slot == 0
    assert (slots[0].state, slots[0].last_error, slots[0].unreachable) == ("replacing", "unreachable for 60s", False)


def test_a_desktop_that_answers_again_is_reachable_as_it_was():
    slots = pool()
    idle(slots)
    slots.apply(PingSilent(0, 1, "ping timed out"))
    assert slots.apply(PingOk(0, 1)) == []
    assert (slots[0].state, slots[0].unreachable, slots[0].generation, slots[0].replacements) == ("idle", False, 1, 0)


def test_a_ping_answer_of_a_reachable_desktop_or_an_old_generation_is_a_no_op():
    slots = pool()
    idle(slots)
    assert unchanged(slots, PingOk(0, 1))
    slots.apply(PingSilent(0, 1, "x"))
    assert unchanged(slots, PingOk(0, 0)) and unchanged(slots, PingSilent(0, 0, "x"))


@pytest.mark.parametrize("state", ["queued", "booting", "replacing", "failed"])
def test_pings_of_slots_without_a_live_desktop_are_no_ops(state):
    slots = pool()
    {"queued": lambda s: None, "booting": booting, "replacing": replacing, "failed": failed}[state](slots)
    generation = slots[0].generation
    assert unchanged(slots, PingOk(0, generation)) and unchanged(slots, PingSilent(0, generation, "x"))


# -- closing --------------------------------------------------------------------------------------------
def test_closing_retires_every_actor_and_fails_every_slot():
    slots = pool(3)
    idle(slots, 0), leased(slots, 1)
    assert slots.apply(Closing()) == [Retire("actor-0-1", "id0"), Retire("actor-1-1", "id1")]
    assert [s.state for s in slots] == ["failed"] * 3 and all(s.handle is None for s in slots) and slots.closing


def test_a_closing_pool_boots_leases_and_replaces_nothing():
    slots = pool(2)
    booting(slots, 0)
    slots.apply(Closing())
    assert unchanged(slots, BootStarted(1)) and unchanged(slots, Retry(0)) and unchanged(slots, Leased(0))
    assert slots.apply(Created(1, 1, "late", "idl")) == [Retire("late", "idl", close=False)]


def test_a_desktop_that_finishes_booting_while_the_pool_closes_is_retired():
    slots = pool()
    booting(slots)
    slots.closing = True  # Closing arrived between the boot's start and its end (the slot kept its actor)
    assert slots.apply(BootSucceeded(0, 1, "n", "h")) == [Retire("actor-0-1", "id0")]


def test_a_replacement_whose_old_actor_is_gone_after_closing_boots_nothing():
    slots = pool()
    replacing(slots)
    slots.closing = True
    assert unchanged(slots, Retired(0, 1))


# -- history ----------------------------------------------------------------------------------------------
def test_every_state_change_is_in_the_history_in_order():
    slots = pool()
    reverting(slots)
    slots.apply(RevertDone(0, 1))
    assert [state for _, _, state in slots.history] == ["booting", "idle", "leased", "reverting", "idle"]


def test_the_state_machine_imports_neither_ray_nor_asyncio():
    import rayenv.pool.events
    import rayenv.pool.slots

    for module in (rayenv.pool.slots, rayenv.pool.events):
        tree = ast.parse(Path(module.__file__).read_text())
        imported = {a.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
        imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert not imported & {"ray", "asyncio"}, module.__name__
