"""``rayenv suite``: OSWorld's task suite from a user's checkout: check, prefetch, run.

All three take OSWorld's ``evaluation_examples`` directory and a selection (``--domain``, ``--ids``;
default: every task of its ``test_all.json``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from ..env.download_cache import DownloadCache
from ..env.tasks import validate_task
from ..errors import RayEnvError
from ..suite.examples import SuiteTask, select

app = typer.Typer(help="Check, prefetch and run OSWorld's task suite (an evaluation_examples directory).",
                  no_args_is_help=True)
console = Console(stderr=True)

EXAMPLES = typer.Argument(..., exists=True, file_okay=False, help="OSWorld's evaluation_examples directory")
DOMAINS = typer.Option([], "--domain", "-d", help="only this domain (repeatable)")
IDS = typer.Option(None, "--ids", help="only these task ids, comma-separated")
INDEX = typer.Option("test_all.json", help="the index file in EXAMPLES (domain -> ids)")
CACHE = typer.Option(None, "--cache", help="the download cache [default: $RAYENV_DOWNLOAD_CACHE or "
                                           "~/.cache/rayenv/downloads]")
AS_JSON = typer.Option(False, "--json", help="print JSON on stdout")


def _chosen(examples: Path, domains: list[str], ids: Optional[str], index: str) -> list[SuiteTask]:
    return select(examples, index=index, domains=domains, ids=[i for i in (ids or "").split(",") if i])


def _programs(tasks: list[SuiteTask], apps: Optional[str], image: Optional[str], host: bool) -> set[str] | None:
    from ..suite.checker import APP_PROGRAMS, needed_programs, programs_in_image, programs_on_host

    """The programs the desktop has: listed, asked of an image, or this host's PATH; None when not asked."""
    if apps is not None:
        return {a for a in apps.split(",") if a}
    names = set(APP_PROGRAMS.values()).union(*(needed_programs(validate_task(t.config)) for t in tasks))
    if image:
        return programs_in_image(image, names)
    return programs_on_host(names) if host else None


def _fail(exc: RayEnvError) -> typer.Exit:
    console.print(str(exc), style="red", markup=False, soft_wrap=True)
    return typer.Exit(2)


@app.command()
def check(
    examples: Path = EXAMPLES, domain: list[str] = DOMAINS, ids: Optional[str] = IDS, index: str = INDEX,
    cache: Optional[Path] = CACHE,
    apps: Optional[str] = typer.Option(None, help="the programs the desktop has, comma-separated"),
    image: Optional[str] = typer.Option(None, help="ask this desktop image which programs it has (docker run)"),
    host: bool = typer.Option(False, "--host", help="the programs on this host's PATH (process desktops)"),
    as_json: bool = AS_JSON,
) -> None:
    """Say which tasks can run here and why the others cannot; nothing is started."""
    from ..suite.checker import Checker

    try:
        tasks = _chosen(examples, domain, ids, index)
        programs = _programs(tasks, apps, image, host)
        verdicts = Checker(DownloadCache(cache), programs).check_all(tasks)
    except RayEnvError as exc:
        raise _fail(exc) from None
    runnable = sum(v.runnable for v in verdicts)
    if as_json:
        print(json.dumps({"runnable": runnable, "tasks": len(verdicts), "programs_checked": programs is not None,
                          "verdicts": [v.to_dict() for v in verdicts]}, indent=2))
        return
    table = Table(title=f"{runnable} of {len(verdicts)} task(s) can run here"
                  + ("" if programs is not None else " (programs not checked: --apps, --image or --host)"))
    for column in ("domain", "task", "runs", "why not"):
        table.add_column(column, overflow="fold")
    for v in verdicts:
        table.add_row(v.domain, v.id, "yes" if v.runnable else "no", "; ".join(v.reasons))
    Console(width=160).print(table)


@app.command()
def prefetch(
    examples: Path = EXAMPLES, domain: list[str] = DOMAINS, ids: Optional[str] = IDS, index: str = INDEX,
    cache: Optional[Path] = CACHE, timeout: float = typer.Option(300.0, help="seconds per file"),
    as_json: bool = AS_JSON,
) -> None:
    """Download every file the tasks' setup and evaluators fetch into the cache (run where there is internet)."""
    from ..suite.prefetch import prefetch as prefetch_files

    try:
        tasks = _chosen(examples, domain, ids, index)
    except RayEnvError as exc:
        raise _fail(exc) from None
    store = DownloadCache(cache)
    files = prefetch_files(tasks, store, timeout=timeout)
    failed = [f for f in files if f.status.startswith("failed")]
    if as_json:
        print(json.dumps({"cache": str(store.root), "files": [vars(f) for f in files]}, indent=2))
    else:
        for f in files:
            console.print(f"{f.status:>8}  {f.url} -> {f.path}", markup=False, soft_wrap=True)
        console.print(f"{len(files) - len(failed)} of {len(files)} file(s) in {store.root}")
    if failed:
        raise typer.Exit(1)


