"""One desktop with the ``desktop_env.DesktopEnv`` contract, independent of Ray.

:class:`Desktop` is what an env actor holds. It is plain Python so it can be tested and used
without a cluster; :mod:`rayenv.env.actor` adds Ray, metrics and concurrency rules around it.

State machine: ``booting → ready → dirty → (revert) → ready``; any loss of the desktop makes it
``broken`` (the pool replaces the actor); ``close()`` makes it ``closed``, for good. ``reset`` reverts
a dirty desktop: in place where the provider can (a VM desktop loads its golden snapshot in under a
second), else by restarting it from its image.

The state changes only in :meth:`Desktop._enter`, under a lock: the actor's control group closes,
probes and reads the desktop while a call of its one-slot group runs, and a start or revert that
finishes after a close must not bring a closed desktop back to ``ready``.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

from ..errors import DesktopUnavailable, EnvTimeout, EvaluationError, RayEnvError
from ..providers import DesktopSpec, GuestEndpoint, Ownership, Provider, make_provider
from ..types import DesktopState, EnvStatus, Observation, StepResult
from .actions import parse_action
from .download_cache import DownloadCache
from .evaluation import TaskRunner
from .guest_client import GuestClient
from .options import EnvOptions
from .recording import TrajectoryRecorder
from .tasks import TaskConfig, validate_task

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class ForkState:
    """A desktop's state saved mid-episode by :meth:`Desktop.save_fork`: where its VM state lies on its env
    host, and the episode it is in (a branch is scored against the same task, with the same history)."""

    directory: str
    node_id: str
    task: TaskConfig | None
    action_history: tuple[str, ...]


class Desktop:
    """A desktop that can be reset to an OSWorld task, stepped, observed and scored: the
    :class:`~rayenv.env.contract.EnvContract`, in plain Python."""

    def __init__(self, spec: DesktopSpec, ownership: Ownership, options: EnvOptions | None = None) -> None:
        self.spec = spec
        self.ownership = ownership
        self.options = options or EnvOptions()
        self.env_name = ownership.env_name
        self.provider: Provider = make_provider(spec, ownership)
        self.state: DesktopState = "booting"
        self._state_lock = threading.Lock()
        self.task: TaskConfig | None = None
        self.action_history: list[str] = []
        self.episodes = 0
        self.last_error: str | None = None
        self._client: GuestClient | None = None
        self._runner: TaskRunner | None = None
        self._last_step: tuple[Any, StepResult] | None = None
        self._closing = False
        self._recorder = TrajectoryRecorder(self.options.record_dir, self.env_name) if self.options.record_dir else None
        #: the desktop is as it started or was reverted to (no step, setup or evaluation since), and where its
        #: pointer then is: read once per start, since a revert of the whole machine puts it back there
        self._pristine, self._pristine_pointer = False, None
        #: asks the guest where the pointer is while a screenshot reads the display
        self._pointer_reader = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self.env_name}-pointer")

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        started = time.monotonic()
        importing = TaskRunner.warm_up() if self.episodes == 0 else None
        self._pristine, self._pristine_pointer = False, None
        endpoint = self.provider.start()
        self._started_while_closing()
        self._connect(endpoint)
        self._pristine = True
        if importing is not None:
            importing.join()
        self._enter("ready")
        self._started_while_closing()
        logger.info("desktop %s ready at %s in %.1fs", self.provider.label(), endpoint.url, time.monotonic() - started)

    def _connect(self, endpoint: GuestEndpoint) -> None:
        self._client = GuestClient(endpoint.url, env=self.env_name, timeout=self.options.observe_timeout,
                                   ready=self._settle)
        self._runner = TaskRunner(endpoint, env=self.env_name, screen=(self.spec.screen_width, self.spec.screen_height),
                                  downloads=DownloadCache(self.options.download_cache),
                                  client_password=self.spec.client_password)

    def revert(self) -> bool:
        """Bring the desktop back to its pristine state, dropping the current task: without a restart where the
        provider can (a VM's snapshot, a swap to a warm spare), else by restarting it from its image. Returns
        whether it was without a restart."""
        self._enter("booting")
        self.task, self.action_history, self._last_step = None, [], None
        started = time.monotonic()
        try:
            reverted = self.provider.revert()
        except RayEnvError as exc:
            self.last_error = f"snapshot revert failed, restarted instead: {exc.message}"
            logger.warning("desktop %s: %s", self.provider.label(), self.last_error)
            reverted = False
        if reverted:
            assert self._runner is not None
            if self._client is not None:
                self._client.close()  # the revert cut its kept-alive connections
            self._connect(self.provider.current_endpoint() or self._runner.endpoint)
            self._pristine = self.provider.reverts_whole_machine
            self._enter("ready")
            self._started_while_closing()
            logger.info("desktop %s reverted without a restart in %.2fs", self.provider.label(),
                        time.monotonic() - started)
            return True
        self._stop_quietly()
        self.start()
        return False

    def save_fork(self) -> ForkState:
        """This desktop's state now, mid-episode, for :meth:`load_fork` of desktops of its pool on its host."""
        self._require_client("fork")
        directory = self._guarded(self.provider.save_fork, "fork")
        return ForkState(str(directory), self.ownership.node_id, self.task, tuple(self.action_history))

    def load_fork(self, fork: ForkState) -> None:
        """Become a branch of ``fork``: its VM state, task and action history; the episode goes on from there."""
        runner = self._require_runner("fork")
        if fork.node_id != self.ownership.node_id:
            raise DesktopUnavailable(f"the fork was saved on node {fork.node_id}, this desktop runs on "
                                     f"{self.ownership.node_id}", env=self.env_name, phase="fork",
                                     hint="fork into desktops of the forked desktop's env host")
        self._enter("booting")  # its QEMU is replaced: the pool's health checks wait, as for a revert
        self._pristine = False
        self._guarded(lambda: self.provider.load_fork(Path(fork.directory)), "fork")
        if self._client is not None:
            self._client.close()  # the old QEMU took its kept-alive connections with it
        self._connect(runner.endpoint)
        self.task, self.action_history, self._last_step = fork.task, list(fork.action_history), None
        self.episodes += 1
        self._enter("dirty")
        self._started_while_closing()

    def alive(self) -> bool:
        """Up, or on its way up: a desktop mid-revert is not dead (its boot has its own timeout)."""
        if self.state == "booting":
            return True
        return self.state not in ("broken", "closed") and self.provider.is_alive()

    def answers(self, timeout: float) -> bool:
        """Whether an idle desktop is alive and its guest answers within ``timeout``: a frozen one (its
        container paused, its processes stopped) still runs, so :meth:`alive` cannot tell. A desktop that
        does not answer is marked broken, with why. For the pool's probe of idle desktops only (a busy
        one's guest may be slow to answer while it runs an action)."""
        if not self.alive():
            return False
        if self.state == "booting" or self._client is None:
            return True
        try:
            self._client.probe(timeout)
        except RayEnvError as exc:
            self._mark_broken(DesktopUnavailable(f"idle desktop {self.provider.label()} did not answer a probe: "
                                                 f"{exc.message}", env=self.env_name, phase="probe"))
            return False
        return True

    def close(self) -> None:
        """Remove the desktop for good. Safe while a start or revert runs in another thread (the actor
        closes from its control group): that one sees ``closing`` and removes what it started."""
        self._closing = True
        self._stop_quietly()
        self._enter("closed")
        self._pointer_reader.shutdown(wait=False)

    def _enter(self, state: DesktopState, error: RayEnvError | None = None) -> bool:
        """The one place the state changes; ``closed`` is final. Returns whether the change was made."""
        with self._state_lock:
            if self.state == "closed":
                return False
            self.state = state
            if error is not None:
                self.last_error = str(error)
            return True

    def _started_while_closing(self) -> None:
        """A start or revert that finished after :meth:`close` began must not leave its desktop running."""
        if self._closing:
            self._stop_quietly()
            self._enter("closed")
            raise DesktopUnavailable("the desktop was closed while it started", env=self.env_name, phase="boot",
                                     hint="the pool replaced or shut down this desktop; lease another")

    def _stop_quietly(self) -> None:
        if self._client is not None:
            self._client.close()
        self._client = None
        self.provider.stop()

    # -- the DesktopEnv contract -------------------------------------------------------------
    def reset(self, task_config: dict[str, Any] | None = None) -> Observation:
        """Revert if used, then run the task's setup. A bad task raises before the desktop is touched; a setup step
        the guest refused raises :class:`~rayenv.errors.SetupFailed` (drop the sample: it has no episode)."""
        task = validate_task(task_config, env=self.env_name) if task_config is not None else None
        runner = self._require_runner("reset")
        if task is not None:
            runner.check(task)
        reverted = False
        if self.state != "ready":
            reverted = self.revert()
            runner = self._require_runner("reset")
        self.action_history, self._last_step, self.task = [], None, task
        self.episodes += 1
        if not (reverted and self.provider.reverts_whole_machine):  # else it is its golden state, which had room
            self._check_guest("reset", DesktopUnavailable)
        if task is not None:
            self._settle()  # the setup's requests go through desktop-env, not this desktop's client
            self._enter("dirty")
            self._pristine = False
            try:
                self._bounded(lambda: runner.setup(task), self.options.setup_timeout, "reset", "setup_timeout")
            except RayEnvError:
                self.task = None  # a task that is not set up has no episode, and nothing to score
                raise
        observation = self.observe()
        if self._recorder:
            self._recorder.start_episode(self.episodes, task.id if task else None, observation["screenshot"])
        return observation

    def step(self, action: Any, pause: float | None = None, step_id: Any = None) -> StepResult:
        """Execute one action. ``step_id`` makes a retried call (same id) return the first result."""
        if step_id is not None and self._last_step is not None and self._last_step[0] == step_id:
            return self._last_step[1]
        parsed = parse_action(action, env=self.env_name)
        client = self._require_client("step")
        pause = self.options.default_pause if pause is None else pause
        self._enter("dirty")
        self._pristine = False
        done, info, pointer = False, {}, None
        if parsed.control == "FAIL":
            done, info = True, {"fail": True}
        elif parsed.control == "DONE":
            done, info = True, {"done": True}
        elif parsed.code is not None:
            pointer = self._guarded(lambda: client.run_action(parsed.code, timeout=self.options.step_timeout),
                                    "step").pointer
        self.action_history.append(parsed.history_entry)
        if pause:
            time.sleep(pause)
        info.update(step=len(self.action_history), episode=self.episodes)
        result: StepResult = {"observation": self._observe(pointer), "reward": 0.0, "done": done, "info": info}
        if step_id is not None:
            self._last_step = (step_id, result)
        if self._recorder:
            self._recorder.step(len(self.action_history), action, done, info, result["observation"]["screenshot"])
        return result

    def observe(self) -> Observation:
        return self._observe(None)

    def _observe(self, pointer: tuple[int, int] | None) -> Observation:
        """The observation, its screenshot's pointer drawn at ``pointer`` when the step's action reported it."""
        client = self._require_client("observe")
        return self._guarded(lambda: Observation(
            screenshot=self._screenshot(client, pointer),
            accessibility_tree=client.accessibility_tree() if self.options.require_a11y_tree else None,
            terminal=client.terminal() if self.options.require_terminal else None,
            instruction=self.task.instruction if self.task else None,
        ), "observe")

    def evaluate(self) -> float:
        """The task's score in [0, 1]. Raises :class:`EvaluationError` when no score can be produced."""
        if self.task is None:
            raise EvaluationError("no task to evaluate: reset(task_config) first", env=self.env_name, phase="evaluate",
                                  hint="pass an OSWorld task config to reset")
        runner, task = self._require_runner("evaluate"), self.task
        self._pristine = False  # an evaluation may run commands in the guest
        try:
            self._check_guest("evaluate", EvaluationError)  # a desktop that cannot save or answer must not score 0
            score = self._bounded(lambda: runner.evaluate(task, self.action_history, "Linux"),
                                  self.options.evaluate_timeout, "evaluate", "evaluate_timeout")
            self._check_guest("evaluate", EvaluationError)  # nor one whose disk filled up while it was scored
        except RayEnvError as exc:
            if self._recorder:
                self._recorder.score(None, str(exc))
            raise
        if self._recorder:
            self._recorder.score(score)
        return score

    def status(self) -> EnvStatus:
        return EnvStatus(env_name=self.env_name, provider=self.spec.provider, state=self.state,
                         alive=self.alive(),
                         node_id=self.ownership.node_id, task_id=self.task.id if self.task else None,
                         steps=len(self.action_history), episodes=self.episodes,
                         url=self._client.url if self._client else None, last_error=self.last_error,
                         details=self.provider.describe())

    # -- helpers -----------------------------------------------------------------------------
    def _screenshot(self, client: GuestClient, pointer: tuple[int, int] | None) -> bytes:
        """From the desktop's display where the host can read it (QEMU's display, Xvfb's framebuffer), with the
        pointer drawn in where the step's action left it (``pointer``) or else where the guest says it is; else
        the guest's own ``/screenshot``."""
        display = self.provider.display()
        if display is None:
            return client.screenshot()
        from ..providers.screens import encode_png, screenshot_png  # env hosts only: Pillow and ISA-L

        if pointer is not None:
            return encode_png(display.grab(), pointer)
        return screenshot_png(display, lambda: self._pointer(client), self._pointer_reader)

    def _pointer(self, client: GuestClient) -> tuple[int, int]:
        """Where the pointer is: asked of the guest, except on a pristine desktop whose pristine pointer is known,
        from the provider (a VM's golden state's) or read once per start (the first guest call after a start or a
        revert is the slowest: under TCG its code is translated anew)."""
        if not self._pristine:
            return client.cursor_position()
        if self._pristine_pointer is None:
            self._pristine_pointer = self.provider.pristine_pointer() or client.cursor_position()
        return self._pristine_pointer

    def _settle(self) -> None:
        """Wait for what the provider's last revert left to finish (a VM's clock, set while the reset's observation
        was taken); a desktop whose guest did not come back from its reset is broken (the pool replaces it)."""
        try:
            self.provider.settle()
        except RayEnvError as exc:
            gone = DesktopUnavailable(f"desktop {self.provider.label()} did not come back from its reset: {exc.message}",
                                      env=self.env_name, phase="reset",
                                      hint="the pool replaces it; retry the episode elsewhere")
            self._mark_broken(gone)
            raise gone from None

    def _require_client(self, phase: str) -> GuestClient:
        if self._client is None or self.state in ("broken", "closed"):
            raise DesktopUnavailable(f"desktop is {self.state}", env=self.env_name, phase=phase,
                                     hint="release the lease as broken; the pool replaces the desktop")
        return self._client

    def _require_runner(self, phase: str) -> TaskRunner:
        self._require_client(phase)
        assert self._runner is not None
        return self._runner

    def _guarded(self, call: Callable[[], T], phase: str) -> T:
        """Run ``call``; if the desktop turns out to be gone, say so and mark it broken."""
        try:
            return call()
        except DesktopUnavailable as exc:
            self._mark_broken(exc)
            raise
        except RayEnvError as exc:
            self.last_error = str(exc)
            if not self.provider.is_alive():
                gone = DesktopUnavailable(f"desktop {self.provider.label()} died during {phase}", env=self.env_name,
                                          phase=phase, hint="the pool replaces it; retry the episode elsewhere")
                self._mark_broken(gone)
                raise gone from None
            raise

    def _check_guest(self, phase: str, error: type[RayEnvError]) -> None:
        """Ask the guest whether it can run a task (reachable, room in home and tmp); if not, the desktop is
        broken (the pool replaces it) and ``error`` says why: a full disk must not pass for a failed task."""
        client = self._require_client(phase)
        problems = self._guarded(lambda: client.problems(int(self.options.min_free_mb * 2**20)), phase)
        if problems:
            broken = error(f"desktop {self.provider.label()} cannot run tasks: {'; '.join(problems)}", env=self.env_name,
                           phase=phase, hint="the pool replaces this desktop; retry the episode on another one"
                           + (" and drop this sample, it has no score" if phase == "evaluate" else ""))
            self._mark_broken(broken)
            raise broken

    def _bounded(self, call: Callable[[], T], timeout: float, phase: str, option: str) -> T:
        """Run a desktop-env call that has no timeout of its own in a thread, and stop waiting after ``timeout``.

        The thread cannot be killed, so on timeout the desktop is marked broken and the pool
        replaces it rather than letting a later call queue behind the stuck one.
        """
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self.env_name}-{phase}")
        try:
            return self._guarded(lambda: pool.submit(call).result(timeout=timeout), phase)
        except concurrent.futures.TimeoutError:
            error = EnvTimeout(f"{phase} took longer than {timeout:.0f}s on {self.provider.label()}", env=self.env_name,
                               phase=phase, hint=f"raise the pool's env.{option} (EnvOptions.{option}); the desktop will be replaced")
            self._mark_broken(error)
            raise error from None
        finally:
            pool.shutdown(wait=False)

    def _mark_broken(self, error: RayEnvError) -> None:
        self._enter("broken", error)
        logger.warning("desktop %s broken: %s", self.provider.label(), error)

    def __repr__(self) -> str:
        return f"Desktop({self.provider.label()}, {self.spec.provider}, {self.state})"
