"""Which OSWorld tasks can run on this host, and why the others cannot, decided before any desktop is touched.

A task runs here when the installed desktop-env has every setup step, getter and metric it names,
the image has every program it needs, and nothing it needs lives only on the internet: files its
setup or evaluator downloads must be in the host's download cache (``rayenv suite prefetch``), and
steps or getters that talk to live web services (Google Drive, logins, web pages read at scoring
time) cannot be cached at all.
"""

from __future__ import annotations

import shlex
import shutil
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable
from urllib.parse import urlsplit

from ..engine.containers import client
from ..env.download_cache import DownloadCache
from ..env.evaluation import unknown_names
from ..env.tasks import SetupStep, TaskConfig, validate_task
from .examples import SuiteTask

#: OSWorld's ``related_apps`` names and the program each needs in the image (``os`` and ``multi_apps`` need none).
APP_PROGRAMS = {"chrome": "google-chrome", "gimp": "gimp", "libreoffice_calc": "soffice",
                "libreoffice_writer": "soffice", "libreoffice_impress": "soffice", "thunderbird": "thunderbird",
                "vlc": "vlc", "vs_code": "code", "vscode": "code"}

#: Setup steps that reach a live web service: nothing a cache can hold.
ONLINE_STEPS = {"googledrive": "uses Google Drive", "login": "logs in to a web site",
                "proxy": "needs OSWorld's proxy pool", "update_browse_history": "downloads a history database"}

#: Getters that read a live web page or service while scoring.
ONLINE_GETTERS = {"googledrive_file", "pdf_from_url", "page_info", "info_from_website", "number_of_search_results",
                  "gotoRecreationPage_and_get_html_content"}


@dataclass
class Verdict:
    """One task's answer: ``runnable``, else every ``reason`` it cannot run here."""

    domain: str
    id: str
    runnable: bool
    reasons: list[str] = field(default_factory=list)
    infeasible: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Checker:
    """Checks tasks against desktop-env, the programs of an image (``programs``; None: not checked) and a cache."""

    def __init__(self, cache: DownloadCache, programs: set[str] | None = None) -> None:
        self.cache = cache
        self.programs = programs

    def check(self, task: SuiteTask) -> Verdict:
        config = validate_task(task.config)
        reasons = []
        unknown = unknown_names(config)
        if unknown:
            reasons.append("desktop-env lacks " + ", ".join(unknown))
        if self.programs is not None:
            absent = sorted(needed_programs(config) - self.programs)
            if absent:
                reasons.append("not in the image: " + ", ".join(absent))
        reasons += online_needs(config)
        missing = self.cache.missing(config)
        if missing:
            reasons.append(f"{len(missing)} file(s) to download, not in the cache (run `rayenv suite prefetch`): "
                           + ", ".join(f"{d.url} (as {self.cache.path(d).name})" for d in missing))
        return Verdict(task.domain, task.id, not reasons, reasons, config.infeasible)

    def check_all(self, tasks: Iterable[SuiteTask]) -> list[Verdict]:
        return [self.check(task) for task in tasks]


def needed_programs(task: TaskConfig) -> set[str]:
    """The programs the task's apps and its ``launch`` steps start."""
    apps = task.model_extra.get("related_apps") or [] if task.model_extra else []
    needed = {APP_PROGRAMS[app] for app in apps if app in APP_PROGRAMS}
    for step in _steps(task):
        if step.type == "launch" and not step.parameters.get("shell"):
            command = step.parameters.get("command") or []
            words = shlex.split(command) if isinstance(command, str) else list(command)
            if words:
                needed.add(words[0])
    return needed


def online_needs(task: TaskConfig) -> list[str]:
    """What the task needs from the internet that no cache can hold, one sentence each."""
    needs = [f"setup step {step.type!r} {ONLINE_STEPS[step.type]}" for step in _steps(task)
             if step.type in ONLINE_STEPS]
    for step in _steps(task):
        if step.type == "chrome_open_tabs":
            web = [url for url in step.parameters.get("urls_to_open") or [] if not _local(url)]
            if web:
                needs.append(f"opens live web pages in Chrome: {', '.join(web[:3])}")
    evaluator = task.evaluator
    for spec in (evaluator.result, evaluator.expected):
        for one in spec if isinstance(spec, list) else [spec]:
            if one and one.get("type") in ONLINE_GETTERS:
                needs.append(f"getter {one['type']!r} reads the web while scoring")
    return list(dict.fromkeys(needs))


def _steps(task: TaskConfig) -> list[SetupStep]:
    return [*task.config, *task.evaluator.postconfig]


def _local(url: str) -> bool:
    host = urlsplit(url if "://" in url else f"http://{url}").hostname or ""
    return host in ("localhost", "") or host.startswith("127.")


def programs_on_host(names: Iterable[str]) -> set[str]:
    """Which of ``names`` this host has on its PATH (what a process desktop can start)."""
    return {name for name in names if shutil.which(name)}


def programs_in_image(image: str, names: Iterable[str]) -> set[str]:
    """Which of ``names`` the desktop image has on its PATH, asked of a throwaway container of it (no network)."""
    script = "for p in " + " ".join(shlex.quote(n) for n in sorted(set(names))) + \
        '; do command -v "$p" >/dev/null && echo "$p"; done; true'
    found = client().containers.run(image, entrypoint=["/bin/sh", "-c", script], network_mode="none", remove=True)
    return set(found.decode().split())