@app.command()
def run(
    examples: Path = EXAMPLES, domain: list[str] = DOMAINS, ids: Optional[str] = IDS, index: str = INDEX,
    cache: Optional[Path] = CACHE,
    config: Optional[Path] = typer.Option(None, "--config", "-c", exists=True, help="pool YAML (see configs/pool.yaml)"),
    provider: Optional[str] = typer.Option(None, help="lite | process | docker [default: the config's]"),
    size: int = typer.Option(1, min=1, help="desktops (tasks run this many at a time)"),
    solutions: Optional[Path] = typer.Option(None, exists=True, file_okay=False,
                                             help="folder of <task id>.json action lists"),
    untouched: bool = typer.Option(False, "--untouched", help="play no actions: reset, then evaluate (should score 0)"),
    pause: float = typer.Option(0.3, help="seconds between an action and its screenshot"),
    out: Optional[Path] = typer.Option(None, "--out", help="write the results as JSON here"),
    as_json: bool = AS_JSON,
) -> None:
    """Check the tasks, then run the runnable ones on a local pool: reset, the scripted actions, evaluate."""
    import ray

    from ..pool.config import PoolConfig
    from ..pool.handle import EnvPool
    from ..suite.checker import Checker
    from ..suite.runner import run_tasks, summary

    try:
        tasks = _chosen(examples, domain, ids, index)
        resolved = PoolConfig.load(config, name="suite", size=size, provider=provider,
                                   env={"download_cache": str(cache)} if cache else None)
        store = DownloadCache(resolved.env.download_cache)
        chosen = resolved.desktop.provider
        verdicts = {v.id: v for v in Checker(store).check_all(tasks)}
        if any(v.runnable for v in verdicts.values()) and chosen in ("lite", "process"):  # then ask the desktop's programs
            programs = _programs(tasks, None, _lite_image() if chosen == "lite" else None, chosen == "process")
            verdicts = {v.id: v for v in Checker(store, programs).check_all(tasks)}
    except RayEnvError as exc:
        raise _fail(exc) from None
    runnable = sum(v.runnable for v in verdicts.values())
    pool = None
    if runnable:  # a suite refused whole touches no desktop, and starts no Ray
        try:
            ray.init(address="local", resources={resolved.resource: size}, namespace=resolved.namespace,
                     include_dashboard=False, log_to_driver=False)
        except Exception as exc:  # Ray raises bare Exception when its node does not come up in time
            console.print(f"a local Ray could not start here: {exc}\n  -> retry when the machine is less busy",
                          style="red", markup=False, soft_wrap=True)
            raise typer.Exit(2) from None
    try:
        if runnable:
            with console.status(f"booting {size} {chosen} desktop(s) ..."):
                pool = EnvPool.create(config=resolved)
        with console.status(f"running {runnable} task(s) ..."):
            results = run_tasks(pool, tasks, verdicts, solutions=solutions, untouched=untouched,
                                pause=pause, parallel=size)
    except RayEnvError as exc:
        raise _fail(exc) from None
    finally:
        if pool is not None:
            pool.shutdown()
        if runnable:
            ray.shutdown()
    report = {"provider": chosen, "size": size, "summary": summary(results), "results": [r.to_dict() for r in results]}
    if out:
        out.write_text(json.dumps(report, indent=2))
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        _print_results(report)
    if report["summary"]["errors"]:
        raise typer.Exit(1)


def _lite_image() -> str:
    from ..desktop_lite.build import build_image

    return build_image()


def _print_results(report: dict[str, Any]) -> None:
    s = report["summary"]
    table = Table(title=f"{s['tasks']} task(s) on {report['size']} {report['provider']} desktop(s): {s['scored']} scored "
                        f"({s['solved']} solved, mean {s['mean_score']}), {s['errors']} error(s), {s['skipped']} skipped")
    for column in ("domain", "task", "score", "actions", "s", "error or why skipped"):
        table.add_column(column, overflow="fold")
    for r in report["results"]:
        table.add_row(r["domain"], r["id"], "-" if r["score"] is None else f"{r['score']:.2f}", str(r["actions"]),
                      f"{r['seconds']:.1f}", r["error"] or r["skipped"] or "")
    Console(width=160).print(table)
