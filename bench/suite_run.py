"""What `rayenv suite run` costs: the whole command's wall time, and each task's (lease, revert, setup, actions, evaluate).

Runs the tests' small OSWorld-format tree (tests/osworld_examples.py: four runnable tasks, one of them
downloading from the cache that `rayenv suite prefetch` fills from a local HTTP server) on a local
pool, as a user runs it. Writes bench/results/suite_run.{json,md}.

    .venv/bin/python bench/suite_run.py --provider process --size 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the tree the tests use

from osworld_examples import serving, write  # noqa: E402

RESULTS = REPO / "bench" / "results"
IDS = "os-echo,os-make-file,os-download,os-install-photoshop"


def rayenv(*args: str) -> subprocess.CompletedProcess:
    """``rayenv ARGS`` in a fresh process; exit status 1 (some task ended in an error) still has a report."""
    done = subprocess.run([str(Path(sys.executable).with_name("rayenv")), *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    if done.returncode not in (0, 1) or ("--json" in args and not done.stdout.strip()):
        raise SystemExit(f"rayenv {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--provider", default="process")
    parser.add_argument("--size", type=int, default=1)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        with serving(root / "served") as url:
            examples = write(root / "evaluation_examples", url)
            rayenv("suite", "prefetch", str(examples), "--ids", "os-download", "--cache", str(root / "cache"))
        started = time.perf_counter()
        done = rayenv("suite", "run", str(examples), "--ids", IDS, "--provider", options.provider, "--size",
                      str(options.size), "--cache", str(root / "cache"), "--json")
        wall = time.perf_counter() - started
    report = json.loads(done.stdout)
    per_task = [r["seconds"] for r in report["results"] if r["score"] is not None]
    load = os.getloadavg()[0]
    result = {"provider": options.provider, "size": options.size, "wall_s": round(wall, 1),
              "tasks_s": round(sum(per_task), 1), "task_p50_s": round(statistics.median(per_task), 1),
              "task_max_s": round(max(per_task), 1), "fixed_s": round(wall - sum(per_task) / options.size, 1),
              "load_average_1m": round(load, 1), "summary": report["summary"], "results": report["results"]}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "suite_run.json").write_text(json.dumps(result, indent=2))
    rows = "\n".join(f"| {r['id']} | {r['score']} | {r['actions']} | {r['seconds']:.1f} |" for r in report["results"])
    (RESULTS / "suite_run.md").write_text(f"""# `rayenv suite run`: what a run costs

`bench/suite_run.py`: {len(per_task)} OSWorld-format tasks (tests/osworld_examples.py) on {options.size}
{options.provider} desktop(s), one run, 1-minute load average {load:.1f} on this 2-core host at the end
(other jobs were running their tests: read the numbers as upper bounds).

| what | s |
| --- | ---: |
| the whole command (Ray start, pool boot, every task, shutdown) | {wall:.1f} |
| fixed part (the whole command minus the tasks' share) | {result['fixed_s']} |
| one task (lease, revert, setup, actions, evaluate): p50 | {result['task_p50_s']} |
| one task: max | {result['task_max_s']} |

| task | score | actions | s |
| --- | ---: | ---: | ---: |
{rows}
""")
    print(json.dumps({k: v for k, v in result.items() if k != "results"}, indent=2))


if __name__ == "__main__":
    main()
