"""A score is only returned when the evaluator could stand behind it (issue 12, items 1 and 5).

Real desktops, real faults, injected the way the report did: a small full tmpfs mounted over the
desktop's /tmp or home (inside the container's mount namespace for lite desktops, over the private
TMPDIR/HOME of a process desktop), and a guest ``/file`` request refused on the network (a reset
for packets carrying ``POST /file``, in the container's network namespace). Each case first shows
the episode scores 1.0 (or a legitimate 0.0) without the fault.
"""

from __future__ import annotations

import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import docker
import pytest

from rayenv.env.desktop import Desktop
from rayenv.env.options import EnvOptions
from rayenv.env.tasks import load_tasks
from rayenv.errors import DesktopUnavailable, EvaluationError
from rayenv.providers import DesktopSpec, Ownership

REPO = Path(__file__).resolve().parents[1]
TASKS = {task["id"]: task for task in load_tasks(REPO / "OSWorld" / "tasks")}
OPTIONS = EnvOptions(default_pause=0.2)


def make_desktop(provider: str, name: str) -> Desktop:
    desktop = Desktop(DesktopSpec(provider=provider, screen_width=1280, screen_height=720),
                      Ownership(owner="scores-tests", env_name=name), OPTIONS)
    desktop.start()
    return desktop


@pytest.fixture
def lite(request) -> Iterator[Desktop]:
    from rayenv.desktop_lite.build import build_image

    build_image()
    desktop = make_desktop("lite", f"scores-{request.node.name[-30:].strip('_')}")
    yield desktop
    desktop.close()


@pytest.fixture
def process(request) -> Iterator[Desktop]:
    desktop = make_desktop("process", "scores-process")
    yield desktop
    desktop.close()


def container_pid(desktop: Desktop) -> int:
    return docker.from_env().containers.get(desktop.provider.describe()["container_id"]).attrs["State"]["Pid"]


def sh(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)


@contextmanager
def full_tmpfs(path: str, pid: int | None = None) -> Iterator[None]:
    """A 64 KiB tmpfs over ``path`` (in process ``pid``'s mount namespace), filled until it refuses writes."""
    enter = ["nsenter", "-t", str(pid), "-m", "-p", "--"] if pid else []  # -p: umount reads /proc/self
    sh(*enter, "mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", path)
    try:
        filled = subprocess.run([*enter, "dd", "if=/dev/zero", f"of={path}/filler", "bs=4k"], capture_output=True,
                                text=True, timeout=60)
        assert "No space left on device" in filled.stderr
        yield
    finally:
        sh(*enter, "umount", "-l", path)


@contextmanager
def refused(pattern: str, pid: int) -> Iterator[None]:
    """Requests carrying ``pattern`` into the container's guest port are answered with a TCP reset."""
    rule = ["INPUT", "-p", "tcp", "--dport", "5000", "-m", "string", "--string", pattern, "--algo", "bm",
            "-j", "REJECT", "--reject-with", "tcp-reset"]
    sh("nsenter", "-t", str(pid), "-n", "--", "iptables", "-w", "-I", *rule)
    try:
        yield
    finally:
        sh("nsenter", "-t", str(pid), "-n", "--", "iptables", "-w", "-D", *rule)


def solve(desktop: Desktop, task_id: str) -> None:
    task = TASKS[task_id]
    desktop.reset(task)
    for action in [*task["rayenv_solution"], "DONE"]:
        desktop.step(action)


pytestmark = [pytest.mark.slow]


@pytest.mark.docker
def test_a_solved_task_with_tmp_full_raises_evaluation_error_instead_of_scoring_0(lite):
    solve(lite, "terminal-make-directory")
    assert lite.evaluate() == 1.0
    with full_tmpfs("/tmp", container_pid(lite)):
        with pytest.raises(EvaluationError, match=r"tmp /tmp has 0 KiB free") as raised:
            lite.evaluate()
    assert raised.value.phase == "evaluate" and "drop this sample" in raised.value.hint
    assert lite.state == "broken" and lite.alive() is False  # the pool replaces it at its next ping


@pytest.mark.docker
def test_a_refused_file_request_raises_evaluation_error_naming_the_getter_and_the_failure(lite):
    solve(lite, "mousepad-replace-notes")
    assert lite.evaluate() == 1.0
    with refused("POST /file", container_pid(lite)):
        with pytest.raises(EvaluationError) as raised:
            lite.evaluate()
    assert "getter 'vm_file' could not read the desktop" in raised.value.message
    assert "POST /file: ConnectionError" in raised.value.message


@pytest.mark.docker
def test_with_the_home_disk_full_the_save_fails_silently_and_evaluate_raises(lite):
    task = TASKS["mousepad-save-hello"]
    lite.reset(task)
    with full_tmpfs("/root", container_pid(lite)):
        results = [lite.step(action) for action in [*task["rayenv_solution"], "DONE"]]
        assert all("fail" not in result["info"] for result in results)  # every step "ok"
        with pytest.raises(EvaluationError, match=r"home /root has 0 KiB free"):
            lite.evaluate()
    assert lite.state == "broken"


@pytest.mark.docker
def test_an_unsolved_task_still_scores_a_legitimate_0(lite):
    lite.reset(TASKS["mousepad-save-hello"])  # ~/hello.txt never saved: `cat` fails with its own error
    lite.step("DONE")
    assert lite.evaluate() == 0.0


def test_a_process_desktop_whose_tmp_is_full_is_refused_before_setup(process):
    tmp = process.provider.describe()["workdir"] + "/tmp"
    with full_tmpfs(tmp):
        with pytest.raises(DesktopUnavailable, match=rf"tmp {tmp} has 0 KiB free") as raised:
            process.reset(TASKS["terminal-make-directory"])
    assert raised.value.phase == "reset" and process.state == "broken"


def test_a_process_desktop_whose_home_is_full_is_not_scored(process):
    solve(process, "terminal-make-directory")
    home = process.provider.describe()["workdir"] + "/home"
    with full_tmpfs(home):
        with pytest.raises(EvaluationError, match=rf"home {home} has 0 KiB free"):
            process.evaluate()


def test_a_comparison_whose_result_and_gold_are_both_missing_has_no_score(process):
    # the result alone missing is a legitimate 0.0 (test above); without a gold nothing can be scored
    task = {"id": "no-gold", "instruction": "Write ~/answer.txt.", "config": [],
            "evaluator": {"func": "compare_text_file",
                          "result": {"type": "vm_file", "path": "~/answer.txt", "dest": "answer.txt"},
                          "expected": {"type": "vm_file", "path": "~/.no-gold/answer.txt", "dest": "gold.txt"}}}
    process.reset(task)
    process.step("DONE")
    with pytest.raises(EvaluationError, match="no gold to compare with") as raised:
        process.evaluate()
    assert raised.value.phase == "evaluate" and "drop it" in raised.value.hint
