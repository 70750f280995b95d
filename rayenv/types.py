"""The values that cross Ray between the env host and the trainer.

Plain dicts of ``bytes``/``str``/numbers only: the trainer and the env host may run different numpy
majors and different desktop-env installs, so no numpy arrays, PIL images or pydantic objects ride
along. The ``TypedDict``s document the keys for type checkers and readers.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict


class Observation(TypedDict):
    """The keys ``desktop_env.DesktopEnv`` returns; ``screenshot`` is PNG bytes (not base64)."""

    screenshot: bytes
    accessibility_tree: str | None
    terminal: str | None
    instruction: str | None


class StepResult(TypedDict):
    observation: Observation
    reward: float
    done: bool
    info: dict[str, Any]


#: The Ray node label an env host's node carries (``rayenv worker start`` sets it): which host a desktop runs on.
#: Here, not in :mod:`rayenv.cluster_state`, so the port plan (and the CLI) name it without importing Ray.
HOST_LABEL = "rayenv-host"

DesktopState = Literal["booting", "ready", "dirty", "broken", "closed"]


class EnvStatus(TypedDict):
    """What ``env.status.remote()`` returns; answered even while a step runs."""

    env_name: str
    provider: str
    state: DesktopState
    alive: bool
    node_id: str
    task_id: str | None
    steps: int
    episodes: int
    url: str | None
    last_error: str | None
    details: dict[str, Any]
