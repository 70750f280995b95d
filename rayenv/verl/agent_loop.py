"""The verl agent loop that runs one OSWorld task on one rayenv desktop per trajectory.

verl's ``AgentLoopWorker`` builds one :class:`OSWorldAgentLoop` per sample and awaits ``run``.
For a row with ``agent_name: rayenv_osworld`` and a ``task_config`` (see
:mod:`rayenv.verl.dataset`), ``run``:

1. leases a desktop from the pool named in ``rayenv.agent`` (:mod:`rayenv.rollout.settings`) and
   resets it to the task;
2. turns: messages with the screenshot → ``server_manager.generate`` → ``Episode.act(reply)``
   (:mod:`rayenv.rollout.episode`: parse, step each action) → the next user turn, until DONE/FAIL,
   ``max_turns`` or the response budget is used up;
3. evaluates with the task's OSWorld evaluator and returns verl's ``AgentLoopOutput``.

Tokens follow verl's Continuous Token path (``ct_build_initial_tokens``, ``ct_merge_*``): model
tokens have mask 1, observation tokens mask 0. With a VL processor each screenshot is an image
part of its message and an entry of ``multi_modal_data["images"]``, the same PIL image in both
(downscaled to ``rayenv.agent.max_pixels``, :mod:`rayenv.verl.images`), so the placeholder tokens
the processor expands match what verl's post-processing recomputes. An observation that would
overflow ``rollout.response_length`` is not appended (truncating inside an image breaks
alignment): the episode ends there and is still scored.

Env failures (desktop died, timeout, setup or evaluation impossible) do not become a silent 0:
the sample's ``response_mask`` is all zeros (no gradient) and ``reward_extra_info`` says
``env_failed=True`` with the reason, so verl logs it per sample and a trainer can drop the row.
Every env call is awaited; nothing blocks the worker's event loop.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any
from uuid import uuid4

from verl.experimental.agent_loop.agent_loop import AgentLoopBase, AgentLoopMetrics, AgentLoopOutput, register
from verl.utils.profiler import simple_timer

from ..env.tasks import validate_task
from ..rollout.episode import Episode, EpisodeFailed, connect_pool, open_episode
from ..rollout.messages import first_messages, turn_message
from ..rollout.parsers import make_parser
from ..rollout.settings import AgentSettings
from .dataset import AGENT_NAME
from .images import grid_factor, model_image

logger = logging.getLogger("rayenv.verl")


@dataclass
class Trajectory:
    """Token state and bookkeeping of one episode, as verl's tool agent loop keeps it."""

    token_ids: list[int] = field(default_factory=list)
    response_mask: list[int] = field(default_factory=list)
    logprobs: list[float] | None = None
    images: list[Any] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    assistant_turns: int = 0
    user_turns: int = 0
    format_errors: int = 0
    action_errors: int = 0
    ended_by: str = "max_turns"
    env_name: str = ""
    metrics: dict[str, float] = field(default_factory=dict)


