"""What a failure means, decided once: the pool, the lease, the outcomes and the episode driver ask here.

Every failure of a call to a desktop falls into one :class:`Failure` kind, and the kind alone says
what happens next (:data:`CONSEQUENCES`):

- ``action``: the model's action was malformed or raised inside the desktop; the desktop is fine and
  the episode goes on (the model is told).
- ``task``: the call could not do its job (bad task config, a setup step or the evaluator failed, a
  pool-level refusal) but the desktop is intact; the episode ends, the desktop is kept.
- ``unreachable``: no answer for now (the env host's link is down, Ray calls the actor unavailable,
  a health probe went unanswered); the desktop may come back with the link, so it is kept out of
  leasing and replaced only after ``unreachable_grace``.
- ``broken``: the desktop is gone or reports itself down (its actor died, its container was
  removed), or its actor raised something rayenv did not type; it is replaced at once.
- ``timed_out``: a call outlived its timeout. A timed-out wait does not stop the actor's running
  call, so the desktop is busy with an unknown amount of work: it is replaced at once, whether the
  timeout struck inside ``lease()``, ``step_all`` or an episode.

:func:`typed` turns whatever Ray or asyncio raised for a desktop's call into a
:class:`~rayenv.errors.RayEnvError` (the lessee always gets one); :func:`classify` gives its kind.
``python -m rayenv.failures`` prints the table docs/pool.md carries (a test keeps the two equal).
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass
from typing import Any

import ray.exceptions

from .errors import (ActionFailed, ConfigError, DesktopUnavailable, DesktopUnreachable, EnvTimeout, EvaluationError,
                     InvalidAction, InvalidTaskConfig, PoolError, ProviderUnavailable, RayEnvError, SetupFailed,
                     SnapshotError)


class Failure(str, enum.Enum):
    """The kinds of failure, by what they mean for the desktop (see the module's docstring)."""

    ACTION = "action"
    TASK = "task"
    UNREACHABLE = "unreachable"
    BROKEN = "broken"
    TIMED_OUT = "timed_out"


@dataclass(frozen=True)
class Consequence:
    """What one kind of failure means for the episode and for the desktop."""

    episode_goes_on: bool
    #: ``now``: released as broken and replaced at once; ``after grace``: kept out of leasing, replaced once
    #: silent for ``unreachable_grace``; ``no``: the desktop is kept.
    replace: str
    words: str

    @property
    def replaces_now(self) -> bool:
        return self.replace == "now"


CONSEQUENCES: dict[Failure, Consequence] = {
    Failure.ACTION: Consequence(True, "no", "the model's fault: the episode goes on and the model is told"),
    Failure.TASK: Consequence(False, "no", "the call could not do its job; the desktop is intact and kept"),
    Failure.UNREACHABLE: Consequence(False, "after grace", "no answer for now: not leased, not healthy, "
                                     "replaced after `unreachable_grace` unless it answers again"),
    Failure.BROKEN: Consequence(False, "now", "the desktop is gone or down: replaced at once"),
    Failure.TIMED_OUT: Consequence(False, "now", "the call may still run in the desktop: replaced at once"),
}

#: Each rayenv error class's kind; a subclass takes its nearest listed ancestor's.
KIND_OF_ERROR: dict[type[RayEnvError], Failure] = {
    InvalidAction: Failure.ACTION,
    ActionFailed: Failure.ACTION,
    InvalidTaskConfig: Failure.TASK,
    SetupFailed: Failure.TASK,
    EvaluationError: Failure.TASK,
    ConfigError: Failure.TASK,
    PoolError: Failure.TASK,
    SnapshotError: Failure.TASK,
    ProviderUnavailable: Failure.BROKEN,
    DesktopUnreachable: Failure.UNREACHABLE,
    DesktopUnavailable: Failure.BROKEN,
    EnvTimeout: Failure.TIMED_OUT,
    RayEnvError: Failure.BROKEN,  # untyped inside the actor: nobody can vouch for the desktop
}

#: What a call to a desktop on a silent env host raises (typed as DesktopUnreachable).
UNREACHABLE_RAY_ERRORS = (ray.exceptions.ActorUnavailableError,)
#: Boot failures that a retry on the same host cannot fix; the slot fails at once, with the error's hint.
PERMANENT_BOOT_ERRORS = (ProviderUnavailable, ConfigError)


def kind_of(error: RayEnvError) -> Failure:
    """The kind of a typed error (its class's, or its nearest listed ancestor's)."""
    for cls in type(error).__mro__:
        if cls in KIND_OF_ERROR:
            return KIND_OF_ERROR[cls]
    return Failure.BROKEN


def classify(exc: BaseException, env: str | None = None) -> Failure:
    """The kind of any error a desktop's call raised (typed or Ray's or asyncio's own); one that is none of
    these (a bug on the way) is ``broken``: nobody can vouch for the desktop."""
    try:
        return kind_of(typed(exc, env))
    except Exception:  # noqa: BLE001 - typed() re-raises what it does not know
        return Failure.BROKEN


def classify_probe(exc: BaseException) -> Failure:
    """The kind of a failed health probe (``ping``, a control-group call that never queues behind a step):
    one that went unanswered in time means the desktop is unreachable, not that it timed out at work."""
    if isinstance(exc, (asyncio.TimeoutError, ray.exceptions.GetTimeoutError)):
        return Failure.UNREACHABLE
    return classify(exc)


def replaces_now(exc: BaseException) -> bool:
    """Whether the desktop that raised this is released as broken and replaced at once."""
    return CONSEQUENCES[classify(exc)].replaces_now


def typed(exc: BaseException, env: Any = None, phase: str | None = None) -> RayEnvError:
    """The :class:`~rayenv.errors.RayEnvError` a lessee sees for ``exc`` from a call to desktop ``env``.

    The actor's own typed error is passed through (unwrapped from Ray's ``RayTaskError``); an actor that
    died or was killed (the pool replaced it) is ``DesktopUnavailable``; one Ray calls unavailable is
    ``DesktopUnreachable``; a timed-out wait is ``EnvTimeout``; anything else the
    actor raised is a plain ``RayEnvError`` naming it. Errors that did not come from the call (a bug in
    the caller) are re-raised.
    """
    name = None if env is None else str(env)
    error = _typed(exc, name)
    if error.env is None:
        error.env = name
    if error.phase is None:
        error.phase = phase
    return error


def _typed(exc: BaseException, env: str | None) -> RayEnvError:
    if isinstance(exc, RayEnvError):
        return exc
    if isinstance(exc, ray.exceptions.RayTaskError):
        cause = getattr(exc, "cause", None)
        if isinstance(cause, RayEnvError):
            return cause
        inner = cause if isinstance(cause, BaseException) else exc
        return RayEnvError(f"env call raised {type(inner).__name__}: {_first_line(inner)}", env=env,
                           hint="a bug or an untyped failure inside the env actor; the desktop is replaced")
    if isinstance(exc, UNREACHABLE_RAY_ERRORS):
        return DesktopUnreachable(f"env actor is unreachable: {_first_line(exc)}", env=env,
                                  hint="its env host's link is down; the pool keeps it until unreachable_grace")
    if isinstance(exc, ray.exceptions.RayActorError):
        return DesktopUnavailable(f"env actor is gone: {type(exc).__name__}: {_first_line(exc)}", env=env,
                                  hint="the pool replaced or lost this desktop; lease another one")
    if isinstance(exc, (asyncio.TimeoutError, ray.exceptions.GetTimeoutError)):
        return EnvTimeout("env call did not finish in time", env=env,
                          hint="the desktop is released as broken and replaced")
    raise exc


def _first_line(exc: BaseException) -> str:
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), "")[:300]


def markdown_table() -> str:
    """The failure table of docs/pool.md ("What a failure means"), one row per error class."""
    rows = ["| error | kind | the episode | the desktop |", "| --- | --- | --- | --- |"]
    for cls, kind in KIND_OF_ERROR.items():
        consequence = CONSEQUENCES[kind]
        episode = "goes on" if consequence.episode_goes_on else "ends"
        rows.append(f"| `{cls.__name__}` | {kind.value} | {episode} | {consequence.words} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
