"""The suite checker says, before any desktop is touched, which OSWorld tasks can run here and why the others
cannot (issue 17, item 4): on a small ``evaluation_examples`` tree written in OSWorld's format
(tests/osworld_examples.py), against the installed desktop-env 1.0.2, a list of the image's
programs, and a download cache filled by ``rayenv suite prefetch`` from a local HTTP server.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Iterator

import pytest
from typer.testing import CliRunner

from osworld_examples import DOWNLOADED_NAME, DOWNLOADED_TEXT, serving, write
from rayenv.env.download_cache import DownloadCache, downloads_of
from rayenv.env.tasks import validate_task
from rayenv.errors import InvalidTaskConfig
from rayenv.cli.main import app
from rayenv.suite.checker import Checker
from rayenv.suite.examples import select

PROGRAMS = {"soffice", "vlc"}  # an image with LibreOffice and VLC, without Chrome


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    with serving(tmp_path_factory.mktemp("served")) as url:
        yield url


@pytest.fixture
def examples(tmp_path, server) -> Path:
    return write(tmp_path / "evaluation_examples", server)


def rayenv(*args: str):
    """The ``rayenv`` command in this process (desktop-env is imported once for the module, not per command)."""
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def verdicts(examples: Path, cache: Path, programs: set[str] | None = PROGRAMS) -> dict[str, list[str] | None]:
    """task id -> None when it can run, else its reasons."""
    found = Checker(DownloadCache(cache), programs).check_all(select(examples))
    return {v.id: None if v.runnable else v.reasons for v in found}


def test_the_checker_classifies_every_task_with_its_reasons(examples, tmp_path):
    found = verdicts(examples, tmp_path / "cache")
    assert found["os-echo"] is None and found["os-make-file"] is None and found["os-install-photoshop"] is None
    assert found["calc-structure-threshold"] == ["desktop-env lacks metric 'check_structure_sim_with_threshold'"]
    assert found["vlc-play-exit"] == ["desktop-env lacks metric 'check_play_and_exit'"]
    assert found["chrome-appearance"] == ["desktop-env lacks getter 'chrome_appearance_mode_ui'",
                                          "not in the image: google-chrome"]
    assert found["drive-upload"] == ["setup step 'googledrive' uses Google Drive"]
    [download] = found["os-download"]
    assert download.startswith("1 file(s) to download, not in the cache") and DOWNLOADED_NAME in download
    [gold] = found["calc-gold-file"]
    assert "not in the cache" in gold and "gold.txt" in gold


def test_without_a_list_of_programs_only_desktop_env_and_the_internet_are_checked(examples, tmp_path):
    assert verdicts(examples, tmp_path / "cache", None)["chrome-appearance"] == [
        "desktop-env lacks getter 'chrome_appearance_mode_ui'"]


def test_prefetch_fills_the_cache_under_desktop_envs_names_and_the_tasks_become_runnable(examples, tmp_path):
    cache = tmp_path / "cache"
    done = rayenv("suite", "prefetch", str(examples), "--cache", str(cache), "--json")
    assert done.exit_code == 0, done.stderr
    files = json.loads(done.stdout)["files"]
    assert sorted(f["status"] for f in files) == ["fetched", "fetched"]
    task = validate_task(json.loads((examples / "examples" / "os" / "os-download.json").read_text()))
    [download] = downloads_of(task)
    assert (cache / f"{uuid.uuid5(uuid.NAMESPACE_URL, download.url)}_{DOWNLOADED_NAME}").read_text() == DOWNLOADED_TEXT
    found = verdicts(examples, cache)
    assert found["os-download"] is None and found["calc-gold-file"] is None
    again = rayenv("suite", "prefetch", str(examples), "--cache", str(cache), "--json")
    assert sorted(f["status"] for f in json.loads(again.stdout)["files"]) == ["cached", "cached"]


def test_check_command_prints_the_verdicts_as_json(examples, tmp_path):
    done = rayenv("suite", "check", str(examples), "--domain", "os", "--domain", "vlc", "--apps", "vlc",
                  "--cache", str(tmp_path / "cache"), "--json")
    assert done.exit_code == 0, done.stderr
    report = json.loads(done.stdout)
    assert [v["id"] for v in report["verdicts"]] == ["os-echo", "os-make-file", "os-download", "os-install-photoshop",
                                                     "vlc-play-exit"]
    assert report["runnable"] == 3 and report["programs_checked"] is True


def test_a_task_naming_a_metric_desktop_env_lacks_is_refused_by_run_before_any_desktop_is_touched(examples, tmp_path):
    """No Ray, no desktop: the run ends at once, the task is reported skipped with the reason."""
    out = tmp_path / "results.json"
    done = rayenv("suite", "run", str(examples), "--ids", "vlc-play-exit", "--provider", "lite",
                  "--cache", str(tmp_path / "cache"), "--out", str(out))
    assert done.exit_code == 0, done.stderr
    [result] = json.loads(out.read_text())["results"]
    assert result["outcome"] == "skipped" and "check_play_and_exit" in result["skipped"]
    assert "booting" not in done.stderr


def test_selecting_what_the_tree_does_not_have_says_so(examples):
    with pytest.raises(InvalidTaskConfig, match="not in .*test_all.json: no-such-id, spreadsheets"):
        select(examples, domains=["spreadsheets"], ids=["no-such-id"])


@pytest.mark.slow
@pytest.mark.docker
def test_the_checker_asks_the_desktop_image_which_programs_it_has(examples, tmp_path):
    from rayenv.desktop_lite.build import build_image

    done = rayenv("suite", "check", str(examples), "--domain", "os", "--domain", "chrome", "--image", build_image(),
                  "--cache", str(tmp_path / "cache"), "--json")
    assert done.exit_code == 0, done.stderr
    reasons = {v["id"]: v["reasons"] for v in json.loads(done.stdout)["verdicts"]}
    assert "not in the image: google-chrome" in reasons["chrome-appearance"]  # the small desktop has no Chrome
    assert reasons["os-echo"] == []
