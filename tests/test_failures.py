"""What a failure means is decided once (rayenv.failures): every path that meets a failure (a lease's
block, a lock-step outcome, the health probe, the episode driver) asks it, and docs/pool.md shows its
table. Fast: Ray's exception classes are built by hand, nothing is started."""

from __future__ import annotations

import asyncio
import pickle
from pathlib import Path

import pytest
import ray.exceptions

from rayenv import errors, failures
from rayenv.failures import CONSEQUENCES, Failure, classify, classify_probe, kind_of, replaces_now, typed
from rayenv.pool.handle import _leave_typed
from rayenv.pool.lease import Lease
from rayenv.pool.outcomes import Outcome

REPO = Path(__file__).resolve().parents[1]


def actor_died() -> ray.exceptions.ActorDiedError:
    return ray.exceptions.ActorDiedError()


def actor_unavailable() -> ray.exceptions.ActorUnavailableError:
    return ray.exceptions.ActorUnavailableError("the node's link is down", b"\x00" * 16)


def task_error(cause: BaseException) -> ray.exceptions.RayTaskError:
    return ray.exceptions.RayTaskError("step", "Traceback ...", cause).as_instanceof_cause()


def test_every_rayenv_error_class_has_a_kind():
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.RayEnvError)]
    assert set(classes) == set(failures.KIND_OF_ERROR)


@pytest.mark.parametrize("raised, kind", [
    (errors.InvalidAction("x"), Failure.ACTION),
    (errors.ActionFailed("x"), Failure.ACTION),
    (errors.EvaluationError("x"), Failure.TASK),
    (errors.SetupFailed("x"), Failure.TASK),
    (errors.DesktopUnavailable("x"), Failure.BROKEN),
    (errors.DesktopUnreachable("x"), Failure.UNREACHABLE),
    (errors.EnvTimeout("x"), Failure.TIMED_OUT),
    (actor_died(), Failure.BROKEN),
    (actor_unavailable(), Failure.UNREACHABLE),
    (ray.exceptions.GetTimeoutError("slow"), Failure.TIMED_OUT),
    (asyncio.TimeoutError(), Failure.TIMED_OUT),
    (task_error(errors.ActionFailed("boom")), Failure.ACTION),
    (task_error(EOFError("monitor closed")), Failure.BROKEN),
])
def test_each_failure_has_one_kind_whoever_meets_it(raised, kind):
    assert classify(raised, "env-1") is kind
    outcome = Outcome("env-1", error=typed(raised, "env-1"))
    assert outcome.failure is kind
    assert outcome.broken is CONSEQUENCES[kind].replaces_now
    broken, error = _leave_typed(raised, Lease(0, 1, "env-1", env=None))
    assert isinstance(error, errors.RayEnvError) and kind_of(error) is kind
    assert broken is CONSEQUENCES[kind].replaces_now


def test_a_timeout_replaces_the_desktop_in_a_lease_and_in_a_lock_step_batch_alike():
    timeout = ray.exceptions.GetTimeoutError("slow")
    assert _leave_typed(timeout, Lease(0, 1, "env-1", env=None))[0] is True
    assert Outcome("env-1", error=typed(timeout, "env-1")).broken is True
    assert replaces_now(errors.EnvTimeout("step did not answer")) is True


def test_a_health_probe_that_goes_unanswered_means_unreachable_not_timed_out():
    assert classify_probe(asyncio.TimeoutError()) is Failure.UNREACHABLE
    assert classify_probe(actor_unavailable()) is Failure.UNREACHABLE
    assert classify_probe(actor_died()) is Failure.BROKEN


def test_typed_errors_name_the_desktop_and_the_phase_and_cross_pickling():
    error = typed(actor_died(), "pool-env-03-g2", phase="step")
    assert isinstance(error, errors.DesktopUnavailable)
    assert (error.env, error.phase) == ("pool-env-03-g2", "step")
    assert "env actor is gone: ActorDiedError" in error.message
    unreachable = pickle.loads(pickle.dumps(typed(actor_unavailable(), "e")))
    assert isinstance(unreachable, errors.DesktopUnreachable) and kind_of(unreachable) is Failure.UNREACHABLE


def test_an_error_that_did_not_come_from_a_desktop_is_not_typed_and_breaks_nothing():
    with pytest.raises(KeyError):
        typed(KeyError("a lessee's own bug"), "env-1")
    bug = KeyError("a lessee's own bug")
    assert _leave_typed(bug, Lease(0, 1, "env-1", env=None)) == (False, bug)


def test_docs_pool_md_carries_the_failure_table_as_the_code_says():
    doc = (REPO / "docs" / "pool.md").read_text()
    table = doc.split("<!-- failures:begin -->\n", 1)[1].split("\n<!-- failures:end -->", 1)[0]
    assert table == failures.markdown_table(), "regenerate with: python -m rayenv.failures"


def test_a_qmp_connection_dropped_while_a_golden_state_is_saved_is_a_snapshot_error_and_the_boot_is_retried(
        monkeypatch):
    from rayenv.providers.qmp import Monitor

    async def dropped(self, command, arguments):  # what qemu.qmp raises when QEMU closes the socket mid-command
        raise EOFError()

    monkeypatch.setattr(Monitor, "_execute", dropped)
    with pytest.raises(errors.SnapshotError, match="refused human-monitor-command") as raised:
        Monitor(REPO / "no-such-qmp.sock", env="env-1").save_snapshot("golden")
    assert raised.value.phase == "snapshot"
    assert not isinstance(raised.value, failures.PERMANENT_BOOT_ERRORS)  # the pool retries the boot


def test_an_untyped_error_while_booting_reaches_the_pool_as_desktop_unavailable():
    from rayenv.env.actor import OSWorldEnv

    actor = OSWorldEnv.__ray_metadata__.modified_class.__new__(OSWorldEnv.__ray_metadata__.modified_class)

    class Booting:
        env_name = "env-1"

        def start(self):
            raise EOFError("QEMU's monitor closed the connection")

    actor.desktop = Booting()
    with pytest.raises(errors.DesktopUnavailable, match="boot failed: EOFError") as raised:
        actor._start_typed()
    assert raised.value.phase == "boot" and isinstance(raised.value.__cause__, EOFError)
