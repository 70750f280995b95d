"""GRPO whose group statistics leave out samples the environment failed (``algorithm.adv_estimator=rayenv_grpo``).

A sample whose desktop died, hung or could not be set up or evaluated has no score: the agent loop
gives it ``reward_score`` 0.0 and an all-zero ``response_mask`` (:mod:`rayenv.verl.agent_loop`).
The mask keeps it out of the gradient, but verl's GRPO still averages its 0.0 into its group's mean
and std, so an env failure moves the advantages of the group's other samples. This estimator runs
verl's own GRPO on the scored rows only and gives the failed rows advantage 0.

verl finds an estimator by name in ``core_algos``' registry, in the process that computes
advantages (the ``TaskRunner`` actor). Importing this module registers it; the smoke config makes
every Ray worker of the job import it through verl's ``VERL_USE_EXTERNAL_MODULES`` (set in
``ray_kwargs.ray_init.runtime_env.env_vars``, ``configs/smoke_ray_env.yaml``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage, register_adv_est

NAME = "rayenv_grpo"


@register_adv_est(NAME)
def compute_grpo_without_failed_samples(token_level_rewards: torch.Tensor, response_mask: torch.Tensor,
                                        index: np.ndarray, config: Any = None,
                                        **_: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """verl's GRPO over the rows with any unmasked token; rows with none (failed samples) get 0.

    A group whose every sample failed contributes nothing; a group left with one scored sample gets
    verl's single-sample treatment (mean 0, std 1).
    """
    scored = torch.nonzero(response_mask.any(dim=-1)).squeeze(-1)
    advantages = torch.zeros_like(token_level_rewards)
    if scored.numel():
        normalize = config.get("norm_adv_by_std_in_grpo", True) if config is not None else True
        kept, _ = compute_grpo_outcome_advantage(token_level_rewards[scored], response_mask[scored],
                                                 np.asarray(index)[scored.numpy()], norm_adv_by_std_in_grpo=normalize)
        advantages[scored] = kept
    return advantages, advantages
