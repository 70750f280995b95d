"""Task setup and scoring with desktop-env's own code, imported only when a task needs it.

desktop-env's ``SetupController`` runs a task's ``config`` steps and its ``metrics``/``getters``
score the outcome, exactly as OSWorld does. Importing them pulls the evaluator stack (pandas,
openpyxl, ...), so this module defers that import to the first task on the env host: the actor
module, the pool and the trainer side never pay for it.

Scoring differs from ``DesktopEnv.evaluate`` in one deliberate way: anything that stops the
evaluator from producing a score (unknown metric, getter crash, metric crash, desktop unreachable,
and any guest call a getter made that failed, which desktop-env itself turns into ``None``, see
:mod:`rayenv.env.guest_calls`) raises :class:`~rayenv.errors.EvaluationError` instead of returning 0.
A file the agent never created is still a legitimate 0, as in OSWorld, but only when the gold it is
compared with exists: a comparison without its expected value is an ``EvaluationError``.

Setup is watched the same way, step by step: a step that raises, and any guest call it made that
the guest refused (desktop-env only logs a failed ``/setup/launch``), raises
:class:`~rayenv.errors.SetupFailed` naming the step and the guest's words, so the episode never
starts on a desktop that is not in the task's state. Files setup and the evaluator download come
from the host's :class:`~rayenv.env.download_cache.DownloadCache`, never from the internet mid-step.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

from ..errors import EvaluationError, InvalidTaskConfig, ProviderUnavailable, SetupFailed
from ..providers.base import GuestEndpoint
from .download_cache import DownloadCache
from .guest_calls import CallLog, watching
from .lazy_modules import install_lazy_package
from .tasks import SetupStep, TaskConfig

logger = logging.getLogger(__name__)
T = TypeVar("T")


#: desktop-env's AWS proxy pool: loaded when its setup module is imported, it logs an ERROR for a proxy
#: file (evaluation_examples/settings/proxy/dataimpulse.json) only its AWS provider uses. rayenv never
#: routes a task through those proxies, so the record is noise a user would read as a failed boot.
PROXY_POOL_LOGGER = "desktopenv.providers.aws.ProxyPool"

#: Seconds between desktop-env's three tries of a file (its own default is 5). The guest is on this host and
#: answers a missing file with 404 at once, and an unsolved task often has no result file: at 5 s its
#: evaluation spent 10 s asleep before scoring what was already known.
FILE_RETRY_INTERVAL = 0.5


def _quiet_proxy_pool(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.CRITICAL


def _desktop_env() -> tuple[Any, Any, Any, Any]:
    """desktop-env's controllers and its getters and metrics packages, the latter two loading only the modules
    a task names (:mod:`rayenv.env.lazy_modules`: each env actor held the whole evaluator stack before), imported
    quietly: the deprecation and end-of-life warnings its dependencies (fitz, PyPDF2, google-api-core) raise at
    import are theirs to fix, not the user's, and the AWS proxy pool's ERROR is silenced (see
    :data:`PROXY_POOL_LOGGER`)."""
    proxy_log = logging.getLogger(PROXY_POOL_LOGGER)  # its module sets the level itself on import: filter instead
    if _quiet_proxy_pool not in proxy_log.filters:
        proxy_log.addFilter(_quiet_proxy_pool)
    try:
        for package in ("desktop_env.evaluators.metrics", "desktop_env.evaluators.getters"):
            install_lazy_package(package)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            from desktop_env.controllers.python import PythonController
            from desktop_env.controllers.setup import SetupController
            from desktop_env.evaluators import getters, metrics
    except ImportError as exc:
        raise ProviderUnavailable(f"desktop-env is not importable here: {exc}", phase="reset",
                                  hint="on the env host run: pip install 'rayenv[osworld]'") from exc
    return PythonController, SetupController, getters, metrics


@dataclass
class GetterContext:
    """The attributes desktop-env's getters read from their ``env`` argument, and nothing else."""

    controller: Any
    setup_controller: Any
    vm_ip: str
    server_port: int
    chromium_port: int
    vlc_port: int
    cache_dir: str
    vm_platform: str
    action_history: list[str] = field(default_factory=list)
    current_use_proxy: bool = False


