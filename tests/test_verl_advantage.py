"""A failed sample never moves the advantages of the other samples in its GRPO group (issue 10).

verl's own ``compute_advantage`` (``verl.trainer.ppo.ray_trainer``) runs with the smoke config's
``algorithm`` section, in a trainer-venv process that got the smoke config's Ray ``env_vars`` (as
verl's ``TaskRunner`` gets them from ``ray.init(runtime_env=...)``), so the estimator is found the
way a training run finds it. This file is also that process: pytest runs
``<trainer python> tests/test_verl_advantage.py`` and reads one JSON line.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GROUP_OF_4 = [1.0, 0.0, 1.0, 0.0]   # the last sample's desktop died: reward 0.0, mask all 0
FAILED = 3
OTHER_GROUP = [0.0, 1.0, 1.0, 1.0]  # a second prompt in the same batch, nothing failed
RESPONSE_LENGTH = 5

pytestmark = [pytest.mark.verl, pytest.mark.slow]


def smoke_env_vars() -> dict[str, str]:
    import yaml

    config = yaml.safe_load((REPO / "configs" / "smoke_ray_env.yaml").read_text())
    return config["ray_kwargs"]["ray_init"]["runtime_env"]["env_vars"]


@pytest.fixture(scope="module")
def advantages() -> dict:
    python = REPO / ".venv-verl" / "bin" / "python"
    if not python.exists():
        pytest.fail("the verl trainer virtualenv is missing: run scripts/verl-venv.sh")
    done = subprocess.run([str(python), __file__], capture_output=True, text=True, cwd=REPO, timeout=300,
                          env={**os.environ, **smoke_env_vars()})
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_smoke_config_selects_the_estimator_that_leaves_failed_samples_out(advantages):
    assert advantages["estimator"] == "rayenv_grpo"


def test_three_scored_samples_of_a_group_of_4_get_exactly_the_advantages_of_a_group_of_3(advantages):
    scored = [a for i, a in enumerate(advantages["group_of_4"]) if i != FAILED]
    assert scored == advantages["group_of_3"]
    assert advantages["group_of_4"][FAILED] == 0.0


def test_verls_plain_grpo_would_have_moved_them(advantages):
    plain = [a for i, a in enumerate(advantages["plain_grpo_group_of_4"]) if i != FAILED]
    assert plain != advantages["group_of_3"]


def test_a_group_without_failures_in_the_same_batch_is_scored_as_by_plain_grpo(advantages):
    assert advantages["other_group"] == advantages["plain_grpo_other_group"]


# == the trainer-venv side ======================================================================
def _batch(groups: dict[str, list[float]], failed: set[tuple[str, int]]):
    """A verl batch: outcome reward on each row's last token, one uid per prompt, failed rows all masked."""
    import numpy as np
    import torch
    from verl.protocol import DataProto

    uids, rewards, masks = [], [], []
    for uid, scores in groups.items():
        for i, score in enumerate(scores):
            reward = torch.zeros(RESPONSE_LENGTH)
            reward[-1] = score
            uids.append(uid)
            rewards.append(reward)
            masks.append(torch.zeros(RESPONSE_LENGTH) if (uid, i) in failed else torch.ones(RESPONSE_LENGTH))
    return DataProto.from_dict(tensors={"token_level_rewards": torch.stack(rewards), "response_mask": torch.stack(masks)},
                               non_tensors={"uid": np.array(uids, dtype=object)})


def main() -> dict:
    from hydra import compose, initialize_config_dir
    from verl.trainer.ppo.ray_trainer import compute_advantage

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base=None):
        algorithm = compose(config_name="smoke_ray_env").algorithm

    def advantages(groups: dict[str, list[float]], estimator: str, failed=frozenset()) -> dict[str, list[float]]:
        data = compute_advantage(_batch(groups, set(failed)), adv_estimator=estimator, config=algorithm,
                                 norm_adv_by_std_in_grpo=algorithm.norm_adv_by_std_in_grpo)
        rows = data.batch["advantages"][:, 0].tolist()  # outcome advantage: the same on every unmasked token
        out, start = {}, 0
        for uid, scores in groups.items():
            out[uid], start = rows[start:start + len(scores)], start + len(scores)
        return out

    both = {"a": GROUP_OF_4, "b": OTHER_GROUP}
    ours = advantages(both, algorithm.adv_estimator, failed={("a", FAILED)})
    plain = advantages(both, "grpo", failed={("a", FAILED)})
    three = [s for i, s in enumerate(GROUP_OF_4) if i != FAILED]
    return {"estimator": algorithm.adv_estimator, "group_of_4": ours["a"], "other_group": ours["b"],
            "group_of_3": advantages({"a": three}, "grpo")["a"],
            "plain_grpo_group_of_4": plain["a"], "plain_grpo_other_group": plain["b"]}


if __name__ == "__main__":
    print(json.dumps(main()))
