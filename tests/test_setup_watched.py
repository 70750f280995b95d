"""A task's setup is watched like its evaluation (issue 17, item 2): a step the guest refused raises
``SetupFailed`` from ``reset()`` naming the step and the guest's words, so the episode never starts
(and is never scored) on a desktop that is not in the task's state.

The slow tests run on one real process desktop (host Xvfb + the guest server) shared by the module.
"""

from __future__ import annotations

from typing import Iterator

import pytest
import requests

from rayenv.env.desktop import Desktop
from rayenv.env.guest_calls import problem_of
from rayenv.env.options import EnvOptions
from rayenv.errors import EvaluationError, SetupFailed
from rayenv.providers import DesktopSpec, Ownership


def task(task_id: str, *steps: dict, postconfig: list[dict] | None = None) -> dict:
    return {"id": task_id, "instruction": "nothing to do", "config": list(steps),
            "evaluator": {"func": "exact_match", "result": {"type": "vm_command_line", "command": "echo done"},
                          "expected": {"type": "rule", "rules": {"expected": "done\n"}},
                          "postconfig": postconfig or []}}


def answer(status: int, path: str, body: str = "{}", content_type: str = "application/json") -> requests.Response:
    response = requests.Response()
    response.status_code, response.url, response._content = status, f"http://127.0.0.1:5000{path}", body.encode()
    response.headers["Content-Type"] = content_type
    return response


@pytest.mark.parametrize("response, during, failed", [
    (answer(500, "/setup/launch", '{"status": "error", "message": "No such file"}'), "setup", True),
    (answer(404, "/setup/open_file", '{"error": "no such file"}'), "setup", True),
    (answer(404, "/setup/open_file", '{"error": "no such file"}'), "evaluation", False),  # a file the agent never made
    (answer(404, "/setup/close_window", '{"error": "no window"}'), "setup", False),  # nothing to close is closed
    (answer(200, "/setup/execute", '{"status": "success", "returncode": 1, "output": ""}'), "setup", False),
    (answer(200, "/setup/execute", '{"status": "error", "message": "gio: not found"}'), "setup", True),
])
def test_setup_refuses_what_scoring_may_read_as_an_answer(response, during, failed):
    assert (problem_of(response, False, during) is not None) is failed


@pytest.fixture(scope="module")
def desktop() -> Iterator[Desktop]:
    desktop = Desktop(DesktopSpec(provider="process", screen_width=1024, screen_height=768),
                      Ownership(owner="setup-watched-tests", env_name="setup-watched"), EnvOptions(default_pause=0))
    desktop.start()
    yield desktop
    desktop.close()


@pytest.mark.slow
def test_a_setup_launching_a_program_that_does_not_exist_raises_setup_failed(desktop):
    launch = {"type": "launch", "parameters": {"command": ["rayenv-no-such-program", "--flag"]}}
    with pytest.raises(SetupFailed) as error:
        desktop.reset(task("launch-missing", {"type": "execute", "parameters": {"command": ["true"]}}, launch))
    message = error.value.message
    assert "setup step 2/2 'launch'" in message and "rayenv-no-such-program" in message
    assert "POST /setup/launch: HTTP 5" in message  # the guest's own words follow
    with pytest.raises(EvaluationError, match="reset"):  # the failed setup left no task to score
        desktop.evaluate()


@pytest.mark.slow
def test_opening_a_file_that_is_not_there_raises_setup_failed(desktop):
    with pytest.raises(SetupFailed, match=r"setup step 1/1 'open'.*/nonexistent/report\.docx"):
        desktop.reset(task("open-missing", {"type": "open", "parameters": {"path": "/nonexistent/report.docx"}}))


@pytest.mark.slow
def test_after_a_failed_setup_the_same_desktop_sets_up_the_next_task(desktop):
    ok = task("execute-ok", {"type": "execute", "parameters": {"command": ["sh", "-c", "exit 3"]}},
              {"type": "sleep", "parameters": {"seconds": 0.1}})
    observation = desktop.reset(ok)  # a command that exits non-zero ran: the task decides whether that matters
    assert observation["screenshot"].startswith(b"\x89PNG")
    assert desktop.evaluate() == 1.0


@pytest.mark.slow
def test_a_failed_postconfig_step_is_an_evaluation_error_not_a_score(desktop):
    desktop.reset(task("postconfig-fails", postconfig=[{"type": "launch",
                                                        "parameters": {"command": ["rayenv-no-such-program"]}}]))
    with pytest.raises(EvaluationError, match="postconfig failed.*'launch'"):
        desktop.evaluate()
