"""The agent loop's settings: the ``rayenv:`` section of the verl trainer config.

verl rejects unknown keys under its typed nodes (``actor_rollout_ref.rollout.agent`` ...), but a
top-level section of our own passes its validation, so everything rayenv needs lives there and is
overridable on the command line (``rayenv.agent.max_turns=20``). See ``configs/smoke_ray_env.yaml``
and ``docs/verl.md`` for every key.
"""

from __future__ import annotations

from typing import Any, Mapping

from pydantic import BaseModel, ConfigDict, Field

from ..pool.config import DEFAULT_NAMESPACE


class AgentSettings(BaseModel):
    """How one trajectory drives one desktop."""

    model_config = ConfigDict(extra="forbid")

    pool: str = Field("default", description="name of the EnvPool whose desktops the rollouts lease")
    namespace: str = Field(DEFAULT_NAMESPACE, description="Ray namespace the pool lives in")
    max_turns: int = Field(15, ge=1, description="model replies per episode before it is cut off")
    parser: str = Field("pyautogui", description="action parser: pyautogui, uitars or module:Class")
    parser_options: dict[str, Any] = Field(default_factory=dict, description="keyword arguments for the parser")
    system_prompt: str | None = Field(None, description="system prompt; None = the parser's built-in one")
    lease_timeout: float = Field(600.0, gt=0, description="seconds to wait for a free desktop")
    reset_timeout: float = Field(420.0, gt=0, description="seconds a reset (revert + task setup) may take")
    step_timeout: float = Field(120.0, gt=0, description="seconds one step (action + observation) may take")
    evaluate_timeout: float = Field(420.0, gt=0, description="seconds the task's evaluator may take")
    pause: float | None = Field(None, ge=0, description="seconds between an action and its screenshot; None = the pool's")
    max_pixels: int | None = Field(None, gt=0, description="downscale screenshots (aspect kept, on the model's "
                                   "28-pixel grid) to at most this many pixels before the model sees them; None = "
                                   "the screen's size (Qwen-VL's processor still caps at its own max_pixels)")

    @classmethod
    def from_trainer_config(cls, config: Mapping[str, Any] | Any) -> "AgentSettings":
        """Read ``rayenv.agent`` from a verl (OmegaConf) config; missing section = defaults."""
        section = config.get("rayenv", None) if hasattr(config, "get") else None
        agent = section.get("agent", None) if section is not None else None
        if agent is None:
            return cls()
        if not isinstance(agent, dict):
            from omegaconf import OmegaConf  # present wherever a verl config is

            agent = OmegaConf.to_container(agent, resolve=True)
        return cls.model_validate(agent)
