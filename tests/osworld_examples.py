"""A small OSWorld ``evaluation_examples`` tree, written for rayenv's tests in OSWorld's format.

Each task stands for one answer the suite checker must give: runnable as is, runnable once its
download is cached, or refused for a named reason (a metric, getter or setup step desktop-env 1.0.2
lacks, a program the image lacks, a live web service). ``python tests/osworld_examples.py DIR [URL]``
writes it to ``DIR`` (the docs' commands run against it), with downloads from ``URL``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

#: The file the ``download`` task fetches, and what it holds.
DOWNLOADED_NAME, DOWNLOADED_TEXT = "notes.txt", "served by the test's HTTP server\n"


def _task(task_id: str, config: list[dict], evaluator: dict, apps: list[str] | None = None, **extra: Any) -> dict:
    return {"id": task_id, "snapshot": "os", "instruction": f"rayenv test task {task_id}", "source": "rayenv tests",
            "config": config, "related_apps": apps or ["os"], "evaluator": evaluator, **extra}


def _shell_output(command: str, expected: str) -> dict:
    return {"func": "exact_match", "result": {"type": "vm_command_line", "command": command, "shell": True},
            "expected": {"type": "rule", "rules": {"expected": expected}}}


def tasks(base_url: str) -> dict[str, list[dict]]:
    """Domain -> tasks. ``base_url`` serves ``DOWNLOADED_NAME`` (and ``gold.txt`` for the gold-file task)."""
    made = "~/rayenv-suite-made.txt"
    return {
        "os": [
            _task("os-echo", [{"type": "execute", "parameters": {"command": ["true"]}}], _shell_output("echo ready", "ready\n")),
            _task("os-make-file", [{"type": "execute", "parameters": {"command": f"rm -f {made}", "shell": True}}],
                  _shell_output(f"cat {made} 2>/dev/null", "made"),
                  rayenv_solution=[f"import os; open(os.path.expanduser('{made}'), 'w').write('made')"]),
            _task("os-download", [{"type": "download", "parameters": {"files": [
                {"url": f"{base_url}/{DOWNLOADED_NAME}", "path": f"~/{DOWNLOADED_NAME}"}]}}],
                  _shell_output(f"cat ~/{DOWNLOADED_NAME}", DOWNLOADED_TEXT)),
            _task("os-install-photoshop", [], {"func": "infeasible"}, rayenv_solution=["FAIL"]),
        ],
        "libreoffice_calc": [
            _task("calc-structure-threshold", [], {"func": "check_structure_sim_with_threshold",
                                                   "result": {"type": "vm_file", "path": "~/a.xlsx", "dest": "a.xlsx"},
                                                   "expected": {"type": "vm_file", "path": "~/b.xlsx", "dest": "b.xlsx"}},
                  apps=["libreoffice_calc"]),
            _task("calc-gold-file", [{"type": "launch", "parameters": {"command": ["soffice", "--calc"]}}],
                  {"func": "compare_table", "result": {"type": "vm_file", "path": "~/c.xlsx", "dest": "c.xlsx"},
                   "expected": {"type": "cloud_file", "path": f"{base_url}/gold.txt", "dest": "gold.xlsx"}},
                  apps=["libreoffice_calc"]),
        ],
        "chrome": [
            _task("chrome-appearance", [{"type": "launch", "parameters": {"command": ["google-chrome"]}}],
                  {"func": "exact_match", "result": {"type": "chrome_appearance_mode_ui"},
                   "expected": {"type": "rule", "rules": {"expected": "dark"}}}, apps=["chrome"]),
        ],
        "vlc": [
            _task("vlc-play-exit", [{"type": "launch", "parameters": {"command": "vlc --no-audio"}}],
                  {"func": "check_play_and_exit", "result": {"type": "vlc_playing_info"}}, apps=["vlc"]),
        ],
        "multi_apps": [
            _task("drive-upload", [{"type": "googledrive", "parameters": {"settings_file": "settings.yml",
                                                                         "operation": ["delete"], "args": [{}]}}],
                  _shell_output("echo x", "x\n")),
        ],
    }


def write(root: Path, base_url: str = "http://127.0.0.1:8765") -> Path:
    """Write the tree (``test_all.json`` and ``examples/<domain>/<id>.json``) under ``root``; return ``root``."""
    index = {}
    for domain, chosen in tasks(base_url).items():
        folder = root / "examples" / domain
        folder.mkdir(parents=True, exist_ok=True)
        for task in chosen:
            (folder / f"{task['id']}.json").write_text(json.dumps(task, indent=2))
        index[domain] = [task["id"] for task in chosen]
    (root / "test_all.json").write_text(json.dumps(index, indent=2))
    return root


if __name__ == "__main__":
    print(write(Path(sys.argv[1]), *sys.argv[2:3]))
