"""Every command block of README.md and docs/*.md runs as written, or says why it cannot run here (issue 19).

A fenced ``bash``/``sh``/``shell`` block is run with ``bash -e -o pipefail`` in a scratch directory
that sees the checkout's files (``configs/``, ``scripts/``, ``.venv`` ...) and has ``rayenv`` on PATH,
as ``scripts/bootstrap.sh`` leaves it. It must exit 0 without a traceback. The line right before a
block may say how to treat it:

* ``<!-- doc-test: skip REASON -->``: not runnable here (two machines, the internet, a GPU, a
  reinstall); REASON is required and shows up as the skip reason;
* ``<!-- doc-test: slow: WHAT -->``: runs in the slow tier (it starts a real desktop, ...).

A block with no marker runs in the fast tier, so it must start nothing heavy.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
COMMAND_LANGUAGES = {"bash", "sh", "shell"}
MARKER = re.compile(r"^<!--\s*doc-test:\s*(?P<kind>skip|slow)\b:?\s*(?P<reason>.*?)\s*-->$")
#: What a scratch directory links from the checkout, so blocks read the repository's own files.
CHECKOUT_ENTRIES = ("configs", "scripts", "bench", "OSWorld", "rayenv", "tests", "docs", "pyproject.toml", "README.md",
                    ".venv", ".venv-trainer", ".venv-verl")
BLOCK_TIMEOUT = 600.0


@dataclass(frozen=True)
class Block:
    doc: Path
    line: int
    code: str
    kind: str | None = None  # "skip", "slow" or None
    reason: str = ""

    @property
    def name(self) -> str:
        return f"{self.doc.name}:{self.line}"


def command_blocks(doc: Path) -> list[Block]:
    """The fenced command blocks of ``doc``, each with the marker on the line before it (if any)."""
    lines = doc.read_text().splitlines()
    blocks, index = [], 0
    while index < len(lines):
        fence = lines[index].strip()
        if not fence.startswith("```") or fence == "```":
            index += 1
            continue
        end = next((i for i in range(index + 1, len(lines)) if lines[i].strip() == "```"), len(lines))
        if fence[3:].strip().lower() in COMMAND_LANGUAGES:
            previous = next((lines[i].strip() for i in range(index - 1, -1, -1) if lines[i].strip()), "")
            marker = MARKER.match(previous)
            blocks.append(Block(doc, index + 1, "\n".join(lines[index + 1:end]),
                                marker and marker["kind"], marker["reason"] if marker else ""))
        index = end + 1
    return blocks


def scratch_dir(root: Path) -> Path:
    """A directory where relative paths of the docs resolve to the checkout and outputs stay out of it."""
    root.mkdir(parents=True, exist_ok=True)
    for entry in CHECKOUT_ENTRIES:
        if (REPO / entry).exists() and not (root / entry).exists():
            (root / entry).symlink_to(REPO / entry)
    return root


def run_block(block: Block, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": str(REPO)}
    return subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block.code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=BLOCK_TIMEOUT)


def problem(block: Block, cwd: Path) -> str | None:
    """Why ``block`` does not hold up (None: it ran, or says why it cannot run here)."""
    if block.kind == "skip":
        return None if len(block.reason) >= 10 else f"{block.name}: a skipped block must say why it cannot run here"
    done = run_block(block, cwd)
    if done.returncode != 0 or "Traceback" in done.stderr:
        return (f"{block.name}: exited {done.returncode}\n{block.code}\n--- stderr ---\n{done.stderr[-2000:]}"
                f"\n(fix the command, or mark it <!-- doc-test: skip REASON --> if it cannot run here)")
    return None


def _params() -> list:
    params = []
    for doc in DOCS:
        for block in command_blocks(doc):
            marks = [pytest.mark.slow] if block.kind == "slow" else []
            params.append(pytest.param(block, id=block.name, marks=marks))
    return params


@pytest.mark.parametrize("block", _params())
def test_the_documented_command_runs_as_written(block: Block, tmp_path_factory):
    if block.kind == "skip" and len(block.reason) >= 10:
        pytest.skip(f"not runnable here: {block.reason}")
    found = problem(block, scratch_dir(tmp_path_factory.getbasetemp() / "docs"))
    assert found is None, found


# -- the harness itself ----------------------------------------------------------------------------

def _doc(tmp_path: Path, text: str) -> Path:
    doc = tmp_path / "broken.md"
    doc.write_text(text)
    return doc


def test_a_broken_command_in_a_doc_fails_the_harness(tmp_path):
    doc = _doc(tmp_path, "Make a pool:\n\n```bash\nrayenv pool create --szie 4 --show-config\n```\n")
    [block] = command_blocks(doc)
    found = problem(block, scratch_dir(tmp_path / "scratch"))
    assert found is not None and "broken.md:3: exited 2" in found and "--szie" in found


def test_a_skip_marker_without_a_reason_fails_and_one_with_a_reason_passes(tmp_path):
    doc = _doc(tmp_path, "<!-- doc-test: skip -->\n```bash\nrayenv head start\n```\n\n"
                         "<!-- doc-test: skip needs a second machine -->\n```sh\nrayenv head start\n```\n")
    silent, explained = command_blocks(doc)
    assert "must say why" in problem(silent, tmp_path)
    assert problem(explained, tmp_path) is None and explained.reason == "needs a second machine"


def test_command_blocks_are_collected_and_python_examples_are_not():
    blocks = [block for doc in DOCS for block in command_blocks(doc)]
    assert len(blocks) >= 15 and all(block.doc.suffix == ".md" for block in blocks)
    assert not any(block.code.startswith("import ray") for block in blocks)
