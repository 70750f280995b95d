"""An env worker with ARPO's method names and return shapes, backed by a rayenv pool desktop.

ARPO-style trainers hold one env-worker actor per rollout slot and call ``reset(task_config)``,
``step(prediction)``, ``evaluate()`` and ``get_history_messages()`` on it; their worker reaches its
desktop over HTTP (``RemoteEnvWorker(url)``). :class:`ARPOEnvWorker` keeps those names and shapes
and leases a desktop from a pool instead, so switching is a change of class and config::

    from rayenv.rollout.arpo import ARPOEnvWorker
    workers = [ARPOEnvWorker.remote(i, pool="train", max_steps=15) for i in range(n)]
    out = ray.get(workers[0].reset.remote(task_config))   # {"env_idx", "obs_messages", "is_done", "format_reward"}
    out = ray.get(workers[0].step.remote(model_reply))
    score = ray.get(workers[0].evaluate.remote())

The desktop is leased at ``reset`` and given back after ``evaluate`` (or at the next ``reset`` /
``close``), so a pool of N desktops serves any number of workers, N at a time. Differences from
ARPO, on purpose: an env failure is not hidden as a 0.0 score; ``evaluate`` raises it (and
``reset``/``step`` report it under ``env_error`` with ``is_done=True``). Training tensors
(ARPO's ``get_train_dict``) stay the trainer's business. The mapping table is in docs/verl.md.
"""

from __future__ import annotations

from typing import Any

import ray

from ..errors import RayEnvError
from ..failures import replaces_now
from ..pool.handle import Lease
from .episode import Episode, EpisodeFailed, connect_pool
from .messages import first_messages, png_data_uri, turn_message
from .parsers import make_parser
from .settings import AgentSettings


@ray.remote(num_cpus=0)
class ARPOEnvWorker:
    """ARPO's ``EnvWorker`` contract over a leased rayenv desktop (an async Ray actor)."""

    def __init__(self, worker_idx: int, max_steps: int = 15, **settings: Any) -> None:
        self.worker_idx = worker_idx
        self.settings = AgentSettings(max_turns=max_steps, **settings)
        self.parse = make_parser(self.settings.parser, **self.settings.parser_options)
        self._lease: Lease | None = None
        self._episode: Episode | None = None
        self._reset_state()

    def _reset_state(self) -> None:
        self.history_messages: list[dict[str, Any]] = []
        self.history_images: list[bytes] = []
        self.done = False
        self.initialized = False
        self.env_error = ""

    def _reply(self, format_reward: float = 0.0) -> dict[str, Any]:
        return {"env_idx": self.worker_idx, "obs_messages": None if self.done else self.history_messages,
                "is_done": self.done, "format_reward": format_reward, "env_error": self.env_error}

    # -- ARPO's methods --------------------------------------------------------------------------
    async def reset(self, task_config: dict[str, Any]) -> dict[str, Any]:
        await self._give_back()
        self._reset_state()
        pool = connect_pool(self.settings)
        try:
            self._lease = await pool.acquire_async(self.settings.lease_timeout)
            self._episode = Episode(self._lease, self.settings, self.parse)
            observation = await self._episode.reset(task_config)
        except RayEnvError as error:
            return await self._fail(error)
        self.initialized = True
        self._observe(observation)
        self.history_messages = first_messages(task_config["instruction"], observation, parser=self.settings.parser,
                                               image=png_data_uri(observation["screenshot"]),
                                               system=self.settings.system_prompt)
        return self._reply()

    async def step(self, prediction: str) -> dict[str, Any]:
        if self.done or self._episode is None:
            return self._reply()
        self.history_messages.append({"role": "assistant", "content": prediction})
        try:
            turn = await self._episode.act(prediction)
        except RayEnvError as error:
            return await self._fail(error)
        if turn.format_error:
            self.done = turn.last
            self.history_messages.append(turn_message(turn, self._episode.observation))
            return self._reply(format_reward=-1.0)
        self.done = turn.ends
        if not self.done and turn.observation is not None:
            self._observe(turn.observation)
            self.history_messages.append(turn_message(turn, turn.observation,
                                                      image=png_data_uri(turn.observation["screenshot"])))
        return self._reply()

    async def evaluate(self) -> float:
        """The OSWorld evaluator's score. Raises the env error when there is no score (never a silent 0)."""
        if self.env_error:
            raise EpisodeFailed(RayEnvError(self.env_error, phase="evaluate"))
        if self._episode is None:
            raise EpisodeFailed(RayEnvError("evaluate before reset", phase="evaluate"))
        try:
            return await self._episode.evaluate()
        except RayEnvError as error:
            await self._fail(error)
            raise EpisodeFailed(error) from None
        finally:
            await self._give_back()

    def get_history_messages(self) -> list[dict[str, Any]]:
        return self.history_messages

    def get_history_images(self) -> list[bytes]:
        return self.history_images

    def is_done(self) -> bool:
        return self.done

    def is_init(self) -> bool:
        return self.initialized

    def get_environment_info(self) -> dict[str, Any]:
        return {"worker_idx": self.worker_idx, "service_id": self._lease.env_name if self._lease else None,
                "pool": self.settings.pool}

    async def cleanup_environment(self) -> None:
        await self._give_back()

    # -- helpers ---------------------------------------------------------------------------------
    def _observe(self, observation: dict[str, Any]) -> None:
        self.history_images.append(observation["screenshot"])

    async def _fail(self, error: RayEnvError) -> dict[str, Any]:
        self.env_error = EpisodeFailed(error).reason
        self.done = True
        await self._give_back(broken=replaces_now(error))
        return self._reply()

    async def _give_back(self, broken: bool = False) -> None:
        if self._lease is not None:
            lease, self._lease, self._episode = self._lease, None, None
            await connect_pool(self.settings).release_async(lease, broken=broken)