class TaskRunner:
    """Runs one desktop's task setup and evaluation through desktop-env's controllers."""

    def __init__(self, endpoint: GuestEndpoint, *, env: str, screen: tuple[int, int], cache_root: str | None = None,
                 downloads: DownloadCache | None = None, client_password: str = "password") -> None:
        self.endpoint = endpoint
        self.env = env
        self.client_password = client_password  # the guest user's, for the setup steps that sudo
        self.screen = screen
        self.cache_root = cache_root or os.path.join(tempfile.gettempdir(), "rayenv-cache", env)
        self.downloads = downloads or DownloadCache()
        self._controllers: tuple[Any, Any] | None = None

    @staticmethod
    def warm_up() -> threading.Thread:
        """Start importing desktop-env's evaluator stack (~7 s here: pandas, torch, ...) in the background.

        Started when a desktop starts booting and joined when the boot is done, so the import runs
        beside the boot and the first ``reset(task)`` never pays for it (it did: 9 s against 2 s for
        later ones on desktop-lite). Python's import lock makes a concurrent real import wait for this one.
        """
        def load() -> None:
            try:
                _desktop_env()
            except ProviderUnavailable:
                pass  # reported, with the fix, by the first reset that needs it

        thread = threading.Thread(target=load, name="desktop-env-import", daemon=True)
        thread.start()
        return thread

    def _get_controllers(self) -> tuple[Any, Any]:
        if self._controllers is None:
            python_controller, setup_controller, _, _ = _desktop_env()
            extra = self.endpoint.extra_ports
            files = python_controller(vm_ip=self.endpoint.host, server_port=self.endpoint.port)
            files.retry_interval = FILE_RETRY_INTERVAL
            self._controllers = (
                files,
                setup_controller(vm_ip=self.endpoint.host, server_port=self.endpoint.port,
                                 chromium_port=extra.get("chromium", 9222), vlc_port=extra.get("vlc", 8080),
                                 cache_dir=self.cache_root, client_password=self.client_password,
                                 screen_width=self.screen[0], screen_height=self.screen[1]),
            )
        return self._controllers

    def check(self, task: TaskConfig) -> None:
        """Refuse a task this host cannot set up or score, before its desktop is touched: a setup step, getter or
        metric desktop-env does not have raises :class:`InvalidTaskConfig`, a file to download that is not in the
        host's cache :class:`SetupFailed`."""
        unknown = unknown_names(task)
        if unknown:
            raise InvalidTaskConfig(f"task {task.id!r} names what desktop-env {_version()} does not have: "
                                    + ", ".join(unknown), env=self.env, phase="reset",
                                    hint="fix the task JSON or upgrade desktop-env on the env host")
        self.downloads.require(task, env=self.env)

    def setup(self, task: TaskConfig, steps: list[SetupStep] | None = None, *, phase: str = "reset") -> None:
        """Run the task's setup steps (or ``steps``) inside the desktop, one by one, each watched."""
        _, setup = self._get_controllers()
        setup.reset_cache_dir(str(self._task_folder(task)))
        chosen = list(task.config if steps is None else steps)
        for number, step in enumerate(chosen, 1):
            self._run_step(setup, task, f"{number}/{len(chosen)}", step, phase)

    def _task_folder(self, task: TaskConfig) -> Path:
        """This desktop's folder for the task (desktop-env's ``cache_dir``), holding the task's cached downloads."""
        folder = Path(self.cache_root) / task.id
        self.downloads.stage(task, folder)
        return folder

    def _run_step(self, setup: Any, task: TaskConfig, number: str, step: SetupStep, phase: str) -> None:
        what = f"task {task.id!r} setup step {number} {step.type!r} {_brief(step.parameters)}"
        method = getattr(setup, f"_{step.type}_setup")
        with watching(self.endpoint.url, during="setup") as calls:
            try:
                method(**step.parameters)
                raised = None
            except Exception as exc:  # desktop-env raises bare Exception (or NotImplementedError) for a failed step
                raised = f"{type(exc).__name__}: {str(exc)[:300]}"
        words = ([raised] if raised else []) + calls.failures()
        if words:
            raise SetupFailed(f"{what} failed: " + "; ".join(words), env=self.env, phase=phase,
                              hint="the task is not set up: drop this sample (never score it); fix the step or the "
                                   "image it needs")

    def evaluate(self, task: TaskConfig, action_history: list[str], vm_platform: str) -> float:
        """Score the desktop's current state with the task's evaluator. Raises :class:`EvaluationError`."""
        if task.evaluator.postconfig:
            try:
                self.setup(task, task.evaluator.postconfig, phase="evaluate")
            except SetupFailed as exc:
                raise self._failure(f"the postconfig failed: {exc.message}") from None
        last = action_history[-1] if action_history else None
        if task.infeasible:
            return 1.0 if last == "FAIL" else 0.0
        if last == "FAIL":
            return 0.0
        controller, setup = self._get_controllers()
        _, _, getters, metrics = _desktop_env()
        context = GetterContext(controller=controller, setup_controller=setup, vm_ip=self.endpoint.host,
                                server_port=self.endpoint.port,
                                chromium_port=self.endpoint.extra_ports.get("chromium", 9222),
                                vlc_port=self.endpoint.extra_ports.get("vlc", 8080),
                                cache_dir=str(self._task_folder(task)), vm_platform=vm_platform,
                                action_history=list(action_history))
        evaluator = task.evaluator
        names = evaluator.metric_names()
        results, expecteds, options = (_per_metric(evaluator.result, len(names)),
                                       _per_metric(evaluator.expected, len(names)),
                                       _per_metric(evaluator.options, len(names)))
        scores: list[float] = []
        for name, result_spec, expected_spec, option in zip(names, results, expecteds, options):
            score = self._score_one(getattr(metrics, name), name, getters, context, result_spec, expected_spec,
                                    option or {})
            if evaluator.conj == "and" and score == 0.0:
                return 0.0
            if evaluator.conj == "or" and score == 1.0:
                return 1.0
            scores.append(score)
        return sum(scores) / len(scores) if evaluator.conj == "and" else max(scores)

    def _score_one(self, metric: Callable[..., Any], name: str, getters: Any, context: GetterContext,
                   result_spec: dict | None, expected_spec: dict | None, option: dict) -> float:
        expected = self._gold(getters, context, expected_spec) if expected_spec else None
        try:
            result = self._watched(_getter_name(result_spec), lambda: _get(getters, context, result_spec))
        except FileNotFoundError:
            return 0.0  # the agent never produced the file: a real 0, as OSWorld scores it
        except EvaluationError:
            raise
        except Exception as exc:
            raise self._failure(f"{_getter_name(result_spec)} failed: {exc!r}") from None
        try:
            score = self._watched(f"metric {name!r}", lambda: metric(result, expected, **option) if expected_spec
                                  else metric(result, **option))
            return float(score)
        except EvaluationError:
            raise
        except Exception as exc:
            raise self._failure(f"metric {name!r} failed: {exc!r}") from None

    def _gold(self, getters: Any, context: GetterContext, spec: dict) -> Any:
        """The expected value, fetched before the result: without a gold there is no score, even when the
        result is missing too (which alone is a real 0). desktop-env's file getters give None for a file
        they could not fetch."""
        what = _getter_name(spec)
        try:
            expected = self._watched(what, lambda: _get(getters, context, spec))
        except EvaluationError:
            raise
        except Exception as exc:
            raise self._failure(f"{what} (the gold) failed: {exc!r}") from None
        if expected is None or (isinstance(expected, list) and any(item is None for item in expected)):
            raise self._failure(f"{what} found no gold to compare with ({spec.get('path') or spec})")
        return expected

    def _watched(self, what: str, call: Callable[[], T]) -> T:
        """Run ``call`` (a getter, a metric, the postconfig) and refuse its outcome, value or exception
        alike, if a guest call it made failed: desktop-env would have scored the gap as 0.0."""
        with watching(self.endpoint.url) as calls:
            try:
                outcome = call()
            except Exception:
                self._refuse_failed(what, calls)
                raise
        self._refuse_failed(what, calls)
        return outcome

    def _refuse_failed(self, what: str, calls: CallLog) -> None:
        failures = calls.failures()
        if failures:
            raise self._failure(f"{what} could not read the desktop ({len(failures)} failed guest call(s)): "
                                + "; ".join(failures)) from None

    def _failure(self, message: str) -> EvaluationError:
        return EvaluationError(message, env=self.env, phase="evaluate",
                               hint="the episode has no score; drop it rather than training on 0.0")


