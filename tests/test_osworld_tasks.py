"""The project's own tasks in OSWorld's format, run for real on the OSWorld image profile (issue 17).

``OSWorld/tasks-osworld`` is laid out like OSWorld's ``evaluation_examples`` (``test_all.json`` and
``examples/<domain>/<id>.json``), so the suite runner reads it as it reads OSWorld's own. Each task
names only setup steps, getters and metrics desktop-env 1.0.2 has, and carries a scripted solution
(``rayenv_solution``: action strings run through ``step``) that acts inside the desktop, through the
GUI or the guest's own tools, and waits on conditions rather than sleeping.

The slow tests share one desktop per module (``reset`` reverts it between episodes): every task is
played solved (it must score 1.0) and untouched (it must score 0.0). The files setup downloads and
the gold files are served by an HTTP server on 127.0.0.1 that this module starts, fetched into a
private download cache before any desktop is touched, as ``rayenv suite prefetch`` would.
"""

from __future__ import annotations

import fcntl
import io
import json
import threading
import time
import wave
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from rayenv.env.actions import parse_action
from rayenv.env.download_cache import DownloadCache, downloads_of
from rayenv.env.tasks import TaskConfig, load_tasks

REPO = Path(__file__).resolve().parents[1]
TASKS_DIR = REPO / "OSWorld" / "tasks-osworld"
TASKS = {task["id"]: task for task in load_tasks(TASKS_DIR / "examples")}
#: Where the tasks' download steps and gold files point: the server this module starts.
SERVER = ("127.0.0.1", 28517)
#: The tasks the VM desktop also runs: no app window, so TCG's slowness does not decide the score; the eight
#: cheapest (about 4 minutes with the boot on 2 busy cores).
VM_SUBSET = ("gsettings-clock-seconds", "sudo-system-motd", "sudo-root-owned-secret", "trash-old-log",
             "trash-restore-plan", "gimp-undo-levels", "vlc-max-volume-200", "download-count-rows")
SCREEN = {"screen_width": 1280, "screen_height": 720}


# == the files the tasks download, made here ======================================================
def _runs_csv() -> bytes:
    rows = ["run,reward"] + [f"run-{n},{n / 10:.1f}" for n in range(1, 8)]
    return ("\n".join(rows) + "\n").encode()


