"""One leased desktop driven through one episode, every remote call awaited with a timeout.

:meth:`Episode.act` is the one place a model's reply becomes desktop steps: parse it, run its
actions in order, stop at the first action the desktop refuses (the model's fault: the episode goes
on and :attr:`Turn.note` says what to tell the model), count the reply against ``max_turns``. The
verl agent loop, the ARPO-compatible worker (and through it the sidecar's old-bridge endpoints)
wrap it and differ only in how they render a :class:`Turn` for their model.

Shared by all of them and the rollout bench; what a failure means is :mod:`rayenv.failures`'s call,
as for the pool: an ``action`` failure is the model's (the episode goes on), any other ends the
episode as :class:`EpisodeFailed` carrying the typed :class:`~rayenv.errors.RayEnvError`, and the
lease releases the desktop as broken when its kind says so (it died, or a call on it timed out: a
timed-out ``await`` does not stop the actor's running call).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from dataclasses import dataclass
from typing import Any, AsyncIterator

from ..errors import EnvTimeout, RayEnvError
from ..failures import CONSEQUENCES, kind_of, typed
from ..pool.handle import EnvPool, Lease
from ..types import Observation, StepResult
from .parsers import ActionParser, ParsedReply, ReplyFormatError, make_parser
from .settings import AgentSettings

class EpisodeFailed(Exception):
    """The desktop could not carry the episode to a score. ``reason`` is what metrics report."""

    def __init__(self, error: RayEnvError) -> None:
        self.error = error
        self.phase = error.phase or "unknown"
        self.reason = f"{type(error).__name__} in {self.phase}: {error.message}"
        super().__init__(self.reason)

    def __reduce__(self) -> tuple[Any, ...]:  # crosses Ray (ARPOEnvWorker.evaluate raises it) whole
        return (EpisodeFailed, (self.error,))


@dataclass(frozen=True)
class Turn:
    """What one model reply did on the desktop (:meth:`Episode.act`)."""

    #: The reply's actions; None when it could not be parsed (nothing ran, :attr:`note` says why).
    parsed: ParsedReply | None
    #: The screen after the last action that ran; None when none ran (the screen is unchanged).
    observation: Observation | None
    #: What to tell the model: why the reply was unusable or which action failed; "" when all ran.
    note: str = ""
    #: An action raised ActionFailed/InvalidAction; the actions after it did not run.
    action_error: bool = False
    #: This reply used up the episode's ``max_turns``.
    last: bool = False

    @property
    def format_error(self) -> bool:
        return self.parsed is None

    @property
    def terminal(self) -> str | None:
        """``DONE`` or ``FAIL`` when the reply ended the episode (those actions went to the desktop too)."""
        return self.parsed.terminal if self.parsed is not None else None

    @property
    def ends(self) -> bool:
        """The episode is over: the model said DONE/FAIL or this was its last reply."""
        return self.terminal is not None or self.last


class Episode:
    """The env calls of one episode on a leased desktop (see :func:`open_episode`).

    ``parse`` turns replies into actions (default: ``settings.parser`` with its options).
    ``observation`` is the latest screen (from :meth:`reset` or the last step), ``turns`` the
    replies :meth:`act` has run since the reset.
    """

    def __init__(self, lease: Lease, settings: AgentSettings, parse: ActionParser | None = None) -> None:
        self.lease = lease
        self.settings = settings
        self.parse = parse or make_parser(settings.parser, **settings.parser_options)
        self.steps = 0
        self.turns = 0
        self.observation: Observation | None = None

    @property
    def env_name(self) -> str:
        return self.lease.env_name

    async def _call(self, ref: Any, timeout: float, phase: str) -> Any:
        try:
            return await asyncio.wait_for(ref, timeout)
        except asyncio.TimeoutError:
            raise EnvTimeout(f"{phase} did not answer within {timeout:.0f}s", env=self.env_name, phase=phase,
                             hint=f"raise rayenv.agent.{phase}_timeout; the desktop is replaced") from None
        except Exception as exc:  # noqa: BLE001 - typed by rayenv.failures; anything unknown is re-raised
            raise typed(exc, self.env_name, phase) from None

    async def reset(self, task: dict[str, Any]) -> Observation:
        self.turns, self.observation = 0, None
        self.observation = await self._call(self.lease.env.reset.remote(task), self.settings.reset_timeout, "reset")
        return self.observation

    async def step(self, action: str) -> StepResult:
        """One action. Raises ActionFailed/InvalidAction (the model's fault) or an env error."""
        self.steps += 1
        ref = self.lease.env.step.remote(action, self.settings.pause, f"{self.env_name}:{self.steps}")
        result = await self._call(ref, self.settings.step_timeout, "step")
        self.observation = result["observation"]
        return result

    async def act(self, reply: str) -> Turn:
        """Run one model reply on the desktop and say what happened.

        The reply is parsed against the latest screen's size; an unusable reply runs nothing. Its
        actions run in order until one fails (ActionFailed/InvalidAction: the model's fault, told in
        :attr:`Turn.note`) or the desktop reports the episode done. Env errors (the desktop died, a
        timeout) are raised as the typed :class:`~rayenv.errors.RayEnvError`, as :meth:`step` does.
        """
        if self.observation is None:
            raise RuntimeError("Episode.act before a successful reset")
        self.turns += 1
        last = self.turns >= self.settings.max_turns
        try:
            parsed = self.parse(reply, png_size(self.observation["screenshot"]))
        except ReplyFormatError as exc:
            return Turn(None, None, f"Your reply could not be used: {exc}", last=last)
        observation = None
        for action in parsed.actions:
            try:
                result = await self.step(action)
            except RayEnvError as exc:
                if not CONSEQUENCES[kind_of(exc)].episode_goes_on:
                    raise
                return Turn(parsed, observation, f"The action failed: {exc.message}", action_error=True, last=last)
            observation = result["observation"]
            if result["done"]:
                break
        return Turn(parsed, observation, last=last)

    async def evaluate(self) -> float:
        return float(await self._call(self.lease.env.evaluate.remote(), self.settings.evaluate_timeout, "evaluate"))


@contextlib.asynccontextmanager
async def open_episode(pool: EnvPool, settings: AgentSettings,
                       parse: ActionParser | None = None) -> AsyncIterator[Episode]:
    """Lease a desktop for one episode; env failures leave as :class:`EpisodeFailed`, the lease released."""
    try:
        async with pool.lease_async(settings.lease_timeout) as lease:
            yield Episode(lease, settings, parse)
    except RayEnvError as error:
        raise EpisodeFailed(error) from error


_POOLS: dict[tuple[str, str], EnvPool] = {}


def connect_pool(settings: AgentSettings) -> EnvPool:
    """The pool handle for these settings, looked up once per process (verl builds a loop per sample)."""
    key = (settings.pool, settings.namespace)
    if key not in _POOLS:
        _POOLS[key] = EnvPool.connect(settings.pool, namespace=settings.namespace)
    return _POOLS[key]


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's header, without decoding the image."""
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG screenshot")
    width, height = struct.unpack(">II", png[16:24])
    return width, height