def unknown_names(task: TaskConfig) -> list[str]:
    """The setup step types, getters and metrics ``task`` names that the installed desktop-env lacks."""
    _, setup_cls, getters, metrics = _desktop_env()
    steps = list(task.config) + list(task.evaluator.postconfig)
    unknown = [f"setup step {s.type!r}" for s in steps if not hasattr(setup_cls, f"_{s.type}_setup")]
    unknown += [f"metric {m!r}" for m in task.evaluator.metric_names()
                if m != "infeasible" and not hasattr(metrics, m)]
    for spec in _as_list(task.evaluator.result) + _as_list(task.evaluator.expected):
        if spec and not hasattr(getters, f"get_{spec.get('type')}"):
            unknown.append(f"getter {spec.get('type')!r}")
    return list(dict.fromkeys(unknown))


def _brief(parameters: dict[str, Any]) -> str:
    text = repr(parameters)
    return text if len(text) <= 160 else text[:157] + "..."


def _as_list(value: Any) -> list[dict | None]:
    if isinstance(value, list):
        return value
    return [value] if value else []


def _per_metric(value: Any, count: int) -> list[Any]:
    if isinstance(value, list):
        return value
    return [value or None] * count


def _getter_name(spec: dict | None) -> str:
    return f"getter {spec.get('type') if spec else None!r}"


def _get(getters: Any, context: GetterContext, spec: dict | None) -> Any:
    if not spec:
        return None
    return getattr(getters, f"get_{spec['type']}")(context, spec)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("desktop-env")
    except Exception:  # pragma: no cover - only for the error text
        return "?"
