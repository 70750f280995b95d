"""OSWorld task JSONs → verl parquet rows that our agent loop runs.

One row per task: ``prompt`` (the instruction as a chat message, what verl's ``RLHFDataset``
turns into ``raw_prompt``), ``agent_name`` (which registered agent loop runs the row),
``task_config`` (the whole task as a JSON string: OSWorld evaluators hold lists of mixed dicts
that parquet cannot type as structs), ``data_source``, ``reward_model`` and ``extra_info`` (index,
task id) as verl's other datasets have them. Tasks are validated before anything is written.

Command line (needs pandas + pyarrow, both in the trainer virtualenv)::

    python -m rayenv.verl.dataset OSWorld/tasks data/osworld/train.parquet [--agent-name rayenv_osworld]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Iterable

from ..env.tasks import load_tasks

AGENT_NAME = "rayenv_osworld"
DATA_SOURCE = "osworld"


def task_row(task: dict[str, Any], index: int, *, agent_name: str = AGENT_NAME) -> dict[str, Any]:
    """The verl row for one (already validated) OSWorld task."""
    return {
        "data_source": DATA_SOURCE,
        "agent_name": agent_name,
        "prompt": [{"role": "user", "content": task["instruction"]}],
        "task_config": json.dumps(task, sort_keys=True),
        "ability": "computer_use",
        "reward_model": {"style": "env", "ground_truth": task["id"]},
        "extra_info": {"index": index, "task_id": task["id"]},
    }


def build_rows(tasks: Iterable[dict[str, Any]], *, agent_name: str = AGENT_NAME,
               exclude: Iterable[str] = ()) -> list[dict[str, Any]]:
    skip = set(exclude)
    kept = [task for task in tasks if task["id"] not in skip]
    return [task_row(task, index, agent_name=agent_name) for index, task in enumerate(kept)]


def write_parquet(rows: list[dict[str, Any]], path: str | Path) -> Path:
    import pandas as pd  # trainer-side dependency, imported only when writing

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(out, index=False)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tasks", help="a task JSON or a directory of them (OSWorld/tasks, evaluation_examples/)")
    parser.add_argument("output", help="parquet file to write")
    parser.add_argument("--agent-name", default=AGENT_NAME, help="agent loop that runs these rows")
    parser.add_argument("--exclude", action="append", default=[], help="task id to leave out (repeatable)")
    args = parser.parse_args(argv)
    rows = build_rows(load_tasks(args.tasks), agent_name=args.agent_name, exclude=args.exclude)
    print(f"wrote {len(rows)} rows to {write_parquet(rows, args.output)}")


if __name__ == "__main__":
    main()
