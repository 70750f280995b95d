"""Typed failures of rayenv.

Every error a trainer can see is a subclass of :class:`RayEnvError` and says *which* desktop failed,
*in which phase*, and *what to do next*. Trainers branch on the class (retry the episode on
:class:`DesktopUnavailable`, drop the sample on :class:`EvaluationError`, fix the data on
:class:`InvalidTaskConfig`); what each class means for the episode and the desktop (and so when the
pool replaces one) is decided once, in :mod:`rayenv.failures`.

The exceptions are plain Python values (picklable, no third-party types) so they cross Ray between
virtualenvs with different numpy or desktop-env versions.
"""

from __future__ import annotations


class RayEnvError(Exception):
    """Base class. ``env`` names the desktop, ``phase`` the step that failed, ``hint`` the fix."""

    def __init__(self, message: str, *, env: str | None = None, phase: str | None = None,
                 hint: str | None = None) -> None:
        self.message = message
        self.env = env
        self.phase = phase
        self.hint = hint
        super().__init__(message, env, phase, hint)

    def __reduce__(self):  # keep keyword-only fields across pickling (Ray ships exceptions)
        return (_rebuild, (type(self), self.message, self.env, self.phase, self.hint))

    def __str__(self) -> str:
        where = ", ".join(part for part in (self.env and f"env={self.env}",
                                            self.phase and f"phase={self.phase}") if part)
        text = f"[{where}] {self.message}" if where else self.message
        return f"{text}\n  -> {self.hint}" if self.hint else text


def _rebuild(cls: type[RayEnvError], message: str, env: str | None, phase: str | None,
             hint: str | None) -> RayEnvError:
    return cls(message, env=env, phase=phase, hint=hint)


class ConfigError(RayEnvError):
    """A configuration value is wrong; nothing was started."""


class InvalidAction(RayEnvError):
    """The action is malformed (bad type, unknown computer_13 action, syntax error).

    Nothing was executed and the desktop is unchanged, so the episode can continue.
    """


class ActionFailed(RayEnvError):
    """The action ran inside the desktop and raised; ``traceback`` holds the guest's traceback.

    The desktop is still usable; the action's partial effects (if any) remain.
    """

    def __init__(self, message: str, *, traceback: str = "", **kwargs) -> None:
        self.traceback = traceback
        super().__init__(message, **kwargs)

    def __reduce__(self):
        return (_rebuild_action_failed, (self.message, self.traceback, self.env, self.phase, self.hint))


def _rebuild_action_failed(message, traceback, env, phase, hint) -> "ActionFailed":
    return ActionFailed(message, traceback=traceback, env=env, phase=phase, hint=hint)


class InvalidTaskConfig(RayEnvError):
    """The OSWorld task config is malformed or names an unknown setup step / evaluator."""


class SetupFailed(RayEnvError):
    """A task setup step failed inside the desktop; the desktop is usable but not in the task's state."""


class EvaluationError(RayEnvError):
    """The evaluator could not produce a score. Never conflate with a score of 0.0."""


class EnvTimeout(RayEnvError):
    """A blocking wait (boot, readiness, step, evaluate) exceeded its configured timeout."""


class DesktopUnavailable(RayEnvError):
    """The desktop (container, VM or process) is gone or not answering. The pool replaces it."""


class DesktopUnreachable(DesktopUnavailable):
    """The desktop did not answer for now (its env host's link is down, Ray calls its actor unavailable).

    It may come back with the link: the pool keeps it out of leasing and replaces it only after
    ``unreachable_grace``. A :class:`DesktopUnavailable`, so code that retries on that retries here too.
    """


class ProviderUnavailable(RayEnvError):
    """The provider cannot run on this machine (no Docker engine, image missing, no Xvfb)."""


class SnapshotError(RayEnvError):
    """A VM snapshot could not be saved or loaded; the desktop falls back to restarting from its image."""


class PoolError(RayEnvError):
    """A pool-level failure: no desktop could be leased in time, the pool is shut down, ..."""
