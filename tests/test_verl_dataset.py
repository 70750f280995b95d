"""The dataset builder: OSWorld task JSONs become verl rows our agent loop can run (no verl needed)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from rayenv import InvalidTaskConfig
from rayenv.env.tasks import load_tasks
from rayenv.verl.dataset import AGENT_NAME, build_rows, main

REPO = Path(__file__).resolve().parents[1]
TASKS = REPO / "OSWorld" / "tasks"


def test_each_task_becomes_a_row_with_agent_name_prompt_and_the_whole_task_config():
    tasks = load_tasks(TASKS)
    rows = build_rows(tasks)
    assert [json.loads(r["task_config"]) for r in rows] == tasks
    assert {r["agent_name"] for r in rows} == {AGENT_NAME}
    assert rows[0]["prompt"] == [{"role": "user", "content": tasks[0]["instruction"]}]
    assert [r["extra_info"] for r in rows] == [{"index": i, "task_id": t["id"]} for i, t in enumerate(tasks)]


@pytest.mark.verl
def test_the_command_writes_a_parquet_file_verl_can_read(tmp_path):
    python = REPO / ".venv-verl" / "bin" / "python"
    if not python.exists():
        pytest.fail("the verl trainer virtualenv is missing: run scripts/verl-venv.sh")
    out = tmp_path / "train.parquet"
    subprocess.run([str(python), "-m", "rayenv.verl.dataset", str(TASKS), str(out), "--exclude",
                    "infeasible-install-photoshop"], check=True, cwd=REPO)
    read = ("import sys, json, pandas; f = pandas.read_parquet(sys.argv[1]); "
            "print(json.dumps({'rows': len(f), 'columns': sorted(f.columns)}))")
    seen = json.loads(subprocess.run([str(python), "-c", read, str(out)], check=True, capture_output=True,
                                     text=True).stdout)
    assert seen["rows"] == len(load_tasks(TASKS)) - 1
    assert set(seen["columns"]) >= {"data_source", "agent_name", "prompt", "task_config", "reward_model", "extra_info"}


def test_a_malformed_task_is_refused_before_anything_is_written(tmp_path):
    (tmp_path / "bad.json").write_text(json.dumps({"id": "x", "instruction": "no evaluator"}))
    with pytest.raises(InvalidTaskConfig, match="evaluator"):
        main([str(tmp_path), str(tmp_path / "out.parquet")])
    assert not (tmp_path / "out.parquet").exists()
