"""``rayenv suite run`` (issue 17, item 4): OSWorld-format tasks from an ``evaluation_examples`` tree run on one
real process desktop of a local pool: reset, the task's scripted actions, evaluate; each task's score or
why it was skipped is printed in a table and written as JSON. The download task's file comes from the
cache ``rayenv suite prefetch`` filled from a local HTTP server that is stopped before the run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from osworld_examples import serving, write
from rayenv.cli.main import app
from rayenv.suite.examples import select
from rayenv.suite.runner import actions_for

IDS = "os-echo,os-make-file,os-download,os-install-photoshop,vlc-play-exit"


def rayenv(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_a_solution_file_wins_over_the_tasks_own_and_actions_end_in_done(tmp_path):
    examples = write(tmp_path / "evaluation_examples")
    by_id = {task.id: task for task in select(examples, domains=["os"])}
    assert actions_for(by_id["os-echo"], None) == []
    assert actions_for(by_id["os-install-photoshop"], None) == ["FAIL"]
    assert actions_for(by_id["os-make-file"], None)[-1] == "DONE"
    (tmp_path / "solutions").mkdir()
    (tmp_path / "solutions" / "os-make-file.json").write_text(json.dumps(["WAIT"]))
    assert actions_for(by_id["os-make-file"], tmp_path / "solutions") == ["WAIT", "DONE"]


@pytest.mark.slow
def test_a_run_of_small_tasks_on_one_desktop_prints_scores_and_writes_json(tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "results.json"
    with serving(tmp_path / "served") as url:
        examples = write(tmp_path / "evaluation_examples", url)
        assert rayenv("suite", "prefetch", str(examples), "--ids", "os-download", "--cache", str(cache)).exit_code == 0
    done = rayenv("suite", "run", str(examples), "--ids", IDS, "--provider", "process", "--cache", str(cache),
                  "--out", str(out))
    assert done.exit_code == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    scores = {r["id"]: r["score"] for r in report["results"]}
    assert scores == {"os-echo": 1.0, "os-make-file": 1.0, "os-download": 1.0, "os-install-photoshop": 1.0,
                      "vlc-play-exit": None}
    skipped = {r["id"]: r["skipped"] for r in report["results"] if r["skipped"]}
    assert list(skipped) == ["vlc-play-exit"] and "check_play_and_exit" in skipped["vlc-play-exit"]
    assert report["summary"] == {**report["summary"], "tasks": 5, "scored": 4, "solved": 4, "errors": 0, "skipped": 1}
    assert "4 scored (4 solved, mean 1.0)" in done.stdout and "os-download" in done.stdout
