"""Remote failures as values: every env call's result says ok or which error, per desktop.

Lock-step rollouts fan one call out to many desktops; one dead container must not cost the other
results. :func:`gather` and :func:`as_completed` turn each Ray object ref into an :class:`Outcome`
holding either the value or a typed :class:`~rayenv.errors.RayEnvError` (an actor that died becomes
:class:`~rayenv.errors.DesktopUnavailable`), so the trainer branches on data instead of catching.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, Hashable, Iterable, Iterator, Mapping, TypeVar

import ray
from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError, RayTaskError

from ..errors import DesktopUnavailable, EnvTimeout, RayEnvError

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """The result of one remote env call: ``value`` when ``ok``, else ``error``. ``unreachable``: the call
    went unanswered (its env host's link is down), which says nothing about the desktop itself."""

    key: Any
    value: T | None = None
    error: RayEnvError | None = None
    unreachable: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def broken(self) -> bool:
        """The desktop is gone (its actor died, or it reports itself down): the pool replaces it."""
        return isinstance(self.error, DesktopUnavailable) and not self.unreachable

    def unwrap(self) -> T:
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]


def as_env_error(exc: BaseException, key: Any = None) -> RayEnvError:
    """Map whatever Ray raised for an env call onto rayenv's typed errors."""
    if isinstance(exc, RayEnvError):
        return exc
    if isinstance(exc, RayTaskError):
        cause = exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else None
        if isinstance(cause, RayEnvError):
            return cause
        return RayEnvError(f"env call raised {type(cause or exc).__name__}: {cause or exc}", env=str(key))
    if isinstance(exc, RayActorError):
        reason = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
        return DesktopUnavailable(f"env actor is gone: {type(exc).__name__}: {reason[:300]}", env=str(key),
                                  phase="call", hint="the pool replaces dead actors; lease another desktop")
    if isinstance(exc, GetTimeoutError):
        return EnvTimeout("env call did not finish in time", env=str(key), phase="call",
                          hint="release the lease as broken so the pool replaces the desktop")
    raise exc


def resolve(key: Any, ref: ray.ObjectRef, timeout: float | None = None) -> Outcome:
    try:
        return Outcome(key, value=ray.get(ref, timeout=timeout))
    except Exception as exc:  # noqa: BLE001 - classified by as_env_error, which re-raises the unknown
        return Outcome(key, error=as_env_error(exc, key), unreachable=isinstance(exc, ActorUnavailableError))


def gather(refs: Mapping[K, ray.ObjectRef], timeout: float | None = None) -> dict[K, Outcome]:
    """Wait for all refs (lock-step); one failure never hides the others' results."""
    return {key: resolve(key, ref, timeout) for key, ref in refs.items()}


def as_completed(refs: Mapping[K, ray.ObjectRef] | Iterable[tuple[K, ray.ObjectRef]],
                 timeout: float | None = None) -> Iterator[Outcome]:
    """Yield an :class:`Outcome` per ref as soon as it finishes (asynchronous rollouts).

    With ``timeout``, refs still pending when it runs out are yielded as :class:`EnvTimeout`.
    """
    pending = dict(refs.items() if isinstance(refs, Mapping) else refs)
    by_ref = {ref: key for key, ref in pending.items()}
    remaining = list(by_ref)
    while remaining:
        done, remaining = ray.wait(remaining, num_returns=1, timeout=timeout)
        if not done:
            for ref in remaining:
                yield Outcome(by_ref[ref], error=EnvTimeout("env call did not finish in time", env=str(by_ref[ref]),
                                                            phase="call"))
            return
        yield resolve(by_ref[done[0]], done[0])