def _tone_wav(seconds: int = 120, rate: int = 8000) -> bytes:
    """Two minutes of quiet 8-bit audio: long enough to still be playing when the task is scored."""
    out = io.BytesIO()
    with wave.open(out, "wb") as audio:
        audio.setnchannels(1), audio.setsampwidth(1), audio.setframerate(rate)
        audio.writeframes(bytes([128 + (8 if (i // 10) % 2 else -8) for i in range(rate)]) * seconds)
    return out.getvalue()


def _expenses_xlsx(with_total: bool) -> bytes:
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    for row in (("Item", "Amount"), ("Rent", 1200), ("Food", 300), ("Travel", 150)):
        sheet.append(row)
    if with_total:
        sheet["B5"] = 1650
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def _report_docx(approved: bool) -> bytes:
    from docx import Document

    document = Document()
    for text in ("Quarterly report", "Revenue grew by twelve percent.") + (("Approved by the board",) if approved else ()):
        document.add_paragraph(text)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def _deck_pptx() -> bytes:
    from pptx import Presentation

    deck = Presentation()
    slide = deck.slides.add_slide(deck.slide_layouts[0])
    slide.shapes.title.text = "Roadmap"
    out = io.BytesIO()
    deck.save(out)
    return out.getvalue()


SERVED: dict[str, Callable[[], bytes]] = {
    "runs.csv": _runs_csv,
    "tone.wav": _tone_wav,
    "expenses.xlsx": partial(_expenses_xlsx, False),
    "expenses-expected.xlsx": partial(_expenses_xlsx, True),
    "report.docx": partial(_report_docx, False),
    "report-expected.docx": partial(_report_docx, True),
    "deck.pptx": _deck_pptx,
}


def served_url(name: str) -> str:
    return f"http://{SERVER[0]}:{SERVER[1]}/{name}"


# == fast: the tasks are well formed =============================================================
def test_there_are_at_least_24_tasks_over_at_least_9_apps_or_facilities():
    facilities = {app for task in TASKS.values() for app in task["related_apps"]}
    assert len(TASKS) >= 24
    assert len(facilities) >= 9, facilities


def test_the_suite_index_lists_every_task_once_under_its_folder():
    index = json.loads((TASKS_DIR / "test_all.json").read_text())
    listed = [(domain, task_id) for domain, ids in index.items() for task_id in ids]
    on_disk = sorted((p.parent.name, p.stem) for p in (TASKS_DIR / "examples").glob("*/*.json"))
    assert sorted(listed) == on_disk
    assert all(TASKS[task_id]["id"] == task_id for _, task_id in listed)


@pytest.mark.parametrize("task_id", sorted(TASKS))
def test_every_task_names_only_what_desktop_env_has_and_its_solution_parses(task_id):
    from rayenv.env.evaluation import unknown_names

    task = TASKS[task_id]
    assert unknown_names(TaskConfig.model_validate(task)) == []
    assert task["rayenv_solution"] and all(parse_action(action).code for action in task["rayenv_solution"])


def test_every_file_the_tasks_download_is_served_by_this_module():
    urls = {d.url for task in TASKS.values() for d in downloads_of(TaskConfig.model_validate(task))}
    assert urls and urls <= {served_url(name) for name in SERVED}


def test_the_vm_subset_is_at_least_8_of_these_tasks():
    assert len(VM_SUBSET) >= 8 and set(VM_SUBSET) <= set(TASKS)


# == slow: each task scores 1.0 solved and 0.0 untouched ============================================
@pytest.fixture(scope="module")
def download_cache(tmp_path_factory) -> str:
    """A private download cache filled from a local HTTP server, as `rayenv suite prefetch` fills the real one.

    The server lives only while the cache fills: setup's downloads and the gold files are then read from the
    cache, so nothing holds the port while desktops run."""
    files = tmp_path_factory.mktemp("served")
    for name, make in SERVED.items():
        (files / name).write_bytes(make())
    cache = DownloadCache(tmp_path_factory.mktemp("download-cache"))
    with open(f"/tmp/rayenv-task-files-{SERVER[1]}.lock", "w") as port_lock:  # the lite and VM halves may run
        fcntl.flock(port_lock, fcntl.LOCK_EX)                                   # at once (scripts/test.sh)
        server = ThreadingHTTPServer(SERVER, partial(_QuietHandler, directory=str(files)))
        thread = threading.Thread(target=server.serve_forever, name="task-files", daemon=True)
        thread.start()
        try:
            for task in TASKS.values():
                for download in downloads_of(TaskConfig.model_validate(task)):
                    cache.fetch(download, timeout=30)
        finally:
            server.shutdown()
            server.server_close()
    return str(cache.root)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass


def _desktop(spec: dict[str, Any], download_cache: str, name: str) -> Any:
    from rayenv.env.desktop import Desktop
    from rayenv.env.options import EnvOptions
    from rayenv.providers import DesktopSpec, Ownership

    desktop = Desktop(DesktopSpec(profile="osworld", **SCREEN, **spec),
                      Ownership(owner="osworld-tasks-tests", env_name=name),
                      EnvOptions(default_pause=0, download_cache=download_cache))
    desktop.start()
    return desktop


@pytest.fixture(scope="module")
def lite(download_cache) -> Iterator[Any]:
    from rayenv.desktop_lite.build import build_image

    build_image(profile="osworld")
    desktop = _desktop({"provider": "lite"}, download_cache, "osworld-tasks-lite")
    yield desktop
    desktop.close()


@pytest.fixture(scope="module")
def vm(download_cache) -> Iterator[Any]:
    """One VM desktop of the osworld profile for the module; reset loads its snapshot between episodes."""
    from rayenv.desktop_vm.build import build_vm_desktop

    built = build_vm_desktop(profile="osworld")
    desktop = _desktop({"provider": "docker", "docker_image": built.image, "vm_path": str(built.qcow2),
                        "docker_memory": "3G", "docker_cpus": 2}, download_cache, "osworld-tasks-vm")
    yield desktop
    desktop.close()


def play(desktop: Any, task: dict[str, Any], solved: bool) -> tuple[float, float]:
    """Reset to ``task``, play its scripted solution (or nothing), say DONE; the score and the seconds it all took."""
    started = time.monotonic()
    desktop.reset(task)
    for action in [*(task["rayenv_solution"] if solved else []), "DONE"]:
        desktop.step(action)
    return desktop.evaluate(), time.monotonic() - started


@pytest.mark.slow
@pytest.mark.docker
@pytest.mark.parametrize("task_id", sorted(TASKS))
def test_on_lite_the_solved_task_scores_1_and_the_untouched_one_0(lite, task_id, record_property):
    task = TASKS[task_id]
    solved, solved_s = play(lite, task, solved=True)
    untouched, untouched_s = play(lite, task, solved=False)
    record_property("solved_s", round(solved_s, 1)), record_property("untouched_s", round(untouched_s, 1))
    assert (solved, untouched) == (1.0, 0.0)


@pytest.mark.slow
@pytest.mark.docker
@pytest.mark.vm
@pytest.mark.parametrize("task_id", VM_SUBSET)
def test_on_the_vm_the_solved_task_scores_1_and_the_untouched_one_0(vm, task_id):
    task = TASKS[task_id]
    assert (play(vm, task, solved=True)[0], play(vm, task, solved=False)[0]) == (1.0, 0.0)
