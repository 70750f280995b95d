"""Optional trajectory recording on the env host: screenshots, actions and the score, per episode.

Turned on with ``EnvOptions.record_dir``. Each episode gets a folder
``<record_dir>/<env>/<episode:05d>-<task id>/`` holding ``step-<n>.png`` files and a
``trajectory.jsonl`` with one line per event (reset, step, evaluate), so a person can replay what
the agent saw and did, and a script can load it back.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


class TrajectoryRecorder:
    """Writes one desktop's episodes below ``root``; cheap when the screenshot is already PNG bytes."""

    def __init__(self, root: str | Path, env: str) -> None:
        self.root = Path(root) / env
        self.folder: Path | None = None

    def start_episode(self, episode: int, task_id: str | None, screenshot: bytes) -> None:
        self.folder = self.root / f"{episode:05d}-{task_id or 'no-task'}"
        self.folder.mkdir(parents=True, exist_ok=True)
        self._write_event({"event": "reset", "task_id": task_id}, screenshot, step=0)

    def step(self, step: int, action: Any, done: bool, info: dict[str, Any], screenshot: bytes) -> None:
        self._write_event({"event": "step", "action": action, "done": done, "info": info}, screenshot, step)

    def score(self, score: float | None, error: str | None = None) -> None:
        self._write_event({"event": "evaluate", "score": score, "error": error})

    def _write_event(self, event: dict[str, Any], screenshot: bytes | None = None, step: int | None = None) -> None:
        if self.folder is None:
            return
        if screenshot is not None and step is not None:
            (self.folder / f"step-{step:03d}.png").write_bytes(screenshot)
            event["screenshot"] = f"step-{step:03d}.png"
        event["time"] = time.time()
        with open(self.folder / "trajectory.jsonl", "a") as log:
            log.write(json.dumps(event, default=str) + "\n")
