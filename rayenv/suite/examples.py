"""Tasks of an OSWorld ``evaluation_examples`` folder, chosen the way OSWorld's own runner chooses them.

The folder holds an index (``test_all.json``: domain -> task ids) and one file per task,
``examples/<domain>/<id>.json``. A selection is the whole index, some domains of it, or some ids.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from ..errors import InvalidTaskConfig
from ..env.tasks import validate_task


@dataclass(frozen=True)
class SuiteTask:
    """One task file of the suite: its domain, id, file and parsed JSON."""

    domain: str
    id: str
    path: Path
    config: dict[str, Any]


def select(examples: Path, *, index: str = "test_all.json", domains: Iterable[str] = (),
           ids: Iterable[str] = ()) -> list[SuiteTask]:
    """The tasks of ``examples`` named by its ``index`` (every task file when there is no index), narrowed to
    ``domains`` and ``ids`` when given. A name that matches nothing raises :class:`InvalidTaskConfig`."""
    root = Path(examples)
    if not (root / "examples").is_dir():
        raise InvalidTaskConfig(f"{root} has no examples/ folder", phase="check",
                                hint="pass OSWorld's evaluation_examples directory")
    listing = _listing(root, index)
    wanted_domains, wanted_ids = set(domains), set(ids)
    unknown = (wanted_domains - set(listing)) | (wanted_ids - {i for names in listing.values() for i in names})
    if unknown:
        raise InvalidTaskConfig(f"not in {root / index if (root / index).is_file() else root / 'examples'}: "
                                + ", ".join(sorted(unknown)), phase="check",
                                hint="list the domains with `ls examples/`, the ids with the index file")
    chosen = []
    for domain, names in listing.items():
        for task_id in names:
            if (wanted_domains and domain not in wanted_domains) or (wanted_ids and task_id not in wanted_ids):
                continue
            chosen.append(_load(root, domain, task_id))
    return chosen


def _listing(root: Path, index: str) -> dict[str, list[str]]:
    index_file = root / index
    if index_file.is_file():
        return {domain: list(names) for domain, names in json.loads(index_file.read_text()).items()}
    return {folder.name: sorted(path.stem for path in folder.glob("*.json"))
            for folder in sorted((root / "examples").iterdir()) if folder.is_dir()}


def _load(root: Path, domain: str, task_id: str) -> SuiteTask:
    path = root / "examples" / domain / f"{task_id}.json"
    if not path.is_file():
        raise InvalidTaskConfig(f"the index names {domain}/{task_id} but {path} does not exist", phase="check",
                                hint="the checkout is incomplete, or the index belongs to another version")
    config = json.loads(path.read_text())
    validate_task(config)
    return SuiteTask(domain, task_id, path, config)