@register(AGENT_NAME)
class OSWorldAgentLoop(AgentLoopBase):
    """verl agent loop over a rayenv pool. Settings: the trainer config's ``rayenv.agent`` section."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings = AgentSettings.from_trainer_config(self.config)
        self.parse = make_parser(self.settings.parser, **self.settings.parser_options)
        self.response_length = self.rollout_config.response_length
        self.with_images = self.processor is not None
        self.grid = grid_factor(self.processor)

    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> AgentLoopOutput:
        raw = kwargs["task_config"]
        task = json.loads(raw) if isinstance(raw, str) else dict(raw)
        validate_task(task)
        traj = Trajectory()
        reward, failure = 0.0, None
        try:
            async with open_episode(connect_pool(self.settings), self.settings, self.parse) as episode:
                traj.env_name = episode.env_name
                with simple_timer("env_reset", traj.metrics):
                    observation = await episode.reset(task)
                await self._start(traj, task["instruction"], observation)
                await self._turns(traj, episode, sampling_params)
                with simple_timer("env_evaluate", traj.metrics):
                    reward = await episode.evaluate()
        except EpisodeFailed as failed:
            failure = failed.reason
            logger.warning("task %s on %s failed: %s", task["id"], traj.env_name or "-", failure)
            if not traj.token_ids:  # failed before the first prompt: score nothing, but keep the row
                traj.token_ids = await self._text_prompt(kwargs.get("raw_prompt") or [])
        return self._output(traj, reward, failure, task["id"])

    # -- the episode -----------------------------------------------------------------------------
    async def _start(self, traj: Trajectory, instruction: str, observation: dict[str, Any]) -> None:
        image = self._image(observation["screenshot"])
        traj.messages = first_messages(instruction, observation, parser=self.settings.parser, image=image,
                                       system=self.settings.system_prompt)
        traj.images = [image] if image is not None else []
        self._assert_mm_supported(bool(traj.images))
        traj.token_ids = await self.ct_build_initial_tokens(traj.messages, images=traj.images or None)

    async def _turns(self, traj: Trajectory, episode: Episode, sampling_params: dict[str, Any]) -> None:
        request_id = uuid4().hex  # sticky: every turn of this trajectory goes to the same server
        while True:
            reply = await self._generate(traj, request_id, sampling_params)
            if len(traj.response_mask) >= self.response_length:
                traj.ended_by = "response_length"
                return
            turn = await episode.act(reply)
            traj.format_errors += turn.format_error
            traj.action_errors += turn.action_error
            if turn.terminal:
                traj.ended_by = turn.terminal
                return
            image = None if turn.format_error else self._image(episode.observation["screenshot"])
            if not await self._append(traj, turn_message(turn, episode.observation, image=image), image):
                return
            if turn.last:
                return  # ended_by stays "max_turns"

    async def _generate(self, traj: Trajectory, request_id: str, sampling_params: dict[str, Any]) -> str:
        with simple_timer("generate_sequences", traj.metrics):
            output = await self.server_manager.generate(
                request_id=request_id, prompt_ids=traj.token_ids, sampling_params=sampling_params,
                image_data=traj.images or None)
        merged, traj.response_mask, logprobs = await self.ct_merge_assistant_token(
            traj.token_ids, output.token_ids, traj.response_mask, (traj.logprobs or []) if output.log_probs else None,
            assistant_logprobs=output.log_probs or None)
        traj.token_ids = merged.token_ids
        traj.logprobs = logprobs
        traj.assistant_turns += 1
        reply = self.tokenizer.decode(output.token_ids, skip_special_tokens=True)
        traj.messages.append({"role": "assistant", "content": reply})
        return reply

    def _image(self, png: bytes) -> Any:
        """The screenshot as the model sees it, or None for a model without an image processor."""
        return model_image(png, max_pixels=self.settings.max_pixels, factor=self.grid) if self.with_images else None

    async def _append(self, traj: Trajectory, message: dict[str, Any], image: Any = None) -> bool:
        """Append a user turn; False (and nothing appended) when it would overflow the response budget,
        so an image is never cut: its placeholder tokens must match ``multi_modal_data`` one to one."""
        before = list(traj.messages)
        images = traj.images + ([image] if image is not None else [])
        merged, mask, logprobs = await self.ct_merge_context_msg(before, before + [message], traj.token_ids,
                                                                 traj.response_mask, traj.logprobs)
        if len(mask) >= self.response_length:
            traj.ended_by = "response_length"
            return False
        traj.messages.append(message)
        traj.token_ids, traj.response_mask, traj.logprobs, traj.images = merged.token_ids, mask, logprobs, images
        traj.user_turns += 1
        return True

    async def _text_prompt(self, raw_prompt: list[dict[str, Any]]) -> list[int]:
        return await self.ct_build_initial_tokens(list(raw_prompt))

    # -- verl's output ---------------------------------------------------------------------------
    def _output(self, traj: Trajectory, reward: float, failure: str | None, task_id: str) -> AgentLoopOutput:
        n_response = len(traj.response_mask)
        prompt_ids = traj.token_ids[: len(traj.token_ids) - n_response]
        response_ids = traj.token_ids[len(prompt_ids):][: self.response_length]
        mask = [0] * len(response_ids) if failure else traj.response_mask[: self.response_length]
        extra = {
            "env_failed": failure is not None,
            "env_error": failure or "",
            "env_name": traj.env_name,
            "task_id": task_id,
            "ended_by": "env_failure" if failure else traj.ended_by,
            "assistant_turns": traj.assistant_turns,
            "images": len(traj.images),
            "format_errors": traj.format_errors,
            "action_errors": traj.action_errors,
        }
        return AgentLoopOutput(
            prompt_ids=prompt_ids,
            response_ids=response_ids,
            response_mask=mask,
            response_logprobs=traj.logprobs[: self.response_length] if traj.logprobs else None,
            multi_modal_data={"images": traj.images} if traj.images else {},
            reward_score=reward,
            num_turns=traj.assistant_turns + traj.user_turns + 1,
            metrics=AgentLoopMetrics(**{k: v for k, v in traj.metrics.items() if k in AgentLoopMetrics.model_fields}),
            extra_fields={"reward_extra_info": extra, "turn_scores": [], "tool_rewards": [],
                          "env_timing": {k: round(v, 3) for k, v in traj.metrics.items()}},
        )
