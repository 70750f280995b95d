"""Remote failures as values: every env call's result says ok or which error, per desktop.

Lock-step rollouts fan one call out to many desktops; one dead container must not cost the other
results. :func:`gather` and :func:`as_completed` turn each Ray object ref into an :class:`Outcome`
holding either the value or a typed :class:`~rayenv.errors.RayEnvError` with its
:class:`~rayenv.failures.Failure` kind (the same one a lease gives the same error), so the trainer
branches on data instead of catching. Both keep one deadline for the whole batch: N hung desktops
cost one timeout, not N.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Generic, Hashable, Iterable, Iterator, Mapping, TypeVar

import ray

from ..errors import EnvTimeout, RayEnvError
from ..failures import CONSEQUENCES, Failure, kind_of, typed

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """The result of one remote env call: ``value`` when ``ok``, else ``error`` (and its ``failure`` kind)."""

    key: Any
    value: T | None = None
    error: RayEnvError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def failure(self) -> Failure | None:
        return None if self.error is None else kind_of(self.error)

    @property
    def unreachable(self) -> bool:
        """The call went unanswered (its env host's link is down), which says nothing about the desktop itself."""
        return self.failure is Failure.UNREACHABLE

    @property
    def broken(self) -> bool:
        """The desktop must be replaced now (it is gone, or a call on it timed out), as a lease would decide."""
        return self.failure is not None and CONSEQUENCES[self.failure].replaces_now


def resolve(key: Any, ref: ray.ObjectRef) -> Outcome:
    """The outcome of a finished ref."""
    try:
        return Outcome(key, value=ray.get(ref))
    except Exception as exc:  # noqa: BLE001 - typed by rayenv.failures.typed, which re-raises the unknown
        return Outcome(key, error=typed(exc, key, phase="call"))


def timed_out(key: Any, timeout: float | None) -> Outcome:
    return Outcome(key, error=EnvTimeout(f"env call did not finish within the batch's {timeout}s", env=str(key),
                                         phase="call", hint="the desktop is released as broken and replaced"))


def gather(refs: Mapping[K, ray.ObjectRef], timeout: float | None = None) -> dict[K, Outcome]:
    """Wait for all refs (lock-step), all within one ``timeout``; one failure never hides the others' results."""
    outcomes = {outcome.key: outcome for outcome in as_completed(refs, timeout)}
    return {key: outcomes[key] for key in refs}


def as_completed(refs: Mapping[K, ray.ObjectRef] | Iterable[tuple[K, ray.ObjectRef]],
                 timeout: float | None = None) -> Iterator[Outcome]:
    """Yield an :class:`Outcome` per ref as soon as it finishes (asynchronous rollouts).

    ``timeout`` bounds the whole batch, counted from this call: refs still pending when it runs out are
    yielded as :class:`~rayenv.errors.EnvTimeout` (``timed_out``, so their desktops are replaced).
    """
    by_ref = {ref: key for key, ref in (refs.items() if isinstance(refs, Mapping) else refs)}
    deadline = None if timeout is None else time.monotonic() + timeout
    remaining = list(by_ref)
    while remaining:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        done, remaining = ray.wait(remaining, num_returns=1, timeout=left)
        if not done:
            for ref in remaining:
                yield timed_out(by_ref[ref], timeout)
            return
        yield resolve(by_ref[done[0]], done[0])
