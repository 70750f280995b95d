"""OSWorld task configs: validated before anything touches a desktop.

The shape is OSWorld's (``evaluation_examples/examples/<app>/<id>.json``): an ``id``, an
``instruction``, ``config`` setup steps and an ``evaluator``. Only the structure is checked here
(cheap, no desktop-env import), so that the trainer side can validate a dataset; names of setup
steps, getters and metrics are resolved against desktop-env on the env host.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import InvalidTaskConfig


class SetupStep(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    parameters: dict[str, Any] = Field(default_factory=dict)


class Evaluator(BaseModel):
    model_config = ConfigDict(extra="allow")
    func: str | list[str]
    result: dict[str, Any] | list[dict[str, Any]] = Field(default_factory=dict)
    expected: dict[str, Any] | list[dict[str, Any] | None] = Field(default_factory=dict)
    options: dict[str, Any] | list[dict[str, Any] | None] = Field(default_factory=dict)
    conj: str = "and"
    postconfig: list[SetupStep] = Field(default_factory=list)

    @field_validator("conj")
    @classmethod
    def _known_conjunction(cls, value: str) -> str:
        if value not in ("and", "or"):
            raise ValueError("conj must be 'and' or 'or'")
        return value

    def metric_names(self) -> list[str]:
        return self.func if isinstance(self.func, list) else [self.func]


class TaskConfig(BaseModel):
    """One OSWorld task. Unknown keys (``snapshot``, ``related_apps``, ...) are kept as they are."""

    model_config = ConfigDict(extra="allow")
    id: str = Field(min_length=1)
    instruction: str
    config: list[SetupStep] = Field(default_factory=list)
    evaluator: Evaluator

    @property
    def infeasible(self) -> bool:
        return self.evaluator.func == "infeasible"


def validate_task(task: Any, *, env: str | None = None) -> TaskConfig:
    """Parse a task dict; raise :class:`InvalidTaskConfig` listing every problem at once."""
    if isinstance(task, TaskConfig):
        return task
    if not isinstance(task, dict):
        raise InvalidTaskConfig(f"task config must be a dict, not {type(task).__name__}", env=env, phase="reset",
                                hint="pass the parsed JSON of an OSWorld task (id, instruction, config, evaluator)")
    try:
        return TaskConfig.model_validate(task)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'task'}: {e['msg']}" for e in exc.errors())
        raise InvalidTaskConfig(f"task {task.get('id', '?')!r} is malformed: {problems}", env=env, phase="reset",
                                hint="compare with an OSWorld example task; nothing was changed on the desktop") from None


def load_tasks(path: str | Path) -> list[dict[str, Any]]:
    """Load one task JSON file, or every ``*.json`` below a directory (sorted, validated)."""
    root = Path(path)
    files = sorted(root.rglob("*.json")) if root.is_dir() else [root]
    tasks = []
    if not files:
        raise InvalidTaskConfig(f"no task JSON at {root}", hint="give a task .json file or a directory holding some")
    for file in files:
        try:
            task = json.loads(file.read_text())
        except (OSError, ValueError) as exc:
            raise InvalidTaskConfig(f"{file}: not a readable task JSON ({exc})",
                                    hint="fix the file (an OSWorld task: id, instruction, config, evaluator)") from None
        try:
            validate_task(task)
        except InvalidTaskConfig as exc:
            raise InvalidTaskConfig(f"{file}: {exc.message}", hint=exc.hint) from None
        tasks.append(task)
    return tasks
