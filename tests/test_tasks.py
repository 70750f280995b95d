"""OSWorld task configs are validated (structure on any side, names on the env host) before a desktop is touched."""

from __future__ import annotations

import pytest

from rayenv.env.evaluation import TaskRunner
from rayenv.env.tasks import validate_task
from rayenv.errors import InvalidTaskConfig
from rayenv.providers.base import GuestEndpoint

TASK = {"id": "t1", "instruction": "save a file", "config": [{"type": "execute", "parameters": {"command": ["true"]}}],
        "evaluator": {"func": "compare_text_file", "result": {"type": "vm_file", "path": "/root/a.txt", "dest": "a.txt"},
                      "expected": {"type": "rule", "rules": {"text": "hi"}}}, "snapshot": "kept"}


def test_a_well_formed_task_keeps_unknown_keys():
    task = validate_task(TASK)
    assert task.id == "t1" and task.model_extra["snapshot"] == "kept"


@pytest.mark.parametrize("broken, problem", [
    ("not a dict", "must be a dict"),
    ({"id": "x", "instruction": "i"}, "evaluator"),
    ({**TASK, "config": [{"parameters": {}}]}, "config.0.type"),
    ({**TASK, "evaluator": {"func": "f", "conj": "xor"}}, "conj"),
])
def test_malformed_tasks_list_what_is_wrong(broken, problem):
    with pytest.raises(InvalidTaskConfig, match=problem):
        validate_task(broken)


def test_unknown_setup_steps_metrics_and_getters_are_named_before_running():
    runner = TaskRunner(GuestEndpoint("127.0.0.1", 1), env="e", screen=(1920, 1080))
    task = validate_task({**TASK, "config": [{"type": "teleport", "parameters": {}}],
                          "evaluator": {"func": ["compare_text_file", "nope_metric"],
                                        "result": [{"type": "vm_file"}, {"type": "nope_getter"}]}})
    with pytest.raises(InvalidTaskConfig) as error:
        runner.check(task)
    for name in ("setup step 'teleport'", "metric 'nope_metric'", "getter 'nope_getter'"):
        assert name in str(error.value)
